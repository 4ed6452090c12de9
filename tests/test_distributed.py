"""Data-parallel runs (distributed.py): `ssb run` under `accelerate launch` with 2 CPU
processes (gloo) writes the same artifacts as one process, and FSDP is refused clearly.

The launch tests start real processes through accelerate's own launcher with the shipped
configs (configs/accelerate/); the helpers are tested in one process first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssb.rundir import distributed
from ssb.rundir.jsonl import JsonlWriter, read_jsonl

ROOT = Path(__file__).resolve().parents[1]

# configs/smoke.yaml, smaller where it does not matter: no GRPO, 4 held-out problems, and
# 4 epochs logged every step so the loss curve has points after optimizer updates.
SMALL = ["--set", "grpo.enabled=false", "--set", "eval.holdout.limit=4",
         "--set", "distill.epochs=4", "--set", "distill.logging_steps=1"]
GLOBAL_BATCH = 2
# Same examples per optimizer step in both runs (with 1 pair and a global batch of 2,
# accelerate's even_batches gives the second process that pair again: the same per-token
# loss); what differs is DDP's gradient all-reduce and padding, i.e. float rounding. Measured
# here: 6e-8 relative over 4 steps; 1e-4 still catches a wrong normalisation or other examples.
LOSS_RTOL = 1e-4


def _env() -> dict:
    # one thread per process, as torchrun gives each of the two: the runs differ only in sharding
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))


def _command(accelerate_config: str | None, *args: str) -> list[str]:
    if accelerate_config is None:
        return [sys.executable, "-m", "ssb.cli", *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config,
            "-m", "ssb.cli", *args]


def _launch(accelerate_config: str | None, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_command(accelerate_config, *args), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


# ----------------------------------------------------------------------------- one process


def test_single_process_helpers_are_plain(tmp_path):
    out = tmp_path / "rollouts.jsonl"
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard(list(range(5))) == [0, 1, 2, 3, 4]
    assert distributed.shard_path(out) == out
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.all_sum(2, 3.5) == (2, 3.5)
    distributed.barrier()
    distributed.merge(out)  # nothing to merge: no file is created
    assert not out.exists()


def test_merge_orders_dedups_and_resumes_from_shards_of_any_world_size(tmp_path):
    out = tmp_path / "rollouts.jsonl"
    order = [f"p{i}" for i in range(6)]
    with JsonlWriter(out) as w:  # an earlier single-process run wrote p1
        w.write({"id": "p1", "v": "canonical"})
    with JsonlWriter(tmp_path / "rollouts.shard-0-of-2.jsonl") as w:
        for i in (0, 2, 4):
            w.write({"id": f"p{i}", "v": "r0"})
    with JsonlWriter(tmp_path / "rollouts.shard-1-of-2.jsonl") as w:
        for i in (1, 3):  # p1 again: the canonical copy wins
            w.write({"id": f"p{i}", "v": "r1"})
    with JsonlWriter(tmp_path / "rollouts.shard-2-of-3.jsonl") as w:  # a killed 3-process run
        w.write({"id": "p5", "v": "r2"})
        w.write({"id": "stale", "v": "r2"})  # not in order: kept, after the ordered ones
    (tmp_path / "rollouts.shard-2-of-3.jsonl").open("a").write('{"id": "p9", "v"')  # torn line
    (tmp_path / "other.shard-0-of-2.jsonl").write_text('{"id": "x"}\n')

    assert [p.name for p in distributed.shard_files(out)] == [
        "rollouts.shard-0-of-2.jsonl", "rollouts.shard-1-of-2.jsonl", "rollouts.shard-2-of-3.jsonl"]
    assert distributed.done_ids(out) == {"p0", "p1", "p2", "p3", "p4", "p5", "stale"}
    assert distributed.merge_files(out, order) == 7
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == order + ["stale"]
    assert rows[1]["v"] == "canonical"
    assert distributed.shard_files(out) == []
    assert (tmp_path / "other.shard-0-of-2.jsonl").exists()
    assert distributed.merge_files(out, order) == -1  # idempotent: nothing left to fold


def test_fsdp_and_zero3_are_refused_with_what_to_use(monkeypatch, tmp_path):
    from ssb.config import RunConfig
    from ssb.errors import SSBError
    from ssb.pipeline import run_pipeline

    distributed.check_supported()  # plain launch: fine
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    distributed.check_supported()  # ZeRO-2 keeps parameters whole
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(SSBError, match="DeepSpeed ZeRO-3 is not supported"):
        distributed.check_supported()
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    cfg = RunConfig(name="fsdp", runs_dir=str(tmp_path))
    with pytest.raises(SSBError, match=r"FSDP is not supported.*LM head.*configs/accelerate/ddp.yaml"):
        run_pipeline(cfg)
    assert not (tmp_path / "fsdp").exists()  # refused before any work
    run_pipeline(cfg, only=["report"])  # a run that does not distill is not refused


@pytest.mark.slow
def test_fsdp_launch_is_refused(tmp_path):
    """The shipped FSDP config through accelerate's real launcher (1 process is enough)."""
    res = _launch("configs/accelerate/fsdp.yaml", "run", "configs/smoke.yaml", "--set", f"runs_dir={tmp_path}",
                  timeout=300)
    assert res.returncode != 0
    assert "FSDP is not supported for ssb's distillation" in res.stderr
    assert "configs/accelerate/ddp.yaml" in res.stderr
    assert not (tmp_path / "smoke").exists()


