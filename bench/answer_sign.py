"""A ceiling read from the answers: accuracy on the problems whose answer is negative, per arm, and how often
the training data had a correct negative answer to learn from.

    python -m bench.answer_sign [--task chain_sum] [--out bench/results/answer_sign.json]

Reads a suite task's comparison directory (``runs/suite/<task>``, restored from its committed packs
when ``runs/`` is gone: ``bench/suite_rerun.py``); nothing is trained or generated. Per arm of the suite
(``bench.suite_rerun.ARMS``), over every replicate evaluated so far (``eval/r<i>.done.json``), on the
held-out problems: the accuracy on problems whose gold answer is negative and on the others, and their
counts. Per replicate, from its run directory: the training problems with a negative answer, those with
at least one correct rollout among the K, and the SSB pairs, SFT/RFT data and SDFT hints that can carry
one (pairs with a negative answer; RFT: correct rollouts of negative problems). A model that never writes
a negative answer cannot score above the positive share, whatever it was trained with.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssb.rundir.jsonl import read_jsonl

from ._meta import ROOT, provenance
from .suite_rerun import ARMS, RUNS, restore


def negative(answer) -> bool:
    return str(answer).strip().startswith("-")


def split(records: list[dict]) -> dict:
    """Accuracy (first completion) on the negative-answer problems and on the others."""
    neg = [r for r in records if negative(r["answer"])]
    pos = [r for r in records if not negative(r["answer"])]

    def acc(rs):
        return round(sum(bool(r["correct"][0]) for r in rs) / len(rs), 4) if rs else None

    return {"n": len(records), "negative_n": len(neg), "negative_accuracy": acc(neg),
            "negative_correct": sum(bool(r["correct"][0]) for r in neg), "positive_n": len(pos),
            "positive_accuracy": acc(pos), "accuracy": acc(records),
            "writes_a_negative_answer": round(sum(str(r["extracted"][0] or "").startswith("-") for r in records)
                                              / len(records), 4) if records else None}


def training(run_dir: Path) -> dict:
    rollouts = read_jsonl(run_dir / "rollouts.jsonl")
    pairs = read_jsonl(run_dir / "pairs.jsonl") if (run_dir / "pairs.jsonl").is_file() else []
    neg = [r for r in rollouts if negative(r["problem"]["answer"])]
    return {"problems": len(rollouts), "negative": len(neg),
            "negative_with_a_correct_rollout": sum(any(g == "correct" for g in r["grades"]) for r in neg),
            "correct_rollouts_of_negative": sum(sum(g == "correct" for g in r["grades"]) for r in neg),
            "pairs": len(pairs), "pairs_with_a_negative_answer": sum(negative(p["problem"]["answer"]) for p in pairs)}


def task(d: Path) -> dict:
    done = sorted(json.loads(f.read_text())["replicate"] for f in d.glob("eval/r*.done.json"))
    base = read_jsonl(d / "eval" / "base" / "holdout.jsonl")
    arms = {"base": split(base)}
    for arm in ARMS.split(",")[1:]:
        recs = [x for r in done for x in read_jsonl(d / "eval" / f"r{r}-{arm.replace(':', '-')}" / "holdout.jsonl")]
        arms[arm] = split(recs)
    return {"replicates_evaluated": done, "held_out": arms,
            "training": {f"r{r}": training(d / f"r{r}") for r in done}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="chain_sum")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "answer_sign.json"))
    args = ap.parse_args(argv)
    d = RUNS / args.task
    restore(args.task)
    doc = {"provenance": provenance(), "task": args.task, "dir": str(d.relative_to(ROOT)), **task(d),
           "note": "held-out accuracy per arm pooled over the replicates evaluated so far; 'negative': the gold "
                   "answer is below zero"}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for arm, s in doc["held_out"].items():
        print(f"{arm:40s} negative {s['negative_correct']}/{s['negative_n']}  positive {s['positive_accuracy']}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
