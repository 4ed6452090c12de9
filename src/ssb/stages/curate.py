"""Stage 2: pick the traces the hinted teacher will see.

    ssb curate --run runs/NAME

From ``rollouts.jsonl`` keep the problems with at least one correct and one wrong
rollout (wrong = an extracted answer not equivalent to gold; no-answer rollouts count
as wrong only with ``curate.no_answer_is_wrong``); with ``curate.keep: any_wrong`` also
those whose rollouts are all wrong (beyond the paper: the teacher then generates their
solution with the verified gold answer as the hint). Per kept problem:

* one correct trace, at random (seeded; untruncated ones preferred), and the list of
  every other finished correct trace (``solution: rollout`` uses them); none
  (``correct_index: null``, ``correct_indices: []``) for a problem without one;
* a trace of the *most common* wrong answer: wrong answers are grouped by math
  equivalence (:func:`grading.same_answer`: "0.5" and "1/2" are one answer), the
  largest group wins, ties and the trace inside the group are drawn at random (seeded).

The choice goes to ``selections.jsonl``; the teacher stage (``teacher.py``) writes and
vets the solutions.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import SSBError
from ..generation.engine import derive_seed
from ..grading.grade import same_answer
from ..report.funnel import rollout_counts
from ..rundir.jsonl import atomic_write_text, read_jsonl
from ..rundir.run import Run

log = logging.getLogger(__name__)

OUTPUT = "selections.jsonl"


class CurateError(SSBError, RuntimeError):
    pass


# ----------------------------------------------------------------------------- trace selection


@dataclass
class Selection:
    correct_index: int | None  # None: no correct rollout (kept only with keep="any_wrong")
    wrong_index: int
    wrong_answer: str | None  # None: a no-answer trace (no_answer_is_wrong)
    wrong_count: int  # rollouts in the chosen wrong-answer group
    wrong_groups: int  # distinct wrong answers


def group_answers(answers: list[tuple[int, str | None]], same=None) -> list[list[int]]:
    """Group rollout indices by equivalent answer (``same(a, b)``; default
    :func:`grading.same_answer`). ``None`` answers (no answer) form their own group."""
    if same is None:
        same = same_answer
    groups: list[tuple[str | None, list[int]]] = []
    for idx, ans in answers:
        for rep, members in groups:
            if (rep is None and ans is None) or (rep is not None and ans is not None and same(rep, ans)):
                members.append(idx)
                break
        else:
            groups.append((ans, [idx]))
    return [members for _, members in groups]


def select_traces(row: dict, rng: random.Random, no_answer_is_wrong: bool = False, same=None,
                  keep: str = "both") -> Selection | None:
    """The correct and most-common-wrong traces of one rollout record, or None when the
    problem lacks a wrong rollout, or a correct one with ``keep="both"``; with
    ``keep="any_wrong"`` a problem without a correct rollout gets ``correct_index=None``."""
    grades = row["grades"]
    finish = row.get("finish_reasons") or ["stop"] * len(grades)
    correct = [i for i, g in enumerate(grades) if g == "correct"]
    wrong_ok = ("wrong", "no_answer") if no_answer_is_wrong else ("wrong",)
    wrong = [i for i, g in enumerate(grades) if g in wrong_ok]
    if not wrong or (not correct and keep != "any_wrong"):
        return None
    finished = [i for i in correct if finish[i] == "stop"]
    ci = rng.choice(finished or correct) if correct else None
    answers = [(i, row["extracted"][i] if grades[i] == "wrong" else None) for i in wrong]
    groups = group_answers(answers, same)
    top = max(len(g) for g in groups)
    group = rng.choice([g for g in groups if len(g) == top])
    wi = rng.choice(group)
    wa = row["extracted"][wi] if grades[wi] == "wrong" else None
    return Selection(ci, wi, wa, len(group), len(groups))


def funnel(rows: list[dict], no_answer_is_wrong: bool) -> dict[str, Any]:
    """Problems in, with a correct rollout, with a wrong one, with both; format mix
    (:func:`funnel.rollout_counts` under curate's manifest names)."""
    c = rollout_counts(rows, no_answer_is_wrong)
    counts = {k: c[k] for k in ("with_correct", "with_wrong", "with_no_answer", "with_both")}
    return {"problems_in": c["problems"], **counts, "rollout_formats": c["formats"]}


# ----------------------------------------------------------------------------- the stage


def selection_record(row: dict, sel: Selection) -> dict[str, Any]:
    grades = row["grades"]
    finish = row.get("finish_reasons") or ["stop"] * len(grades)
    return {
        "id": row["id"],
        "correct_index": sel.correct_index,
        "wrong_index": sel.wrong_index,
        "wrong_answer": sel.wrong_answer,
        "wrong_count": sel.wrong_count,
        "wrong_groups": sel.wrong_groups,
        # every finished correct rollout, the chosen one first (solution=rollout scores these); [] without one
        "correct_indices": ([] if sel.correct_index is None else [sel.correct_index])
        + [i for i, g in enumerate(grades) if g == "correct" and finish[i] == "stop" and i != sel.correct_index],
    }


def run_curate(run: Run) -> dict:
    """Write ``selections.jsonl`` (one line per problem with a correct and a wrong rollout,
    and with ``curate.keep: any_wrong`` per problem with only wrong ones) from
    ``rollouts.jsonl``; return the funnel counts (``kept_without_correct`` too with
    ``any_wrong``). Cheap and deterministic: it is always recomputed in full."""
    cc = run.cfg.curate
    rollouts = run.file("rollouts.jsonl")
    if not rollouts.exists():
        raise CurateError(f"{rollouts} not found: run `ssb rollout --run {run.path}` first")
    with run.stage_run("curate") as info:
        rows = read_jsonl(rollouts)
        records = []
        for row in rows:
            sel = select_traces(row, random.Random(derive_seed(cc.seed, row["id"])), cc.no_answer_is_wrong,
                                keep=cc.keep)
            if sel is not None:
                records.append(selection_record(row, sel))
        if not records:
            need = "a wrong rollout" if cc.keep == "any_wrong" else "both a correct and a wrong rollout"
            log.warning("curate: no problem has %s (%d problems); try easier data, a larger rollout.k, "
                        "curate.no_answer_is_wrong=true, or a stronger model", need, len(rows))
        atomic_write_text(run.file(OUTPUT), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        stats = funnel(rows, cc.no_answer_is_wrong)
        stats.update(selected=len(records),
                     wrong_group_sizes=dict(Counter(r["wrong_count"] for r in records)),
                     with_second_correct=sum(len(r["correct_indices"]) > 1 for r in records))
        if cc.keep == "any_wrong":  # only then: with the paper's "both" the manifest and report are unchanged
            stats["kept_without_correct"] = sum(r["correct_index"] is None for r in records)
        info.update(stats)
    return stats
