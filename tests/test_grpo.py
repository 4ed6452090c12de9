"""GRPO baseline: a tiny run trains through TRL's GRPOTrainer on the run's rollout
problems, stops on SSB's token budget, writes the PEFT adapter, the log and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssb.config import RunConfig, load_config
from ssb.rundir.jsonl import JsonlWriter, read_jsonl
from ssb.rundir.run import Run

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, tiny_model_dir, **grpo) -> Run:
    cfg = RunConfig.model_validate({
        "name": "g", "runs_dir": str(tmp_path),
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"source": "gsm8k", "limit": 3},
        "generation": {"max_new_tokens": 8},
        "rollout": {"k": 2},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "grpo": {"batch_size": 4, "max_steps": 3, **grpo},
    })
    run = Run.create(cfg)
    with JsonlWriter(run.file("rollouts.jsonl")) as w:  # the format rollout.py writes
        for i in range(4):
            prob = {"id": f"r{i}", "question": f"What is {i} + 1?", "answer": str(i + 1),
                    "solution": None, "metadata": {}}
            w.write({"id": f"r{i}", "problem": prob, "completions": ["x", "y"], "extracted": [None, None],
                     "grades": ["no_answer", "no_answer"], "formats": ["none", "none"],
                     "finish_reasons": ["stop", "stop"], "completion_tokens": [1, 1]})
    return run


def test_grpo_trains_with_token_budget(tmp_path, tiny_model_dir):
    from ssb.stages.grpo import run_grpo, training_problems

    run = _run(tmp_path, tiny_model_dir, budget="tokens")
    run.set_stage("rollout", status="done", generated_tokens=6)
    run.set_stage("teacher", status="done", teacher_tokens=4)
    assert [p.id for p in training_problems(run)] == ["r0", "r1", "r2", "r3"]

    info = run_grpo(run)
    assert info["budget_tokens"] == 10
    assert info["stopped_by"] == "token budget"
    assert info["generated_tokens"] >= 10 and 1 <= info["steps"] < 3
    assert info["num_generations"] == 2 and info["problems"] == 4

    log = read_jsonl(run.file("grpo_log.jsonl"))
    assert [r["step"] for r in log] == list(range(1, info["steps"] + 1))
    for key in ("reward", "completion_length", "loss", "generated_tokens", "lr"):
        assert key in log[0]
    assert log[-1]["generated_tokens"] == info["generated_tokens"]

    adapter = run.file("grpo")
    meta = json.loads((adapter / "adapter_config.json").read_text())
    assert meta["r"] == 4 and meta["lora_alpha"] == 8 and set(meta["target_modules"]) == {"q_proj", "v_proj"}
    assert (adapter / "adapter_model.safetensors").exists()
    stage = run.stage("grpo")
    assert stage["status"] == "done" and stage["generated_tokens"] == info["generated_tokens"]
    assert stage["train_seconds"] > 0


def test_mixed_problems_are_curations_and_grpo_then_pays_for_the_rollouts(tmp_path, tiny_model_dir):
    """``grpo.problems: mixed``: GRPO's prompts are the problems curation kept, and the ledger charges GRPO
    (and its FLOPs budget's starting point) the rollouts and curation it read them from."""
    from ssb.report.ledger import pays
    from ssb.rundir.table import get_stage
    from ssb.stages.grpo import GRPOError, training_problems
    from ssb.stages.grpo_budget import earlier_stages_spent

    run = _run(tmp_path, tiny_model_dir, problems="mixed")
    with pytest.raises(GRPOError, match="selections.jsonl"):
        training_problems(run)
    with JsonlWriter(run.file("selections.jsonl")) as w:
        for i in (1, 3):
            w.write({"id": f"r{i}", "correct_index": 0, "wrong_index": 1})
    assert [p.id for p in training_problems(run)] == ["r1", "r3"]
    assert "grpo" in pays(run, get_stage("rollout")) and "grpo" in pays(run, get_stage("curate"))
    run.set_stage("rollout", status="done", generated_tokens=8, seconds=3.0)
    assert earlier_stages_spent(run, None, "grpo", "seconds") == 3.0
    plain = _run(tmp_path / "all", tiny_model_dir)
    assert [p.id for p in training_problems(plain)] == ["r0", "r1", "r2", "r3"]
    assert "grpo" not in pays(plain, get_stage("rollout"))
    plain.set_stage("rollout", status="done", generated_tokens=8, seconds=3.0)
    assert earlier_stages_spent(plain, None, "grpo", "seconds") == 0.0


def test_grpo_flops_budget_points_and_generation_time(tmp_path, tiny_model_dir):
    """The default budget: GRPO stops once its FLOPs (ledger.py's rule over the token kinds it
    records) reach SSB's; the curve points are saved where the budget's quarters are crossed; the
    seconds spent generating are measured apart from training."""
    from ssb.report.ledger import flops, ledger, model_params
    from ssb.stages.grpo import run_grpo

    run = _run(tmp_path, tiny_model_dir, max_steps=4, curve_points=2)
    assert run.cfg.grpo.budget == "flops"
    run.set_stage("rollout", status="done")
    params = model_params(run.cfg)
    budget = ledger(run, params, all_arms=True)["arms"]["ssb"]["flops"]
    assert budget == flops({"generated_tokens": 8}, params) == 2 * params["matmul"] * 8  # 4 problems x 2 x 1 token
    info = run_grpo(run)
    assert info["budget_flops"] == budget and info["stopped_by"] == "FLOPs budget" and info["steps"] == 1
    counts = {k: info[k] for k in ("prefill_tokens", "generated_tokens", "forward_tokens", "trained_tokens")}
    assert info["flops"] == flops(counts, params) >= budget
    # TRL trains every completion's prompt + completion; a group's prompt is prefilled once
    prompt_tokens = info["trained_tokens"] - info["generated_tokens"]
    assert prompt_tokens > 0 and info["prefill_tokens"] == prompt_tokens // 2 and info["forward_tokens"] == 0
    assert 0 < info["generation_seconds"] < info["train_seconds"]
    points = json.loads(run.file("grpo_points/points.json").read_text())
    assert [p["point"] for p in points] == [1, 2] and all(p["step"] == 1 for p in points)
    assert (run.file("grpo_points/p1") / "adapter_config.json").exists()
    assert ledger(run, params)["arms"]["grpo"]["flops"] == info["flops"]


def test_grpo_samples_with_the_ssb_engine(tmp_path, tiny_model_dir):
    """grpo.generator=ssb: TRL's rollout_func gets each step's prompts (each repeated once per
    completion) and ssb's engine samples whole groups; training goes on as with TRL's sampling."""
    from ssb.stages.grpo import run_grpo
    from ssb.stages.grpo_rollout import group_prompts

    assert group_prompts(["a", "a", "b", "b", "a"]) == [("a", 2), ("b", 2), ("a", 1)]
    run = _run(tmp_path, tiny_model_dir, budget="steps", max_steps=2, generator="ssb")
    info = run_grpo(run)
    assert info["steps"] == 2 and info["completions"] == 8 and info["generated_tokens"] > 0
    assert info["trained_tokens"] > info["generated_tokens"] and info["generation_seconds"] > 0
    assert (run.file("grpo") / "adapter_model.safetensors").exists()


def test_grpo_rejects_bad_group_size(tmp_path, tiny_model_dir):
    from ssb.stages.grpo import GRPOError, run_grpo

    run = _run(tmp_path, tiny_model_dir, batch_size=3)
    with pytest.raises(GRPOError, match="multiple of num_generations"):
        run_grpo(run)
    assert run.stage("grpo")["status"] == "failed"


def test_reward_is_correctness_only():
    from ssb.data.problem import Problem
    from ssb.stages.grpo import CorrectnessReward

    r = CorrectnessReward()
    pj = json.dumps(Problem("a", "1 + 1 = ?", "2").to_dict())
    comps = [[{"role": "assistant", "content": "so \\boxed{2}"}], [{"role": "assistant", "content": "\\boxed{3}"}],
             [{"role": "assistant", "content": "no answer"}]]
    assert r(prompts=[None] * 3, completions=comps, problem_json=[pj] * 3, completion_ids=[[1, 2], [3], [4]]) \
        == [1.0, 0.0, 0.0]
    assert r.generated_tokens == 4 and r.completions == 3


def test_grpo_time_budget_counts_every_invocation(tmp_path, tiny_model_dir):
    """SSB's side: seconds_total adds an interrupted and a resumed invocation. GRPO's side: a
    run resumed from its checkpoint goes on with its clock, so the budget it spent before the
    kill still counts (without that it would train to max_steps)."""
    from ssb.stages.grpo import run_grpo
    from ssb.stages.grpo_budget import seconds_budget

    run = _run(tmp_path, tiny_model_dir, budget="seconds", max_steps=2, save_steps=1)
    with pytest.raises(KeyboardInterrupt), run.stage_run("distill"):
        raise KeyboardInterrupt
    run.set_stage("distill", seconds=30.0, seconds_total=30.0)  # 30 s spent, then killed
    with run.stage_run("distill"):
        pass
    assert run.stage("distill")["seconds"] < 1 and 30 <= run.stage_seconds("distill") < 31
    run.set_stage("distill", seconds_total=1e6)
    assert seconds_budget(run)[0] == 1e6
    first = run_grpo(run)  # two steps, checkpoints after each
    assert first["steps"] == 2 and first["stopped_by"] == "max_steps"
    spent = read_jsonl(run.file("grpo_log.jsonl"))[-1]["seconds"]
    # the resumed run may train two more steps, but its budget is what the first one already spent
    run.set_stage("distill", seconds_total=spent + 0.001)
    run.set_stage("grpo", status="interrupted")
    run.cfg.grpo.max_steps = 4
    second = run_grpo(run)
    assert second["resumed_from"].endswith("checkpoint-2")
    assert second["steps"] == 3 and second["stopped_by"] == "time budget"
    log = read_jsonl(run.file("grpo_log.jsonl"))
    assert [r["step"] for r in log] == [1, 2, 3] and log[2]["seconds"] > log[1]["seconds"] == spent
    assert run.stage_seconds("grpo") > run.stage("grpo")["seconds"]  # both invocations


def test_force_resets_a_stage_total(tmp_path, tiny_model_dir):
    run = _run(tmp_path, tiny_model_dir)
    run.set_stage("rollout", status="done", seconds=5.0, seconds_total=12.0)
    with run.stage_run("rollout"):
        pass
    assert 12 <= run.stage_seconds("rollout") < 13
    run.set_stage("rollout", status="pending")  # what `ssb run --force rollout` does
    with run.stage_run("rollout"):
        pass
    assert run.stage_seconds("rollout") < 1


@pytest.mark.parametrize("kind, budgets, want, frac", [
    ("flops", {"flops": 200.0}, "flops", 0.5),      # spent 100 FLOPs of 200
    ("flops", {"flops": None}, "steps", 0.25),      # no FLOPs budget (parameters unknown): max_steps rules
    ("tokens", {"tokens": 40}, "tokens", 0.25),     # 10 generated tokens of 40
    ("seconds", {"seconds": 8.0}, "seconds", 0.5),  # 4 s of 8
    ("steps", {}, "steps", 0.25),
    ("none", {}, "steps", 0.25),
])
def test_one_unit_rules_grpo_stop_points_and_bar(kind, budgets, want, frac):
    """The stop rule, the curve points and the progress bar read the Budget in one unit: the budget's when it
    could be computed, else steps (step 1 of max_steps 4 here)."""
    from ssb.stages.grpo_budget import Budget, Spend

    cfg = load_config(ROOT / "configs" / "smoke.yaml", [f"grpo.budget={kind}"])
    budget = Budget(cfg.grpo.budget, budgets.get(kind))
    spend = Spend(cfg, None)
    spend.counts, spend.flops = {"generated_tokens": 10}, 100.0
    assert budget.unit == want
    assert budget.fraction(spend, 4.0, 1, 4) == frac
