"""SDFT baseline: TRL's SDFTTrainer on the tiny model, on the problems SSB's curation selected, the
frozen model shown SSB's hint (teacher.hint) as its privileged context; held to SSB's FLOPs (the
rollouts it reads its hints from included); resumed from a checkpoint with its counts and clock."""

from __future__ import annotations

import json

import pytest

from ssb.config import RunConfig, load_config

from ssb.errors import ConfigError
from ssb.rundir.jsonl import JsonlWriter, read_jsonl
from ssb.rundir.run import Run

QUESTIONS = [f"What is {i} + 1?" for i in range(4)]


def _run(tmp_path, tiny_model_dir, teacher=None, curate=None, unsolved=False, **sdft) -> Run:
    """A run whose rollouts (2 per problem) have a correct and a wrong answer each (with ``unsolved``
    the last problem only wrong ones), curated by the real curate stage."""
    from ssb.stages.curate import run_curate

    cfg = RunConfig.model_validate({
        "name": "s", "runs_dir": str(tmp_path),
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"source": "gsm8k", "limit": 4},
        "generation": {"max_new_tokens": 8},
        "rollout": {"k": 2},
        "curate": curate or {},
        "teacher": teacher or {"hint": "correct", "template": "{question}\n({correct})"},  # configs/default.yaml's
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "sdft": {"enabled": True, "batch_size": 4, "num_generations": 2, "max_steps": 2, "budget": "steps", **sdft},
    })
    run = Run.create(cfg)
    with JsonlWriter(run.file("rollouts.jsonl")) as w:  # the format rollout.py writes
        for i, q in enumerate(QUESTIONS):
            right = f"{i} + 1 = {i + 1}. The answer is \\boxed{{{i + 1}}}."
            grades = ["wrong", "wrong"] if unsolved and i == 3 else ["correct", "wrong"]
            w.write({"id": f"r{i}", "problem": {"id": f"r{i}", "question": q, "answer": str(i + 1), "solution": None,
                                                "metadata": {}},
                     "completions": [right if grades[0] == "correct" else "\\boxed{9}", f"\\boxed{{{i + 7}}}"],
                     "extracted": [str(i + 1) if grades[0] == "correct" else "9", str(i + 7)], "grades": grades,
                     "formats": ["boxed", "boxed"], "finish_reasons": ["stop", "stop"], "completion_tokens": [14, 5],
                     "prompt_tokens": 40})
    run_curate(run)
    return run


def test_privileged_context_is_ssbs_hint(tmp_path, tiny_model_dir):
    """Each problem's privileged context is the hinted user message SSB's teacher sees (teacher.hint,
    teacher.template); without a correct rollout the problem is SSB's only with curate.keep=any_wrong,
    and then with the gold answer, as SSB's teacher shows it."""
    from ssb.prompts import student_messages
    from ssb.stages.sdft import hinted_problems

    run = _run(tmp_path / "a", tiny_model_dir, unsolved=True)
    rows = {r["id"]: r for r in hinted_problems(run)}
    assert sorted(rows) == ["r0", "r1", "r2"]  # r3 has no correct rollout: curate.keep=both skips it, as for SSB
    assert rows["r1"]["privileged_context"] == "What is 1 + 1?\n(1 + 1 = 2. The answer is \\boxed{2}.)"
    assert rows["r1"]["prompt"] == student_messages(run.cfg.prompt, "What is 1 + 1?")

    run = _run(tmp_path / "b", tiny_model_dir, unsolved=True, curate={"keep": "any_wrong"},
               teacher={"hint": "contrastive"})
    rows = {r["id"]: r for r in hinted_problems(run)}
    assert sorted(rows) == ["r0", "r1", "r2", "r3"]
    assert "## A response that reaches the correct answer\nThe answer is \\boxed{4}.\n" in rows["r3"]["privileged_context"]
    assert "## A response that is incorrect (its final answer, 8, is wrong)\n\\boxed{8}\n" in rows["r1"]["privileged_context"]


