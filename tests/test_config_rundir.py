"""Config loading/overrides and the run directory (manifest, atomic writes, JSONL resume)."""

import json
from pathlib import Path

import pytest
import yaml

from ssb.config import RunConfig, dump_config, load_config

from ssb.errors import ConfigError
from ssb.rundir.jsonl import JsonlWriter, atomic_write_json, read_jsonl
from ssb.rundir.run import Run

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_name_their_command(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    head = path.read_text().splitlines()[:12]
    assert any("ssb run configs/" in line for line in head), "the exact command sits at the top"


def test_paper_config_is_the_paper_setting():
    cfg = load_config(Path(CONFIGS[0]).parent / "paper-qwen2.5-3b.yaml")
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-3B-Instruct"
    assert (cfg.data.source, cfg.rollout.k, cfg.teacher.max_pairs, cfg.teacher.solution) == ("gsm8k", 4, 256, "generate")
    assert cfg.data.draw_chunk and cfg.data.limit is None  # draw until 256 pairs, not all 7,473 problems
    d, lora = cfg.distill, cfg.lora
    assert (lora.r, lora.alpha, d.batch_size, d.epochs, d.lr, d.temperature) == (32, 32, 4, 3, 2e-4, 2.0)
    assert (d.kd_weight, d.ce_weight) == (1.0, 0.0) and d.max_length >= cfg.generation.n_ctx
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert d.gradient_checkpointing and cfg.grpo.gradient_checkpointing  # the 3B model, in both trainers
    assert (cfg.rollout.temperature, cfg.rollout.top_k, cfg.teacher.temperature) == (0.8, 50, 0.4)


def test_legacy_teacher_keys_under_curate_are_moved(tmp_path, caplog):
    p = tmp_path / "old.yaml"
    p.write_text("curate:\n  teacher_retries: 5\n  max_pairs: 7\n  hint_context: none\n  no_answer_is_wrong: true\n")
    cfg = load_config(p)
    assert (cfg.teacher.retries, cfg.teacher.max_pairs, cfg.teacher.hint) == (5, 7, "none")
    assert cfg.curate.no_answer_is_wrong is True
    assert f"{p}: renamed keys" in caplog.text and "curate.teacher_retries -> teacher.retries" in caplog.text


def test_lora_keys_under_distill_are_moved_for_grpo_too(tmp_path, caplog):
    """distill.lora_* (before the lora section both trainers share) still load, as lora.*; in a
    file, from --set, and in an old run's config.yaml alike."""
    p = tmp_path / "old.yaml"
    p.write_text("distill:\n  lora_r: 8\n  lora_alpha: 16\n  target_modules: [q_proj]\n  epochs: 2\n")
    cfg = load_config(p, ["distill.lora_dropout=0.1"])
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules) == (8, 16, 0.1, ["q_proj"])
    assert cfg.distill.epochs == 2
    assert f"{p}: renamed keys" in caplog.text
    for old, new in [("lora_r", "r"), ("lora_alpha", "alpha"), ("lora_dropout", "dropout"),
                     ("target_modules", "target_modules")]:
        assert f"distill.{old} -> lora.{new}" in caplog.text
    assert "lora:\n  r: 8\n" in dump_config(cfg) and "lora_r" not in dump_config(cfg)  # rewritten new-style
    # the old key beside the new one: fine when they agree, an error naming both when not
    assert load_config(p, ["lora.r=8"]).lora.r == 8
    with pytest.raises(ConfigError, match=r"old\.yaml: invalid config\n.*distill\.lora_r=8 and lora\.r=4.*set only lora\.r"):
        load_config(p, ["lora.r=4"])


