"""The single place that decides whether a completion is correct.

1. :func:`extract_answer` takes the final answer out of a completion: the last
   ``\\boxed{...}`` / ``\\fbox{...}``, else GSM8K's ``#### N``, else "the answer is N".
2. :func:`grade` compares it with the gold answer:
   - reasoning-gym problems use the task's own scorer (correct iff score >= 1.0);
   - plain numbers are compared exactly in-process ("$1,800.00" == "1800");
   - everything else goes to math-verify (gold first, both wrapped in ``\\boxed{}``).

math-verify's own timeouts use ``signal.alarm`` and fail off the main thread, so we call
it with timeouts disabled inside small worker *processes* (``python -c ...``, JSON lines
over pipes) and wait at most ``timeout`` seconds per check; a worker stuck in sympy is
killed and the check reports ``Outcome.TIMEOUT``. This works from any thread. Where no
subprocess can be started, checks run in a daemon thread joined with a timeout.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from .data import Problem

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(r"(?:final\s+answer\s*(?:is)?|answer\s+is)\s*:?\s*([^\n]+)", re.IGNORECASE)


def _braced(text: str, start: int) -> str | None:
    """Content of the balanced ``{...}`` opening at ``text[start]``; None if unclosed."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "{" and text[i - 1] != "\\":
            depth += 1
        elif c == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def _boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``, ``\\boxed x`` or ``\\fbox{...}``."""
    for m in reversed(list(_BOX_RE.finditer(text))):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            content = _braced(text, i)
        else:  # "\boxed 5": one token
            tok = re.match(r"[^\s$]+", text[i:])
            content = tok.group(0) if tok and i > m.end() else None
        if content is not None and content.strip():
            return content
    return None


def _clean(ans: str) -> str | None:
    """Strip surrounding math delimiters, bold markers and a final full stop."""
    ans = ans.strip()
    inline = re.fullmatch(r".*?\$([^$]+)\$.*", ans)  # "is $\frac12$ dollars." -> \frac12
    if inline and not ans.startswith("\\"):
        ans = inline.group(1)
    ans = ans.strip().strip("*").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if ans.startswith(left) and ans.endswith(right) and len(ans) > len(left) + len(right):
            ans = ans[len(left) : -len(right)].strip()
    ans = ans.rstrip(".").strip()
    return ans or None


def extract_answer(text: str) -> tuple[str | None, str]:
    """Return ``(answer, fmt)`` with fmt in {"boxed", "hash", "answer_is", "none"}."""
    if not text:
        return None, "none"
    boxed = _boxed(text)
    if boxed is not None and (ans := _clean(boxed)):
        return ans, "boxed"
    hashes = _HASH_RE.findall(text)
    if hashes and (ans := _clean(hashes[-1])):
        return ans, "hash"
    said = _ANSWER_IS_RE.findall(text)
    if said and (ans := _clean(said[-1])):
        return ans, "answer_is"
    return None, "none"


# ----------------------------------------------------------------------------- plain numbers

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_UNITS = re.compile(r"(?:\s*[A-Za-z]{2,}\.?)*")


def _as_number(s: str) -> Fraction | None:
    """A plain number, tolerating $, thousands separators, %, degrees and unit words
    ("$1,800.00", "18 dollars", "90^\\circ"); None for anything else."""
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r" \1 ", s)
    s = s.replace("\\$", "").replace("$", "").replace("{,}", ",").replace("\\!", "").replace("\\%", "")
    s = re.sub(r"\^\{?\\circ\}?|%|\\,|\\ ", " ", s).strip()
    m = _NUMBER.match(s)
    if not m or not _UNITS.fullmatch(s[m.end() :]):
        return None
    return Fraction(m.group(0).replace(",", ""))


# ----------------------------------------------------------------------------- bounded math-verify checks


def _mv_equal(gold: str, pred: str) -> bool:
    """math-verify equivalence, gold first; runs in a worker (no signal timeouts)."""
    from math_verify import verify

    g, p = _mv_parse(gold), _mv_parse(pred)
    if not g:  # gold that math-verify cannot parse: compare text
        return " ".join(gold.split()) == " ".join(pred.split())
    return bool(verify(g, p, timeout_seconds=None))


@lru_cache(maxsize=4096)
def _mv_parse(answer: str):
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=None)


def _worker_main() -> None:
    """Worker process loop: one JSON request per stdin line, one JSON reply per line."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # nothing but replies may reach the protocol pipe
    logging.disable(logging.WARNING)  # math-verify warns that we disabled its timeouts
    import math_verify  # noqa: F401 - warm up before reporting ready

    out.write('{"ready": true}\n')
    for line in sys.stdin:
        req = json.loads(line)
        try:
            out.write(json.dumps({"ok": True, "result": _mv_equal(req["gold"], req["pred"])}) + "\n")
        except Exception as e:  # noqa: BLE001 - any sympy failure means "not equal"
            out.write(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}) + "\n")


