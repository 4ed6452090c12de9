"""Data-parallel runs: `accelerate launch` (or torchrun) starts N copies of `ssb run`.

    accelerate launch --config_file configs/accelerate/ddp.yaml -m ssb.cli run CONFIG     # N GPUs
    accelerate launch --config_file configs/accelerate/cpu-2proc.yaml -m ssb.cli run CONFIG   # 2 CPU processes (gloo)

Every process runs the same pipeline. Generation stages (rollouts, evaluation) take
their own share of the problems (:func:`shard`: every ``world``-th problem by its index
in the full list, so the split never depends on what is already done), write it to their
own shard file (:func:`shard_path`: ``rollouts.shard-{rank}-of-{world}.jsonl``), and
the main process merges the shards into the canonical file in problem order after a
barrier (:func:`merge`). Sampling is seeded per problem, so a 2-process ``rollouts.jsonl``
has the same rows as a 1-process one. A killed run resumes per shard: :func:`done_ids`
reads the canonical file and every shard file (of any world size), and :func:`merge`
folds in whatever shards it finds, also in a later single-process run.

Training stages (distill, GRPO) are the Hugging Face Trainer / TRL under DDP. Stages that
are cheap or not sharded yet (``main_process_only`` in the stage table, ``rundir/table.py``)
run on the main process while the others wait; only the main process writes
``manifest.json``, ``config.yaml`` and the report (see ``pipeline.py``).

Sharding another generation stage (e.g. the hinted teacher) is three edits, then dropping its
``main_process_only`` in the stage table::

    done = distributed.done_ids(out_path)                                  # canonical + shard files
    todo = [x for x in distributed.shard(items) if x.id not in done]       # this process's share
    with JsonlWriter(distributed.shard_path(out_path)) as w: ...           # write its own shard
    distributed.merge(out_path, order=[x.id for x in items])               # every process calls it

(``merge`` must be called by every process, work or not: it holds two barriers.) In a
single process all of these are plain: ``shard`` returns the list, ``shard_path`` the path
itself, barriers do nothing, ``merge`` only folds shard files left by an earlier
multi-process run.

FSDP and DeepSpeed ZeRO-3 are refused (:func:`check_supported`): the distillation loss
applies the full LM head to the student's hidden states in chunks (``signal/losses.py``), and
both shard that head. Use DDP: only the LoRA adapter trains, the frozen base is replicated.

Rank and world size come from ``torch.distributed`` once it is initialised, else from the
launcher's ``RANK`` / ``WORLD_SIZE``; the process group is started on first use through
accelerate's ``PartialState`` (gloo without CUDA, NCCL with it), with a long timeout
(``SSB_DIST_TIMEOUT_S``, default 12 h) because other processes wait while the main one
runs a stage alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import SSBError
from .jsonl import atomic_write_text, read_jsonl

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 12 * 3600
SHARD_RE = re.compile(r"\.shard-(\d+)-of-(\d+)$")


class DistributedError(SSBError, RuntimeError):
    pass


# ----------------------------------------------------------------------------- process state


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launched_world_size() -> int:
    """Processes the launcher started (``WORLD_SIZE``; 1 when run directly)."""
    return _env_int("WORLD_SIZE", 1)


def _dist():
    import torch.distributed as dist  # lazy: rundir imports this module and stays torch-free

    return dist if dist.is_available() else None


def init() -> None:
    """Start the process group when launched with several processes (idempotent)."""
    dist = _dist()
    if launched_world_size() <= 1 or dist is None or dist.is_initialized():
        return
    import torch  # lazy: see _dist
    from accelerate import PartialState

    timeout = timedelta(seconds=_env_int("SSB_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    # cpu=True is what makes accelerate pick gloo (MULTI_CPU) for processes started by torchrun
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=timeout)
    log.info("distributed: process %d of %d (%s, backend %s, device %s)", state.process_index,
             state.num_processes, state.distributed_type, state.backend, state.device)


def _active() -> bool:
    init()
    dist = _dist()
    return dist is not None and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    if _active():
        return _dist().get_rank()
    return _env_int("RANK", 0) if launched_world_size() > 1 else 0


def world_size() -> int:
    return _dist().get_world_size() if _active() else 1


def is_main() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def barrier() -> None:
    if _active():
        _dist().barrier()


def broadcast(obj: Any) -> Any:
    """The main process's ``obj`` on every process (picklable objects)."""
    if not _active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def all_sum(*values: float) -> tuple:
    """Element-wise sums over processes (the values themselves in one process)."""
    if not _active():
        return values
    out: list = [None] * world_size()
    _dist().all_gather_object(out, list(values))
    return tuple(sum(v[i] for v in out) for i in range(len(values)))


@contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the body first (e.g. draws and caches a problem set), the others after."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def info() -> dict:
    """What the manifest records about the launch."""
    if not _active():
        return {"processes": 1}
    return {"processes": world_size(), "backend": str(_dist().get_backend())}


