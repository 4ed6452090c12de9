"""The cross-entropy baselines (stages/sft.py) on the tiny model: what each trains on, the adapter,
the tokens the ledger reads, the per-epoch adapters."""

from __future__ import annotations

import json

from test_teacher_distill import make_run

from ssb.rundir.jsonl import JsonlWriter, read_jsonl
from ssb.signal.alignment import prompt_and_reply_ids
from ssb.stages.sft import rft_examples, run_rft, run_sft, sft_examples


def _rollouts(run) -> None:
    with JsonlWriter(run.file("rollouts.jsonl")) as w:  # the format rollout.py writes
        for i, (grades, finish) in enumerate([(["correct", "correct", "wrong"], ["stop", "stop", "stop"]),
                                              (["wrong", "correct", "correct"], ["stop", "length", "stop"]),
                                              (["wrong", "wrong", "no_answer"], ["stop", "stop", "stop"])]):
            prob = {"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1), "solution": None,
                    "metadata": {}}
            texts = [f"{i} + 1 = {i + 1}. \\boxed{{{i + 1}}}"] * 2 + ["\\boxed{0}"]
            w.write({"id": f"q{i}", "problem": prob, "completions": texts, "grades": grades,
                     "finish_reasons": finish, "completion_tokens": [9, 9, 3], "prompt_tokens": 20})


def test_sft_trains_on_the_teachers_solutions(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir, distill={"epochs": 2, "batch_size": 2, "save_every_epoch": True},
                   lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}, baselines={"sft": True})
    pairs = read_jsonl(run.file("pairs.jsonl"))
    assert [e["reply"] for e in sft_examples(run)] == [p["solution"] for p in pairs]
    info = run_sft(run)
    from ssb.models import load_tokenizer

    tok = load_tokenizer(run.cfg.model)
    seq = sum(sum(map(len, prompt_and_reply_ids(tok, p["student_messages"], p["solution"]))) for p in pairs)
    assert info["examples"] == len(pairs) and info["trained_tokens"] == 2 * seq
    assert (run.file("sft") / "adapter_config.json").exists() and read_jsonl(run.file("sft_log.jsonl"))
    points = json.loads(run.file("sft_epochs/points.json").read_text())
    assert [p["epoch"] for p in points] == [1, 2] and points[0]["trained_tokens"] == seq
    assert (run.file("sft_epochs/epoch-1") / "adapter_config.json").exists()


def test_rft_keeps_distinct_finished_correct_rollouts(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir, distill={"epochs": 1, "batch_size": 2},
                   lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                   baselines={"rft": True, "rft_per_problem": 2})
    _rollouts(run)
    ex = rft_examples(run)
    # q0: two correct but the same text -> one; q1: the correct one cut off at max_new_tokens is left out; q2: none
    assert [e["id"] for e in ex] == ["q0#1", "q1#1"]
    assert ex[0]["messages"][-1]["content"].endswith("What is 0 + 1?")
    info = run_rft(run)
    assert info["examples"] == 2 and info["problems"] == 2 and info["steps"] == 1
    assert (run.file("rft") / "adapter_model.safetensors").exists()
