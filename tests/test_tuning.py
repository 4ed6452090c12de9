"""``ssb compare --tune``: the choice rule and the edge extension, and one tuned comparison of the smoke
config end to end (ssb and grpo, one replicate): the same trials for each arm, scored on a validation
draw that shares no problem with training or the held-out set, the chosen values training the replicate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ssb.comparison.tuning import best_variant, choose, configured_lr, differences, extension, tunable
from ssb.config import load_config
from ssb.errors import ConfigError
from ssb.data.problem import normalize_question
from ssb.rundir.jsonl import read_jsonl
from ssb.report.train_summary import summarize
from ssb.rundir.run import Run

ROOT = Path(__file__).resolve().parents[1]


def test_the_choice_is_the_best_validation_accuracy_ties_to_the_configured_then_the_smaller_lr():
    t = [{"lr": 6.32e-5, "validation_accuracy": 0.4}, {"lr": 2e-4, "validation_accuracy": 0.5},
         {"lr": 6.32e-4, "validation_accuracy": 0.45}]
    assert choose(t, 2e-4)["lr"] == 2e-4
    t[2]["validation_accuracy"] = 0.5  # tie with the configured value: the configured value
    assert choose(t, 2e-4)["lr"] == 2e-4
    t[1]["validation_accuracy"] = 0.3  # tie between the two others: the smaller
    t[0]["validation_accuracy"] = 0.5
    assert choose(t, 2e-4)["lr"] == 6.32e-5


def test_an_edge_choice_extends_the_grid_one_step_beyond_it():
    grid = [6.32e-5, 2e-4, 6.32e-4]
    assert extension(grid, 2e-4) is None
    assert extension(grid, 6.32e-4) == pytest.approx(2e-3, rel=0.01)
    assert extension(grid, 6.32e-5) == pytest.approx(2e-5, rel=0.01)


def test_ssb_best_is_the_ssb_arm_with_the_best_chosen_trial_a_tie_keeps_the_paper_loss():
    def arm(lr, acc):
        return {"trials": [{"lr": lr, "validation_accuracy": acc}] * 3, "chosen": {"lr": lr, "validation_accuracy": acc}}

    tuning = {"ssb": arm(2e-4, 0.40), "sft": arm(2e-4, 0.9), "ssb:distill.temperature=1": arm(6.32e-4, 0.45),
              "ssb:distill.ce_weight=1+distill.temperature=1": arm(2e-4, 0.45)}
    b = best_variant(tuning)  # sft's 0.9 is no SSB loss; of the two tied variants the earlier
    assert b["arm"] == "ssb:distill.temperature=1" and b["overrides"] == ["distill.temperature=1"]
    assert b["lr"] == 6.32e-4 and b["validation_accuracy"] == 0.45 and b["paper"] == {"lr": 2e-4,
                                                                                     "validation_accuracy": 0.40}
    assert set(b["candidates"]) == {"ssb", "ssb:distill.temperature=1", "ssb:distill.ce_weight=1+distill.temperature=1"}
    assert b["candidates"]["ssb"]["trials"] == 3
    tuning["ssb"] = arm(2e-4, 0.45)  # a tie with the paper's loss keeps it
    assert best_variant(tuning)["arm"] == "ssb" and best_variant(tuning)["overrides"] == []
    del tuning["ssb:distill.temperature=1"]
    assert best_variant(tuning)["arm"] == "ssb"
    assert best_variant({"ssb": arm(2e-4, 0.4), "sft": arm(2e-4, 0.5)}) is None  # no variant: no choice to make
    assert best_variant({"ssb:distill.temperature=1": arm(2e-4, 0.4)}) is None


def test_the_tuned_arms_and_their_learning_rates():
    assert tunable(["base", "grpo", "ssb:distill.temperature=1", "ssb", "sft"]) == [
        "ssb", "sft", "grpo", "ssb:distill.temperature=1"]  # SSB first: GRPO's trials read its FLOPs
    cfg = load_config("configs/default.yaml", ["baselines.rft_lr=1e-5"])
    assert configured_lr(cfg, "sft") == cfg.distill.lr and configured_lr(cfg, "rft") == 1e-5
    assert configured_lr(cfg, "ssb:teacher.hint=answer") == cfg.distill.lr and configured_lr(cfg, "grpo") == cfg.grpo.lr
    assert load_config("configs/default.yaml", ["tune.lr_factors=[3, 0.3, 1]"]).tune.lr_factors == [0.3, 1, 3]
    with pytest.raises(ConfigError, match="lr_factors"):
        load_config("configs/default.yaml", ["tune.lr_factors=[0, 1]"])


def test_a_trial_is_replicate_0s_training_when_only_where_it_lives_and_the_other_arms_differ():
    """``differences``: what keeps replicate 0 from taking an arm's chosen trial (``Tuner.reuse_chosen``)."""
    trial = load_config("configs/default.yaml", ["runs_dir=x/tune", "name=ssb-lr0.0002", "distill.lr=2e-4"])
    run = load_config("configs/default.yaml", ["runs_dir=x", "name=r0", "distill.lr=2e-4", "grpo.lr=6.32e-5",
                                               "baselines.sft=true", "baselines.sft_lr=6.32e-4", "grpo.enabled=true"])
    assert differences(trial, run, "ssb") == []
    assert differences(trial, run, "grpo") == ["grpo.lr"]  # the arm's own learning rate must be the trial's
    assert differences(trial, run, "ssb:distill.temperature=1") == []
    curves = load_config("configs/default.yaml", ["distill.lr=2e-4", "distill.save_every_epoch=true",
                                                  "grpo.curve_points=4"])
    assert differences(trial, curves, "ssb") == ["distill.save_every_epoch", "grpo.curve_points"]
    assert differences(trial, load_config("configs/default.yaml", ["distill.lr=2e-4", "distill.seed=5"]),
                       "ssb") == ["distill.seed"]