def test_sdft_trains_with_the_hinted_teacher_prompt(tmp_path, tiny_model_dir):
    """A few steps of TRL's trainer: the teacher's input is SSB's hinted conversation (compared as text
    and as prompts.teacher_messages' ids) followed by the student's own sampled answer; what each batch
    spends is counted from its masks."""
    from transformers import TrainerCallback

    from ssb.models import load_model
    from ssb.prompts import render_prompt_ids, teacher_messages
    from ssb.stages.sdft import Tally, hinted_problems, make_trainer, sdft_args
    from ssb.training import known_warnings_filtered

    run = _run(tmp_path, tiny_model_dir)
    rows = hinted_problems(run)
    loaded = load_model(run.cfg.model)
    tok = loaded.tokenizer
    seen: list[tuple[list[int], list[int]]] = []  # (teacher prompt ids, answer ids) per sample
    masks = {"teacher": 0, "answer": 0}

    class Capture(TrainerCallback):
        def on_self_distillation_batch_prepared(self, args, state, control, teacher_input_ids=None,
                                                teacher_attention_mask=None, completion_ids=None, **kw):
            n = completion_ids.shape[1]
            masks["teacher"] += int(teacher_attention_mask.sum())
            for ids, mask in zip(teacher_input_ids.tolist(), teacher_attention_mask.tolist()):
                kept = [t for t, m in zip(ids, mask) if m]
                answer_len = sum(mask[-n:])
                masks["answer"] += answer_len
                seen.append((kept[:-answer_len], kept[-answer_len:]))

    param = next(loaded.model.parameters())
    args = sdft_args(run, 2, param.device, param.dtype, 2)
    tally = Tally()
    trainer = make_trainer(run, loaded, rows, args, tally, {"generation": 0.0}, dict, [Capture()])
    with known_warnings_filtered():
        trainer.train()
    assert trainer.state.global_step == 2 and len(seen) == 8  # 2 steps x 4 answers: every problem once, twice
    texts = {tok.decode(p) for p, _ in seen}
    assert ("<|im_start|>system\nYou are a careful math tutor. Solve the problem step by step, then give the final "
            "answer as \\boxed{ANSWER}.<|im_end|>\n<|im_start|>user\nWhat is 1 + 1?\n(1 + 1 = 2. The answer is "
            "\\boxed{2}.)<|im_end|>\n<|im_start|>assistant\n") in texts
    tc = run.cfg.teacher
    want = {tuple(render_prompt_ids(tok, teacher_messages(run.cfg.prompt, q, f"{i} + 1 = {i + 1}. The answer is "
                                                          f"\\boxed{{{i + 1}}}.", f"\\boxed{{{i + 7}}}", str(i + 7),
                                                          tc.hint, tc.template, tc.examples)))
            for i, q in enumerate(QUESTIONS)}
    assert {tuple(p) for p, _ in seen} == want
    assert all(0 < len(a) <= 8 for _, a in seen)
    assert (tally.teacher, tally.generated, tally.completions) == (masks["teacher"], masks["answer"], 8)


