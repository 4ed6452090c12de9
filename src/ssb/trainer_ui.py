"""What a training stage (distill, sft, rft, grpo) shows and reports: one progress bar, trackers.

The terminal gets one bar per training stage (:class:`TrainProgress`, in place of transformers'
``ProgressCallback``, which writes every step's log dict between the bars). Its total is what
will really run: the optimizer steps, or for a budgeted GRPO the budget in its unit (FLOPs,
tokens, seconds), advanced by what each step spent, so it ends where the budget stops training.
Its postfix shows the latest loss (GRPO: reward, loss, kl). The per-step metrics go to the
stage's JSONL log and to the trackers of ``tracking.report_to`` (:func:`report_to`,
:func:`point_trackers`), never to the terminal.

Third-party warnings that tell the user nothing are filtered where our code raises them, one
message at a time (:func:`known_warnings_filtered`); every other warning shows.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from transformers import TrainerCallback

# (message start, category) of the warnings our training code paths raise that say nothing to the
# user: transformers 5 renamed gradient checkpointing, and peft and TRL still read the old name
KNOWN_WARNINGS = (
    ("`is_gradient_checkpointing` is deprecated", FutureWarning),
    ("`gradient_checkpointing` is deprecated", FutureWarning),
)


@contextmanager
def known_warnings_filtered() -> Iterator[None]:
    """The body with :data:`KNOWN_WARNINGS` ignored (each by its message), every other warning as before."""
    with warnings.catch_warnings():
        for message, category in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message), category=category)
        yield


def report_to(tracking) -> list[str]:
    """``tracking.report_to`` ("none", "tensorboard", "tensorboard,wandb", ...) as transformers' list."""
    return [x.strip() for x in tracking.report_to.split(",") if x.strip() and x.strip() != "none"]


def tracking_dir(run, stage: str) -> Path:
    """Where the stage's tensorboard event files go: ``<tracking.logging_dir or run/tensorboard>/<stage>``."""
    root = run.cfg.tracking.logging_dir
    return (Path(root) if root else run.file("tensorboard")) / stage


def point_trackers(trainer, run, stage: str) -> None:
    """Send the trainer's tensorboard events to :func:`tracking_dir` (transformers' default is a
    dated folder under the checkpoints); other trackers keep their own settings (W&B: ``WANDB_*``)."""
    for cb in trainer.callback_handler.callbacks:
        if type(cb).__name__ == "TensorBoardCallback" and getattr(cb, "logging_dir", None) is None:
            cb.logging_dir = str(tracking_dir(run, stage))


class TrainProgress(TrainerCallback):
    """One tqdm bar for a training run. ``measure(state)`` is the amount done in the bar's unit
    (None: optimizer steps, total ``state.max_steps``); ``total`` the bar's total in that unit.
    ``postfix``: the log keys shown (under their own names) after the bar. ``final`` holds the
    bar's last ``n`` and ``total`` once training ends."""

    def __init__(self, desc: str, postfix: tuple[str, ...] = ("loss",), total: float | None = None,
                 measure: Callable | None = None, unit: str = "step"):
        self.desc, self.postfix, self.total, self.measure, self.unit = desc, postfix, total, measure, unit
        self.bar = None
        self.final: dict | None = None
        self._shown: dict[str, str] = {}

    def _done(self, state) -> float:
        done = self.measure(state) if self.measure is not None else state.global_step
        return min(done or 0, self.bar.total) if self.bar is not None else done or 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from tqdm.auto import tqdm  # what transformers' own bar uses (notebooks get a widget)

        total = self.total if self.total is not None else state.max_steps
        self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, unit_scale=self.unit != "step",
                        dynamic_ncols=True)
        self.bar.update(self._done(state))  # a resumed run starts where its checkpoint stopped

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(self._done(state) - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "train_runtime" in logs:
            return
        shown = {k: f"{logs[k]:.4g}" for k in self.postfix if isinstance(logs.get(k), (int, float))}
        if shown:
            self._shown = shown
            self.bar.set_postfix(shown, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.final = {"n": self.bar.n, "total": self.bar.total, "postfix": dict(self._shown)}
            self.bar.close()
            self.bar = None


def show_progress(trainer, bar: TrainProgress) -> TrainProgress:
    """``trainer`` with ``bar`` in place of transformers' ``ProgressCallback`` (and of its
    ``PrinterCallback``, which prints every log dict when tqdm is off); returns ``bar``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(bar)
    return bar
