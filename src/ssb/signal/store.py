"""The teacher signal's store, read side: ``teacher/index.json`` and its safetensors shards
(written by the ``logits`` stage, ``stages/logits.py``, which documents the layout), validated on
open and memory-mapped; the model check (fingerprint and LM head hash) and the distillation
temperature's rules for a store, which distill and any other reader share with the writer."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import SSBError
from ..models import fingerprint, fingerprint_diff, tensor_hash
from .losses import TeacherSignal

STORE_VERSION = 1
TENSORS = {"hidden": ("hidden",), "topk": ("topk_ids", "topk_logits", "lse")}


class TeacherStoreError(SSBError, RuntimeError):
    pass


def head_hash(model) -> str:
    head = model.get_output_embeddings()
    h = tensor_hash(head.weight)
    if getattr(head, "bias", None) is not None:
        h += "-" + tensor_hash(head.bias)
    return h


def check_store_temperature(kind: str, store_temperature: float | None, temperature: float) -> str | None:
    """The distillation temperature's rules, for this stage and distill: a ``kind`` store computed at
    ``store_temperature`` used at ``temperature``. Top-k only (hidden works at any T): another T
    than its lse's raises :class:`TeacherStoreError`; above T=1 returns the lossy warning."""
    if kind != "topk":
        return None
    if store_temperature is None or abs(store_temperature - temperature) > 1e-6:
        raise TeacherStoreError(f"the topk store was computed at temperature {store_temperature}, distill uses "
                                f"{temperature} (distill.temperature); rerun `ssb logits` to recompute it at "
                                f"{temperature}")
    if temperature > 1:
        return (f"the topk teacher store is lossy at temperature {temperature} > 1: the tempered teacher keeps "
                "much of its mass outside the top-k (one tail bucket stands for it); use store=hidden when the "
                "teacher's LM head is available")
    return None


def read_shard_meta(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["ssb"])
            meta["rows"] = {k: f.get_slice(k).get_shape()[0] for k in f.keys()}
    except Exception as exc:  # truncated / corrupt / foreign file
        raise TeacherStoreError(f"teacher shard {path} is unreadable (truncated or corrupt?): {exc}") from exc
    return meta


class TeacherStore:
    """Read side of ``teacher/``: validates the index and shards on open, memory-maps shards
    (safetensors ``safe_open``) and returns each example's rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / "index.json"
        if not index_path.exists():
            raise TeacherStoreError(f"{index_path} not found; run `ssb logits` first")
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        self.kind = self.index["store"]
        if self.index.get("version") != STORE_VERSION:
            raise TeacherStoreError(f"{self.path}: store version {self.index.get('version')} != {STORE_VERSION}")
        if not self.index["examples"] or not self.index["n_tokens"]:
            raise TeacherStoreError(f"{self.path}: the teacher store is empty")
        self._files: dict[str, object] = {}
        for sh in self.index["shards"]:
            self._validate(sh)
        self.examples = {ex["id"]: ex for ex in self.index["examples"]}

    def _validate(self, sh: dict) -> None:
        p = self.path / sh["file"]
        if not p.exists():
            raise TeacherStoreError(f"teacher shard {p} is missing")
        if p.stat().st_size != sh["bytes"]:
            raise TeacherStoreError(f"teacher shard {p} is truncated or altered: {p.stat().st_size} bytes, "
                                    f"index says {sh['bytes']}")
        meta = read_shard_meta(p)
        if sh["n_tokens"] <= 0 or meta["n_tokens"] != sh["n_tokens"]:
            raise TeacherStoreError(f"teacher shard {p} is empty or does not match the index")
        bad = {k: r for k, r in meta["rows"].items() if r != sh["n_tokens"]}
        if bad or set(meta["rows"]) != set(TENSORS[self.kind]):
            raise TeacherStoreError(f"teacher shard {p} has tensors {meta['rows']}, expected "
                                    f"{list(TENSORS[self.kind])} with {sh['n_tokens']} rows")

    # -- metadata
    @property
    def fingerprint(self) -> dict:
        return self.index["fingerprint"]

    @property
    def temperature(self) -> float | None:
        return self.index.get("temperature")

    def ids(self) -> list[str]:
        return list(self.examples)

    def reply_ids(self, pid: str) -> list[int]:
        return self.examples[pid]["reply_ids"]

    def check_model(self, model, tokenizer, model_id: str = "") -> None:
        """Refuse a student base model/tokenizer that differs from the teacher's."""
        diff = fingerprint_diff(self.fingerprint, fingerprint(model, tokenizer, model_id))
        if diff:
            raise TeacherStoreError(
                f"teacher store {self.path} was computed with a different model/tokenizer: {', '.join(diff)} "
                f"differ{'s' if len(diff) == 1 else ''} from the student's base "
                f"(teacher: {self.fingerprint.get('model_id')!r}); rerun `ssb logits` with this model")
        if self.kind == "hidden" and head_hash(model) != self.index["head_hash"]:
            raise TeacherStoreError(f"teacher store {self.path}: the student's LM head differs from the head the "
                                    "hidden states were stored for; rerun `ssb logits`")

    # -- rows
    def _file(self, name: str):
        if name not in self._files:
            self._files[name] = safe_open(str(self.path / name), framework="pt")
        return self._files[name]

    def get(self, pid: str) -> dict[str, torch.Tensor]:
        ex = self.examples[pid]
        f = self._file(ex["shard"])
        sl = slice(ex["offset"], ex["offset"] + ex["length"])
        return {name: f.get_slice(name)[sl] for name in TENSORS[self.kind]}

    def signal(self, rows: list[dict[str, torch.Tensor]]) -> TeacherSignal:
        cat = {name: torch.cat([r[name] for r in rows]) for name in TENSORS[self.kind]}
        return TeacherSignal(self.kind, temperature=self.temperature, **cat)

    def __getstate__(self):  # picklable for dataloader workers: reopen the memory maps there
        state = dict(self.__dict__)
        state["_files"] = {}
        return state
