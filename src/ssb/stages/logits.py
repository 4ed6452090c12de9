"""Stage 4: the teacher signal over the answer tokens, stored compact and exact.

One no-grad forward pass of the frozen base model over each teacher sequence
(hinted prompt ‖ reply, see signal/alignment.py), batched and length-sorted, keeping only
the positions that predict reply tokens. Two stores (``logits.store``):

* ``hidden`` (default, exact): the final post-norm hidden state, the LM head's
  input, in ``logits.dtype`` (fp16: 2 × hidden_size bytes per answer token). In
  SSB the teacher *is* the frozen base model, so distill.py recomputes its logits
  with the same frozen head and the model's post-head transform (soft-capping or
  scaling, lm_head.logit_transform); the head's hash is recorded and a different head refused.
* ``topk``: top-k ids and logits plus the full-vocabulary log-sum-exp of
  ``logits / T`` at the distillation temperature T, so the mass outside the top-k
  is one exact tail bucket. For teachers whose head is not at hand; lossy at T > 1
  (the tempered teacher spreads mass far beyond its top-k; :func:`check_store_temperature`).

Layout::

    teacher/shard-00000.safetensors   tensors over the shard's answer tokens, rows in example order
    teacher/index.json                store kind, dtype, k, temperature, fingerprint, head hash,
                                      shards (file, bytes, tokens), examples (id, shard, offset,
                                      length, prompt_len, reply_ids)

Before computing, :func:`check_head` verifies on one sequence that the recomputed logits
equal the model's own forward logits, and refuses the model otherwise.

Each shard also carries its own examples in its safetensors metadata and is written
atomically, so a killed run keeps its completed shards and recomputes the rest.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..errors import MissingFileError
from ..models import fingerprint, load_model
from ..rundir.jsonl import atomic_write_json, read_jsonl
from ..rundir.run import iter_batches
from ..signal.alignment import AlignedPair, AlignmentError, align_pair, answer_slice
from ..signal.lm_head import LogitTransform, answer_hidden_states, logit_transform
from ..signal.losses import model_logits
from ..signal.store import (STORE_VERSION, TENSORS, TeacherStoreError, check_store_temperature, head_hash,
                            read_shard_meta)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- computing


def pad_batch(seqs: list[list[int]], prompt_lens: list[int], reply_lens: list[int], pad_id: int):
    """Right-padded ``[B, T]`` ids, attention mask and answer-position mask of ``seqs``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    answer = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        answer[i, answer_slice(prompt_lens[i], reply_lens[i])] = True
    return ids, attn, answer


@torch.no_grad()
def teacher_hidden(model, pairs: list[AlignedPair], pad_id: int) -> list[torch.Tensor]:
    """Post-norm hidden states ``[reply_len, H]`` of each teacher sequence at its answer positions."""
    dev = next(model.parameters()).device
    ids, attn, answer = pad_batch([p.teacher_ids for p in pairs], [len(p.teacher_prompt_ids) for p in pairs],
                                  [len(p.reply_ids) for p in pairs], pad_id)
    h = answer_hidden_states(model, ids.to(dev), attn.to(dev), answer.to(dev))
    return list(h.split([len(p.reply_ids) for p in pairs]))


