"""Bootstrapping rounds (``stages/rounds.py``): the config's shorthand, the merged model of a round
is the previous model with its student applied, the stop rule, and round configs. The end-to-end run
(``rounds: 3`` on the smoke config) is the shared smoke run of test_pipeline.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssb.config import RunConfig, load_config

from ssb.errors import ConfigError
from ssb.rundir.run import Run
from ssb.stages.rounds import round_config, stop_decision

ROOT = Path(__file__).resolve().parents[1]


def test_rounds_shorthand_and_section():
    assert load_config(ROOT / "configs" / "smoke.yaml", ["rounds=3"]).rounds.n == 3
    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["rounds.n=2", "rounds.problems=unsolved"])
    assert (cfg.rounds.n, cfg.rounds.problems, cfg.rounds.enabled) == (2, "unsolved", True)
    assert load_config(ROOT / "configs" / "default.yaml").rounds.enabled is False  # one round unless asked
    with pytest.raises(ConfigError, match="rounds.n"):
        load_config(None, ["rounds=0"])
    with pytest.raises(ConfigError, match="rounds.problems"):
        load_config(None, ["rounds.problems=some"])


def test_a_round_config_changes_the_model_and_seeds_only(tmp_path):
    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["rounds=3", f"runs_dir={tmp_path}"])
    run = Run(tmp_path / "smoke", cfg)
    sub = round_config(cfg, run, 3)
    assert sub.run_dir == tmp_path / "smoke" / "rounds" / "r3"
    assert sub.model.name_or_path == str(tmp_path / "smoke" / "rounds" / "r3" / "model")
    assert (sub.rollout.seed, sub.teacher.seed, sub.distill.seed) == (cfg.rollout.seed + 2000, cfg.teacher.seed + 2000,
                                                                       cfg.distill.seed + 2000)
    assert (sub.rounds.n, sub.grpo.enabled, sub.baselines.sft) == (1, False, False)
    same = ("prompt", "lora", "eval", "generation", "logits")
    assert all(getattr(sub, k) == getattr(cfg, k) for k in same)
    assert sub.teacher.model_dump(exclude={"seed"}) == cfg.teacher.model_dump(exclude={"seed"})
    assert sub.distill.model_dump(exclude={"seed", "save_every_epoch"}) == cfg.distill.model_dump(
        exclude={"seed", "save_every_epoch"})
    RunConfig.model_validate(sub.model_dump())  # still a valid config


def _row(r, acc):
    return {"round": r, "validation": {"accuracy": acc}}


def test_stop_rule():
    assert stop_decision([_row(1, 0.5)], 0.0) is None
    assert stop_decision([_row(1, 0.5), _row(2, 0.5)], 0.0) is None  # level: go on
    stop = stop_decision([_row(1, 0.5), _row(2, 0.6), _row(3, 0.55)], 0.0)
    assert stop["after_round"] == 3 and "0.050" in stop["reason"] and "round 2" in stop["reason"]
    assert stop_decision([_row(1, 0.5), _row(2, 0.45)], 0.05) is None  # within the tolerance
    assert stop_decision([_row(1, 0.5), _row(2, 0.44)], 0.05)["after_round"] == 2


def test_the_merged_model_is_the_model_with_its_adapter(tmp_path, tiny_model_dir):
    """merge_model saves model + adapter as one plain model whose logits are the adapted model's."""
    from peft import LoraConfig, get_peft_model

    from ssb.config import ModelConfig
    from ssb.models import load_model
    from ssb.stages.rounds import merge_model

    base = load_model(str(tiny_model_dir), device="cpu")
    peft = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: B != 0
    peft.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        want = peft(ids).logits
        plain = load_model(str(tiny_model_dir), device="cpu").model(ids).logits
    assert not torch.allclose(want, plain, atol=1e-3)  # the adapter changes the model
    merge_model(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"), tmp_path / "adapter", tmp_path / "m")
    assert not (tmp_path / "m" / "adapter_config.json").exists() and (tmp_path / "m" / "config.json").exists()
    merged = load_model(str(tmp_path / "m"), device="cpu")
    with torch.no_grad():
        got = merged.model(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert merged.tokenizer.chat_template == base.tokenizer.chat_template


def test_round_problems_all_or_the_unsolved(tmp_path):
    """rounds.problems: every problem the previous round rolled out, or those not solved K of K."""
    from ssb.data.problem import Problem
    from ssb.stages.rounds import round_problems

    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["rounds=2", f"runs_dir={tmp_path}"])
    prev = Run.create(cfg)
    grades = {"a": ["correct"] * 4, "b": ["correct", "wrong", "correct", "correct"], "c": ["no_answer"] * 4}
    rows = [{"id": i, "problem": Problem(id=i, question=f"What is {i}?", answer="1").to_dict(), "grades": g}
            for i, g in grades.items()]
    prev.file("rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [p.id for p in round_problems(cfg, prev)] == ["a", "b", "c"]
    unsolved = load_config(ROOT / "configs" / "smoke.yaml", ["rounds.n=2", "rounds.problems=unsolved"])
    got = round_problems(unsolved, prev)
    assert [p.id for p in got] == ["b", "c"] and got[0].question == "What is b?"


def test_rounds_refuse_llamacpp_before_any_work(tmp_path):
    from ssb.stages.rounds import RoundsError, run_rounds

    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["rounds=2", f"runs_dir={tmp_path}", "generation.backend=llamacpp"])
    run = Run.create(cfg)
    with pytest.raises(RoundsError, match="llamacpp|llama.cpp"):
        run_rounds(run)
    assert not run.file("rounds").exists() and run.stage("rounds") == {}


# ----------------------------------------------------------------------------- the committed measurement


@pytest.fixture(scope="module")
def measured():
    return json.loads((ROOT / "bench" / "results" / "rounds.json").read_text())


def test_the_committed_rounds_are_what_their_compare_files_say(measured):
    """bench/results/rounds.json has what issue 25 asks under ``rounds`` (rounds 1, 2, 3: held-out accuracy,
    interval, difference to round 1 and to GRPO at matched compute, compute, collapse figures; ≥ 2 replicates)
    and is exactly bench.rounds's reading of the committed compare files (nothing typed, nothing stale)."""
    from bench import rounds

    assert {k: v for k, v in measured.items() if k != "provenance"} == json.loads(json.dumps(rounds.build()))
    assert [r["round"] for r in measured["rounds"]] == [1, 2, 3]
    for v in measured["variants"]:
        assert (ROOT / v["results"]).is_file() and (ROOT / v["pairs_file"]).is_file() and v["n_replicates"] >= 2
    for t in measured["tasks"]:
        assert t["n_replicates"] >= 2 and (ROOT / t["results"]).is_file() and (ROOT / t["pairs_file"]).is_file()
        flops = [r["flops"] for r in t["rounds"]]
        assert flops == sorted(flops) and flops[0] > 0  # rounds 1..r added up
        for r in t["rounds"]:
            lo, hi = r["ci"]
            assert lo <= r["accuracy"] <= hi and len(r["per_replicate_accuracy"]) == t["n_replicates"]
            assert (r["vs_round1"] is None) is (r["round"] == 1)
            # GRPO at this round's compute, or below it where GRPO ran out of epochs before its budget
            assert r["vs_grpo"]["ci"] and r["grpo_flops_ratio"] == r["grpo_flops"] / r["flops"] < 1.05
            assert r["grpo_flops_ratio"] > 0.95 or "epochs" in t["grpo_stopped_by"]
            assert set(r["collapse"]) >= {"heldout_no_answer_rate", "rollout_no_answer_rate", "validation_accuracy",
                                          "heldout_mean_tokens", "stop_rule_would_stop"}


def test_what_rounds_bought_on_chain_sum(measured):
    """docs/rounds.md's reading of the default task, pinned: rounds 2-3 level with round 1, every round level
    with GRPO at its compute (the last below round 3's FLOPs: out of epochs), one equation per pair and per
    answer, about a third of the answers' equalities hold, and the teacher drifts as on basic_arithmetic."""
    assert measured["task_of_rounds"] == "chain_sum" and measured["rounds"] == measured["tasks"][0]["rounds"]
    (t,) = [t for t in measured["tasks"] if t["name"] == "chain_sum"]
    r1, r2, r3 = t["rounds"]
    assert t["config"] == "configs/default.yaml" and t["training_problems"] == 160 and t["n_problems"] == 400
    assert not any(r["vs_round1"]["significant"] for r in (r2, r3))
    assert not any(r["vs_grpo"]["significant"] for r in t["rounds"])
    assert r3["grpo_flops_ratio"] < 0.95 and set(t["grpo_stopped_by"]) == {"epochs"}
    assert all(r["pairs_written"]["equalities_per_solution"] == 1 for r in t["rounds"])
    assert all(r["heldout_answers"]["equalities_per_answer"] < 1.1 for r in t["rounds"])
    assert all(0.3 < r["heldout_answers"]["equalities_hold"] < 0.4 for r in t["rounds"])
    w = [r["pairs_written"] for r in t["rounds"]]
    assert w[0]["copies_of_shown_rollout"] > 0.9 and w[0]["ends_as_taught"] > 0.9
    assert w[2]["copies_of_shown_rollout"] < 0.3 and w[2]["ends_as_taught"] < 0.3
    c = [r["collapse"] for r in t["rounds"]]
    assert c[0]["rollout_no_answer_rate"] < c[1]["rollout_no_answer_rate"] < c[2]["rollout_no_answer_rate"]
    assert all(x["heldout_no_answer_rate"] < 0.01 for x in c)
    assert [x["stop_rule_would_stop"] for x in c] == [0, 0, 1]  # validation fell at round 3 on one replicate


def test_unsolved_only_rounds_cost_less_and_buy_the_same(measured):
    """docs/rounds.md's reading of rounds.problems=unsolved on chain_sum: round 1 is the all-problems run's,
    later rounds roll out fewer problems, write fewer pairs, spend less, and stay level with round 1."""
    (v,) = measured["variants"]
    (t,) = [t for t in measured["tasks"] if t["name"] == v["name"] == "chain_sum"]
    assert "rounds.problems=unsolved" in v["overrides"] and not any(v["grpo_stopped_by"])
    assert v["rounds"][0]["per_replicate_accuracy"] == t["rounds"][0]["per_replicate_accuracy"]
    assert v["rounds"][0]["pairs"] == t["rounds"][0]["pairs"] and v["rounds"][0]["flops"] == t["rounds"][0]["flops"]
    for a, b in zip(v["rounds"][1:], t["rounds"][1:]):
        assert a["rolled_out"] < b["rolled_out"] == t["training_problems"] and a["pairs"] < b["pairs"]
        assert a["flops"] < b["flops"] and not a["vs_round1"]["significant"] and a["vs_grpo"] is None
    assert v["rounds"][0]["pairs_written"]["ends_as_taught"] > 0.9 > 0.5 > v["rounds"][2]["pairs_written"]["ends_as_taught"]


def test_the_same_compute_on_grpo_does_as_well_or_better(measured):
    """docs/rounds.md's closing: on every task measured, no round is above GRPO at its compute."""
    assert len(measured["tasks"]) >= 2
    assert not any(r["vs_grpo"]["significant"] and r["vs_grpo"]["value"] > 0 for t in measured["tasks"] for r in t["rounds"])


def test_what_rounds_bought_on_basic_arithmetic(measured):
    """docs/rounds.md's reading, pinned: rounds 2-3 do not beat round 1 (round 3 is below), GRPO at the same
    compute pulls away, and the collapse figures drift the way the text says."""
    (t,) = [t for t in measured["tasks"] if t["name"] == "basic_arithmetic"]
    r1, r2, r3 = t["rounds"]
    assert t["training_problems"] == 160 and t["overrides"] == ["data.limit=160"] and t["n_problems"] == 400
    assert not r2["vs_round1"]["significant"] and r3["vs_round1"]["significant"] and r3["vs_round1"]["value"] < 0
    assert not r1["vs_grpo"]["significant"]
    assert all(r["vs_grpo"]["significant"] and r["vs_grpo"]["value"] < -0.1 for r in (r2, r3))
    assert r1["grpo_accuracy"] < r2["grpo_accuracy"] < r3["grpo_accuracy"]  # GRPO kept climbing
    assert r3["grpo_flops_ratio"] < 0.95 and set(t["grpo_stopped_by"]) == {"epochs"}  # below round 3's compute
    w = [r["pairs_written"] for r in t["rounds"]]
    assert w[0]["copies_of_shown_rollout"] > 0.5 and w[1]["copies_of_shown_rollout"] < 0.3
    assert w[0]["ends_as_taught"] > 0.9 and w[1]["ends_as_taught"] < 0.5 and w[2]["ends_as_taught"] < 0.1
    c = [r["collapse"] for r in t["rounds"]]
    assert c[0]["rollout_no_answer_rate"] < c[1]["rollout_no_answer_rate"] < c[2]["rollout_no_answer_rate"]
    assert all(x["heldout_no_answer_rate"] == 0 for x in c)
    assert max(x["heldout_mean_tokens"] for x in c) < 1.1 * min(x["heldout_mean_tokens"] for x in c)
    h = [r["heldout_answers"]["equalities_hold"] for r in t["rounds"]]
    assert h[0] < h[1] < h[2]
    assert [x["stop_rule_would_stop"] for x in c] == [0, 2, 2]  # validation fell at rounds 2 and 3 on both replicates
    assert c[0]["validation_accuracy"] > c[1]["validation_accuracy"] > c[2]["validation_accuracy"]


def test_the_readme_counts_what_the_last_round_bought(measured):
    """The README's rounds sentence counts the rounds file's last-round differences, read as above / level /
    below, and links docs/rounds.md: one sentence, then its source caption."""
    from bench.render import tasks as render_tasks
    from ssb.report.stats import reading

    cis = ([-0.1, 0.3], [-0.2, -0.05], [0.1, 0.3], [-0.4, -0.2])
    assert [reading(ci) for ci in cis] == ["level", "below", "above", "below"]
    for k in ("vs_round1", "vs_grpo"):
        assert {n: w for w, ns in measured["summary"][k].items() for n in ns} == {
            t["name"]: reading(t["rounds"][-1][k]["ci"]) for t in measured["tasks"]}
    text = render_tasks.render_rounds_readme()
    below = len(measured["summary"]["vs_round1"]["below"])
    assert "vs round 1: " in text and (f"{below} below" in text) == (below > 0)
    sentence, caption = text.split("\n\n")
    assert "[docs/rounds.md](docs/rounds.md)" in sentence and "\n" not in sentence and caption.startswith("_Source:")