# ----------------------------------------------------------------------------- 1 vs 2 processes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """configs/smoke.yaml (SMALL) in one process and in two CPU processes, same global batch;
    both at once (they share nothing but the read-only model cache)."""
    base = tmp_path_factory.mktemp("dist")
    cmds = {
        "one": _command(None, "run", "configs/smoke.yaml", "--set", f"runs_dir={base / 'one'}", *SMALL,
                        "--set", f"distill.batch_size={GLOBAL_BATCH}"),
        "two": _command("configs/accelerate/cpu-2proc.yaml", "run", "configs/smoke.yaml",
                        "--set", f"runs_dir={base / 'two'}", *SMALL, "--set", f"distill.batch_size={GLOBAL_BATCH // 2}"),
    }
    logs = {k: (base / f"{k}.log").open("w+") for k in cmds}
    procs = {k: subprocess.Popen(c, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=logs[k], text=True)
             for k, c in cmds.items()}
    out = {}
    for k, proc in procs.items():
        try:
            rc = proc.wait(timeout=2400)
        finally:
            if proc.poll() is None:
                proc.kill()
        logs[k].seek(0)
        out[k] = logs[k].read()
        assert rc == 0, f"{k}: exit {rc}\n{out[k][-6000:]}"
    return base / "one" / "smoke", base / "two" / "smoke", out["two"]


@pytest.mark.slow
def test_two_processes_ran_every_stage_and_left_no_shards(runs):
    one, two, stderr = runs
    m = json.loads((two / "manifest.json").read_text())
    assert m["distributed"] == {"processes": 2, "backend": "gloo"}
    for stage in ("eval_base", "rollout", "curate", "logits", "distill", "eval_ssb", "report"):
        assert m["stages"][stage]["status"] == "done", (stage, m["stages"][stage])
    assert not list(two.rglob("*.shard-*"))
    assert "process 1 of 2 (DistributedType.MULTI_CPU, backend gloo" in stderr


@pytest.mark.slow
def test_two_processes_write_the_same_rollouts(runs):
    one, two, _ = runs
    r1, r2 = read_jsonl(one / "rollouts.jsonl"), read_jsonl(two / "rollouts.jsonl")
    assert len(r1) == 16
    assert [r["id"] for r in r2] == [r["id"] for r in r1]  # merged in problem order
    for a, b in zip(r1, r2):
        assert (b["completions"], b["grades"], b["seed"]) == (a["completions"], a["grades"], a["seed"]), a["id"]
    m2 = json.loads((two / "manifest.json").read_text())["stages"]["rollout"]
    assert m2["new_problems"] == 16  # counted over both processes


@pytest.mark.slow
def test_two_processes_write_the_same_pairs(runs):
    one, two, _ = runs
    p1, p2 = read_jsonl(one / "pairs.jsonl"), read_jsonl(two / "pairs.jsonl")
    assert p1, "the smoke config yields at least one pair (else the loss comparison is empty)"
    assert [(p["id"], p["solution"]) for p in p2] == [(p["id"], p["solution"]) for p in p1]


@pytest.mark.slow
def test_distillation_loss_curve_matches_at_the_same_global_batch(runs):
    one, two, _ = runs
    l1, l2 = read_jsonl(one / "train_log.jsonl"), read_jsonl(two / "train_log.jsonl")
    assert len(l1) >= 2 and [r["step"] for r in l2] == [r["step"] for r in l1]  # one writer, same steps
    for a, b in zip(l1, l2):
        for key in ("loss", "kd"):
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL), (a["step"], key, a[key], b[key])
        assert b["answer_tokens_per_example"] == a["answer_tokens_per_example"]
    s1 = json.loads((one / "manifest.json").read_text())["stages"]["distill"]
    s2 = json.loads((two / "manifest.json").read_text())["stages"]["distill"]
    assert s2["steps"] == s1["steps"]
    assert (two / "student" / "adapter_config.json").exists()


@pytest.mark.slow
def test_two_processes_evaluate_the_same(runs):
    one, two, _ = runs
    for label in ("base", "ssb"):
        e1, e2 = read_jsonl(one / f"eval/{label}/holdout.jsonl"), read_jsonl(two / f"eval/{label}/holdout.jsonl")
        assert len(e1) == 4
        assert [(r["id"], r["completions"]) for r in e2] == [(r["id"], r["completions"]) for r in e1], label
        s1 = json.loads((one / f"eval/{label}/summary.json").read_text())["benches"]["holdout"]
        s2 = json.loads((two / f"eval/{label}/summary.json").read_text())["benches"]["holdout"]
        assert (s2["accuracy"], s2["n_problems"]) == (s1["accuracy"], s1["n_problems"])