def test_grpo_has_its_own_trainer_settings_with_the_old_effective_defaults():
    """save_steps, gradient_checkpointing and max_grad_norm were read from distill by GRPO."""
    cfg = load_config(None, ["distill.save_steps=5", "distill.max_grad_norm=0.5"])
    g = cfg.grpo
    assert (g.save_steps, g.gradient_checkpointing, g.max_grad_norm) == (None, False, 1.0)
    d = RunConfig().distill
    assert (d.save_steps, d.gradient_checkpointing, d.max_grad_norm) == (g.save_steps, g.gradient_checkpointing,
                                                                        g.max_grad_norm)


def test_left_out_sections_take_their_defaults_and_are_not_shared():
    a, b = RunConfig(), RunConfig(rollout={"k": 8})
    assert a.rollout.k == 4 and b.rollout.k == 8 and a.lora == b.lora and a.lora is not b.lora
    a.lora.r = 2
    assert RunConfig().lora.r == 32


def test_overrides_are_typed_and_checked(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nrollout: {k: 2}\n")
    cfg = load_config(p, ["rollout.k=8", "lora.target_modules=[q_proj,v_proj]", "grpo.enabled=false"])
    assert cfg.rollout.k == 8 and cfg.lora.target_modules == ["q_proj", "v_proj"] and cfg.grpo.enabled is False
    with pytest.raises(ConfigError, match="rollout.k"):
        load_config(p, ["rollout.k=lots"])
    with pytest.raises(ConfigError, match="rollout.kk"):
        load_config(p, ["rollout.kk=3"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(p, ["rollout.k"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_run_directory_manifest_and_stage_status(tmp_path):
    run = Run.create(RunConfig(name="r", runs_dir=str(tmp_path)))
    assert (run.path / "config.yaml").exists()
    assert "torch" in run.manifest()["versions"]
    with run.stage_run("rollout") as info:
        info["problems"] = 3
    assert run.stage_done("rollout") and run.stage("rollout")["problems"] == 3
    with pytest.raises(RuntimeError):
        with run.stage_run("curate"):
            raise RuntimeError("boom")
    assert run.stage("curate")["status"] == "failed" and "boom" in run.stage("curate")["error"]
    reopened = Run.open(run.path, ["rollout.k=7"])
    assert reopened.cfg.rollout.k == 7 and Run.open(run.path).cfg.rollout.k == 7


def test_jsonl_survives_a_torn_last_line(tmp_path):
    p = tmp_path / "x.jsonl"
    with JsonlWriter(p) as w:
        w.write({"id": "a"})
        w.write({"id": "b"})
    with p.open("a") as f:
        f.write('{"id": "c", "comp')  # a kill -9 in the middle of a write
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b"]
    with JsonlWriter(p) as w:
        w.write({"id": "c"})
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b", "c"]
    p.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="x.jsonl:2"):
        read_jsonl(p)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("old, solution, want", [
    ({"hint_context": "correct_only"}, "generate", "correct"),  # generate showed the rollout, whatever rollout_hint said
    ({"hint_context": "correct_only", "rollout_hint": "answer"}, "generate", "correct"),
    ({"hint_context": "correct_only", "rollout_hint": "answer"}, "rollout", "answer"),
    ({"hint_context": "correct_only", "rollout_hint": "other_correct"}, "rollout", "correct"),
    ({"rollout_hint": "answer"}, "rollout", "contrastive"),  # hint_context's old default
    ({"hint_context": "none"}, "generate", "none"),
])
def test_old_hint_keys_read_as_teacher_hint(tmp_path, caplog, old, solution, want):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"teacher": {"solution": solution, **old}}))
    with caplog.at_level("WARNING"):
        cfg = load_config(p)
    assert cfg.teacher.hint == want
    assert f"read as teacher.hint={want}" in caplog.text and "set teacher.hint instead" in caplog.text


def test_old_hint_key_against_a_different_teacher_hint_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="teacher.hint='answer' and the old"):
        load_config(None, ["teacher.hint_context=correct_only", "teacher.hint=answer"])
    assert load_config(None, ["teacher.hint_context=none", "teacher.hint=none"]).teacher.hint == "none"
    assert load_config(None).teacher.hint == "answer"
