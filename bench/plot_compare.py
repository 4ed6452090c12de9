"""The accuracy-vs-FLOPs plot of the default task's comparison, for docs/baselines.md.

    python -m bench.plot_compare [--results bench/results/compare.json] [--out docs/img/accuracy_vs_flops.png]

Draws ``ssb.report.plots.plot_compute_curves`` (the plot ``ssb compare`` writes into its directory) from the
committed results file, so the picture in the docs is made from the same numbers as the table beside it
(``python -m bench.render``'s ``baselines_flops`` block). Nothing is trained or evaluated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssb.report.plots import plot_compute_curves

from ._meta import ROOT


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(ROOT / "bench/results/compare.json"))
    ap.add_argument("--out", default=str(ROOT / "docs/img/accuracy_vs_flops.png"))
    args = ap.parse_args(argv)
    doc = json.loads(Path(args.results).read_text())
    if plot_compute_curves(doc, Path(args.out)) is None:
        print(f"{args.results}: no curve points (a comparison run with --no-curves); nothing drawn", file=sys.stderr)
        return 1
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
