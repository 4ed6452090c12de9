"""What every training stage (distill, sft, rft, grpo) shares: its setup, its resume rule, its logs
and adapters, and what it shows and reports (one progress bar, trackers).

Setup: :func:`training_args` (the Trainer's arguments from a ``distill``-shaped section),
:func:`training_setup` (seed, LoRA, resume point, callbacks). Resume: one rule for every stage,
:func:`resume_point` (the last complete checkpoint; one cut short by a kill is removed; the log
is cut back to it). Outputs: :class:`JsonlLogCallback` (the stage's JSONL log), :class:`EpochAdapters`
(an adapter per epoch, the points of ``ssb compare``'s curves), :func:`save_adapter`.

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

import json
import logging
import re
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from transformers import TrainerCallback, TrainingArguments, set_seed

from .errors import ConfigError
from .models import lora_config
from .rundir import distributed
from .rundir.jsonl import read_jsonl

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- logs and adapters


class JsonlLogCallback(TrainerCallback):
    """Appends each training log (loss, kd, ce, grad_norm, learning_rate, ...) to a JSONL file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            rec = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")


class EpochAdapters(TrainerCallback):
    """``distill.save_every_epoch``: the adapter after each epoch into ``<out>/epoch-<k>/`` and a line
    per epoch in ``<out>/points.json`` (epoch, step, trained tokens so far): the points of
    ``ssb compare``'s curves. Used by the distillation and by the sft/rft baselines."""

    def __init__(self, out: Path, tokens_per_epoch: int):
        self.out, self.tokens_per_epoch = Path(out), tokens_per_epoch

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        k = int(round(state.epoch or 0))
        model.save_pretrained(str(self.out / f"epoch-{k}"))
        f = self.out / "points.json"
        points = [p for p in (json.loads(f.read_text()) if f.is_file() else []) if p["epoch"] != k]
        points.append({"epoch": k, "dir": f"epoch-{k}", "step": state.global_step,
                       "trained_tokens": int(self.tokens_per_epoch * (state.epoch or 0))})
        f.write_text(json.dumps(sorted(points, key=lambda p: p["epoch"]), indent=1) + "\n")


# ----------------------------------------------------------------------------- setup and resume


def training_args(run, dc, device, stage: str = "distill", checkpoints: str = "checkpoints") -> TrainingArguments:
    """The Trainer's arguments for ``stage`` (distill, sft, rft) from ``dc`` and ``tracking``, its
    checkpoints in ``RUN/<checkpoints>``. ``distill.warmup_ratio`` goes to
    ``warmup_steps`` as a float in [0, 1), which transformers 5 reads as a share of the
    optimizer steps (``TrainingArguments.get_warmup_steps``: ``ceil(ratio * steps)``; it has
    no ``warmup_ratio`` any more); a value outside [0, 1), which it would read as a step
    count, raises :class:`ConfigError`."""
    if not 0 <= dc.warmup_ratio < 1:
        raise ConfigError(f"distill.warmup_ratio={dc.warmup_ratio} is not a share of the optimizer steps: "
                          "set distill.warmup_ratio in [0, 1)")
    return TrainingArguments(
        output_dir=str(run.file(checkpoints)),
        num_train_epochs=dc.epochs,
        per_device_train_batch_size=dc.batch_size,
        gradient_accumulation_steps=dc.grad_accum,
        learning_rate=dc.lr,
        lr_scheduler_type=dc.lr_scheduler,
        warmup_steps=float(dc.warmup_ratio),  # < 1: a share of the steps (see the docstring)
        weight_decay=dc.weight_decay,
        max_grad_norm=dc.max_grad_norm,
        logging_steps=dc.logging_steps,
        save_strategy="steps" if dc.save_steps else "no",
        save_steps=dc.save_steps or 500,
        report_to=report_to(run.cfg.tracking),
        run_name=f"{run.cfg.name}/{stage}",  # the trackers' name for it (W&B's run)
        seed=dc.seed,
        data_seed=dc.seed,
        remove_unused_columns=False,
        activation_checkpointing=dc.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if dc.gradient_checkpointing else None,
        use_cpu=device.type == "cpu",
        dataloader_pin_memory=device.type == "cuda",
        ddp_find_unused_parameters=False,  # distributed hook: every LoRA weight is used in each forward
        disable_tqdm=False,
    )


def resume_point(ckpt_dir: Path, log_path: Path) -> str | None:
    """The last *complete* checkpoint to resume from (None: start over, without a log).

    A run killed while saving leaves a checkpoint without ``trainer_state.json`` (the Trainer
    writes it last): such partial checkpoints are removed. Log lines after the checkpoint's
    step (logged before a save that never finished) are dropped, so the resumed run's log has
    each step once."""
    last = None
    for ck in sorted(ckpt_dir.glob("checkpoint-*") if ckpt_dir.is_dir() else [],
                     key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1):
        try:
            json.loads((ck / "trainer_state.json").read_text(encoding="utf-8"))
            last = ck
        except (OSError, ValueError):
            log.warning("removing incomplete checkpoint %s (the run was interrupted while saving it)", ck)
            shutil.rmtree(ck, ignore_errors=True)
    if last is None:
        log_path.unlink(missing_ok=True)
        return None
    step = int(last.name.split("-")[-1])
    keep = [r for r in read_jsonl(log_path) if r.get("step", 0) <= step]
    log_path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    return str(last)


def training_setup(run, lm, items: list[dict], ckpt: str, log_name: str, epochs_dir: str):
    """What the distillation and the cross-entropy baselines (``stages/sft.py``) set up alike: the seed,
    the LoRA adapter on ``lm``'s model, the checkpoint to resume from, the log and per-epoch callbacks,
    and the tokens of one epoch. Returns ``(model, resume, callbacks, seq_tokens)``."""
    from peft import get_peft_model  # lazy: ~3 s more than transformers, only to train or merge

    dc = run.cfg.distill
    set_seed(dc.seed)
    if dc.gradient_checkpointing:
        lm.model.enable_input_require_grads()
    with known_warnings_filtered():
        model = get_peft_model(lm.model, lora_config(run.cfg.lora))
    log_path = run.file(log_name)
    # distributed hook: the main process alone tidies checkpoints and the log, all resume from its answer
    resume = distributed.broadcast(resume_point(run.file(ckpt), log_path) if distributed.is_main() else None)
    seq_tokens = sum(len(it["input_ids"]) for it in items)
    callbacks = [JsonlLogCallback(log_path)]
    if dc.save_every_epoch:
        callbacks.append(EpochAdapters(run.file(epochs_dir), seq_tokens))
    return model, resume, callbacks, seq_tokens


def save_adapter(model, tokenizer, out: Path) -> None:
    """``out`` holds the adapter and the tokenizer, and nothing older (the main process saves, the others wait)."""
    if distributed.is_main():  # distributed hook
        if out.exists():
            shutil.rmtree(out)
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    distributed.barrier()
