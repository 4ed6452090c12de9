"""What each round's teacher writes: the pairs of every round of a rounds comparison, read from its directory.

    python -m bench.round_pairs --dir runs/rounds-basic_arithmetic --out bench/results/rounds/basic_arithmetic_pairs.json

A comparison's ``results.json`` keeps each round's funnel (``rounds/rounds.json``) but not what the pairs
say; this script reads ``pairs.jsonl`` and ``rollouts.jsonl`` of round 1 (the replicate's run directory)
and of each later round (``rounds/r<k>/``) and writes, per replicate and round, ``n`` (pairs),
``pair_working`` (``ssb.comparison.results.pair_working``: checked equalities per solution, share with two or
more, share whose equalities all hold, share that copy the shown correct rollout) and ``ends_as_taught``
(the share whose last line is the worked examples' ``The answer is \\boxed{ANSWER}.``, nothing after it).
``python -m bench.rounds`` adds these, averaged over replicates, to each round of ``bench/results/rounds.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ssb.comparison.results import pair_working
from ssb.rundir.jsonl import read_jsonl

from ._meta import provenance

TAUGHT_END = re.compile(r"(^|\n)The answer is \\boxed\{[^{}]+\}\.$")


def round_dirs(rep: Path) -> list[tuple[int, Path]]:
    """(round, directory) of a replicate: round 1 is the run directory, round k its ``rounds/r<k>``."""
    later = sorted((int(p.name[1:]), p) for p in (rep / "rounds").glob("r[0-9]*") if p.name[1:].isdigit())
    return [(1, rep)] + later


def read_round(d: Path) -> dict | None:
    if not (d / "pairs.jsonl").is_file():
        return None
    pairs = read_jsonl(d / "pairs.jsonl")
    sols = [p["solution"].strip() for p in pairs]
    return {"n": len(pairs), "pair_working": pair_working(pairs, read_jsonl(d / "rollouts.jsonl")),
            "ends_as_taught": sum(bool(TAUGHT_END.search(s)) for s in sols) / len(sols) if sols else None}


def build(compare_dir: Path) -> dict:
    reps = sorted(p for p in compare_dir.glob("r[0-9]*") if p.is_dir() and p.name[1:].isdigit())
    if not reps:
        raise SystemExit(f"error: {compare_dir}: no replicate directories (r0, r1, ...)")
    return {"dir": str(compare_dir), "replicates": [
        {"replicate": int(rep.name[1:]), "rounds": [{"round": k, **row} for k, d in round_dirs(rep)
                                                    if (row := read_round(d)) is not None]} for rep in reps]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="the comparison's directory (python -m bench.compare --dir)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    doc = {"provenance": provenance(None), **build(Path(args.dir))}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for rep in doc["replicates"]:
        for r in rep["rounds"]:
            w = r["pair_working"]
            print(f"r{rep['replicate']} round {r['round']}: {r['n']} pairs, {w['equalities_per_solution']:.2f} "
                  f"equalities/solution, ends as taught {r['ends_as_taught']:.2f}")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
