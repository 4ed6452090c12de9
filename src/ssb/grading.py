"""The single place that decides whether a completion is correct.

1. :func:`extract_answer` takes the final answer out of a completion: the last
   ``\\boxed{...}`` / ``\\fbox{...}``, else GSM8K's ``#### N``, else "the answer is N".
2. :func:`grade` compares it with the gold answer:
   - an extracted answer far longer than the gold (over ``max(MAX_ANSWER_CHARS, 4 x gold)``
     characters: digit loops, runaway expressions) is wrong without further checks;
   - reasoning-gym problems use the task's own scorer (correct iff score >= 1.0);
   - plain numbers are compared exactly in-process ("$1,800.00" == "1800"); a magnitude
     word right after the number scales it ("5 million" == 5000000, "3 dozen" == 36), and
     a number followed by a magnitude word elsewhere is not read as a plain number;
   - everything else goes to math-verify (gold first, both wrapped in ``\\boxed{}``).

Grading never raises on a completion: every completion gets an outcome (correct, wrong,
no_answer or timeout). The in-process steps are linear in the completion's length;
everything that can run away on model output (sympy inside math-verify, and
reasoning-gym scorers, some of which ``parse_expr``/``eval`` the answer) runs in small
worker *processes* (``python -c ...``, JSON lines over pipes, address space capped at
``WORKER_MEMORY_BYTES``): we wait at most ``timeout`` seconds per check, a worker that
overruns is killed and the check reports ``Outcome.TIMEOUT``. math-verify's own timeouts
use ``signal.alarm`` and fail off the main thread; this works from any thread. Where no
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
_TOKEN_RE = re.compile(r"[^\s$]+")
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(r"(?:final\s+answer\s*(?:is)?|answer\s+is)\s*:?\s*([^\n]+)", re.IGNORECASE)


def _brace_pairs(text: str, start: int = 0) -> dict[int, int]:
    """``{open index: close index}`` of every closed, unescaped ``{`` from ``start`` on, in
    one linear pass (a completion with thousands of unclosed ``\\boxed{`` stays linear)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    prev = text[start - 1] if start > 0 else ""
    for i in range(start, len(text)):
        c = text[i]
        if prev != "\\":
            if c == "{":
                stack.append(i)
            elif c == "}" and stack:
                pairs[stack.pop()] = i
        prev = c
    return pairs


def _boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``, ``\\boxed x`` or ``\\fbox{...}``."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    pairs: dict[int, int] | None = None
    for m in reversed(matches):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            if pairs is None:
                pairs = _brace_pairs(text, matches[0].end())
            close = pairs.get(i)
            content = text[i + 1 : close] if close is not None else None
        else:  # "\boxed 5": one token
            tok = _TOKEN_RE.match(text, i) if i > m.end() else None
            content = tok.group(0) if tok else None
        if content is not None and content.strip():
            return content
    return None


def _clean(ans: str) -> str | None:
    """Strip surrounding math delimiters, bold markers and a final full stop."""
    ans = ans.strip()
    inline = re.fullmatch(r".*?\$([^$]+)\$(.*)", ans)  # "is $\frac12$ dollars." -> \frac12
    if inline and not ans.startswith("\\"):
        tail = inline.group(2).split()
        # "$5$ million" keeps its magnitude word: it is part of the number
        scale = bool(tail) and _scale_of(re.sub(r"[^A-Za-z]", "", tail[0])) is not None
        ans = inline.group(1) + (" " + " ".join(tail) if scale else "")
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
_UNIT_WORD = re.compile(r"[A-Za-z]{2,}\.?")
_MAX_DIGITS = 4000  # below Python's int/str conversion limit (4300)
# magnitude words scale the number before them ("5 million" = 5000000, "3 dozen" = 36)
SCALE_WORDS = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12,
               "dozen": 12, "lakh": 10**5, "crore": 10**7}


def _scale_of(word: str) -> int | None:
    """The factor of a magnitude word ("million", "millions"); 0 for a word built on one
    that is not a plain factor ("thousandths", "millionth"); None for any other word."""
    w = word.rstrip(".").lower()
    if w in SCALE_WORDS:
        return SCALE_WORDS[w]
    if w.endswith("s") and w[:-1] in SCALE_WORDS:
        return SCALE_WORDS[w[:-1]]
    return 0 if any(w.startswith(k) for k in SCALE_WORDS) else None


def _as_number(s: str) -> Fraction | None:
    """A plain number, tolerating $, thousands separators, %, degrees and unit words
    ("$1,800.00", "18 dollars", "90^\\circ"); magnitude words right after the number scale
    it ("5 million", "2.5 thousand dollars", "3 dozen"). None for anything else, including
    a magnitude word anywhere else ("5 dollars million", "2 thousand 500") and numbers of
    more than 4000 digits."""
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r" \1 ", s)
    s = s.replace("\\$", "").replace("$", "").replace("{,}", ",").replace("\\!", "").replace("\\%", "")
    s = re.sub(r"\^\{?\\circ\}?|%|\\,|\\ ", " ", s).strip()
    m = _NUMBER.match(s)
    if not m:
        return None
    digits = m.group(0).replace(",", "")
    if len(digits) > _MAX_DIGITS:
        return None
    value = Fraction(digits)
    scaling = True
    for word in s[m.end() :].split():  # unit words: letters only, 2+ of them
        if not _UNIT_WORD.fullmatch(word):
            return None
        factor = _scale_of(word)
        if factor is None:
            scaling = False
        elif factor == 0 or not scaling:
            return None
        else:
            value *= factor
    return value