def test_an_unset_baseline_lr_trains_at_ssbs(tmp_path):
    """The sft stage reads ``baselines.sft_lr`` (what --tune sets), else ``distill.lr``: pinned through the
    Trainer's arguments it builds."""
    from ssb.stages.sft import ce_args

    run = Run.create(load_config("configs/smoke.yaml", [f"runs_dir={tmp_path}"]))
    assert ce_args(run, "sft").learning_rate == run.cfg.distill.lr
    run = Run.create(load_config("configs/smoke.yaml", [f"runs_dir={tmp_path}", "baselines.sft_lr=3e-5"]))
    assert ce_args(run, "sft").learning_rate == 3e-5 and ce_args(run, "rft").learning_rate == run.cfg.distill.lr


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    d = tmp_path_factory.mktemp("tuned")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "ssb.cli", "compare", "configs/smoke.yaml", "--replicates", "1",
                          "--n", "8", "--k-max", "0", "--no-curves", "--arms", "base,ssb,grpo", "--tune", "--dir", str(d),
                          "--set", "tune.lr_factors=[0.1,1]", "--set", "tune.validation_n=6"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-4000:]
    return d, json.loads((d / "results.json").read_text())


@pytest.mark.slow
def test_every_arm_gets_the_same_trials_and_its_choice_trains_the_replicate(tuned):
    d, doc = tuned
    tuning = doc["tuning"]
    assert set(tuning) == {"ssb", "grpo"}
    counts = {arm: len(t["trials"]) for arm, t in tuning.items()}
    for arm, t in tuning.items():
        base = [x for x in t["trials"] if not x.get("edge_extension")]
        assert [x["lr"] for x in base] == t["grid"] and len(base) == 2  # the grid, for every arm
        assert all(0 <= x["validation_accuracy"] <= 1 and x["validation_n"] == 6 and x["overrides"] == [
            f"{t['key']}={x['lr']:.3g}"] for x in t["trials"])
        best = max(x["validation_accuracy"] for x in t["trials"])
        assert t["chosen"]["validation_accuracy"] == best and t["chosen"]["lr"] in [x["lr"] for x in t["trials"]]
        # with two grid points every choice is an edge: one extension, beyond the chosen end
        ext = [x for x in t["trials"] if x.get("edge_extension")]
        chosen_first = max(base, key=lambda x: (x["validation_accuracy"], x["lr"] == t["configured"], -x["lr"]))
        assert len(ext) == 1 and (ext[0]["lr"] > max(t["grid"])) == (chosen_first["lr"] == max(t["grid"]))
    assert max(counts.values()) - min(counts.values()) <= 1
    cfg = Run.open(d / "r0").cfg  # the chosen values trained the replicate
    assert cfg.distill.lr == tuning["ssb"]["chosen"]["lr"] and cfg.grpo.lr == tuning["grpo"]["chosen"]["lr"]
    assert doc["tuning_protocol"]["validation"]["n"] == 6 and "tuning:training" in doc["timing"]["by_part"]
    p = doc["tuning_protocol"]  # the base model on the same draw: the reference a trial is read against
    assert p["validation_n"] == 6 and 0 <= p["base_validation_accuracy"] <= 1
    # GRPO's trials ran under the budget its replicate ran with (the smoke config: max_steps)
    steps = {Run.open(x["run_dir"]).stage("grpo")["steps"] for x in tuning["grpo"]["trials"]}
    assert steps == {Run.open(d / "r0").stage("grpo")["steps"]}


