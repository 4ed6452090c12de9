"""Provenance of a benchmark result: what code, config and machine produced it.

Every bench script puts ``provenance(config_path)`` under the ``provenance`` key of the JSON it
writes, so a number in the docs (rendered by ``python -m bench.render``) can be traced to the commit
and config it ran, and rerun from them.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    """Output of ``git ARGS`` in the repository, or None without git or outside a checkout."""
    try:
        res = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.rstrip() if res.returncode == 0 else None  # rstrip: porcelain lines start with a space


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def provenance(config_path: str | Path | None = None) -> dict:
    """``commit`` (HEAD, None outside git), ``dirty`` (uncommitted changes to tracked files: the
    results then come from code that no commit holds), ``date`` (UTC, ISO 8601), ``config``
    (its path relative to the repository where possible, and its sha256; None without one),
    ``python`` / ``torch`` versions and the ``machine`` (CPU count, platform)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    config = None
    if config_path is not None:
        p = Path(config_path)
        try:
            shown = str(p.resolve().relative_to(ROOT))
        except ValueError:
            shown = str(p)
        config = {"path": shown,
                  "sha256": hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None}
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }


def dirty_paths() -> list[str]:
    """The tracked files with uncommitted changes (what ``dirty`` stands for), as paths in the repository."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return [line[3:] for line in (out or "").splitlines() if line.strip()]


def last_commit(path: str | Path) -> str | None:
    """Short hash of the commit that last changed ``path`` (None when git does not know it)."""
    return _git("log", "-1", "--format=%h", "--", str(path)) or None


def uncommitted(path: str | Path) -> bool:
    """True when ``path`` differs from HEAD (modified, staged or untracked)."""
    return bool(_git("status", "--porcelain", "--", str(path)))