# ----------------------------------------------------------------------------- bounded checks in workers

WORKER_MEMORY_BYTES = 4 << 30  # address-space cap of a grading worker: sympy blow-ups fail there


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


_scorers: dict = {}
_scorers_lock = threading.Lock()


def _rg_scorer(task: str):
    with _scorers_lock:
        fn = _scorers.get(task)
        if fn is None:
            import reasoning_gym

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
        import resource

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
            [sys.executable, "-c", "from ssb.grading import _worker_main; _worker_main()"],
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
_TIMED_OUT = object()


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
    return box[0] if box else _TIMED_OUT


def _bounded(req: dict, timeout: float):
    """Run one check (``_serve``) in a worker process for at most ``timeout`` seconds:
    its result, None when it failed, ``_TIMED_OUT`` when it ran out of time."""
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
        return _TIMED_OUT
    except (OSError, RuntimeError, ValueError):  # worker died (e.g. out of memory): count as failed
        worker.kill()
        return None
    with _lock:
        _idle.append(worker)
    return result


def _math_equal(gold: str, pred: str, timeout: float, shortcuts: bool = True) -> bool | None:
    """True/False, or None when the check ran out of time. ``shortcuts=False`` skips the
    in-process text/number comparisons (tests use it to exercise math-verify itself)."""
    if shortcuts:
        if " ".join(gold.split()) == " ".join(pred.split()):
            return True
        g, p = _as_number(gold), _as_number(pred)
        if g is not None and p is not None:
            return g == p
    result = _bounded({"op": "equal", "gold": gold, "pred": pred}, timeout)
    return None if result is _TIMED_OUT else bool(result)


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


MAX_ANSWER_CHARS = 1000


def _too_long(answer: str, gold: str) -> bool:
    """An extracted answer far longer than the gold cannot be meant as it (digit loops,
    runaway expressions): it is wrong without a check."""
    return len(answer) > max(MAX_ANSWER_CHARS, 4 * len(gold))


def grade(problem: Problem, completion: str, timeout: float = 5.0) -> Grade:
    """Grade one completion against ``problem.answer`` (see the module docstring). Never
    raises on a completion; a check that runs longer than ``timeout`` seconds is TIMEOUT."""
    try:
        return _grade(problem, completion, timeout)
    except Exception as e:  # noqa: BLE001 - last resort: a completion must never stop a stage
        log.warning("grading failed on a completion (%s: %s); counted as wrong", type(e).__name__, str(e)[:200])
        return Grade(Outcome.WRONG, None, "none")


def _grade(problem: Problem, completion: str, timeout: float) -> Grade:
    extracted, fmt = extract_answer(completion)
    if extracted is None:
        return Grade(Outcome.NO_ANSWER, None, fmt)
    gold = str(problem.answer)
    if _too_long(extracted, gold):
        return Grade(Outcome.WRONG, extracted, fmt)
    if _is_reasoning_gym(problem):
        task = problem.metadata["task"]
        score = _bounded({"op": "rg", "task": task, "answer": extracted, "entry": problem.metadata["entry"]},
                         timeout)
        if score is _TIMED_OUT:
            return Grade(Outcome.TIMEOUT, extracted, fmt)
        return Grade(Outcome.CORRECT if (score or 0.0) >= 1.0 else Outcome.WRONG, extracted, fmt)
    same = _math_equal(gold, extracted, timeout)
    if same is None:
        return Grade(Outcome.TIMEOUT, extracted, fmt)
    return Grade(Outcome.CORRECT if same else Outcome.WRONG, extracted, fmt)


def same_answer(a: str, b: str, timeout: float = 5.0) -> bool:
    """Whether two extracted answers mean the same (False when the check times out or fails)."""
    try:
        if " ".join(a.split()) == " ".join(b.split()):
            return True
        if _too_long(a, b) or _too_long(b, a):
            return False
        return bool(_math_equal(a, b, timeout))
    except Exception as e:  # noqa: BLE001 - never stop curation on an odd answer
        log.warning("answer comparison failed (%s: %s); counted as different", type(e).__name__, str(e)[:200])
        return False
