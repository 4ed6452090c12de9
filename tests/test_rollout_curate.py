"""rollout.py + curate.py: files, stats, trace selection, resume after kill -9."""

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
from ssb.curate import group_answers, run_curate, select_traces
from ssb.generate import Completion
from ssb.rollout import run_rollout
from ssb.rundir import Run, read_jsonl

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
from ssb.rundir import Run
from ssb.rollout import run_rollout, load_generator
run = Run.open(sys.argv[1])
gen, loaded = load_generator(run)
class Slow:
    def generate(self, *a, **k):
        time.sleep(float(sys.argv[2]))
        return gen.generate(*a, **k)
run_rollout(run, loaded=loaded, generator=Slow())
"""


def _kill_after_first_lines(cmd: list[str], out: Path, timeout: float = 120) -> int:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


# ----------------------------------------------------------------------------- curate (scripted teacher)


class ScriptedTeacher:
    """Answers the hinted prompt with the gold answer, except for problems listed in
    ``fail`` (wrong answer) and ``late`` (wrong at first, right on the retry)."""

    backend = "fake"

    def __init__(self, gold: dict[str, str], fail=(), late=(), delay: float = 0.0):
        self.gold, self.fail, self.late, self.delay = gold, set(fail), set(late), delay
        self.calls: list[list[dict]] = []
        self.tries: dict[str, int] = {}

    def generate(self, conversations, sampling, progress=True, seeds=None):
        time.sleep(self.delay)
        out = []
        for conv in conversations:
            self.calls.append(conv)
            q = next(q for q, _ in EASY if q in conv[-1]["content"])
            a = self.gold[q]
            self.tries[q] = self.tries.get(q, 0) + 1
            if q in self.fail or (q in self.late and self.tries[q] == 1):
                a = "999"
            text = f"Step 1: think.\nSo the answer is \\boxed{{{a}}}."
            out.append([Completion(text, [1, 2, 3], "stop", 50, 3)])
        return out


def fake_rollouts(run: Run) -> None:
    """rollouts.jsonl where even problems have a correct and two equivalent wrong answers."""
    with run.file("rollouts.jsonl").open("w") as f:
        for i, (q, a) in enumerate(EASY[:10]):
            both = i % 2 == 0
            grades = ["correct", "wrong", "wrong", "wrong"] if both else ["correct"] * 4
            extracted = [a, "0.5", "1/2", "3"] if both else [a] * 4
            f.write(json.dumps({
                "id": f"p{i:02d}", "problem": {"id": f"p{i:02d}", "question": q, "answer": a},
                "completions": [f"trace {j} \\boxed{{{e}}}" for j, e in enumerate(extracted)],
                "extracted": extracted, "grades": grades, "formats": ["boxed"] * 4,
                "finish_reasons": ["stop"] * 4, "completion_tokens": [5] * 4,
            }) + "\n")


def test_curate_builds_verified_pairs(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, str(tiny_model_dir), curate={"teacher_retries": 1, "max_pairs": 10})
    fake_rollouts(run)
    gold = dict(EASY)
    teacher = ScriptedTeacher(gold, fail=[EASY[2][0]], late=[EASY[4][0]])
    stats = run_curate(run, generator=teacher)
    pairs = lines(run.file("pairs.jsonl"))
    assert [p["id"] for p in pairs] == ["p00", "p06", "p04", "p08"]  # p04 on its retry (chunks of 4)
    p = pairs[0]
    assert p["wrong_answer"] in ("0.5", "1/2") and p["wrong_count"] == 2 and p["correct_index"] == 0
    assert p["teacher_messages"][1]["content"].count("trace ") == 2
    assert p["student_messages"][-1] == {"role": "user", "content": EASY[0][0]}
    assert p["answer"] == "5" and p["hint_context"] == "contrastive" and p["solution"].endswith("\\boxed{5}.")
    assert [q["teacher_attempts"] for q in pairs] == [1, 1, 2, 1]
    assert stats["problems_in"] == 10 and stats["with_correct"] == 10 and stats["with_wrong"] == 5
    assert stats["with_both"] == 5 and stats["teacher_verified"] == 4 and stats["pairs_written"] == 4
    assert stats["teacher_failed"] == 1 and stats["teacher_tokens"] == 3 * (4 + 2 + 2 - 1)
    assert stats["rollout_formats"]["boxed"] == 40 and stats["teacher_formats"]["boxed"] == 7
    assert run.stage("curate")["pairs_written"] == 4
    # a rerun retries nothing
    n_calls = len(teacher.calls)
    run_curate(run, generator=teacher)
    assert len(teacher.calls) == n_calls and len(lines(run.file("pairs.jsonl"))) == 4


@pytest.mark.parametrize("mode", ["correct_only", "none"])
def test_curate_hint_modes_and_max_pairs(tmp_path, tiny_model_dir, mode):
    run = make_run(tmp_path, str(tiny_model_dir), curate={"hint_context": mode, "max_pairs": 2})
    fake_rollouts(run)
    teacher = ScriptedTeacher(dict(EASY))
    stats = run_curate(run, generator=teacher)
    pairs = lines(run.file("pairs.jsonl"))
    assert len(pairs) == 2 and stats["max_pairs_reached"] and len(teacher.calls) == 2
    user = pairs[0]["teacher_messages"][1]["content"]
    assert ("trace 0" in user) == (mode == "correct_only") and "trace 1" not in user
    assert pairs[0]["hint_context"] == mode


CURATE_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from test_rollout_curate import ScriptedTeacher, EASY
from ssb.rundir import Run
from ssb.curate import run_curate
run_curate(Run.open(sys.argv[1]), generator=ScriptedTeacher(dict(EASY), delay=0.7))
"""


