"""What the teacher signal carries, per task: ``ssb signal``'s headline numbers over several runs, one file.

    python -m bench.signal_shares --run chain_sum=runs/default-r0 --run products=runs/products-r0 \\
        [--variant token_weighting=hint_gain] [--limit 100] [--out bench/results/signal.json]

Each ``--run TASK=DIR`` is a run whose ``logits`` stage is done (e.g. replicate 0 of a task's
``python -m bench.compare``); nothing is trained. Per task it records, from
``ssb.signal.diagnostic.diagnose`` (docs/method.md, "What the teacher signal carries"):
``confident_share_of_tokens``, ``confident_share_of_grad`` and ``confident_share_of_loss`` for the paper's
loss (``paper``) and for the loss of ``--variant`` (``variant``, the run's distill settings with those
changes; default ``token_weighting=hint_gain``), the ``hint_gain`` summary, and the run's pairs, tokens,
store and temperature. Writes ``--out`` with ``provenance``. (Not ``bench/signal.py``: a module named
``signal`` in ``bench/`` would shadow the standard library's for ``python bench/<script>.py``.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssb.rundir.run import Run
from ssb.signal.diagnostic import diagnose, parse_variant

from ._meta import ROOT, provenance

KEYS = ("confident_share_of_grad", "confident_share_of_loss", "loss_per_token")


def task_entry(name: str, run_dir: str, variant: dict, limit: int | None) -> dict:
    """One task's numbers from its run ``run_dir``."""
    out = diagnose(Run.open(run_dir), variants={"variant": variant}, limit=limit)
    return {"task": name, "run": run_dir, "pairs": out["pairs"], "tokens": out["tokens"], "store": out["store"],
            "temperature": out["temperature"], "confident_share_of_tokens": out["confident_share_of_tokens"],
            "teacher_tokens_in_tail": out["teacher_tokens_in_tail"], "hint_gain": out["hint_gain"],
            "losses": {k: {"settings": out["losses"][k]["settings"], **{x: out["losses"][k][x] for x in KEYS}}
                       for k in ("paper", "variant")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="TASK=DIR",
                    help="a task's name and a run directory with pairs.jsonl and teacher/ (repeatable)")
    ap.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE",
                    help="distill field of the loss compared with the paper's (repeatable; default: "
                    "token_weighting=hint_gain)")
    ap.add_argument("--limit", type=int, default=None, help="the first N pairs of each run (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/signal.json"), help="output (default: %(default)s)")
    args = ap.parse_args(argv)
    variant = parse_variant(args.variant or ["token_weighting=hint_gain"])
    tasks = []
    for item in args.run:
        name, sep, run_dir = item.partition("=")
        if not sep:
            ap.error(f"--run {item!r} must look like TASK=DIR")
        tasks.append(task_entry(name, run_dir, variant, args.limit))
        t = tasks[-1]
        print(f"{name}: confident share of the gradient {t['losses']['paper']['confident_share_of_grad']:.3f} "
              f"(paper), {t['losses']['variant']['confident_share_of_grad']:.3f} (variant); hint gain mean "
              f"{t['hint_gain']['mean']:+.3f}", file=sys.stderr)
    doc = {"provenance": provenance(), "variant": variant, "limit": args.limit, "tasks": tasks}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
