"""stages/rollout.py + stages/curate.py: files, stats, trace selection, resume after kill -9
(teacher: test_teacher.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssb.config import RunConfig
from ssb.generation.engine import Completion
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run
from ssb.stages.curate import group_answers, run_curate, select_traces
from ssb.stages.rollout import run_rollout

EASY = [
    ("What is 2 + 3?", "5"), ("What is 10 - 4?", "6"), ("What is 3 * 3?", "9"), ("What is 8 / 2?", "4"),
    ("What is 1 + 1?", "2"), ("What is 7 + 2?", "9"), ("What is 5 * 2?", "10"), ("What is 9 - 3?", "6"),
    ("What is 6 + 6?", "12"), ("What is 4 * 4?", "16"), ("What is 20 - 5?", "15"), ("Name the colour of the sky.", "blue sky"),
]


def write_problems(path: Path, items=EASY) -> Path:
    with path.open("w") as f:
        for i, (q, a) in enumerate(items):
            f.write(json.dumps({"id": f"p{i:02d}", "question": q, "answer": a}) + "\n")
    return path


def make_run(tmp_path: Path, model: str, name: str = "r", **over) -> Run:
    data = write_problems(tmp_path / "problems.jsonl")
    cfg = RunConfig.model_validate({
        "name": name, "runs_dir": str(tmp_path / "runs"),
        "model": {"name_or_path": model, "device": "cpu"},
        "data": {"source": str(data), "id_field": "id", "shuffle": False},
        "generation": {"batch_size": 4, "max_new_tokens": 12},
        "rollout": {"k": 2, "temperature": 1.0, "top_k": 50, "seed": 3},
        **over,
    })
    return Run.create(cfg)


def lines(path: Path) -> list[dict]:
    return read_jsonl(path)


# ----------------------------------------------------------------------------- trace selection


def test_wrong_answers_group_by_equivalence():
    groups = group_answers([(0, "0.5"), (1, "3"), (2, "1/2"), (3, "\\frac{1}{2}"), (4, None), (5, "3.0")])
    assert sorted(map(sorted, groups)) == [[0, 2, 3], [1, 5], [4]]


def test_select_traces_picks_the_most_common_wrong_answer():
    row = {
        "grades": ["wrong", "correct", "wrong", "wrong", "no_answer", "wrong", "correct"],
        "extracted": ["3", "7", "0.5", "1/2", None, "\\frac{1}{2}", "7"],
        "finish_reasons": ["stop", "length", "stop", "stop", "stop", "stop", "stop"],
    }
    for seed in range(5):
        sel = select_traces(row, random.Random(seed))
        assert sel.wrong_index in (2, 3, 5) and sel.wrong_count == 3 and sel.wrong_groups == 2
        assert sel.correct_index == 6  # the untruncated correct trace is preferred
    # no-answer rollouts are not wrong unless configured; three of them then win
    row2 = {"grades": ["correct", "no_answer", "no_answer", "no_answer", "wrong"],
            "extracted": ["7", None, None, None, "9"], "finish_reasons": ["stop"] * 5}
    assert select_traces(row2, random.Random(0)).wrong_index == 4
    sel = select_traces(row2, random.Random(0), no_answer_is_wrong=True)
    assert sel.wrong_index in (1, 2, 3) and sel.wrong_answer is None and sel.wrong_count == 3
    # ties are drawn at random, reproducibly
    tie = {"grades": ["correct", "wrong", "wrong"], "extracted": ["7", "8", "9"], "finish_reasons": ["stop"] * 3}
    picks = {select_traces(tie, random.Random(s)).wrong_index for s in range(20)}
    assert picks == {1, 2}
    assert select_traces(tie, random.Random(4)) == select_traces(tie, random.Random(4))
    assert select_traces({"grades": ["correct"], "extracted": ["7"]}, random.Random(0)) is None


def test_keep_any_wrong_also_selects_problems_without_a_correct_rollout():
    all_wrong = {"grades": ["wrong", "wrong", "no_answer", "wrong"], "extracted": ["3", "1/2", None, "0.5"],
                 "finish_reasons": ["stop"] * 4}
    assert select_traces(all_wrong, random.Random(0)) is None  # keep="both": the paper
    sel = select_traces(all_wrong, random.Random(0), keep="any_wrong")
    assert sel.correct_index is None and sel.wrong_index in (1, 3) and (sel.wrong_count, sel.wrong_groups) == (2, 2)
    # a wrong rollout is still needed; a problem with a correct one is selected exactly as with "both"
    no_wrong = {"grades": ["no_answer", "no_answer"], "extracted": [None, None]}
    assert select_traces(no_wrong, random.Random(0), keep="any_wrong") is None
    assert select_traces(no_wrong, random.Random(0), no_answer_is_wrong=True, keep="any_wrong").correct_index is None
    mixed = {"grades": ["correct", "wrong", "wrong", "correct"], "extracted": ["7", "8", "9", "7"]}
    for seed in range(10):
        assert select_traces(mixed, random.Random(seed), keep="any_wrong") == select_traces(mixed, random.Random(seed))


# ----------------------------------------------------------------------------- rollout (tiny model)


def test_rollout_writes_records_and_stats(tmp_path, tiny_model_dir, tiny_model):
    run = make_run(tmp_path, str(tiny_model_dir))
    stats = run_rollout(run, loaded=tiny_model)
    recs = lines(run.file("rollouts.jsonl"))
    assert [r["id"] for r in recs] == [f"p{i:02d}" for i in range(len(EASY))]
    for r in recs:
        assert len(r["completions"]) == len(r["grades"]) == len(r["extracted"]) == 2
        assert len(r["formats"]) == len(r["finish_reasons"]) == len(r["completion_tokens"]) == 2
        assert set(r["problem"]) >= {"id", "question", "answer"}
    assert stats["problems"] == len(EASY) and stats["rollouts"] == 2 * len(EASY)
    assert stats["bad_gold"] == 1 and stats["bad_gold_ids"] == ["p11"]
    assert stats["generated_tokens"] == sum(sum(r["completion_tokens"]) for r in recs)
    assert set(stats["formats"]) >= {"boxed", "hash", "answer_is", "none"}
    m = run.stage("rollout")
    assert m["status"] == "done" and m["problems"] == len(EASY) and "with_both" in m and "tokens_per_s" in m
    # rerunning is a no-op; a fresh run with the same seed is identical (hf is deterministic)
    again = run_rollout(run, loaded=tiny_model)
    assert again["new_problems"] == 0 and len(lines(run.file("rollouts.jsonl"))) == len(EASY)
    other = make_run(tmp_path, str(tiny_model_dir), name="r2")
    run_rollout(other, loaded=tiny_model)
    assert [r["completions"] for r in lines(other.file("rollouts.jsonl"))] == [r["completions"] for r in recs]


ROLLOUT_SCRIPT = """
import sys, time
from ssb.rundir.run import Run
from ssb.generation.factory import load_generator
from ssb.stages.rollout import run_rollout
run = Run.open(sys.argv[1])
gen, loaded = load_generator(run)
class Slow:
    def generate(self, *a, **k):
        time.sleep(float(sys.argv[2]))
        return gen.generate(*a, **k)
