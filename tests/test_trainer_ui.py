"""What the training stages show and report (issue 26): one progress bar per stage whose total is
what really runs (a budgeted GRPO: the budget, in its unit), no per-step log dict in the terminal,
the known deprecation warnings filtered where they are raised, and ``tracking.report_to`` read
by every training stage (tensorboard event files that read back with the loss)."""

from __future__ import annotations

import re
import warnings

import pytest

from ssb.config import RunConfig, load_config

LOG_DICT = re.compile(r"\{'(loss|train_runtime|reward)'")


def _no_log_dicts(capfd) -> str:
    out, err = capfd.readouterr()
    text = out + err
    assert not LOG_DICT.search(text), [ln for ln in text.splitlines() if LOG_DICT.search(ln)][:3]
    return text


def _capture_bars(monkeypatch, module) -> list:
    """Every TrainProgress that ``module.show_progress`` installs, kept for the test to read."""
    bars = []
    real = module.show_progress

    def keep(trainer, bar):
        bars.append(bar)
        return real(trainer, bar)

    monkeypatch.setattr(module, "show_progress", keep)
    return bars


def _scalars(logdir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(logdir.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {logdir}"
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ----------------------------------------------------------------------------- config


def test_report_to_is_one_field_and_the_old_key_still_reads(tmp_path, caplog):
    assert RunConfig.model_validate({}).tracking.report_to == "none"
    f = tmp_path / "c.yaml"
    f.write_text("distill:\n  report_to: tensorboard\n")
    with caplog.at_level("WARNING"):
        cfg = load_config(f)
    assert cfg.tracking.report_to == "tensorboard"
    assert "distill.report_to -> tracking.report_to" in caplog.text
    from ssb.training import report_to

    assert report_to(cfg.tracking) == ["tensorboard"]
    assert report_to(load_config(None, ["tracking.report_to=tensorboard, wandb"]).tracking) == ["tensorboard", "wandb"]
    assert report_to(RunConfig.model_validate({}).tracking) == []


def test_known_warnings_are_filtered_by_message_only():
    from ssb.training import known_warnings_filtered

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with known_warnings_filtered():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
            warnings.warn("something else is deprecated", FutureWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated (outside: shown)", FutureWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated",
                                              "`is_gradient_checkpointing` is deprecated (outside: shown)"]


# ----------------------------------------------------------------------------- distill


def test_distill_shows_one_bar_and_writes_tensorboard(tmp_path, tiny_model_dir, capfd, monkeypatch, recwarn):
    from test_teacher_distill import make_run

    from ssb.rundir.jsonl import read_jsonl
    from ssb.stages import distill
    from ssb.stages.logits import run_logits

    run = make_run(tmp_path, tiny_model_dir, logits={"batch_size": 4}, lora={"r": 4, "alpha": 8},
                   distill={"epochs": 2, "batch_size": 3, "chunk_size": 16}, tracking={"report_to": "tensorboard"})
    run_logits(run)
    bars = _capture_bars(monkeypatch, distill)
    capfd.readouterr()
    info = distill.run_distill(run)
    _no_log_dicts(capfd)
    assert len(bars) == 1 and bars[0].final["n"] == bars[0].final["total"] == info["steps"] == 4
    assert "loss" in bars[0].final["postfix"]
    assert len(read_jsonl(run.file("train_log.jsonl"))) == 4  # the metrics are in the log
    assert not [w for w in recwarn if "gradient_checkpointing` is deprecated" in str(w.message)]
    scalars = _scalars(run.file("tensorboard/distill"))
    assert len(scalars["train/loss"]) == 4 and "train/kd" in scalars


# ----------------------------------------------------------------------------- grpo


def test_budgeted_grpo_bar_ends_where_the_budget_stops(tmp_path, tiny_model_dir, capfd, monkeypatch, recwarn):
    """FLOPs budget: the bar's total is the budget in FLOPs and it stops full, at the step the
    budget stopped (the old bar announced the epochs' steps and stopped short)."""
    from test_grpo import _run

    from ssb import training as trainer_ui
    from ssb.stages import grpo

    run = _run(tmp_path, tiny_model_dir, max_steps=4)
    run.cfg.tracking.report_to = "tensorboard"
    run.set_stage("rollout", status="done")
    bars = _capture_bars(monkeypatch, trainer_ui)  # grpo imports it when training starts
    capfd.readouterr()
    info = grpo.run_grpo(run)
    _no_log_dicts(capfd)
    assert info["stopped_by"] == "FLOPs budget"
    (bar,) = bars
    assert bar.unit == "FLOP" and bar.final["total"] == info["budget_flops"] == bar.final["n"]
    assert {"reward", "loss"} <= set(bar.final["postfix"])
    assert not [w for w in recwarn if "gradient_checkpointing` is deprecated" in str(w.message)]
    scalars = _scalars(run.file("tensorboard/grpo"))
    assert len(scalars["train/loss"]) == info["steps"] and "train/reward" in scalars


def test_grpo_without_a_budget_counts_steps(tmp_path, tiny_model_dir, capfd, monkeypatch):
    from test_grpo import _run

    from ssb import training as trainer_ui
    from ssb.stages import grpo

    run = _run(tmp_path, tiny_model_dir, budget="steps", max_steps=2)
    bars = _capture_bars(monkeypatch, trainer_ui)  # grpo imports it when training starts
    capfd.readouterr()
    info = grpo.run_grpo(run)
    _no_log_dicts(capfd)
    assert bars[0].unit == "step" and bars[0].final["n"] == bars[0].final["total"] == info["steps"] == 2
    assert not run.file("tensorboard").exists()  # report_to none: no tracker
