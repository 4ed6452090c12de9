"""Stage 5: LoRA self-distillation of the frozen teacher signal into the bare-question student.

The student is a PEFT LoRA adapter on the same base model; its input is
chat-template(student_messages, generation prompt) ‖ the teacher's reply ids (stored
in ``teacher/index.json``), so it sees only the bare question. The loss is
losses.distill_loss over the answer positions (forward KL at temperature T, T²-scaled,
+ optional CE / reverse KL; ``distill.divergence`` picks another divergence), normalised per
answer token over the whole accumulated batch (the Trainer's ``num_items_in_batch``, counted
from ``labels``). With ``distill.token_weighting: hint_gain`` one no-grad forward of the frozen
base over the student sequences, before the adapter exists, gives each solution token's base
log-prob; with the teacher's from the store it is the token's hint gain
(``signal/diagnostic.hint_gains``), the loss's per-token weight (``losses.hint_gain_weights``),
and its tokens are the stage's ``forward_tokens`` in the ledger.

Training is the Hugging Face ``Trainer`` with a small collator and a ``compute_loss``
override, so accelerate (DDP, DeepSpeed), gradient accumulation, schedulers,
``report_to`` (``tracking``), checkpointing and ``resume_from_checkpoint`` are transformers' own.
Under ``accelerate launch`` the Trainer runs DDP (the logged loss, kd and ce are averaged
over processes; only the main process writes ``student/`` and ``train_log.jsonl``). FSDP
and DeepSpeed ZeRO-3 are refused (``distributed.check_supported``): the loss reads the
full LM head weight directly, and they shard it.

Writes ``student/`` (adapter + tokenizer), ``train_log.jsonl`` (one line per logging
step) and, with ``distill.save_steps``, ``checkpoints/`` (a rerun resumes from the last complete
checkpoint; one cut short by a kill is removed: ``training.resume_point``).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch
from transformers import Trainer

from ..config import ModelConfig
from ..errors import MissingFileError
from ..models import load_model, resolve_device
from ..rundir import distributed
from ..rundir.jsonl import read_jsonl
from ..signal.alignment import answer_slice, prompt_and_reply_ids
from ..signal.lm_head import answer_hidden_states, logit_transform
from ..signal.diagnostic import hint_gains
from ..signal.losses import TeacherSignal, distill_loss, hint_gain_weights
from ..signal.store import TENSORS, TeacherStore, TeacherStoreError, check_store_temperature
from ..training import (TrainProgress, known_warnings_filtered, point_trackers, save_adapter, show_progress,
                        training_args, training_setup)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data


class DistillDataset(torch.utils.data.Dataset):
    """One item per pair: student ids (prompt ‖ reply) and the teacher rows for its reply."""

    def __init__(self, items: list[dict], store: TeacherStore):
        self.items, self.store = items, store

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        return {**it, "teacher": self.store.get(it["id"])}


class DistillCollator:
    """Right-pads a batch; ``answer_mask`` marks the positions predicting reply tokens and
    ``labels`` (reply tokens, -100 elsewhere) lets the Trainer count answer tokens."""

    def __init__(self, pad_id: int, kind: str):
        self.pad_id, self.kind = pad_id, kind

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in feats)
        ids = torch.full((len(feats), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        answer = torch.zeros_like(ids, dtype=torch.bool)
        for i, f in enumerate(feats):
            n, p = len(f["input_ids"]), f["prompt_len"]
            ids[i, :n] = torch.tensor(f["input_ids"])
            attn[i, :n] = 1
            labels[i, p:n] = ids[i, p:n]
            answer[i, answer_slice(p, n - p)] = True
        batch = {"input_ids": ids, "attention_mask": attn, "labels": labels, "answer_mask": answer,
                 "targets": torch.cat([torch.tensor(f["input_ids"][f["prompt_len"]:]) for f in feats])}
        for name in TENSORS[self.kind]:
            batch[f"teacher_{name}"] = torch.cat([f["teacher"][name] for f in feats])
        if "hint_gain" in feats[0]:  # distill.token_weighting: hint_gain
            batch["hint_gain"] = torch.cat([torch.tensor(f["hint_gain"], dtype=torch.float32) for f in feats])
        return batch


def build_items(pairs: list[dict], store: TeacherStore, tokenizer, max_length: int) -> tuple[list[dict], dict]:
    """Student sequences for the pairs the store covers; checks the reply ids still match."""
    items, stats = [], {"pairs": len(pairs), "not_in_store": 0, "too_long": 0}
    for rec in pairs:
        pid = str(rec["id"])
        if pid not in store.examples:
            stats["not_in_store"] += 1
            continue
        stored = store.reply_ids(pid)
        prompt, reply = prompt_and_reply_ids(tokenizer, rec["student_messages"], rec["solution"])
        if reply != stored:
            raise TeacherStoreError(f"pair {pid}: reply tokens differ from the teacher store's; pairs.jsonl "
                                    "changed since `ssb logits` (rerun it)")
        if len(prompt) + len(reply) > max_length:
            stats["too_long"] += 1
            continue
        items.append({"id": pid, "input_ids": prompt + reply, "prompt_len": len(prompt)})
    return items, stats


# ----------------------------------------------------------------------------- trainer


class DistillTrainer(Trainer):
    """Trainer whose loss is the chunked distillation loss over answer positions."""

    def __init__(self, *args, distill_cfg, store_kind: str, store_temperature: float | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dc, self.store_kind, self.store_temperature = distill_cfg, store_kind, store_temperature
        # Count answer tokens over the accumulated batch (from `labels`) and let our loss,
        # normalised by that count, go unscaled by the number of accumulation steps.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self._acc = {"kd": 0.0, "ce": 0.0, "reverse_kl": 0.0, "answer_tokens": 0, "examples": 0}
        self._last_logged = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)
        head = unwrapped.get_output_embeddings()
        h = answer_hidden_states(model, inputs["input_ids"], inputs["attention_mask"], inputs["answer_mask"],
                                 head_owner=unwrapped)
        rows = {name: inputs[f"teacher_{name}"] for name in TENSORS[self.store_kind]}
        teacher = TeacherSignal(self.store_kind, temperature=self.store_temperature, **rows)
        dc = self.dc
        scale = 1.0
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            scale = float(self.accelerator.num_processes)  # the count is global; DDP averages gradients
        weights = hint_gain_weights(inputs["hint_gain"], dc.token_weight_max) if dc.token_weighting == "hint_gain" \
            else None
        parts = distill_loss(h, head.weight, getattr(head, "bias", None), teacher, inputs["targets"],
                             temperature=dc.temperature, kd_weight=dc.kd_weight, ce_weight=dc.ce_weight,
                             reverse_kl_weight=dc.reverse_kl_weight, chunk_size=dc.chunk_size,
                             normalizer=num_items_in_batch, logit_transform=logit_transform(unwrapped),
                             divergence=dc.divergence, jsd_beta=dc.jsd_beta, token_weights=weights)
        # without a count (no labels) the loss is a per-batch mean: let the Trainer scale it for accumulation
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if model.training:
            for k in ("kd", "ce", "reverse_kl"):
                self._acc[k] += float(getattr(parts, k)) * scale
            self._acc["answer_tokens"] += parts.n_tokens
            self._acc["examples"] += inputs["input_ids"].shape[0]
        loss = parts.loss * scale
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:
            steps = max(self.state.global_step - self._last_logged, 1)
            acc = self._acc
            if self.accelerator.num_processes > 1:  # distributed hook: the loss parts over all processes
                parts = torch.tensor([acc["kd"], acc["ce"], acc["reverse_kl"], acc["answer_tokens"],
                                      acc["examples"]], dtype=torch.float64, device=self.accelerator.device)
                parts = self.accelerator.reduce(parts, reduction="sum").tolist()
                n = self.accelerator.num_processes
                acc = {"kd": parts[0] / n, "ce": parts[1] / n, "reverse_kl": parts[2] / n,
                       "answer_tokens": parts[3], "examples": parts[4]}
            logs["kd"] = round(acc["kd"] / steps, 6)
            logs["ce"] = round(acc["ce"] / steps, 6)
            if self.dc.reverse_kl_weight:
                logs["reverse_kl"] = round(acc["reverse_kl"] / steps, 6)
            logs["answer_tokens_per_example"] = round(acc["answer_tokens"] / max(acc["examples"], 1), 2)
            self._acc = {k: 0.0 if isinstance(v, float) else 0 for k, v in acc.items()}
            self._last_logged = self.state.global_step
        super().log(logs, start_time)


# ----------------------------------------------------------------------------- the stage


def run_distill(run) -> dict:
    """Train the LoRA student on ``pairs.jsonl`` + ``teacher/``; save it to ``student/``."""
    cfg, dc = run.cfg, run.cfg.distill
    distributed.check_supported("distillation")  # distributed hook: FSDP / ZeRO-3 shard the LM head
    pairs = read_jsonl(run.file("pairs.jsonl"))
    if not pairs:
        raise MissingFileError(f"{run.file('pairs.jsonl')} is missing or empty; run `ssb curate` first")
    store = TeacherStore(run.file("teacher"))
    if msg := check_store_temperature(store.kind, store.temperature, dc.temperature):
        warnings.warn(msg)
    with run.stage_run("distill") as info:
        args = training_args(run, dc, resolve_device(cfg.model.device))  # checks settings before loading
        lm = load_model(cfg.model)
        store.check_model(lm.model, lm.tokenizer, lm.name)
        items, stats = build_items(pairs, store, lm.tokenizer, dc.max_length)
        if not items:
            raise TeacherStoreError(f"no pair of pairs.jsonl has a teacher signal in {store.path}: {stats}")
        if dc.token_weighting == "hint_gain":  # the frozen base's log-prob of each solution token, before the adapter
            gains = hint_gains(lm.model, store, items, lm.tokenizer.pad_token_id)
            for it in items:
                it["hint_gain"] = gains[it["id"]]
            info["forward_tokens"] = sum(len(it["input_ids"]) for it in items)  # report/ledger.py: 2N per token
        model, resume, callbacks, seq_tokens = training_setup(run, lm, items, "checkpoints", "train_log.jsonl",
                                                              "student_epochs")
        trainer = DistillTrainer(
            model=model, args=args,
            train_dataset=DistillDataset(items, store),
            data_collator=DistillCollator(lm.tokenizer.pad_token_id, store.kind),
            callbacks=callbacks,
            distill_cfg=dc, store_kind=store.kind, store_temperature=store.temperature,
        )
        show_progress(trainer, TrainProgress("distill"))
        point_trackers(trainer, run, "distill")
        t0 = time.time()
        with known_warnings_filtered():
            result = trainer.train(resume_from_checkpoint=resume)
        train_seconds = time.time() - t0
        out = run.file("student")
        save_adapter(model, lm.tokenizer, out)
        history = read_jsonl(run.file("train_log.jsonl"))
        answer_tokens = sum(len(it["input_ids"]) - it["prompt_len"] for it in items)
        info.update(
            **stats, examples=len(items), answer_tokens=answer_tokens, store=store.kind,
            trained_tokens=int(seq_tokens * dc.epochs),  # report/ledger.py: every position, prompt included
            steps=trainer.state.global_step, epochs=dc.epochs, resumed_from=resume,
            train_seconds=round(train_seconds, 2),
            answer_tokens_per_s=round(answer_tokens * dc.epochs / max(train_seconds, 1e-9), 1),
            train_loss=round(result.training_loss, 6),
            first_loss=history[0]["loss"] if history else None,
            last_loss=history[-1]["loss"] if history else None,
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
            base_fingerprint=store.fingerprint,
        )
        return dict(info)


def merge_adapter(model_cfg: ModelConfig | str, adapter_dir: str | Path, out_dir: str | Path) -> dict:
    """``ssb model merge``: base + LoRA adapter -> a standalone model directory (+ tokenizer)."""
    from peft import PeftModel  # lazy: see run_distill

    lm = load_model(model_cfg, device="cpu")
    with known_warnings_filtered():
        merged = PeftModel.from_pretrained(lm.model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(str(out), safe_serialization=True)
    lm.tokenizer.save_pretrained(str(out))
    return {"base": lm.name, "adapter": str(adapter_dir), "out": str(out)}