@torch.no_grad()
def check_head(model, pair: AlignedPair, pad_id: int) -> float:
    """Max |model logits - recomputed logits| on one sequence, where the recomputed logits are the
    LM head applied to the captured hidden state, then the model's own post-head transform
    (soft-capping, scaling: :func:`lm_head.logit_transform`). Both stores rely on that
    recomputation, so a model whose logits still differ (post-processing ssb does not know) is
    refused with :class:`TeacherStoreError`."""
    dev = next(model.parameters()).device
    ids, attn, answer = pad_batch([pair.teacher_ids], [len(pair.teacher_prompt_ids)], [len(pair.reply_ids)], pad_id)
    logits = model(input_ids=ids.to(dev), attention_mask=attn.to(dev), logits_to_keep=answer.to(dev)).logits
    head = model.get_output_embeddings()
    (h,) = teacher_hidden(model, [pair], pad_id)
    tf = logit_transform(model)
    mine = model_logits(h, head.weight, getattr(head, "bias", None), tf)
    diff = (mine - logits.float().reshape(h.shape[0], -1)).abs().max()
    scale = logits.float().abs().max()
    if not diff <= 1e-3 * (1 + scale):  # also catches NaN
        kind = getattr(getattr(model, "config", None), "model_type", "?")
        raise TeacherStoreError(
            f"model type {kind!r}: its logits are not its LM head applied to the final hidden state followed by "
            f"the post-processing ssb knows ({tf.to_dict()}; max diff {float(diff):.3g}); ssb cannot recompute "
            "this model's logits for the teacher store (hidden or topk); use another model")
    return float(diff)


def encode(h: torch.Tensor, store: str, dtype: torch.dtype, head, k: int, temperature: float,
           chunk: int = 1024, transform: LogitTransform | None = None) -> dict[str, torch.Tensor]:
    """The stored tensors for answer-position hidden states ``h`` ``[n, H]`` (``transform``: the
    model's post-head logit transform, used by the topk store)."""
    if store == "hidden":
        out = h.to(dtype)
        if not torch.isfinite(out).all():
            raise TeacherStoreError(f"hidden states overflow {dtype}; set logits.dtype=bfloat16 or float32")
        return {"hidden": out.cpu()}
    ids, vals, lse = [], [], []
    for s in range(0, h.shape[0], chunk):
        z = model_logits(h[s: s + chunk], head.weight, getattr(head, "bias", None), transform)
        v, i = z.topk(min(k, z.shape[-1]), dim=-1)
        ids.append(i.to(torch.int32).cpu())
        vals.append(v.to(dtype).cpu())
        lse.append(torch.logsumexp(z / temperature, dim=-1).float().cpu())
    return {"topk_ids": torch.cat(ids), "topk_logits": torch.cat(vals), "lse": torch.cat(lse)}