def test_curate_resumes_after_kill(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, str(tiny_model_dir), generation={"batch_size": 1, "max_new_tokens": 12})
    fake_rollouts(run)
    script = tmp_path / "cur.py"
    script.write_text(CURATE_SCRIPT)
    out = run.file("pairs.jsonl")
    partial = _kill_after_first_lines([sys.executable, str(script), str(run.path), str(Path(__file__).parent)], out)
    assert 1 <= partial < 5
    stats = run_curate(Run.open(run.path), generator=ScriptedTeacher(dict(EASY)))
    ids = [p["id"] for p in lines(out)]
    assert ids == ["p00", "p02", "p04", "p06", "p08"] and stats["pairs_written"] == 5


# ----------------------------------------------------------------------------- the real embedded model


def test_rollout_and_curate_on_embedded_model(tmp_path, embedded_model):
    items = EASY[:2]
    data = write_problems(tmp_path / "easy.jsonl", items)
    cfg = RunConfig.model_validate({
        "name": "emb", "runs_dir": str(tmp_path / "runs"),
        "data": {"source": str(data), "id_field": "id", "shuffle": False},
        "generation": {"batch_size": 8, "max_new_tokens": 40},
        "rollout": {"k": 3, "temperature": 0.8, "seed": 0},
        "curate": {"max_pairs": 2, "teacher_retries": 0, "no_answer_is_wrong": True},
    })
    run = Run.create(cfg)
    stats = run_rollout(run, loaded=embedded_model)
    recs = lines(run.file("rollouts.jsonl"))
    assert len(recs) == 2 and stats["rollouts"] == 6 and stats["generated_tokens"] > 0
    assert any(c.strip() for r in recs for c in r["completions"])
    cstats = run_curate(run, loaded=embedded_model)
    assert run.file("pairs.jsonl").exists()
    assert cstats["problems_in"] == 2 and cstats["pairs_written"] == len(lines(run.file("pairs.jsonl")))
    assert cstats["teacher_tried"] == cstats["with_both"]
    for p in lines(run.file("pairs.jsonl")):
        assert p["teacher_messages"][0]["role"] == "system" and p["solution"]
