"""`ssb run configs/smoke.yaml` end to end on the real embedded model, then `ssb eval` of
the trained student on a user-supplied JSONL, through the CLI as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssb.rundir.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
ALL_STAGES = ["eval_base", "rollout", "curate", "teacher", "logits", "distill", "eval_ssb", "rounds", "sft",
              "eval_sft", "rft", "eval_rft", "grpo", "eval_grpo", "sdft", "eval_sdft", "report"]
# off in ssb run unless baselines.sft / baselines.rft / sdft.enabled
BASELINES = {"sft", "eval_sft", "rft", "eval_rft", "sdft", "eval_sdft"}
RUN_STAGES = [s for s in ALL_STAGES if s not in BASELINES]  # what `ssb run configs/smoke.yaml` runs


def ssb(*args, cwd=ROOT, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "ssb.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# the shared smoke run bootstraps three rounds (stages/rounds.py); the stop rule is off (any drop
# allowed) so every round runs: it is tested on its own in test_rounds.py
ROUNDS = ("--set", "rounds.n=3", "--set", "rounds.validation_n=32", "--set", "rounds.stop_drop=1")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    res = ssb("run", "configs/smoke.yaml", "--set", f"runs_dir={runs}", *ROUNDS)
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


def test_skipping_a_trained_stage_skips_its_evaluation(tmp_path, caplog):
    """``ssb run --skip grpo`` on a run where GRPO never ran must not evaluate a missing adapter (it used to
    stop with "not a PEFT adapter directory"); once GRPO has run, --skip grpo still evaluates it."""
    from ssb.config import RunConfig
    from ssb.pipeline import _should_run
    from ssb.rundir.run import Run
    from ssb.rundir.table import STAGES

    caplog.set_level("INFO")
    cfg = RunConfig(name="skips", runs_dir=str(tmp_path))
    run = Run.create(cfg)
    st = {s.name: s for s in STAGES}
    assert cfg.grpo.enabled and _should_run(run, st["eval_grpo"], cfg, None, None, None)
    assert not _should_run(run, st["eval_grpo"], cfg, None, ["grpo"], None)
    assert "[eval_grpo] skipped: grpo was skipped and has not run" in caplog.text
    assert _should_run(run, st["eval_base"], cfg, None, ["grpo"], None)  # other evaluations unaffected
    run.set_stage("grpo", status="done")
    assert _should_run(run, st["eval_grpo"], cfg, None, ["grpo"], None)


# ----------------------------------------------------------------------------- --force


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _fake_outputs(run_dir: Path) -> None:
    """Every file each stage declares, plus files no stage owns."""
    from ssb.rundir.table import STAGES

    for stage in STAGES:
        for out in stage.outputs:
            p = run_dir / out
            if Path(out).suffix:  # a file
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("x\n")
            else:  # a directory with something inside
                (p / "sub").mkdir(parents=True, exist_ok=True)
                (p / "sub" / "f.bin").write_text("x")
    for other in ("notes.txt", "eval/holdout.problems.jsonl", "eval/holdout.problems.config.json",
                  "eval/compare.json"):
        (run_dir / other).write_text("keep\n")


def test_the_stage_table_lists_every_stage_in_order():
    from ssb.rundir.table import stage_names

    assert stage_names() == tuple(ALL_STAGES)


def test_stages_declare_their_outputs_in_the_stage_table():
    from ssb.rundir.table import STAGES

    declared = {s.name: s.outputs for s in STAGES}
    assert declared["rollout"] == ("rollouts.jsonl",)
    assert declared["logits"] == ("teacher",)
    assert declared["distill"] == ("student", "train_log.jsonl", "checkpoints", "student_epochs")
    assert declared["sft"] == ("sft", "sft_log.jsonl", "sft_checkpoints", "sft_epochs")
    assert declared["rft"] == ("rft", "rft_log.jsonl", "rft_checkpoints", "rft_epochs")
    assert declared["grpo"] == ("grpo", "grpo_log.jsonl", "grpo_checkpoints", "grpo_points")
    assert declared["sdft"] == ("sdft", "sdft_log.jsonl", "sdft_checkpoints", "sdft_points")
    assert declared["report"] == ("report.md", "plots")
    assert declared["curate"] == ("selections.jsonl",)
    assert declared["teacher"] == ("pairs.jsonl", "teacher_rejects.jsonl")  # rejects are retried too
    assert (declared["eval_base"], declared["eval_ssb"], declared["eval_grpo"]) == (
        ("eval/base",), ("eval/ssb",), ("eval/grpo",))
    every = [o for outs in declared.values() for o in outs]
    assert len(every) == len(set(every))  # no file owned by two stages


@pytest.mark.parametrize("stage_name", ALL_STAGES)
def test_force_removes_exactly_what_the_stage_declares(tmp_path, stage_name):
    from ssb.config import RunConfig
    from ssb.pipeline import remove_outputs
    from ssb.rundir.run import Run
    from ssb.rundir.table import get_stage

    run = Run.create(RunConfig(name="forced", runs_dir=str(tmp_path)))
    _fake_outputs(run.path)
    before = _tree(run.path)
    stage = get_stage(stage_name)
    removed = remove_outputs(run, stage)
    assert removed == list(stage.outputs)
    gone = {f for f in before for out in stage.outputs if f == out or f.startswith(out + "/")}
    assert gone  # the stage owns something
    assert _tree(run.path) == before - gone
    assert remove_outputs(run, stage) == []  # nothing left to remove


def test_ssb_run_force_report_through_the_cli(tmp_path, capsys):
    """`ssb run --only report --force report`: the stale plot and report go, a fresh report
    is written, and nothing the other stages own is touched."""
    from ssb.cli import main

    args = ["run", "configs/smoke.yaml", "--set", f"runs_dir={tmp_path}", "--only", "report"]
    assert main(args) == 0
    run_dir = tmp_path / "smoke"
    _fake_outputs(run_dir)
    (run_dir / "report.md").write_text("stale report\n")
    (run_dir / "rollouts.jsonl").write_text("")  # the report must read real (empty) rollouts
    for f in ("pairs.jsonl", "teacher_rejects.jsonl", "train_log.jsonl", "grpo_log.jsonl"):
        (run_dir / f).write_text("")
    before = _tree(run_dir)
    assert main(args + ["--force", "report"]) == 0
    after = _tree(run_dir)
    assert "plots/sub/f.bin" not in after  # the stale plot is gone
    assert (run_dir / "report.md").read_text() != "stale report\n"
    assert {f for f in before if not f.startswith(("plots/", "report.md"))} <= after
    assert before - after == {"plots/sub/f.bin"}


def test_unknown_stage_names_the_stages(tmp_path):
    from ssb.config import RunConfig
    from ssb.errors import SSBError
    from ssb.pipeline import run_pipeline

    with pytest.raises(SSBError, match="unknown stage 'curation'; stages are: eval_base, rollout, curate"):
        run_pipeline(RunConfig(name="x", runs_dir=str(tmp_path)), force=["curation"])


def test_an_empty_list_of_stages_runs_none(tmp_path):
    """``only=[]`` is no stage, not every stage (None is every stage): ``ssb compare``'s upstream of an
    ablation whose stages are all taken from its replicate once ran the whole pipeline through it."""
    from ssb.config import RunConfig
    from ssb.pipeline import run_pipeline

    run = run_pipeline(RunConfig(name="x", runs_dir=str(tmp_path)), only=[])
    assert run.manifest()["stages"] == {} and not run.file("rollouts.jsonl").exists()


@pytest.mark.slow
def test_smoke_run_completes_every_stage(smoke_run):
    path, _ = smoke_run
    m = json.loads((path / "manifest.json").read_text())
    assert [s for s in RUN_STAGES if m["stages"].get(s, {}).get("status") != "done"] == []
    assert not BASELINES & set(m["stages"])  # off by default: never started
    assert m["versions"]["transformers"]
    rollouts = read_jsonl(path / "rollouts.jsonl")
    assert len(rollouts) == 16 and all(len(r["completions"]) == 4 for r in rollouts)
    assert len({r["id"] for r in rollouts}) == 16
    pairs = read_jsonl(path / "pairs.jsonl")
    assert m["stages"]["teacher"]["pairs_written"] == len(pairs)
    assert (path / "student" / "adapter_config.json").exists()
    assert (path / "grpo" / "adapter_config.json").exists()
    assert (path / "teacher" / "index.json").exists()
    holdout_ids = [r["id"] for r in read_jsonl(path / "eval" / "holdout.problems.jsonl")]
    assert len(holdout_ids) == 8  # eval.holdout.limit of the smoke config
    for label, adapter in (("base", None), ("ssb", "student"), ("grpo", "grpo")):
        s = json.loads((path / "eval" / label / "summary.json").read_text())
        assert s["label"] == label and list(s["benches"]) == ["holdout"], label
        assert (s["adapter"] is None) if adapter is None else s["adapter"].endswith(adapter)
        b = s["benches"]["holdout"]
        records = read_jsonl(path / "eval" / label / "holdout.jsonl")
        assert sorted(r["id"] for r in records) == sorted(holdout_ids)  # every model on the same problems
        assert b["n_problems"] == 8 and b["correct"] == sum(r["correct"][0] for r in records)
        assert b["accuracy"] == b["correct"] / 8 and b["ci"][0] <= b["accuracy"] <= b["ci"][1]
        assert b["problems"]["kept"] == 8
        assert m["stages"][f"eval_{label}"]["holdout"]["accuracy"] == b["accuracy"]
    report = (path / "report.md").read_text()
    assert "base" in report and "ssb" in report.lower() and "grpo" in report.lower()
    assert list((path / "plots").glob("*.png"))


@pytest.mark.slow
def test_smoke_report_says_one_run_is_one_replicate(smoke_run):
    """`ssb run configs/smoke.yaml`'s report says what one run can show and gives the `ssb compare` command of
    its config file and --set values (recorded in the manifest); its p-values carry Holm's adjustment beside them."""
    path, _ = smoke_run
    report = (path / "report.md").read_text()
    assert "one replicate" in report
    assert f"ssb compare configs/smoke.yaml --arms base,ssb,sft,rft,grpo,sdft --set runs_dir={path.parent} " in report
    assert "p Holm" in report
    m = json.loads((path / "manifest.json").read_text())
    assert m["config_file"] == str(ROOT / "configs" / "smoke.yaml") and m["overrides"][0] == f"runs_dir={path.parent}"