@pytest.mark.slow
def test_replicate_0_takes_each_arms_chosen_trial_instead_of_training_it_again(tuned):
    """Without curves the chosen trial's config is replicate 0's (but where it lives and the other arms):
    the replicate takes its adapter, log and manifest entry, and its time is counted once (as a trial)."""
    d, doc = tuned
    r0 = Run.open(d / "r0")
    for arm, stage, adapter in (("ssb", "distill", "student"), ("grpo", "grpo", "grpo")):
        t = doc["tuning"][arm]
        chosen = next(x for x in t["trials"] if x["lr"] == t["chosen"]["lr"])
        assert doc["tuning_protocol"]["replicate_0"][arm] == {"from_trial": chosen["run_dir"]}
        assert r0.stage(stage)["copied_from"] == chosen["run_dir"]
        src = Path(chosen["run_dir"]) / adapter / "adapter_model.safetensors"
        assert (r0.file(adapter) / "adapter_model.safetensors").read_bytes() == src.read_bytes()
        logged = summarize(Run.open(chosen["run_dir"]), stage)
        assert logged and doc["arms"][arm]["training"][0] == logged  # the replicate's summary is the trial's
        assert f"stage:{stage}" not in doc["timing"]["by_part"]  # counted in tuning:training only


@pytest.mark.slow
def test_the_validation_draw_is_disjoint_from_training_and_held_out_problems(tuned):
    d, doc = tuned
    validation = {normalize_question(r["question"]) for r in read_jsonl(d / "tune/validation/holdout.problems.jsonl")}
    held = {normalize_question(r["question"]) for r in read_jsonl(d / "eval/holdout.problems.jsonl")}
    train = {normalize_question(r["problem"]["question"]) for r in read_jsonl(d / "r0/rollouts.jsonl")}
    assert len(validation) == 6 and len(held) == 8
    assert not validation & held and not validation & train and not held & train
    # trials took replicate 0's rollouts and pairs as they are: nothing generated again
    trial = Run.open(doc["tuning"]["ssb"]["trials"][0]["run_dir"])
    assert trial.file("pairs.jsonl").read_bytes() == (d / "r0/pairs.jsonl").read_bytes()
    assert trial.stage("rollout")["copied_from"] == str(d / "r0")


@pytest.mark.slow
def test_the_suite_rerun_state_reads_a_comparison_directory(tuned):
    """``bench.suite_rerun --state``'s reading of a comparison directory (the partial state committed while
    a task runs): every trial scored with the validation accuracy the tuning recorded, the stages done."""
    from bench.suite_rerun import command, task_state

    d, doc = tuned
    st = task_state(d.name, root=d.parent)
    recorded = {Path(t["run_dir"]).name: t["validation_accuracy"] for a in doc["tuning"].values() for t in a["trials"]}
    assert {t["trial"]: t["validation_accuracy"] for t in st["trials"]} == recorded
    assert {t["validation_n"] for t in st["trials"]} == {6}
    assert st["trials_scored"] == len(recorded) and st["tuning_done"] and st["results_written"]
    assert all(t["trained"] in (["distill"], ["grpo"]) and t["train_seconds"] > 0 for t in st["trials"])
    assert {"rollout", "distill", "grpo"} <= set(st["replicates"]["r0"])
    assert "--tune" in command("chain_sum") and "--no-curves" in command("chain_sum3")