run_rollout(run, loaded=loaded, generator=Slow())
"""


def _kill_after_first_lines(cmd: list[str], out: Path, timeout: float = 120, env: dict | None = None) -> int:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            if out.exists() and out.read_text().count("\n") >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
            if proc.poll() is not None:
                raise AssertionError(f"script ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            raise AssertionError("no line written in time")
    finally:
        proc.wait()
    return out.read_text().count("\n")


def test_rollout_resumes_after_kill(tmp_path, tiny_model_dir, tiny_model):
    run = make_run(tmp_path, str(tiny_model_dir), name="killed")
    script = tmp_path / "roll.py"
    script.write_text(ROLLOUT_SCRIPT)
    out = run.file("rollouts.jsonl")
    partial = _kill_after_first_lines([sys.executable, str(script), str(run.path), "0.5"], out)
    assert 1 <= partial < len(EASY)
    stats = run_rollout(Run.open(run.path), loaded=tiny_model)
    recs = lines(out)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) == len(EASY) == stats["problems"]
    # same content as an uninterrupted run: per-problem seeding
    ref = make_run(tmp_path, str(tiny_model_dir), name="ref")
    run_rollout(ref, loaded=tiny_model)
    by_id = {r["id"]: r["completions"] for r in lines(ref.file("rollouts.jsonl"))}
    assert all(by_id[r["id"]] == r["completions"] for r in recs)


# ----------------------------------------------------------------------------- curate (selection only)


def fake_rollouts(run: Run, unsolved: tuple[int, ...] = ()) -> None:
    """rollouts.jsonl where even problems have two different correct traces and three wrong
    ones (two of them equivalent); odd problems are all correct, except those in
    ``unsolved``, whose five rollouts are all wrong (again "0.5" and "1/2" the most common)."""
    with run.file("rollouts.jsonl").open("w") as f:
        for i, (q, a) in enumerate(EASY[:10]):
            both = i % 2 == 0
            grades = ["correct", "wrong", "wrong", "wrong", "correct"] if both else ["correct"] * 5
            extracted = [a, "0.5", "1/2", "3", a] if both else [a] * 5
            if i in unsolved:
                grades, extracted = ["wrong"] * 5, ["3", "0.5", "1/2", "4", "1/2"]
            f.write(json.dumps({
                "id": f"p{i:02d}", "problem": {"id": f"p{i:02d}", "question": q, "answer": a},
                "completions": [f"Working for trace {j}: 1 + 1 = 2.\nSo the answer is \\boxed{{{e}}}."
                                for j, e in enumerate(extracted)],
                "extracted": extracted, "grades": grades, "formats": ["boxed"] * 5,
                "finish_reasons": ["stop"] * 5, "completion_tokens": [5] * 5,
            }) + "\n")


def test_curate_writes_selections_and_funnel(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, str(tiny_model_dir))
    fake_rollouts(run)
    stats = run_curate(run)
    sels = lines(run.file("selections.jsonl"))
    assert [s["id"] for s in sels] == ["p00", "p02", "p04", "p06", "p08"]
    for s in sels:
        assert s["wrong_answer"] in ("0.5", "1/2") and s["wrong_count"] == 2 and s["wrong_groups"] == 2
        assert s["correct_index"] in (0, 4) and sorted(s["correct_indices"]) == [0, 4]
        assert s["correct_indices"][0] == s["correct_index"]
    assert stats["problems_in"] == 10 and stats["with_correct"] == 10 and stats["with_wrong"] == 5
    assert stats["with_both"] == 5 == stats["selected"] and stats["with_second_correct"] == 5
    assert stats["rollout_formats"]["boxed"] == 50
    assert run.stage("curate")["selected"] == 5
    # deterministic: a rerun writes the same file
    before = run.file("selections.jsonl").read_text()
    run_curate(run)
    assert run.file("selections.jsonl").read_text() == before


def test_curate_keep_any_wrong_counts_the_problems_without_a_correct_rollout(tmp_path, tiny_model_dir):
    from ssb.stages.report import funnel_counts

    both = make_run(tmp_path, str(tiny_model_dir), name="both")
    fake_rollouts(both, unsolved=(1, 3))
    stats = run_curate(both)
    assert stats["selected"] == stats["with_both"] == 5 and "kept_without_correct" not in stats
    assert funnel_counts(both)["kept_without_correct"] is None
    run = make_run(tmp_path, str(tiny_model_dir), name="any", curate={"keep": "any_wrong"})
    fake_rollouts(run, unsolved=(1, 3))
    stats = run_curate(run)
    sels = {s["id"]: s for s in lines(run.file("selections.jsonl"))}
    assert list(sels) == ["p00", "p01", "p02", "p03", "p04", "p06", "p08"]
    for pid in ("p01", "p03"):
        s = sels[pid]
        assert s["correct_index"] is None and s["correct_indices"] == [] and s["wrong_index"] in (1, 2, 4)
        assert s["wrong_answer"] in ("0.5", "1/2") and (s["wrong_count"], s["wrong_groups"]) == (3, 3)
    # the problems with a correct rollout are selected exactly as with keep=both
    assert [s for s in sels.values() if s["correct_index"] is not None] == lines(both.file("selections.jsonl"))
    assert (stats["with_both"], stats["selected"], stats["kept_without_correct"]) == (5, 7, 2)
    assert run.stage("curate")["kept_without_correct"] == 2 and funnel_counts(run)["kept_without_correct"] == 2


# ----------------------------------------------------------------------------- the real embedded model


def test_rollout_curate_teacher_on_embedded_model(tmp_path, embedded_model):
    from ssb.stages.teacher import run_teacher

    items = EASY[:2]
    data = write_problems(tmp_path / "easy.jsonl", items)
    cfg = RunConfig.model_validate({
        "name": "emb", "runs_dir": str(tmp_path / "runs"),
        "data": {"source": str(data), "id_field": "id", "shuffle": False},
        "generation": {"batch_size": 8, "max_new_tokens": 40},
        "rollout": {"k": 3, "temperature": 0.8, "seed": 0},
        "curate": {"no_answer_is_wrong": True},
        "teacher": {"max_pairs": 2, "retries": 0},
    })
    run = Run.create(cfg)
    stats = run_rollout(run, loaded=embedded_model)
    recs = lines(run.file("rollouts.jsonl"))
    assert len(recs) == 2 and stats["rollouts"] == 6 and stats["generated_tokens"] > 0
    assert any(c.strip() for r in recs for c in r["completions"])
    cstats = run_curate(run)
    tstats = run_teacher(run, loaded=embedded_model)
    pairs, rejects = lines(run.file("pairs.jsonl")), lines(run.file("teacher_rejects.jsonl"))
    assert cstats["problems_in"] == 2 and tstats["pairs_written"] == len(pairs)
    assert tstats["teacher_tried"] == cstats["with_both"] == len(pairs) + len(rejects)
    for p in pairs:
        assert p["teacher_messages"][0]["role"] == "system" and p["solution"]
        assert isinstance(p["student_logprob"], float) and p["student_logprob"] < 0
    for r in rejects:  # every rejected reply names its gate and why
        assert r["rejected_replies"] and all(x["gate"] and x["reason"] for x in r["rejected_replies"])


def test_one_funnel_count_for_rollout_curate_and_report(tmp_path):
    """funnel.rollout_counts is the count the rollout manifest, curate's funnel and the report
    all show; a no-answer rollout counts as wrong only with no_answer_is_wrong."""
    from ssb.report.funnel import rollout_counts
    from ssb.stages.curate import funnel
    from ssb.stages.report import funnel_counts

    recs = [{"grades": ["correct", "no_answer"], "formats": ["boxed", "none"], "finish_reasons": ["stop", "length"],
             "completion_tokens": [3, 9]},
            {"grades": ["correct", "wrong"], "formats": ["boxed", "hash"], "completion_tokens": [2, 2]},
            {"grades": ["wrong", "wrong"], "formats": ["other", "other"]}]
    c = rollout_counts(recs)
    assert (c["problems"], c["rollouts"], c["with_correct"], c["with_wrong"], c["with_both"], c["with_no_answer"]) \
        == (3, 6, 2, 2, 1, 1)
    assert (c["yield"], c["accuracy"], c["truncated"], c["generated_tokens"]) == (0.3333, 0.3333, 1, 16)
    assert c["outcomes"] == {"correct": 2, "no_answer": 1, "wrong": 3} and list(c["outcomes"])[0] == "correct"
    assert c["formats"] == {"boxed": 2, "hash": 1, "answer_is": 0, "other": 2, "none": 1}
    lenient = rollout_counts(recs, no_answer_is_wrong=True)
    assert (lenient["with_wrong"], lenient["with_both"]) == (3, 2)
    assert rollout_counts([])["yield"] == 0.0 and rollout_counts([])["formats"]["boxed"] == 0

    assert funnel(recs, True) == {"problems_in": 3, "with_correct": 2, "with_wrong": 3, "with_no_answer": 1,
                                  "with_both": 2, "rollout_formats": lenient["formats"]}
    run = Run.create(RunConfig(name="f", runs_dir=str(tmp_path), curate={"no_answer_is_wrong": True}))
    with run.file("rollouts.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    f = funnel_counts(run)
    assert (f["problems"], f["rollouts"], f["with_correct"], f["with_wrong"], f["mixed"]) == (3, 6, 2, 3, 2)
    assert f["rollout_accuracy"] == 2 / 6 and f["outcomes"] == c["outcomes"] and f["pairs"] is None