class _Timeout(Exception):
    pass


class _Worker:
    START_TIMEOUT = 120.0  # seconds to import sympy/math-verify on a busy machine

    def __init__(self):
        # make this very copy of ssb importable in the child, however the parent found it
        src = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from ssb.grading import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env,
        )
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

    def check(self, gold: str, pred: str, timeout: float) -> bool:
        self.proc.stdin.write(json.dumps({"gold": gold, "pred": pred}) + "\n")
        reply = self._readline(timeout)
        if not reply["ok"]:
            log.debug("math-verify error on %r vs %r: %s", gold, pred, reply["error"])
        return bool(reply.get("result"))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


_idle: list[_Worker] = []
_lock = threading.Lock()
_use_threads = os.name != "posix"  # select() on pipes is POSIX-only


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


def _check_in_thread(gold: str, pred: str, timeout: float) -> bool | None:
    box: list = []
    t = threading.Thread(target=lambda: box.append(_mv_equal(gold, pred)), daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else None


def _math_equal(gold: str, pred: str, timeout: float, shortcuts: bool = True) -> bool | None:
    """True/False, or None when the check ran out of time. ``shortcuts=False`` skips the
    in-process text/number comparisons (tests use it to exercise math-verify itself)."""
    global _use_threads
    if shortcuts:
        if " ".join(gold.split()) == " ".join(pred.split()):
            return True
        g, p = _as_number(gold), _as_number(pred)
        if g is not None and p is not None:
            return g == p
    if _use_threads:
        return _check_in_thread(gold, pred, timeout)
    try:
        worker = _checkout()
    except (OSError, RuntimeError, _Timeout) as e:
        log.warning("cannot start a grading worker process (%s); checking in threads instead", e)
        _use_threads = True
        return _check_in_thread(gold, pred, timeout)
    try:
        result = worker.check(gold, pred, timeout)
    except _Timeout:
        worker.kill()
        return None
    except (OSError, RuntimeError, ValueError):  # worker died (e.g. out of memory): count as wrong
        worker.kill()
        return False
    with _lock:
        _idle.append(worker)
    return result


# ----------------------------------------------------------------------------- reasoning-gym scorers

_scorers: dict = {}


def _rg_score(task: str, answer: str, entry: dict) -> float:
    with _lock:
        fn = _scorers.get(task)
        if fn is None:
            import reasoning_gym

            fn = _scorers[task] = reasoning_gym.get_score_answer_fn(task)
    try:
        return float(fn(answer, entry))
    except Exception as e:  # noqa: BLE001 - a scorer crashing on odd input means "wrong"
        log.debug("reasoning-gym %s scorer failed on %r: %s", task, answer, e)
        return 0.0


# ----------------------------------------------------------------------------- grading


class Outcome(str, Enum):
    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"
    TIMEOUT = "timeout"


@dataclass
class Grade:
    outcome: Outcome
    extracted: str | None
    fmt: str

    @property
    def correct(self) -> bool:
        return self.outcome is Outcome.CORRECT


def _is_reasoning_gym(problem: Problem) -> bool:
    md = problem.metadata or {}
    return md.get("source") == "reasoning_gym" and "task" in md and "entry" in md


def grade(problem: Problem, completion: str, timeout: float = 5.0) -> Grade:
    """Grade one completion against ``problem.answer`` (see the module docstring)."""
    extracted, fmt = extract_answer(completion)
    if extracted is None:
        return Grade(Outcome.NO_ANSWER, None, fmt)
    if _is_reasoning_gym(problem):
        score = _rg_score(problem.metadata["task"], extracted, problem.metadata["entry"])
        return Grade(Outcome.CORRECT if score >= 1.0 else Outcome.WRONG, extracted, fmt)
    same = _math_equal(str(problem.answer), extracted, timeout)
    if same is None:
        return Grade(Outcome.TIMEOUT, extracted, fmt)
    return Grade(Outcome.CORRECT if same else Outcome.WRONG, extracted, fmt)


def same_answer(a: str, b: str, timeout: float = 5.0) -> bool:
    """Whether two extracted answers mean the same (False when the check times out)."""
    return bool(_math_equal(a, b, timeout))
