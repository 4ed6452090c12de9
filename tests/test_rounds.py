"""Bootstrapping rounds (``stages/rounds.py``): the config's shorthand, the merged model of a round
is the previous model with its student applied, the stop rule, and round configs. The end-to-end run
(``rounds: 3`` on the smoke config) is the shared smoke run of test_pipeline.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssb.config import ConfigError, RunConfig, load_config
from ssb.rundir import Run
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
