"""What the aggregate scripts share (``bench.tasks``, ``bench.rounds``): they read committed comparisons
(``bench/results/**.json``, written by ``python -m bench.compare``), never run a model, and write one
results file each.

* :class:`SuiteError`: a comparison that cannot be read (missing, too few replicates, an arm missing).
* :func:`difference`: a pooled difference of compare's results, turned to read as "this arm minus the
  other" and read by ``ssb.report.stats.reading`` (``significant``: its interval excludes 0).
* :func:`mean`: the mean of the values that are there.
* :func:`cli`: the command line of such a script (``--out``, provenance, exit 2 on a refusal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssb.report.stats import reading

from ._meta import ROOT, provenance

RESULTS = ROOT / "bench" / "results"


class SuiteError(Exception):
    pass


def difference(arm: dict | None, sign: int) -> dict | None:
    """A pooled difference of compare's results as "this arm minus the other": ``vs_base`` of SSB is
    already SSB - base (sign +1); ``vs_ssb`` of another arm is that arm - SSB (sign -1). ``significant``:
    its interval ``ci`` (replicates and problems resampled, in results since the two-way bootstrap;
    problems only before) excludes 0 (:func:`ssb.report.stats.reading` is not ``level``); ``ci_problems``
    (problems only) where the results have it."""
    if not arm:
        return None

    def turned(ci: list) -> list:
        return list(ci) if sign > 0 else [0.0 - ci[1], 0.0 - ci[0]]  # 0.0 - x: never -0.0

    value = arm["value"] if sign > 0 else 0.0 - arm["value"]
    out = {"value": value, "ci": turned(arm["ci"]), "significant": reading(turned(arm["ci"])) != "level"}
    if arm.get("ci_problems"):
        out["ci_problems"] = turned(arm["ci_problems"])
    return out


def mean(xs: list) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def cli(doc: str, build_fn, default_out: Path, lines) -> int:
    """A results script's command line: ``--out``; ``build_fn()`` written there under its ``provenance``, then
    ``lines(doc)`` printed; exit 2 with the reason when ``build_fn`` refuses (:class:`SuiteError`)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=str(default_out))
    args = ap.parse_args()
    try:
        built = build_fn()
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps({"provenance": provenance(None), **built}, indent=2) + "\n")
    print("\n".join(lines(built)) + f"\nsaved {args.out}")
    return 0
