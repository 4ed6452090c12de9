"""`ssb run configs/smoke.yaml` end to end on the real embedded model, then `ssb eval` of
the trained student on a user-supplied JSONL, through the CLI as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssb.rundir import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
ALL_STAGES = ["eval_base", "rollout", "curate", "logits", "distill", "eval_ssb", "grpo", "eval_grpo", "report"]


def ssb(*args, cwd=ROOT, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "ssb.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    res = ssb("run", "configs/smoke.yaml", "--set", f"runs_dir={runs}")
    assert res.returncode == 0, res.stderr[-4000:]
    return runs / "smoke", res


def test_stages_without_pairs_are_skipped_with_a_reason(tmp_path, caplog):
    from ssb.config import RunConfig
    from ssb.pipeline import run_pipeline

    cfg = RunConfig(name="nopairs", runs_dir=str(tmp_path))
    run = run_pipeline(cfg, only=["logits", "distill", "eval_ssb"])  # curation wrote nothing
    for stage in ("logits", "distill", "eval_ssb"):
        assert run.stage(stage) == {"status": "skipped", "reason": "no verified pairs"}
    assert "no verified pairs" in caplog.text


@pytest.mark.slow
def test_smoke_run_completes_every_stage(smoke_run):
    path, _ = smoke_run
    m = json.loads((path / "manifest.json").read_text())
    assert [s for s in ALL_STAGES if m["stages"].get(s, {}).get("status") != "done"] == []
    assert m["versions"]["transformers"]
    rollouts = read_jsonl(path / "rollouts.jsonl")
    assert len(rollouts) == 16 and all(len(r["completions"]) == 4 for r in rollouts)
    assert len({r["id"] for r in rollouts}) == 16
    pairs = read_jsonl(path / "pairs.jsonl")
    assert m["stages"]["curate"]["pairs_written"] == len(pairs)
    assert (path / "student" / "adapter_config.json").exists()
    assert (path / "grpo" / "adapter_config.json").exists()
    assert (path / "teacher" / "index.json").exists()
    for label in ("base", "ssb", "grpo"):
        s = json.loads((path / "eval" / label / "summary.json").read_text())
        assert s, label
    report = (path / "report.md").read_text()
    assert "base" in report and "ssb" in report.lower() and "grpo" in report.lower()
    assert list((path / "plots").glob("*.png"))


@pytest.mark.slow
def test_rerun_skips_completed_stages(smoke_run):
    path, _ = smoke_run
    before = (path / "rollouts.jsonl").read_text()
    res = ssb("run", "configs/smoke.yaml", "--set", f"runs_dir={path.parent}", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("already done") >= len(ALL_STAGES) - 1
    assert (path / "rollouts.jsonl").read_text() == before


@pytest.mark.slow
def test_eval_student_on_user_jsonl(smoke_run, tmp_path):
    path, _ = smoke_run
    data = tmp_path / "mine.jsonl"
    rows = [{"id": f"u{i}", "question": f"State the final answer to the following arithmetic problem: {a} + {b} =",
             "answer": str(a + b)} for i, (a, b) in enumerate([(2, 3), (4, 4), (1, 6)])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval-out"
    res = ssb("eval", "--model", str(path / "student"), "--data", str(data), "--out", str(out),
              "--max-new-tokens", "32", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    samples = [json.loads(x) for f in out.glob("*.jsonl") for x in f.read_text().splitlines() if x.strip()]
    assert sorted(s["id"] for s in samples) == ["u0", "u1", "u2"]
    assert (out / "summary.json").exists()
