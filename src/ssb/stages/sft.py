"""Baselines that fine-tune with cross-entropy, beside SSB on the same problems, prompt and LoRA.

    ssb sft --run runs/NAME     (baselines.sft: true)
    ssb rft --run runs/NAME     (baselines.rft: true)

* ``sft``: the teacher's verified solutions (``pairs.jsonl``, the pairs SSB distils) as hard
  labels under the bare student prompt: SSB's data with cross-entropy instead of the
  teacher's distribution (the hard-versus-soft question the paper leaves open).
* ``rft``: the model's own verified correct rollouts (``rollouts.jsonl``: graded correct and not
  cut off at ``max_new_tokens``), up to ``baselines.rft_per_problem`` distinct ones per problem
  that has any, no teacher: rejection-sampling fine-tuning (STaR / RFT), one round. It sees
  every problem with a correct rollout, including those SSB's curation drops because no
  rollout was wrong.

Both train with the ``distill`` section's settings (epochs, batch size, learning rate (unless
``baselines.sft_lr`` / ``rft_lr`` sets the arm's own, as ``ssb compare --tune`` does) and
schedule, max_length, ``save_every_epoch``) and the ``lora`` adapter, so only the loss and the
data differ from SSB; the loss is the mean cross-entropy per reply token over the batch
(transformers' own, reply tokens only: prompt positions are ``-100``). Outputs: ``<name>/``
(adapter + tokenizer), ``<name>_log.jsonl``, ``<name>_checkpoints/`` with ``distill.save_steps``
(a rerun resumes), ``<name>_epochs/`` with ``distill.save_every_epoch``.
"""

from __future__ import annotations

import logging
import time

import torch
from transformers import Trainer

from ..data.problem import Problem
from ..models import load_model, resolve_device
from ..prompts import student_messages
from ..rundir.jsonl import read_jsonl
from ..rundir.run import Run
from ..signal.alignment import AlignmentError, prompt_and_reply_ids
from ..training import (TrainProgress, known_warnings_filtered, point_trackers, save_adapter, show_progress,
                        training_args, training_setup)

log = logging.getLogger(__name__)


class CECollator:
    """Right-pads a batch; ``labels`` are the reply tokens (``-100`` on the prompt and padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in feats)
        ids = torch.full((len(feats), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, f in enumerate(feats):
            n, p = len(f["input_ids"]), f["prompt_len"]
            ids[i, :n] = torch.tensor(f["input_ids"])
            attn[i, :n] = 1
            labels[i, p:n] = ids[i, p:n]
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def sft_examples(run: Run) -> list[dict]:
    """``{id, messages, reply}`` per pair of ``pairs.jsonl``: the student prompt and the teacher's solution."""
    return [{"id": str(r["id"]), "messages": r["student_messages"], "reply": r["solution"]}
            for r in read_jsonl(run.file("pairs.jsonl"))]


def rft_examples(run: Run) -> list[dict]:
    """``{id, messages, reply}`` per kept rollout: graded correct, finished (not cut off), distinct
    text, at most ``baselines.rft_per_problem`` per problem, in rollout order."""
    cfg, out = run.cfg, []
    for rec in read_jsonl(run.file("rollouts.jsonl")):
        problem = Problem.from_dict(rec["problem"])
        seen: set[str] = set()
        for text, outcome, finish in zip(rec["completions"], rec["grades"], rec["finish_reasons"]):
            if outcome == "correct" and finish == "stop" and text.strip() not in seen:
                seen.add(text.strip())
                out.append({"id": f"{rec['id']}#{len(seen)}", "messages": student_messages(cfg.prompt, problem.question),
                            "reply": text})
                if len(seen) >= cfg.baselines.rft_per_problem:
                    break
    return out


def _items(examples: list[dict], tok, max_length: int) -> tuple[list[dict], dict]:
    items, stats = [], {"examples_in": len(examples), "too_long": 0, "not_aligned": 0}
    for ex in examples:
        try:
            prompt, reply = prompt_and_reply_ids(tok, ex["messages"], ex["reply"])
        except AlignmentError as exc:
            stats["not_aligned"] += 1
            log.warning("%s skipped: %s", ex["id"], exc)
            continue
        if len(prompt) + len(reply) > max_length:
            stats["too_long"] += 1
            continue
        items.append({"id": ex["id"], "input_ids": prompt + reply, "prompt_len": len(prompt)})
    return items, stats


def ce_args(run: Run, name: str):
    """The Trainer's arguments of the baseline ``name`` (sft or rft): the ``distill`` section's, at the arm's
    own learning rate (``baselines.<name>_lr``, which ``ssb compare --tune`` sets) when set, else SSB's."""
    cfg = run.cfg
    dc = cfg.distill.model_copy(update={"lr": getattr(cfg.baselines, f"{name}_lr") or cfg.distill.lr})
    return training_args(run, dc, resolve_device(cfg.model.device), stage=name, checkpoints=f"{name}_checkpoints")


def train_ce(run: Run, name: str, examples: list[dict]) -> dict:
    """Train the LoRA adapter ``name`` (sft or rft) with cross-entropy on ``examples``."""
    cfg, dc = run.cfg, run.cfg.distill
    with run.stage_run(name) as info:
        if not examples:
            raise ValueError(f"{name}: nothing to train on ({'pairs.jsonl' if name == 'sft' else 'no correct rollout'})")
        args = ce_args(run, name)
        lm = load_model(cfg.model)
        items, stats = _items(examples, lm.tokenizer, dc.max_length)
        if not items:
            raise ValueError(f"{name}: every example was left out ({stats})")
        model, resume, callbacks, seq_tokens = training_setup(run, lm, items, f"{name}_checkpoints",
                                                              f"{name}_log.jsonl", f"{name}_epochs")
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        trainer = Trainer(model=model, args=args, train_dataset=items, data_collator=CECollator(pad),
                          callbacks=callbacks)
        show_progress(trainer, TrainProgress(name))
        point_trackers(trainer, run, name)
        t0 = time.time()
        with known_warnings_filtered():
            result = trainer.train(resume_from_checkpoint=resume)
        out = run.file(name)
        save_adapter(model, lm.tokenizer, out)
        info.update(**stats, examples=len(items), problems=len({it["id"].split("#")[0] for it in items}),
                    reply_tokens=sum(len(it["input_ids"]) - it["prompt_len"] for it in items),
                    trained_tokens=int(seq_tokens * dc.epochs), steps=trainer.state.global_step, epochs=dc.epochs,
                    train_seconds=round(time.time() - t0, 2), train_loss=round(result.training_loss, 6),
                    lr=args.learning_rate, resumed_from=resume, adapter=str(out))
        return dict(info)


def run_sft(run: Run) -> dict:
    """``sft``: cross-entropy on the teacher's verified solutions (``pairs.jsonl``)."""
    return train_ce(run, "sft", sft_examples(run))


def run_rft(run: Run) -> dict:
    """``rft``: cross-entropy on the model's own verified correct rollouts."""
    return train_ce(run, "rft", rft_examples(run))
