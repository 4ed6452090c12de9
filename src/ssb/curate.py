"""Stages 2-3: pick a correct and a wrong trace per problem, let the hinted teacher write
a verified solution.

    ssb curate --run runs/NAME

From ``rollouts.jsonl`` keep the problems with at least one correct and one wrong
rollout (wrong = an extracted answer not equivalent to gold; no-answer rollouts count
as wrong only with ``curate.no_answer_is_wrong``). Per kept problem:

* one correct trace, at random (seeded; untruncated ones preferred);
* a trace of the *most common* wrong answer: wrong answers are grouped by math
  equivalence (:func:`grading.same_answer`: "0.5" and "1/2" are one answer), the
  largest group wins, ties and the trace inside the group are drawn at random (seeded);
* the teacher (the same base model) answers the hinted prompt of
  :func:`prompts.teacher_messages` at ``curate.teacher_temperature``; its reply is kept
  only if :func:`grading.grade` finds it correct and it ended on its own (not truncated),
  with up to ``curate.teacher_retries`` further samples.

Verified pairs go to ``pairs.jsonl``; problems whose teacher never verified go to
``curate_rejects.jsonl`` so a rerun does not retry them. Both are append-only: a killed
run resumes where it stopped, and stops at ``curate.max_pairs`` pairs.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .errors import SSBError
from .generate import Generator, Sampling, derive_seed
from .models import LoadedModel
from .rundir import JsonlWriter, Run, read_jsonl

log = logging.getLogger(__name__)

OUTPUT = "pairs.jsonl"
REJECTS = "curate_rejects.jsonl"
FORMATS = ("boxed", "hash", "answer_is", "other", "none")


class CurateError(SSBError, RuntimeError):
    pass


# ----------------------------------------------------------------------------- trace selection


@dataclass
class Selection:
    correct_index: int
    wrong_index: int
    wrong_answer: str | None  # None: a no-answer trace (no_answer_is_wrong)
    wrong_count: int  # rollouts in the chosen wrong-answer group
    wrong_groups: int  # distinct wrong answers


def group_answers(answers: list[tuple[int, str | None]], same=None) -> list[list[int]]:
    """Group rollout indices by equivalent answer (``same(a, b)``; default
    :func:`grading.same_answer`). ``None`` answers (no answer) form their own group."""
    if same is None:
        from .grading import same_answer as same
    groups: list[tuple[str | None, list[int]]] = []
    for idx, ans in answers:
        for rep, members in groups:
            if (rep is None and ans is None) or (rep is not None and ans is not None and same(rep, ans)):
                members.append(idx)
                break
        else:
            groups.append((ans, [idx]))
    return [members for _, members in groups]


def select_traces(row: dict, rng: random.Random, no_answer_is_wrong: bool = False, same=None) -> Selection | None:
    """The correct and most-common-wrong traces of one rollout record, or None when the
    problem lacks a correct or a wrong rollout."""
    grades = row["grades"]
    finish = row.get("finish_reasons") or ["stop"] * len(grades)
    correct = [i for i, g in enumerate(grades) if g == "correct"]
    wrong_ok = ("wrong", "no_answer") if no_answer_is_wrong else ("wrong",)
    wrong = [i for i, g in enumerate(grades) if g in wrong_ok]
    if not correct or not wrong:
        return None
    finished = [i for i in correct if finish[i] == "stop"]
    ci = rng.choice(finished or correct)
    answers = [(i, row["extracted"][i] if grades[i] == "wrong" else None) for i in wrong]
    groups = group_answers(answers, same)
    top = max(len(g) for g in groups)
    group = rng.choice([g for g in groups if len(g) == top])
    wi = rng.choice(group)
    wa = row["extracted"][wi] if grades[wi] == "wrong" else None
    return Selection(ci, wi, wa, len(group), len(groups))


def funnel(rows: list[dict], no_answer_is_wrong: bool) -> dict[str, Any]:
    """Problems in, with a correct rollout, with a wrong one, with both; format mix."""
    out = Counter()
    formats = Counter({f: 0 for f in FORMATS})
    wrong_ok = {"wrong", "no_answer"} if no_answer_is_wrong else {"wrong"}
    for r in rows:
        g = set(r["grades"])
        out["problems_in"] += 1
        out["with_correct"] += "correct" in g
        out["with_wrong"] += bool(g & wrong_ok)
        out["with_no_answer"] += "no_answer" in g
        out["with_both"] += "correct" in g and bool(g & wrong_ok)
        formats.update(r.get("formats", []))
    return {**{k: out[k] for k in ("problems_in", "with_correct", "with_wrong", "with_no_answer", "with_both")},
            "rollout_formats": dict(formats)}


# ----------------------------------------------------------------------------- records


def pair_record(row: dict, sel: Selection, student_msgs, teacher_msgs, comp, grade, attempts: int,
                tokens: int, formats: list[str], mode: str) -> dict[str, Any]:
    problem = row["problem"]
    return {
        "id": row["id"],
        "problem": problem,
        "student_messages": student_msgs,
        "teacher_messages": teacher_msgs,
        "solution": comp.text,
        "answer": problem["answer"],
        "correct_index": sel.correct_index,
        "wrong_index": sel.wrong_index,
        "wrong_answer": sel.wrong_answer,
        "wrong_count": sel.wrong_count,
        "wrong_groups": sel.wrong_groups,
        "hint_context": mode,
        "teacher_attempts": attempts,
        "teacher_tokens": tokens,
        "teacher_formats": formats,
        "solution_extracted": grade.extracted,
        "solution_tokens": comp.completion_tokens,
    }


# ----------------------------------------------------------------------------- the stage


def run_curate(run: Run, loaded: LoadedModel | None = None, generator: Generator | None = None) -> dict:
    """Build ``pairs.jsonl`` from ``rollouts.jsonl``; return the funnel stats."""
    from .data import Problem
    from .grading import grade
    from .prompts import check_teacher_template, student_messages, teacher_messages

    cfg, cc = run.cfg, run.cfg.curate
    mode = cc.hint_context
    if cc.teacher_template:
        check_teacher_template(cc.teacher_template, mode)
    rollouts = run.file("rollouts.jsonl")
    if not rollouts.exists():
        raise CurateError(f"{rollouts} not found: run `ssb rollout --run {run.path}` first")
    pairs_path, rejects_path = run.file(OUTPUT), run.file(REJECTS)
    with run.stage_run("curate") as info:
        rows = read_jsonl(rollouts)
        candidates: list[tuple[dict, Selection]] = []
        for row in rows:
            sel = select_traces(row, random.Random(derive_seed(cc.seed, row["id"])), cc.no_answer_is_wrong)
            if sel is not None:
                candidates.append((row, sel))
        if not candidates:
            log.warning("curate: no problem has both a correct and a wrong rollout (%d problems); try easier "
                        "data, a larger rollout.k, curate.no_answer_is_wrong=true, or a stronger model", len(rows))
        pairs_path.touch()  # downstream stages find the (possibly empty) file
        done = {r["id"] for r in read_jsonl(pairs_path)} | {r["id"] for r in read_jsonl(rejects_path)}
        n_pairs = len(read_jsonl(pairs_path))
        todo = [c for c in candidates if c[0]["id"] not in done]
        cap = cc.max_pairs if cc.max_pairs is not None else len(candidates)
        sampling = Sampling(n=1, temperature=cc.teacher_temperature, top_k=cc.teacher_top_k,
                            max_new_tokens=cfg.generation.max_new_tokens, seed=cc.seed)
        new_tokens, gen_seconds = 0, 0.0
        if todo and n_pairs < cap:
            if generator is None:
                from .rollout import load_generator

                generator, loaded = load_generator(run, loaded)
            size = max(1, cfg.generation.batch_size)
            with JsonlWriter(pairs_path) as pairs, JsonlWriter(rejects_path) as rejects:
                pos = 0
                while pos < len(todo) and n_pairs < cap:
                    chunk = todo[pos : pos + min(size, cap - n_pairs)]
                    pos += len(chunk)
                    state = []
                    for row, sel in chunk:
                        problem = Problem.from_dict(row["problem"])
                        msgs = teacher_messages(
                            cfg.prompt, problem.question, row["completions"][sel.correct_index],
                            row["completions"][sel.wrong_index], sel.wrong_answer, mode, cc.teacher_template)
                        state.append({"row": row, "sel": sel, "problem": problem, "msgs": msgs,
                                      "tokens": 0, "formats": [], "reasons": []})
                    pending = state
                    for attempt in range(1 + max(0, cc.teacher_retries)):
                        if not pending:
                            break
                        t0 = time.time()
                        outs = generator.generate([s["msgs"] for s in pending], sampling, progress=f"teacher (try {attempt + 1})",
                                                  seeds=[derive_seed(cc.seed, s["row"]["id"], attempt) for s in pending])
                        gen_seconds += time.time() - t0
                        still = []
                        for s, (comp,) in zip(pending, outs):
                            g = grade(s["problem"], comp.text)
                            s["tokens"] += comp.completion_tokens
                            s["formats"].append(g.fmt)
                            new_tokens += comp.completion_tokens
                            ok = g.correct and comp.finish_reason == "stop"
                            if ok and n_pairs < cap:
                                pairs.write(pair_record(
                                    s["row"], s["sel"], student_messages(cfg.prompt, s["problem"].question),
                                    s["msgs"], comp, g, attempt + 1, s["tokens"], s["formats"], mode))
                                n_pairs += 1
                            elif not ok:
                                s["reasons"].append("truncated" if comp.finish_reason == "length" else g.outcome.value)
                                still.append(s)
                        pending = still
                    for s in pending:
                        rejects.write({"id": s["row"]["id"], "attempts": len(s["reasons"]), "reasons": s["reasons"],
                                       "teacher_tokens": s["tokens"], "teacher_formats": s["formats"],
                                       "hint_context": mode})
        stats = curate_stats(rows, read_jsonl(pairs_path), read_jsonl(rejects_path), cc.no_answer_is_wrong)
        stats.update(candidates=len(candidates), max_pairs=cc.max_pairs, hint_context=mode,
                     max_pairs_reached=cc.max_pairs is not None and stats["pairs_written"] >= cc.max_pairs,
                     new_teacher_tokens=new_tokens,
                     tokens_per_s=round(new_tokens / gen_seconds, 1) if gen_seconds > 0 else None)
        info.update(stats)
    return stats


def curate_stats(rows: list[dict], pairs: list[dict], rejects: list[dict], no_answer_is_wrong: bool) -> dict:
    stats = funnel(rows, no_answer_is_wrong)
    teacher_formats = Counter({f: 0 for f in FORMATS})
    reasons: Counter = Counter()
    for r in pairs + rejects:
        teacher_formats.update(r.get("teacher_formats", []))
    for r in rejects:
        reasons.update(r.get("reasons", []))
    stats.update(
        teacher_tried=len(pairs) + len(rejects),
        teacher_verified=len(pairs),
        teacher_failed=len(rejects),
        teacher_fail_reasons=dict(reasons),
        pairs_written=len(pairs),
        teacher_formats=dict(teacher_formats),
        teacher_tokens=sum(r.get("teacher_tokens", 0) for r in pairs + rejects),
        verified_on_retry=sum(r.get("teacher_attempts", 1) > 1 for r in pairs),
    )
    return stats
