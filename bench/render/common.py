"""What every renderer of :mod:`bench.render` shares: number formats, a markdown table, reading a
results file and the caption that names it (file, commit, config, the command that regenerates it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import _meta

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


class RenderError(Exception):
    pass


# ----------------------------------------------------------------------------- number formats


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.4503 -> ``45.0%``."""
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def pts(x: float | None, digits: int = 1) -> str:
    """A difference in percentage points, signed: 4.7 -> ``+4.7 pt`` (``x`` already in points)."""
    return "—" if x is None else f"{x:+.{digits}f} pt"


def interval(lo: float, hi: float, digits: int = 1, signed: bool = True) -> str:
    """``[lo, hi]``, signed by default (differences): ``[+1.6, +7.9]``."""
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"[{f.format(lo)}, {f.format(hi)}]"


def difference(d: dict | None) -> str:
    """A difference (``value`` and ``ci`` as fractions) in points with its interval: ``+4.7 pt [+1.6, +7.9]``."""
    if not d:
        return "—"
    return f"{pts(100 * d['value'])} {interval(100 * d['ci'][0], 100 * d['ci'][1])}"


def times(x: float | None, digits: int = 1) -> str:
    """A ratio: 12.13 -> ``12.1×``."""
    return "—" if x is None else f"{x:.{digits}f}×"


def num(x: float | None, digits: int = 0) -> str:
    """A number with thousands separators: 196608 -> ``196,608``."""
    return "—" if x is None else f"{x:,.{digits}f}"


def secs(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f} s"


def gib(mib: float | None, digits: int = 1) -> str:
    """MiB (what the benchmarks record) as GiB: 19355 -> ``18.9 GiB``."""
    return "—" if mib is None else f"{mib / 1024:.{digits}f} GiB"


def sci(x: float | None) -> str:
    """A small error: 4.2e-05 -> ``4.2e-05``; 0.43 -> ``0.434``."""
    if x is None:
        return "—"
    return f"{x:.1e}" if abs(x) < 1e-2 else f"{x:.3f}"


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A markdown table; ``align`` has one character per column, ``l`` or ``r`` (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- sources


def load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file():
        raise RenderError(f"{path.relative_to(ROOT)}: no such results file")
    return json.loads(path.read_text())


def runnable(recorded: str) -> str:
    """A command recorded in a results file, as it runs today: a script that ran as
    ``python bench/NAME.py`` before bench/ was a package runs as ``python -m bench.NAME``."""
    return re.sub(r"\bpython bench/(\w+)\.py\b", r"python -m bench.\1", recorded)


def source(name: str, data: dict, command: str, after: str = "") -> str:
    """The caption: results file, the commit and config it ran (or, without recorded provenance,
    the commit that last committed it), and the command that regenerates it."""
    rel = f"bench/results/{name}"
    prov = data.get("provenance")
    if prov:
        commit = (prov.get("commit") or "unknown")[:7]
        parts = [f"commit {commit}" + (", uncommitted changes" if prov.get("dirty") else "")]
        if prov.get("date"):
            parts.append(prov["date"][:10])
        cfg = prov.get("config")
        if cfg:
            parts.append(f"config `{cfg['path']}`" + (f" sha256 {cfg['sha256'][:8]}" if cfg.get("sha256") else ""))
        where = "(" + "; ".join(parts) + ")"
    else:
        path = RESULTS / name
        if _meta.uncommitted(path):
            git = "uncommitted"
        else:
            h = _meta.last_commit(path)
            git = f"committed in {h}" if h else "not in git"
        where = f"({git}; provenance not recorded)"
    return f"_Source: `{rel}` {where}. Regenerate: `{command}`{after}._"


