"""The run directory: resolved config, manifest, stage bookkeeping.

A run is a directory that every stage reads from and writes to::

    runs/NAME/config.yaml     exactly what ran
    runs/NAME/manifest.json   per stage: status, counts, timings, versions, fingerprint

Stages write their records with ``rundir/jsonl.py`` (atomic writes, append-only JSONL), so a stage
killed at any point resumes with the records it has not written yet.
Under ``accelerate launch`` only the main process writes ``config.yaml`` and
``manifest.json`` (``rundir/distributed.py``); the other processes read them.

A command that writes into a run directory holds its lock (:func:`locked`, ``rundir/lock.py``),
so a second command on the same directory stops with the holder's pid, host and command.
"""

from __future__ import annotations

import json
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..config import RunConfig, dump_config, load_config
from ..errors import MissingFileError
from . import distributed
from .jsonl import atomic_write_json, atomic_write_text, read_jsonl
from .lock import RunLock, RunLockedError

# ----------------------------------------------------------------------------- versions


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("ssb", "torch", "transformers", "peft", "accelerate", "trl", "datasets",
                 "safetensors", "math-verify", "reasoning-gym", "vllm", "llama-cpp-python"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- the run


def _main_process() -> bool:
    """Distributed hook: False in the non-main processes of `accelerate launch` (rundir/distributed.py)."""
    return distributed.is_main()



@contextmanager
def locked(path: str | Path, command: str | None = None) -> Iterator[RunLock | None]:
    """Own the run directory ``path`` for the body (``runlock.RunLock``; released on exit, on an
    error and on Ctrl-C). Under ``accelerate launch`` the main process alone takes the lock and
    every process learns whether it got it (a broadcast, so the others never wait in a barrier
    for a main process that stopped); the others yield None."""
    lock, refused = None, None
    if _main_process():
        try:
            lock = RunLock(path, command).acquire()
        except RunLockedError as exc:
            refused = str(exc)
    refused = distributed.broadcast(refused)
    if refused:
        raise RunLockedError(refused)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


class Run:
    """A run directory with its resolved config and manifest."""

    def __init__(self, path: str | Path, cfg: RunConfig):
        self.path = Path(path)
        self.cfg = cfg

    # -- creation / opening
    @classmethod
    def create(cls, cfg: RunConfig, path: str | Path | None = None) -> "Run":
        """Create (or reopen) the run directory for ``cfg`` and write its resolved config.

        Reopening with a config that changed a stage's settings is allowed; the manifest
        keeps what each completed stage ran with, so ``ssb run`` can tell.
        """
        path = Path(path) if path is not None else cfg.run_dir
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, cfg)
        if not _main_process():  # distributed hook: only the main process writes config + manifest
            return run
        atomic_write_text(path / "config.yaml", dump_config(cfg))
        m = run.manifest()
        m.setdefault("created", now_iso())
        m.setdefault("stages", {})
        m["versions"] = library_versions()
        run.save_manifest(m)
        return run

    @classmethod
    def open(cls, path: str | Path, overrides: list[str] | None = None) -> "Run":
        path = Path(path)
        cfg_path = path / "config.yaml"
        if not cfg_path.exists():
            raise MissingFileError(f"{path} is not a run directory (no config.yaml); start one with `ssb run CONFIG`")
        cfg = load_config(cfg_path, overrides)
        run = cls(path, cfg)
        if overrides and _main_process():  # distributed hook
            atomic_write_text(cfg_path, dump_config(cfg))
        return run

    def locked(self, command: str | None = None):
        """This run directory, owned for the body of a ``with`` (:func:`locked`)."""
        return locked(self.path, command)

    # -- files
    def file(self, name: str) -> Path:
        return self.path / name

    # -- readers (the Python API's: ``ssb.Run.open(path).pairs()``)
    def pairs(self) -> list[dict]:
        """The verified pairs SSB distils (``pairs.jsonl``; empty before ``curate``/``teacher``)."""
        return read_jsonl(self.file("pairs.jsonl"))

    def evaluations(self) -> dict[str, dict]:
        """Each evaluated label's ``eval/<label>/summary.json`` (benches, accuracy, intervals), by label."""
        root = self.file("eval")
        files = sorted(root.glob("*/summary.json")) if root.is_dir() else []
        return {f.parent.name: json.loads(f.read_text(encoding="utf-8")) for f in files}

    # -- manifest
    def manifest(self) -> dict:
        p = self.path / "manifest.json"
        if not p.exists():
            return {}
        return json.loads(p.read_text(encoding="utf-8"))

    def save_manifest(self, m: dict) -> None:
        if not _main_process():  # distributed hook: the other processes of a launch never write it
            return
        atomic_write_json(self.path / "manifest.json", m)

    def update_manifest(self, **fields: Any) -> None:
        m = self.manifest()
        m.update(fields)
        self.save_manifest(m)

    def stage(self, name: str) -> dict:
        return self.manifest().get("stages", {}).get(name, {})

    def stage_done(self, name: str) -> bool:
        return self.stage(name).get("status") == "done"

    def set_stage(self, name: str, **fields: Any) -> None:
        m = self.manifest()
        st = m.setdefault("stages", {}).setdefault(name, {})
        st.update(fields)
        self.save_manifest(m)

    def stage_seconds(self, name: str) -> float | None:
        """Wall-clock a stage has cost since it was last reset (:func:`total_seconds`)."""
        return total_seconds(self.stage(name))

    @contextmanager
    def stage_run(self, name: str) -> Iterator[dict]:
        """Mark a stage running; on success record status, timing and whatever the body put
        in the yielded dict (counts, stats). On error or Ctrl-C the stage stays resumable.

        ``seconds`` is this invocation's wall-clock; ``seconds_total`` adds every earlier
        invocation since the stage was last reset (``--force`` sets it ``pending``), so a
        killed and resumed stage reports what it cost in all (GRPO's budget reads it)."""
        info: dict[str, Any] = {}
        t0 = time.time()
        prev = self.stage(name)
        carried = 0.0 if prev.get("status") in (None, "pending") else (total_seconds(prev) or 0.0)

        def timing() -> dict:
            secs = time.time() - t0
            return {"seconds": round(secs, 2), "seconds_total": round(carried + secs, 2)}

        self.set_stage(name, status="running", started=now_iso())
        try:
            yield info
        except KeyboardInterrupt:
            self.set_stage(name, status="interrupted", **timing())
            raise
        except BaseException as exc:
            self.set_stage(name, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000], **timing())
            raise
        self.set_stage(name, status="done", finished=now_iso(), error=None, **timing(), **info)


def total_seconds(entry: dict) -> float | None:
    """A manifest stage entry's wall-clock over every invocation since it was last reset
    (``seconds_total``; an entry written before it was recorded: ``seconds``); None when the
    stage never ran."""
    total = entry.get("seconds_total", entry.get("seconds"))
    return None if total is None else float(total)


def iter_batches(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
