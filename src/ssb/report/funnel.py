"""Counts over ``rollouts.jsonl``, in one place: the rollout stage's manifest entry
(:func:`stages.rollout.run_rollout`), curate's funnel (:func:`stages.curate.funnel`) and the
report's funnel section (:func:`stages.report.funnel_counts`) all read them from :func:`rollout_counts`.

A problem counts *with a wrong rollout* when one of its rollouts is graded ``wrong``, or
``no_answer`` too when ``no_answer_is_wrong`` (``curate.no_answer_is_wrong``: what curate
selects from); *with both* when it also has a correct one.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..grading.answers import ANSWER_FORMATS


def rollout_counts(records: list[dict], no_answer_is_wrong: bool = False) -> dict[str, Any]:
    """Problems (with a correct, a wrong, both, a no-answer rollout; ``yield``: the share with
    both), rollouts (``accuracy``: the share correct, rounded; ``outcomes``: per grade, in first-seen
    order; ``formats``: per answer format, every format listed), truncations and generated tokens."""
    wrong_grades = {"wrong", "no_answer"} if no_answer_is_wrong else {"wrong"}
    per_problem: Counter = Counter()
    outcomes: Counter = Counter()
    formats: Counter = Counter(dict.fromkeys(ANSWER_FORMATS, 0))
    truncated = tokens = 0
    for r in records:
        grades = r.get("grades", [])
        correct, wrong = "correct" in grades, not wrong_grades.isdisjoint(grades)
        per_problem.update(with_correct=correct, with_wrong=wrong, with_both=correct and wrong,
                           with_no_answer="no_answer" in grades)
        outcomes.update(grades)
        formats.update(r.get("formats", []))
        truncated += sum(f == "length" for f in r.get("finish_reasons", []))
        tokens += sum(r.get("completion_tokens", []))
    problems, rollouts = len(records), sum(outcomes.values())
    return {
        "problems": problems,
        "rollouts": rollouts,
        **{k: per_problem[k] for k in ("with_correct", "with_wrong", "with_both", "with_no_answer")},
        "yield": round(per_problem["with_both"] / problems, 4) if problems else 0.0,
        "accuracy": round(outcomes["correct"] / rollouts, 4) if rollouts else 0.0,
        "outcomes": dict(outcomes),
        "formats": dict(formats),
        "truncated": truncated,
        "generated_tokens": tokens,
    }