# ----------------------------------------------------------------------------- sharded outputs


def shard(items: Sequence) -> list:
    """This process's share: every ``world``-th item by its index in ``items`` (stable)."""
    return list(items[rank()::world_size()])


def shard_path(path: str | Path) -> Path:
    """Where this process writes: ``path`` itself in one process, else
    ``<stem>.shard-{rank}-of-{world}<suffix>`` next to it."""
    path = Path(path)
    if not is_distributed():
        return path
    return path.with_name(f"{path.stem}.shard-{rank()}-of-{world_size()}{path.suffix}")


def shard_files(path: str | Path) -> list[Path]:
    """Shard files of ``path`` of any world size, by (world, rank)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = []
    for p in path.parent.glob(f"{path.stem}.shard-*-of-*{path.suffix}"):
        m = SHARD_RE.search(p.name[: len(p.name) - len(path.suffix)] if path.suffix else p.name)
        if m:
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [p for _, _, p in sorted(found)]


def read_records(path: str | Path) -> list[dict]:
    """Records of the canonical file, then of every shard file (torn last lines dropped)."""
    out = list(read_jsonl(path))
    for p in shard_files(path):
        out.extend(read_jsonl(p))
    return out


def done_ids(path: str | Path, key: str = "id") -> set[str]:
    """Ids already written to ``path`` or any of its shard files (for resuming)."""
    return {str(r[key]) for r in read_records(path) if key in r}


def merge_files(path: str | Path, order: Sequence[str] | None = None, key: str = "id") -> int:
    """Fold every shard file of ``path`` into ``path``: one record per id (the canonical
    file's first), in ``order`` (ids not in it keep their place after), written atomically;
    then delete the shards. Returns the number of records. A crash in between is safe:
    the next merge finds the same records again."""
    path = Path(path)
    shards = shard_files(path)
    if not shards:
        return -1
    seen: dict[str, dict] = {}
    for rec in read_records(path):
        seen.setdefault(str(rec.get(key)), rec)
    rank_of = {str(i): n for n, i in enumerate(order or [])}
    recs = sorted(seen.values(), key=lambda r: rank_of.get(str(r.get(key)), len(rank_of)))  # stable
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in recs))
    for p in shards:
        p.unlink(missing_ok=True)
    log.info("merged %d shard file(s) into %s (%d records)", len(shards), path, len(recs))
    return len(recs)


def merge(path: str | Path, order: Sequence[str] | None = None, key: str = "id") -> None:
    """Every process calls this after writing its shard: barrier, the main process merges,
    barrier (so every process then reads the complete canonical file)."""
    barrier()
    if is_main():
        merge_files(path, order, key)
    barrier()


# ----------------------------------------------------------------------------- what is supported


def sharded_training_plugin() -> str | None:
    """``"FSDP"`` / ``"DeepSpeed ZeRO-3"`` when the launcher asked for parameter sharding."""
    def flag(name: str) -> bool:
        return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")

    if flag("ACCELERATE_USE_FSDP"):
        return "FSDP"
    if flag("ACCELERATE_USE_DEEPSPEED") and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "").strip() == "3":
        return "DeepSpeed ZeRO-3"
    return None


def check_supported(what: str = "distillation") -> None:
    """Refuse parameter-sharded training, which the distillation loss cannot run under."""
    plugin = sharded_training_plugin()
    if plugin is None:
        return
    raise DistributedError(
        f"{plugin} is not supported for ssb's {what}: the loss applies the full LM head to the "
        f"student's hidden states in chunks (signal/losses.py, stages/logits.py), and {plugin} shards that "
        "head across processes. Use DDP instead: `accelerate launch --config_file "
        "configs/accelerate/ddp.yaml -m ssb.cli run CONFIG` (only the LoRA adapter trains; the frozen "
        "base model is replicated on each GPU). For a model too large for one GPU, generate with "
        "generation.backend=vllm and generation.vllm_tensor_parallel_size, and distill on a larger GPU.")


def check_generation(backend: str) -> None:
    """Refuse vLLM under a multi-process launch: each process would start its own engine and
    process group on the same GPUs. vLLM scales inside one process (tensor parallel)."""
    if backend != "vllm" or launched_world_size() <= 1:
        return
    raise DistributedError(
        "generation.backend=vllm under `accelerate launch` with several processes is not supported: "
        "vLLM runs in one process and spreads a model over GPUs itself (generation.vllm_tensor_parallel_size). "
        "Run the generation stages in one process (`ssb run CONFIG --only eval_base rollout curate logits`), "
        "then train data-parallel (`accelerate launch --config_file configs/accelerate/ddp.yaml -m ssb.cli run "
        "CONFIG --only distill grpo`), then evaluate in one process again (`ssb run CONFIG`).")