@pytest.mark.slow
def test_smoke_run_writes_model_cards(smoke_run):
    """The report wrote a model card into each adapter of the real run (modelcard.py), its
    numbers those of the eval summaries (check_card: test_modelcard.py); the lock is gone."""
    from test_modelcard import check_card

    path, _ = smoke_run
    check_card(path, "student", "ssb", "ssb")
    check_card(path, "grpo", "grpo", "grpo")
    assert not (path / ".lock").exists()


@pytest.mark.slow
def test_smoke_run_bootstraps_three_rounds(smoke_run):
    """Rounds 2 and 3 ran in rounds/r2, rounds/r3 on a merged model each, were scored on the run's own
    held-out problems and on a validation draw apart from them, and the ledger adds their compute up."""
    from ssb.config import load_config
    from ssb.report.ledger import ledger
    from ssb.rundir.run import Run
    from ssb.stages.grpo_budget import point_fractions

    path, _ = smoke_run
    doc = json.loads((path / "rounds" / "rounds.json").read_text())
    assert [r["round"] for r in doc["rounds"]] == [1, 2, 3] and doc["stopped"] is None
    held = (path / "eval" / "holdout.problems.jsonl").read_text()
    val = {r["question"] for r in read_jsonl(path / "rounds" / "validation" / "holdout.problems.jsonl")}
    assert len(val) == 32 and not val & {r["question"] for r in read_jsonl(path / "eval" / "holdout.problems.jsonl")}
    assert not val & {r["problem"]["question"] for r in read_jsonl(path / "rollouts.jsonl")}
    for row in doc["rounds"]:
        r = row["round"]
        assert row["problems"] == 16 and row["heldout"]["n_problems"] == 8 and row["validation"]["n"] == 32
        assert 0 <= row["rollout_no_answer_rate"] <= 1 and row["rollout_mean_tokens"] > 0
        if r > 1:
            d = path / "rounds" / f"r{r}"
            assert (d / "model" / "config.json").is_file() and (d / "student" / "adapter_config.json").is_file()
            assert json.loads((d / "manifest.json").read_text())["stages"]["distill"]["status"] == "done"
            assert (d / "eval" / "holdout.problems.jsonl").read_text() == held  # the same held-out problems
            assert load_config(d / "config.yaml").model.name_or_path == str(d / "model")
            assert row["cumulative_flops"] == pytest.approx(doc["rounds"][r - 2]["cumulative_flops"] + row["flops"])
    run = Run(path, load_config(path / "config.yaml", ["grpo.budget=flops"]))  # not written back
    arms = ledger(run)["arms"]
    assert arms["ssb@3"]["flops"] == pytest.approx(doc["rounds"][2]["cumulative_flops"])
    assert arms["ssb@3"]["flops"] > arms["ssb@2"]["flops"] > arms["ssb"]["flops"]
    # GRPO at a FLOPs budget over three rounds saves an adapter where each earlier round's compute ends
    total = arms["ssb@3"]["flops"]
    assert point_fractions(run, None, 0, total) == [round(arms["ssb"]["flops"] / total, 6),
                                                     round(arms["ssb@2"]["flops"] / total, 6)]
    report = (path / "report.md").read_text()
    assert "## Rounds" in report and "| 3 | 16 |" in report


@pytest.mark.slow
def test_rerun_skips_completed_stages(smoke_run):
    path, _ = smoke_run
    before = (path / "rollouts.jsonl").read_text()
    res = ssb("run", "configs/smoke.yaml", "--set", f"runs_dir={path.parent}", *ROUNDS, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("already done") >= len(RUN_STAGES) - 1
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
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label"] == "ssb" and summary["benches"]["mine"]["n_problems"] == 3
    # the table (80 columns when piped) names the model, not the output folder, and cuts no header
    row = next(line for line in res.stdout.splitlines() if line.startswith("mine"))
    assert row.split()[1] == "ssb" and "eval-out" not in res.stdout and "…" not in res.stdout
