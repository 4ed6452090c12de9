"""The single place that decides whether a completion is correct.

1. :func:`extract_answer` (``answers.py``) takes the final answer out of a
   completion: the last ``\\boxed{...}`` / ``\\fbox{...}``, else GSM8K's ``#### N``, else
   "the answer is N".
2. :func:`grade` compares it with the gold answer:
   - an extracted answer far longer than the gold (over ``max(MAX_ANSWER_CHARS, 4 x gold)``
     characters: digit loops, runaway expressions) is wrong without further checks;
   - reasoning-gym problems use the task's own scorer (correct iff score >= 1.0);
   - plain numbers are compared exactly in-process ("$1,800.00" == "1800"); a magnitude
     word right after the number scales it ("5 million" == 5000000, "3 dozen" == 36), and
     a number followed by a magnitude word elsewhere is not read as a plain number;
   - a number followed by a word that changes its value (a single letter, a constant or
     an operation or range in words: "5 x", "5π", "5 pi", "3 plus 4", "2 and up") is
     never equal to a plain number (math-verify would drop such words inside ``\\text{}``);
   - everything else goes to math-verify (gold first, both wrapped in ``\\boxed{}``).

Grading never raises on a completion: every completion gets an outcome (correct, wrong,
no_answer or timeout). The in-process steps are linear in the completion's length;
everything that can run away on model output (sympy inside math-verify, and
reasoning-gym scorers) runs in time- and memory-bounded worker processes
(``workers.py``): a check that overruns reports ``Outcome.TIMEOUT``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from ..data.problem import Problem
from .answers import extract_answer, read_number
from .workers import TIMED_OUT, bounded, close_workers

__all__ = ["MAX_ANSWER_CHARS", "Grade", "Outcome", "close_workers", "extract_answer", "grade", "same_answer"]

log = logging.getLogger(__name__)


def _math_equal(gold: str, pred: str, timeout: float, shortcuts: bool = True) -> bool | None:
    """True/False, or None when the check ran out of time. ``shortcuts=False`` skips the
    in-process text/number comparisons (tests use it to exercise math-verify itself)."""
    if shortcuts:
        if " ".join(gold.split()) == " ".join(pred.split()):
            return True
        (g, g_changed), (p, p_changed) = read_number(gold), read_number(pred)
        if g is not None and p is not None:
            return g == p
        if (g is not None and p_changed) or (p is not None and g_changed):
            return False  # "5 pi" vs 5: math-verify would drop such words inside \text{}
    result = bounded({"op": "equal", "gold": gold, "pred": pred}, timeout)
    return None if result is TIMED_OUT else bool(result)


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
        score = bounded({"op": "rg", "task": task, "answer": extracted, "entry": problem.metadata["entry"]},
                         timeout)
        if score is TIMED_OUT:
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