def test_sdft_stops_on_ssbs_flops(tmp_path, tiny_model_dir):
    """The default budget: the sdft arm (the rollouts its hints come from, curation, and its own
    sampling, teacher forwards and training) stops once it spent SSB's FLOPs; the curve points lie
    along the part of the budget the rollouts left; the ledger prices both arms alike."""
    from ssb.report.ledger import flops, ledger, model_params
    from ssb.stages.sdft import run_sdft

    run = _run(tmp_path, tiny_model_dir, budget="flops", max_steps=6, curve_points=2)
    params = model_params(run.cfg)
    one_step = flops({"prefill_tokens": 100, "generated_tokens": 32, "forward_tokens": 296, "trained_tokens": 232},
                     params)  # what one step of 4 sampled answers costs here (about: prompts differ by a token)
    rollout = ledger(run, params, all_arms=True)["stages"]["rollout"]["flops"]
    assert rollout == flops({"prefill_tokens": 160, "generated_tokens": 76}, params)
    per_token = flops({"trained_tokens": 1}, params)
    run.set_stage("distill", status="done", trained_tokens=int(1.5 * one_step / per_token))  # SSB: rollout + 1.5 steps
    ssb = ledger(run, params, all_arms=True)["arms"]["ssb"]["flops"]
    info = run_sdft(run)
    assert info["stopped_by"] == "FLOPs budget" and info["steps"] == 2
    assert info["budget_flops"] == ssb and info["budget_spent_before"] == rollout
    counts = {k: info[k] for k in ("prefill_tokens", "generated_tokens", "forward_tokens", "trained_tokens")}
    assert info["flops"] == flops(counts, params) and rollout + info["flops"] >= ssb > rollout + info["flops"] / 2
    assert info["prefill_tokens"] * 2 + info["generated_tokens"] == info["trained_tokens"]
    arm = ledger(run, params)["arms"]["sdft"]
    assert arm["stages"] == ["rollout", "curate", "sdft"] and arm["flops"] == rollout + info["flops"]
    points = json.loads(run.file("sdft_points/points.json").read_text())
    start = rollout / ssb
    assert [p["target"] for p in points] == [round(start + (1 - start) / 2, 6), 1.0]
    assert [p["step"] for p in points] == [1, 2] and (run.file("sdft_points/p2") / "adapter_config.json").exists()
    log = read_jsonl(run.file("sdft_log.jsonl"))
    assert [r["step"] for r in log] == [1, 2] and log[-1]["flops"] == info["flops"]
    meta = json.loads((run.file("sdft") / "adapter_config.json").read_text())
    assert meta["r"] == 4 and set(meta["target_modules"]) == {"q_proj", "v_proj"}


def test_sdft_resumes_from_its_checkpoint(tmp_path, tiny_model_dir):
    """A run killed after its checkpoint goes on from it: the log keeps each step once, and the token
    counts, FLOPs and clock continue from the checkpoint's log line (so a budget counts what was spent)."""
    from ssb.stages.sdft import run_sdft

    run = _run(tmp_path, tiny_model_dir, save_steps=1)
    first = run_sdft(run)
    assert first["steps"] == 2 and first["stopped_by"] == "max_steps" and first["resumed_from"] is None
    run.set_stage("sdft", status="interrupted")
    run.cfg.sdft.max_steps = 3
    second = run_sdft(run)
    assert second["resumed_from"].endswith("checkpoint-2") and second["steps"] == 3
    log = read_jsonl(run.file("sdft_log.jsonl"))
    assert [r["step"] for r in log] == [1, 2, 3]
    for key in ("generated_tokens", "trained_tokens", "forward_tokens", "flops"):
        assert log[2][key] > log[1][key] == pytest.approx(2 * log[0][key], rel=0.2), key
    assert log[2]["seconds"] > log[1]["seconds"] > log[0]["seconds"]
    assert second["trained_tokens"] == log[2]["trained_tokens"] and second["completions"] == 4  # this invocation's


def test_sdft_samples_with_the_ssb_engine(tmp_path, tiny_model_dir):
    """sdft.generator=ssb: ssb's hf engine samples each step's groups in place of TRL's generate; the
    adapter gets its model card."""
    from ssb.report.modelcard import write_model_card
    from ssb.stages.sdft import run_sdft

    run = _run(tmp_path, tiny_model_dir, generator="ssb", max_steps=1)
    info = run_sdft(run)
    assert info["steps"] == 1 and info["completions"] == 4 and 0 < info["generated_tokens"] <= 32
    assert info["generation_seconds"] > 0 and (run.file("sdft") / "adapter_model.safetensors").exists()
    card = write_model_card(run, run.file("sdft"), "sdft").read_text()
    assert "# SDFT baseline of" in card and "`teacher.hint: correct`" in card and "stopped by max_steps" in card


def test_sdft_config():
    cfg = load_config(None, ["sdft.enabled=true"])
    assert cfg.sdft.enabled and cfg.sdft.budget == "flops" and cfg.sdft.seed == cfg.seed
    with pytest.raises(ConfigError, match="distillation_alpha=1"):
        load_config(None, ["sdft.distillation_mode=sampled_token"])
    assert load_config(None, ["sdft.distillation_mode=sampled_token", "sdft.distillation_alpha=1"])
