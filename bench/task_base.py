"""The task suite's base accuracies: does the embedded model sit between about 15% and 60% on each task?

    python -m bench.task_base [--configs configs/tasks/*.yaml] [--n 200] [--runs-dir /tmp/task-base]

For every task config, the base model (no adapter) greedy pass@1 with the config's prompt (system
+ its worked example) on ``--n`` problems of its held-out draw, drawn as ``ssb compare`` draws it:
``eval.holdout`` at compare's held-out seed (``--seed``), deduplicated against the training problems of
``--replicates`` replicates (a task whose small question space the training draws use up loses its
easy questions here exactly as in the comparison; products did: 23% undeduplicated, 2.5% in compare), and how its answers
read: the share that state an equation, of those the share whose equalities all hold, the
no-answer rate (``ssb.comparison.results.output_quality``). A task is in range when its accuracy is in
[15%, 60%]: there rollouts hold both correct and wrong answers, so curation yields pairs.

Writes ``bench/results/task_base.json``: ``provenance``, ``n``, ``seed``, ``replicates``, ``tasks`` (per config: ``name``,
``config``, ``task`` (reasoning-gym name and options), ``accuracy``, ``ci``, ``in_range``,
``heldout`` (how deduplication shaped the draw), ``output_quality``, ``examples`` (three answers as written)).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from ssb.comparison import defaults
from ssb.comparison.spec import replicate_overrides
from ssb.comparison.results import output_quality
from ssb.config import load_config
from ssb.data.load import load_problems
from ssb.data.problem import question_keys
from ssb.rundir.jsonl import read_jsonl
from ssb.stages.evaluate import evaluate

from ._meta import ROOT, provenance
from .tasks import RANGE  # the suite's base-accuracy range, one definition


def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=str(ROOT / "configs" / "tasks" / "*.yaml"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=20261122, help="held-out seed (ssb compare's default)")
    ap.add_argument("--replicates", type=int, default=defaults.REPLICATES,
                    help="training draws the held-out set avoids (default: ssb compare's, %(default)s)")
    ap.add_argument("--runs-dir", default="/tmp/task-base")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "task_base.json"))
    args = ap.parse_args()
    tasks = []
    for path in sorted(glob.glob(args.configs)):
        cfg = load_config(path)
        exclude: set[str] = set()
        for r in range(args.replicates):
            exclude |= question_keys(load_problems(load_config(path, replicate_overrides(cfg, r)).data))
        holdout = cfg.eval.holdout.model_copy(update={"limit": args.n, "seed": args.seed})
        ecfg = cfg.eval.model_copy(update={"holdout": holdout, "benches": ["holdout"], "n": 1, "temperature": 0.0})
        where = Path(args.runs_dir) / cfg.name / "base"
        summary = evaluate(cfg.model, None, ["holdout"], cfg.prompt, cfg.generation, ecfg, where, label="base",
                           exclude=exclude)
        b = summary["benches"]["holdout"]
        recs = read_jsonl(where / "holdout.jsonl")
        lo, hi = b["ci"]
        tasks.append({"name": cfg.name, "config": _rel(path),
                      "task": [t.model_dump() for t in cfg.data.tasks], "accuracy": b["accuracy"], "ci": [lo, hi],
                      "n": len(recs), "heldout": b.get("problems"), "in_range": RANGE[0] <= b["accuracy"] <= RANGE[1],
                      "output_quality": output_quality(recs),
                      "examples": [{"question": r["question"], "answer": r["completions"][0], "correct": r["correct"][0]}
                                   for r in recs[:3]]})
        print(f"{cfg.name}: {100 * b['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]", flush=True)
    out = {"provenance": provenance(), "n": args.n, "seed": args.seed, "replicates": args.replicates, "range": list(RANGE), "tasks": tasks}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
