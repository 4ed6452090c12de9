"""Config loading/overrides and the run directory (manifest, atomic writes, JSONL resume)."""

import json
from pathlib import Path

import pytest

from ssb.config import ConfigError, RunConfig, load_config
from ssb.rundir import JsonlWriter, Run, atomic_write_json, read_jsonl

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
    d = cfg.distill
    assert (d.lora_r, d.lora_alpha, d.batch_size, d.epochs, d.lr, d.temperature) == (32, 32, 4, 3, 2e-4, 2.0)
    assert (d.kd_weight, d.ce_weight) == (1.0, 0.0) and d.max_length >= cfg.generation.n_ctx
    assert set(d.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (cfg.rollout.temperature, cfg.rollout.top_k, cfg.teacher.temperature) == (0.8, 50, 0.4)


def test_legacy_teacher_keys_under_curate_are_moved(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text("curate:\n  teacher_retries: 5\n  max_pairs: 7\n  hint_context: none\n  no_answer_is_wrong: true\n")
    with pytest.warns(DeprecationWarning, match="teacher section"):
        cfg = load_config(p)
    assert (cfg.teacher.retries, cfg.teacher.max_pairs, cfg.teacher.hint_context) == (5, 7, "none")
    assert cfg.curate.no_answer_is_wrong is True


def test_overrides_are_typed_and_checked(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nrollout: {k: 2}\n")
    cfg = load_config(p, ["rollout.k=8", "distill.target_modules=[q_proj,v_proj]", "grpo.enabled=false"])
    assert cfg.rollout.k == 8 and cfg.distill.target_modules == ["q_proj", "v_proj"] and cfg.grpo.enabled is False
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