# ----------------------------------------------------------------------------- shards on disk


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def _write_shard(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"ssb": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _settings(cfg, lm) -> dict:
    lc = cfg.logits
    return {
        "version": STORE_VERSION,
        "store": lc.store,
        "dtype": lc.dtype,
        "k": lc.topk if lc.store == "topk" else None,
        "temperature": cfg.distill.temperature if lc.store == "topk" else None,
        "fingerprint": fingerprint(lm.model, lm.tokenizer, lm.name),
        "head_hash": head_hash(lm.model),
        "hidden_size": int(lm.model.get_output_embeddings().weight.shape[1]),
        "vocab_size": int(lm.model.get_output_embeddings().weight.shape[0]),
        "logit_transform": logit_transform(lm.model).to_dict(),
    }


def _completed_shards(out: Path, settings: dict) -> list[dict]:
    """Shards kept from an earlier (interrupted) run with the same settings; others are removed."""
    for tmp in out.glob(".shard-*.tmp*"):
        tmp.unlink(missing_ok=True)
    kept = []
    for path in sorted(out.glob("shard-*.safetensors")):
        try:
            meta = read_shard_meta(path)
        except TeacherStoreError as exc:
            log.warning("%s; recomputing it", exc)
            path.unlink()
            continue
        if meta.get("settings") != settings:
            log.warning("%s was computed with other settings (store/dtype/k/temperature/model); recomputing", path)
            path.unlink()
            continue
        meta["file"] = path.name
        meta["bytes"] = path.stat().st_size
        kept.append(meta)
    return kept


def _write_index(out: Path, settings: dict, shards: list[dict]) -> dict:
    examples = []
    for sh in shards:
        for ex in sh["examples"]:
            examples.append({**ex, "shard": sh["file"]})
    index = {
        **settings,
        "n_examples": len(examples),
        "n_tokens": sum(sh["n_tokens"] for sh in shards),
        "shards": [{"file": sh["file"], "bytes": sh["bytes"], "n_tokens": sh["n_tokens"],
                    "n_examples": len(sh["examples"])} for sh in shards],
        "examples": examples,
    }
    atomic_write_json(out / "index.json", index)
    return index


# ----------------------------------------------------------------------------- the stage


def run_logits(run) -> dict:
    """Compute the teacher signal for every pair in ``pairs.jsonl`` into ``teacher/``."""
    cfg, lc = run.cfg, run.cfg.logits
    pairs = read_jsonl(run.file("pairs.jsonl"))
    if not pairs:
        raise MissingFileError(f"{run.file('pairs.jsonl')} is missing or empty; run `ssb curate` first")
    with run.stage_run("logits") as info:
        lm = load_model(cfg.model)
        model, tok = lm.model, lm.tokenizer
        settings = _settings(cfg, lm)
        if msg := check_store_temperature(lc.store, settings["temperature"], cfg.distill.temperature):
            warnings.warn(msg)
            log.warning(msg)
        out = run.file("teacher")
        out.mkdir(parents=True, exist_ok=True)
        shards = _completed_shards(out, settings)
        done = {ex["id"] for sh in shards for ex in sh["examples"]}

        todo, skipped = [], []
        for rec in pairs:
            if str(rec["id"]) in done:
                continue
            try:
                todo.append((str(rec["id"]), align_pair(tok, rec["teacher_messages"], rec["student_messages"],
                                                        rec["solution"], cfg.distill.max_length)))
            except AlignmentError as exc:
                skipped.append({"id": str(rec["id"]), "reason": str(exc)})
                log.warning("pair %s skipped: %s", rec["id"], exc)

        dtype = getattr(torch, lc.dtype)
        head = model.get_output_embeddings()
        tf = logit_transform(model)
        if todo:  # both stores recompute logits from the head input: check that this gives the model's own
            info["head_check_max_abs_diff"] = check_head(model, todo[0][1], tok.pad_token_id)
        next_i = max((int(sh["file"][6:11]) for sh in shards), default=-1) + 1
        bar = tqdm(total=len(todo), desc="teacher signal", unit="ex")
        for chunk in iter_batches(todo, lc.shard_size):
            encoded: dict[str, dict] = {}
            for batch in iter_batches(sorted(chunk, key=lambda x: len(x[1].teacher_ids)), lc.batch_size):
                hs = teacher_hidden(model, [p for _, p in batch], tok.pad_token_id)
                for (pid, _), h in zip(batch, hs):
                    encoded[pid] = encode(h, lc.store, dtype, head, lc.topk, cfg.distill.temperature, transform=tf)
                bar.update(len(batch))
            examples, offset = [], 0
            for pid, pair in chunk:  # rows in pairs.jsonl order
                n = len(pair.reply_ids)
                examples.append({"id": pid, "offset": offset, "length": n,
                                 "prompt_len": len(pair.teacher_prompt_ids), "reply_ids": pair.reply_ids})
                offset += n
            tensors = {name: torch.cat([encoded[pid][name] for pid, _ in chunk]) for name in TENSORS[lc.store]}
            path = out / _shard_name(next_i)
            meta = {"settings": settings, "examples": examples, "n_tokens": offset}
            _write_shard(path, tensors, meta)
            shards.append({**meta, "file": path.name, "bytes": path.stat().st_size})
            next_i += 1
        bar.close()

        index = _write_index(out, settings, shards)
        total_bytes = sum(sh["bytes"] for sh in shards)
        info.update(store=lc.store, examples=index["n_examples"], answer_tokens=index["n_tokens"],
                    forward_tokens=sum(e["prompt_len"] + e["length"] for e in index["examples"]),  # report/ledger.py
                    computed=len(todo), resumed=len(done), skipped=len(skipped), skipped_pairs=skipped[:50],
                    shards=len(shards), bytes=total_bytes,
                    bytes_per_token=round(total_bytes / max(index["n_tokens"], 1), 1),
                    fingerprint=settings["fingerprint"], head_hash=settings["head_hash"])
        return dict(info)
