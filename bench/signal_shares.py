"""What the teacher signal carries, per task: ``ssb signal``'s headline numbers over several runs, one file.

    python -m bench.signal_shares --run chain_sum=runs/default-r0 --run products=runs/products-r0 \\
        [--variant token_weighting=hint_gain] [--best-from bench/results/tasks.json] [--limit 100] \\
        [--out bench/results/signal.json]

Each ``--run TASK=DIR`` is a run whose ``logits`` stage is done (e.g. replicate 0 of a task's
``python -m bench.compare``); nothing is trained. Per task it records, from
``ssb.signal.diagnostic.diagnose`` (docs/method.md, "What the teacher signal carries"):
``confident_share_of_tokens``, ``confident_share_of_grad`` and ``confident_share_of_loss`` for the paper's
loss (``paper``) and for the loss of ``--variant`` (``variant``, the run's distill settings with those
changes; default ``token_weighting=hint_gain``), the ``hint_gain`` summary, and the run's pairs, tokens,
store and temperature. With ``--best-from`` (the suite's ``tasks.json``), also the loss of each task's
``ssb_best`` (SSB's loss chosen on validation by ``ssb compare --tune``; ``ssb_best`` names its arm and
overrides; the paper's loss when the paper's arm won), and per task ``confident_share_of_grad`` with
``paper`` and ``ssb_best``; ``--best-from-tuning TASK=runs/suite/TASK/tune/tuning.json`` takes a task's
``ssb_best`` from its finished search instead (the same rule, ``tuning.best_variant``), so a task's
replicate 0 can be diagnosed while its teacher signal is on disk, before its comparison ends; ``--merge``
keeps the other tasks already in ``--out`` (each task entry carries its own ``provenance``). Writes
``--out`` with ``provenance``. (Not ``bench/signal.py``: a module named
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


def best_losses(path: str) -> dict[str, dict]:
    """Per task of a suite file (``bench/results/tasks.json``) with ``ssb_best_choice``: the chosen arm, its
    overrides, and the ``distill`` field changes they make (None: it changes more than the loss)."""
    out = {}
    for t in json.loads(Path(path).read_text())["tasks"]:
        c = t.get("ssb_best_choice")
        if not c:
            continue
        overrides = c.get("overrides") or []
        loss = [o for o in overrides if o.startswith("distill.") and not o.startswith("distill.lr=")]
        other = [o for o in overrides if o not in loss and not o.startswith(("lora.", "distill.lr="))]
        out[t["name"]] = {"arm": c["arm"], "overrides": overrides,
                          "changes": None if other else parse_variant(loss)}
    return out


def best_from_tuning(path: str) -> dict:
    """A task's ``ssb_best`` as its search chose it (``tune/tuning.json`` of ``ssb compare --tune``, with the
    paper's loss and its ``ssb:`` variants among the arms): the arm, its overrides, its loss changes."""
    from ssb.comparison.tuning import best_variant

    b = best_variant(json.loads(Path(path).read_text())["tuning"])
    if b is None:
        raise SystemExit(f"{path}: no ssb arm and ssb: variant among the tuned arms: no ssb_best to diagnose")
    overrides = [*b["overrides"], f"distill.lr={b['lr']:.3g}"]
    loss = [o for o in b["overrides"] if o.startswith("distill.")]
    other = [o for o in b["overrides"] if o not in loss and not o.startswith("lora.")]
    return {"arm": b["arm"], "overrides": overrides, "changes": None if other else parse_variant(loss),
            "chosen_on": "validation (" + path + ")"}


def task_entry(name: str, run_dir: str, variant: dict, limit: int | None, best: dict | None = None) -> dict:
    """One task's numbers from its run ``run_dir``; ``best``: its :func:`best_losses` entry."""
    variants = {"variant": variant}
    if best and best["changes"] is not None:
        variants["ssb_best"] = best["changes"]
    out = diagnose(Run.open(run_dir), variants=variants, limit=limit)
    names = ("paper", "variant", *(["ssb_best"] if "ssb_best" in variants else []))
    entry = {"task": name, "run": run_dir, "pairs": out["pairs"], "tokens": out["tokens"], "store": out["store"],
             "temperature": out["temperature"], "confident_share_of_tokens": out["confident_share_of_tokens"],
             "teacher_tokens_in_tail": out["teacher_tokens_in_tail"], "hint_gain": out["hint_gain"],
             "losses": {k: {"settings": out["losses"][k]["settings"], **{x: out["losses"][k][x] for x in KEYS}}
                        for k in names}}
    if best:
        entry["ssb_best"] = {k: best[k] for k in ("arm", "overrides", "chosen_on") if k in best}
        if best["changes"] is None:
            entry["ssb_best"]["note"] = "changes more than the student's loss: no loss of its own to diagnose"
        entry["confident_share_of_grad"] = {k: entry["losses"][k]["confident_share_of_grad"] for k in names
                                            if k != "variant"}
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="TASK=DIR",
                    help="a task's name and a run directory with pairs.jsonl and teacher/ (repeatable)")
    ap.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE",
                    help="distill field of the loss compared with the paper's (repeatable; default: "
                    "token_weighting=hint_gain)")
    ap.add_argument("--best-from", default=None, metavar="TASKS_JSON",
                    help="the suite's tasks.json: also each task's ssb_best loss (its ssb_best_choice)")
    ap.add_argument("--best-from-tuning", action="append", default=[], metavar="TASK=TUNING_JSON",
                    help="a task's ssb_best as its search chose it (runs/suite/TASK/tune/tuning.json), before its "
                    "comparison is finished (repeatable)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the tasks of --out that this invocation does not measure (each entry has its provenance)")
    ap.add_argument("--limit", type=int, default=None, help="the first N pairs of each run (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/signal.json"), help="output (default: %(default)s)")
    args = ap.parse_args(argv)
    variant = parse_variant(args.variant or ["token_weighting=hint_gain"])
    best = best_losses(args.best_from) if args.best_from else {}
    for item in args.best_from_tuning:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--best-from-tuning {item!r} must look like TASK=TUNING_JSON")
        best[name] = best_from_tuning(path)
    tasks = []
    for item in args.run:
        name, sep, run_dir = item.partition("=")
        if not sep:
            ap.error(f"--run {item!r} must look like TASK=DIR")
        tasks.append({**task_entry(name, run_dir, variant, args.limit, best.get(name)), "provenance": provenance()})
        t = tasks[-1]
        print(f"{name}: confident share of the gradient {t['losses']['paper']['confident_share_of_grad']:.3f} "
              f"(paper), {t['losses']['variant']['confident_share_of_grad']:.3f} (variant); hint gain mean "
              f"{t['hint_gain']['mean']:+.3f}", file=sys.stderr)
    if args.merge and Path(args.out).is_file():
        mine = {t["task"]: t for t in tasks}  # in the file's order, a task measured again in its place
        old = json.loads(Path(args.out).read_text())["tasks"]
        tasks = [mine.pop(t["task"], t) for t in old] + list(mine.values())
    doc = {"provenance": provenance(), "variant": variant, "limit": args.limit, "best_from": args.best_from,
           "best_from_tuning": args.best_from_tuning, "tasks": tasks}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
