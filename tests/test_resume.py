"""`kill -9` during a stage of ``ssb run configs/smoke.yaml``, then a rerun, gives the same
outputs as one uninterrupted run (the real CLI in a subprocess, on the embedded model).

One uninterrupted run of the training stages (module fixture) is the reference for every
case. :func:`run_and_kill` is the reusable part: it starts ``ssb run``, waits until a stage's
output file first gets content or grows, and kills the process group with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssb.rundir.table import stage_names

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
RUN_NAME = "smoke"  # the smoke config's name: its run directory under runs_dir
TRAIN_STAGES = stage_names(counts_toward_ssb_cost=True)  # rollout, curate, teacher, logits, distill
# 4 problems per rollout chunk (16 problems, k=4) so rollouts.jsonl grows in steps, and a
# checkpoint after each of (at least two) distillation steps so an interrupted distill resumes mid-way.
SETS = ("generation.batch_size=8", "distill.save_steps=1", "distill.batch_size=1", "distill.epochs=2")

pytestmark = pytest.mark.slow


def ssb_command(config: Path, runs_dir: Path, *args: str, sets=SETS) -> list[str]:
    cmd = [sys.executable, "-m", "ssb.cli", "run", str(config), "--set", f"runs_dir={runs_dir}"]
    for s in sets:
        cmd += ["--set", s]
    return cmd + list(args)


def _env() -> dict:
    env = dict(os.environ)  # the ssb under test, whatever is installed
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_ssb(config: Path, runs_dir: Path, *args: str, sets=SETS, timeout: float = 1800) -> None:
    """``ssb run`` to completion; fails the test with the log tail on a non-zero exit."""
    log = Path(runs_dir) / f"ssb-{time.time_ns()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        rc = subprocess.run(ssb_command(config, runs_dir, *args, sets=sets), env=_env(), cwd=ROOT, stdout=f,
                            stderr=subprocess.STDOUT, timeout=timeout).returncode
    assert rc == 0, f"ssb run exited {rc}:\n{log.read_text()[-4000:]}"


def _size(path: Path) -> int:
    """Bytes in a file, or in all files under a directory; -1 when missing."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def run_and_kill(config: Path, runs_dir: Path, stage_file: str, *args: str, sets=SETS, run_name: str = RUN_NAME,
                 timeout: float = 1800, poll: float = 0.02) -> Path:
    """Start ``ssb run config ARGS``, and SIGKILL its process group as soon as
    ``runs_dir/run_name/stage_file`` (a file or a directory) has content beyond the least it
    had since the start (so it works when the file is new, created empty first, or removed by
    ``--force`` and rewritten). Returns the run directory. Fails if the run ends first."""
    run_dir = Path(runs_dir) / run_name
    target = run_dir / stage_file
    log = Path(runs_dir) / f"killed-{time.time_ns()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    least = _size(target)
    with log.open("w") as f:
        proc = subprocess.Popen(ssb_command(config, runs_dir, *args, sets=sets), env=_env(), cwd=ROOT, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + timeout
            while True:
                size = _size(target)
                if size > max(least, 0):
                    break
                least = min(least, size)
                if proc.poll() is not None:
                    raise AssertionError(f"ssb run ended (exit {proc.returncode}) before {target} grew:\n"
                                         f"{log.read_text()[-4000:]}")
                if time.time() > deadline:
                    raise AssertionError(f"{target} did not grow within {timeout}s")
                time.sleep(poll)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the group of the process started here, and only it
            proc.wait()
    return run_dir


def _stage(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / "manifest.json").read_text()).get("stages", {}).get(name, {})


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("uninterrupted")
    run_ssb(SMOKE, runs, "--only", *TRAIN_STAGES)
    run_dir = runs / RUN_NAME
    for stage in TRAIN_STAGES:
        assert _stage(run_dir, stage).get("status") == "done", (stage, _stage(run_dir, stage))
    assert _lines(run_dir / "pairs.jsonl"), "the smoke config yielded no verified pair"
    return run_dir


def test_kill_during_rollout_then_rerun(uninterrupted, tmp_path):
    ref = (uninterrupted / "rollouts.jsonl").read_bytes()
    run_dir = run_and_kill(SMOKE, tmp_path, "rollouts.jsonl", "--only", "rollout")
    assert _stage(run_dir, "rollout").get("status") != "done"  # killed mid-stage
    assert 0 < len(_lines(run_dir / "rollouts.jsonl")) < ref.count(b"\n")
    run_ssb(SMOKE, tmp_path, "--only", "rollout")
    assert _stage(run_dir, "rollout")["status"] == "done"
    assert (run_dir / "rollouts.jsonl").read_bytes() == ref


def test_kill_during_distill_then_rerun(uninterrupted, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from ssb.models import load_model

    run_dir = tmp_path / RUN_NAME
    shutil.copytree(uninterrupted, run_dir)  # rollout, curate, teacher and logits done; distill redone from scratch
    run_and_kill(SMOKE, tmp_path, "train_log.jsonl", "--only", "distill", "--force", "distill")
    assert _stage(run_dir, "distill").get("status") != "done"
    run_ssb(SMOKE, tmp_path, "--only", "distill")
    st, ref = _stage(run_dir, "distill"), _stage(uninterrupted, "distill")
    assert st["status"] == "done" and st["steps"] == ref["steps"]
    assert len(_lines(run_dir / "train_log.jsonl")) == len(_lines(uninterrupted / "train_log.jsonl")) > 0
    # the student adapter loads on the base model, and equals the uninterrupted run's
    lm = load_model("embedded", device="cpu")
    PeftModel.from_pretrained(lm.model, str(run_dir / "student"))
    got = load_file(str(run_dir / "student" / "adapter_model.safetensors"))
    want = load_file(str(uninterrupted / "student" / "adapter_model.safetensors"))
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6)
