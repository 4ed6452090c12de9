"""Checks that can run away on model output, bounded in time and memory.

sympy inside math-verify, and reasoning-gym scorers (some of which ``parse_expr``/``eval``
the answer), run in small worker *processes* (``python -c ...``, JSON lines over pipes,
address space capped at ``WORKER_MEMORY_BYTES``): :func:`bounded` waits at most
``timeout`` seconds per check, a worker that overruns is killed and the check returns
:data:`TIMED_OUT`. math-verify's own timeouts use ``signal.alarm`` and fail off the main
thread; this works from any thread. Where no subprocess can be started, checks run in a
daemon thread joined with a timeout.

A worker imports this module alone (nothing else of ssb), then math-verify.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_MEMORY_BYTES = 4 << 30  # address-space cap of a grading worker: sympy blow-ups fail there


def _mv_equal(gold: str, pred: str) -> bool:
    """math-verify equivalence, gold first; runs in a worker (no signal timeouts)."""
    from math_verify import verify  # heavy (sympy): imported in the worker process only

    g, p = _mv_parse(gold), _mv_parse(pred)
    if not g:  # gold that math-verify cannot parse: compare text
        return " ".join(gold.split()) == " ".join(pred.split())
    return bool(verify(g, p, timeout_seconds=None))


@lru_cache(maxsize=4096)
def _mv_parse(answer: str):
    from math_verify import parse  # heavy (sympy): imported in the worker process only

    return parse("\\boxed{" + answer + "}", parsing_timeout=None)


_scorers: dict = {}
_scorers_lock = threading.Lock()


def _rg_scorer(task: str):
    with _scorers_lock:
        fn = _scorers.get(task)
        if fn is None:
            import reasoning_gym  # heavy and optional: imported by the process that scores a task

            fn = _scorers[task] = reasoning_gym.get_score_answer_fn(task)
    return fn


def _rg_score(task: str, answer: str, entry: dict) -> float:
    """The task's own reasoning-gym scorer; runs in a worker (some parse or eval the answer)."""
    return float(_rg_scorer(task)(answer, entry))


def _serve(req: dict):
    op = req.get("op", "equal")
    if op == "equal":
        return _mv_equal(req["gold"], req["pred"])
    if op == "rg":
        return _rg_score(req["task"], req["answer"], req["entry"])
    if op == "rg_load":
        _rg_scorer(req["task"])
        return True
    raise ValueError(f"unknown op {op!r}")


def _worker_main() -> None:
    """Worker process loop: one JSON request per stdin line, one JSON reply per line."""
    try:
        import resource  # Unix only: elsewhere the worker runs without the memory cap

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # nothing but replies may reach the protocol pipe
    logging.disable(logging.WARNING)  # math-verify warns that we disabled its timeouts
    import math_verify  # noqa: F401 - warm up before reporting ready

    out.write('{"ready": true}\n')
    for line in sys.stdin:
        try:
            reply = {"ok": True, "result": _serve(json.loads(line))}
        except BaseException as e:  # noqa: BLE001 - any failure (sympy, a scorer, MemoryError) means "not equal"
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        out.write(json.dumps(reply) + "\n")


class _Timeout(Exception):
    pass


class _Worker:
    START_TIMEOUT = 120.0  # seconds to import sympy/math-verify (or reasoning-gym) on a busy machine

    def __init__(self):
        # make this very copy of ssb importable in the child, however the parent found it
        src = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from ssb.grading.workers import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env,
        )
        self.rg_loaded: set[str] = set()
        if not self._readline(self.START_TIMEOUT).get("ready"):
            self.kill()
            raise RuntimeError("grading worker did not start")

    def _readline(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise _Timeout
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("grading worker exited")
        return json.loads(line)

    def ask(self, req: dict, timeout: float):
        """The worker's result for ``req``; None when the worker reported an error."""
        if req.get("op") == "rg" and req["task"] not in self.rg_loaded:  # import time is not check time
            self.proc.stdin.write(json.dumps({"op": "rg_load", "task": req["task"]}) + "\n")
            loaded = self._readline(self.START_TIMEOUT)
            if not loaded["ok"]:
                log.warning("reasoning-gym scorer for %r unavailable: %s", req["task"], loaded["error"])
                return None
            self.rg_loaded.add(req["task"])
        self.proc.stdin.write(json.dumps(req) + "\n")
        reply = self._readline(timeout)
        if not reply["ok"]:
            log.debug("grading check failed on %s: %s", str(req)[:300], reply["error"])
            return None
        return reply["result"]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


_idle: list[_Worker] = []
_lock = threading.Lock()
_use_threads = os.name != "posix"  # select() on pipes is POSIX-only
TIMED_OUT = object()  # what bounded() returns for a check that ran out of time


def _checkout() -> _Worker:
    with _lock:
        if _idle:
            return _idle.pop()
    return _Worker()


def close_workers() -> None:
    """Stop the idle grading worker processes (they also stop when Python exits)."""
    with _lock:
        while _idle:
            _idle.pop().kill()


atexit.register(close_workers)


def _in_thread(req: dict, timeout: float):
    box: list = []

    def go():
        try:
            box.append(_serve(req))
        except Exception as e:  # noqa: BLE001 - as in the worker: a failure means "not equal"
            log.debug("grading check failed on %s: %s", str(req)[:300], e)
            box.append(None)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else TIMED_OUT


def bounded(req: dict, timeout: float):
    """Run one check (``_serve``) in a worker process for at most ``timeout`` seconds:
    its result, None when it failed, :data:`TIMED_OUT` when it ran out of time."""
    global _use_threads
    if _use_threads:
        return _in_thread(req, timeout)
    try:
        worker = _checkout()
    except (OSError, RuntimeError, _Timeout) as e:
        log.warning("cannot start a grading worker process (%s); checking in threads instead", e)
        _use_threads = True
        return _in_thread(req, timeout)
    try:
        result = worker.ask(req, timeout)
    except _Timeout:
        worker.kill()
        return TIMED_OUT
    except (OSError, RuntimeError, ValueError):  # worker died (e.g. out of memory): count as failed
        worker.kill()
        return None
    with _lock:
        _idle.append(worker)
    return result