@pytest.mark.slow
def test_a_comparison_restored_from_its_packs_is_not_trained_or_evaluated_again(tuned, tmp_path):
    """``bench.suite_rerun``'s packs (what a session commits of a task, since ``runs/`` does not outlive
    its machine): each scored trial, the search, the held-out draw and each finished replicate, text files
    only. Restored where the comparison lived, every adapter gone, ``ssb compare`` trains and evaluates
    nothing again and writes the same results: with the search interrupted before its record (the trials
    read back from their packs), and with the search recorded but its trials and validation draw lost (the
    record kept, the same draw drawn again)."""
    import shutil

    from bench.suite_rerun import restore, save, task_state

    d, doc = tuned
    done = json.loads((d / "eval" / "r0.done.json").read_text())  # evaluated as soon as it was trained
    assert done["replicate"] == 0 and set(done["labels"]) == {"r0-ssb", "r0-grpo"}
    packs = tmp_path / "packs"
    written = sorted(p.name for p in save(d.name, root=d.parent, packs=packs))
    trials = sorted(Path(t["run_dir"]).name for a in doc["tuning"].values() for t in a["trials"])
    assert written == sorted(["heldout.tar.gz", "r0.tar.gz", "tune.tar.gz", *[f"trial-{t}.tar.gz" for t in trials]])
    assert save(d.name, root=d.parent, packs=packs) == []  # written once
    with tarfile.open(packs / d.name / "r0.tar.gz") as tar:
        names = tar.getnames()
    assert "r0/manifest.json" in names and "eval/r0-ssb/holdout.jsonl" in names and "eval/seconds.r0.json" in names
    assert not [n for n in names if n.endswith(("adapter_config.json", ".safetensors"))]
    shutil.move(d, tmp_path / "lost")  # the machine is gone: runs/ with it
    validation = tmp_path / "lost" / "tune" / "validation" / "holdout.problems.jsonl"
    argv = [sys.executable, "-m", "ssb.cli", "compare", "configs/smoke.yaml", "--replicates", "1", "--n", "8",
            "--k-max", "0", "--no-curves", "--arms", "base,ssb,grpo", "--tune", "--dir", str(d),
            "--set", "tune.lr_factors=[0.1,1]", "--set", "tune.validation_n=6"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for lost in (["tune/tuning.json"], [*[f"tune/{t}" for t in trials], *[f"tune/validation/{t}" for t in trials],
                                         "tune/validation/holdout.problems.jsonl"]):
        assert len(restore(d.name, root=d.parent, packs=packs)) == len(written)
        assert not list(d.rglob("adapter_model.safetensors"))
        for f in lost:
            shutil.rmtree(d / f) if (d / f).is_dir() else (d / f).unlink()
        if "tune/tuning.json" not in lost:  # the trials' directories are gone: --state reads the record
            st = task_state(d.name, root=d.parent)
            assert {t["trial"]: t["validation_accuracy"] for t in st["trials"]} == {
                Path(t["run_dir"]).name: t["validation_accuracy"] for a in doc["tuning"].values() for t in a["trials"]}
            assert all(t["from_record"] for t in st["trials"]) and st["tuning_done"]
        res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-4000:]
        assert "starting" not in res.stderr.replace("[report] starting", "")  # no stage but the report ran
        again = json.loads((d / "results.json").read_text())
        assert (d / "tune/validation/holdout.problems.jsonl").read_bytes() == validation.read_bytes()
        for arm in ("base", "ssb", "grpo"):
            assert again["arms"][arm]["accuracy"] == doc["arms"][arm]["accuracy"]
            assert again["arms"][arm].get("compute") == doc["arms"][arm].get("compute")
        assert again["tuning"] == doc["tuning"] and again["arms"]["grpo"]["vs_ssb"] == doc["arms"]["grpo"]["vs_ssb"]
        shutil.rmtree(d)
    shutil.move(tmp_path / "lost", d)  # the module's later tests read the original
