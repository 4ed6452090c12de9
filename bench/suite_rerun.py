"""The suite's tuned rerun, one task at a time, across sessions: what each task's comparison runs, and how far it got.

    python -m bench.suite_rerun --list                 # the three commands
    python -m bench.suite_rerun --run chain_sum        # run (or resume) one task's comparison: bench.compare
    python -m bench.suite_rerun --state                # bench/results/suite_state.json: what is done so far

Every in-range task of the suite (``bench/tasks.py``'s SUITE) is compared with the same protocol: every arm
(base, SSB, SFT, RFT, GRPO, SDFT and three SSB loss variants) tuned on a validation draw (``--tune``), three
replicates on independent training draws, 400 held-out problems. The default task keeps its curves (the
accuracy-vs-FLOPs plot of docs/baselines.md); the others run without them. A comparison's directory is
``runs/suite/<task>`` (``runs/`` is git-ignored): a rerun resumes it stage by stage and trial by trial, so a
task may take several sessions. ``--state`` reads those directories and writes, per task, every tuning
trial done (with its validation accuracy and training seconds), every replicate's stages done, and whether
the results file is written: the partial state committed while a task is still running. Nothing in it is a
held-out number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ._meta import ROOT, provenance

RUNS = ROOT / "runs" / "suite"
VARIANTS = ("ssb:distill.temperature=1", "ssb:distill.ce_weight=1", "ssb:distill.token_weighting=hint_gain")
ARMS = ",".join(("base", "ssb", "sft", "rft", "grpo", "sdft", *VARIANTS))
# task, config, results file (under bench/results/), curves
TASKS = [
    ("chain_sum", "configs/default.yaml", "compare.json", True),
    ("basic_arithmetic", "configs/tasks/basic_arithmetic.yaml", "tasks/basic_arithmetic.json", False),
    ("chain_sum3", "configs/tasks/chain_sum3.yaml", "tasks/chain_sum3.json", False),
]
STAGES = ("rollout", "curate", "teacher", "logits", "distill", "sft", "rft", "grpo", "sdft")


def command(task: str) -> list[str]:
    """The ``python -m bench.compare`` arguments of ``task``'s comparison."""
    name, config, out, curves = next(t for t in TASKS if t[0] == task)
    return ["--config", config, "--dir", f"runs/suite/{name}", "--arms", ARMS, "--replicates", "3", "--n", "400",
            "--k-max", "0", "--tune", *([] if curves else ["--no-curves"]), "--out", f"bench/results/{out}"]


def _manifest(d: Path) -> dict:
    f = d / "manifest.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def task_state(name: str, root: Path = RUNS) -> dict:
    """What ``name``'s comparison directory holds: tuning trials scored, replicate stages done."""
    d = root / name
    trials = []
    tune = d / "tune"
    for t in sorted(p for p in tune.glob("*") if p.is_dir() and p.name != "validation") if tune.is_dir() else []:
        summary = tune / "validation" / t.name / "summary.json"
        stages = _manifest(t).get("stages", {})
        trained = [s for s in STAGES if stages.get(s, {}).get("status") == "done" and not stages[s].get("copied_from")]
        bench = json.loads(summary.read_text())["benches"]["holdout"] if summary.is_file() else {}
        acc = bench.get("accuracy")
        trials.append({"trial": t.name, "trained": trained, "validation_accuracy": acc,
                       "validation_n": bench.get("n_problems"),
                       "train_seconds": sum(stages[s].get("seconds_total") or 0 for s in trained) or None})
    replicates = {}
    for r in sorted(p for p in d.glob("r[0-9]*") if p.is_dir()):
        stages = _manifest(r).get("stages", {})
        replicates[r.name] = [s for s in STAGES if stages.get(s, {}).get("status") == "done"]
    return {"task": name, "dir": str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else str(d),
            "tuning_done": (tune / "tuning.json").is_file(), "trials": trials,
            "trials_scored": sum(t["validation_accuracy"] is not None for t in trials), "replicates": replicates,
            "results_written": (d / "results.json").is_file(),
            "command": ("python -m bench.compare " + " ".join(command(name))) if name in {t[0] for t in TASKS} else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--list", action="store_true", help="print each task's bench.compare command")
    g.add_argument("--run", choices=[t[0] for t in TASKS], help="run (or resume) this task's comparison")
    g.add_argument("--state", action="store_true", help="write bench/results/suite_state.json")
    ap.add_argument("--out", default=str(ROOT / "bench/results/suite_state.json"))
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join("python -m bench.compare " + " ".join(command(t[0])) for t in TASKS))
        return 0
    if args.run:
        return subprocess.call([sys.executable, "-m", "bench.compare", *command(args.run)], cwd=ROOT)
    doc = {"provenance": provenance(), "arms": ARMS, "tasks": [task_state(t[0]) for t in TASKS]}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for t in doc["tasks"]:
        started = t["trials"] or t["replicates"]
        tuning = "done" if t["tuning_done"] else "in progress" if started else "not started"
        print(f"{t['task']}: {t['trials_scored']} trials scored, tuning {tuning}, "
              f"replicates {t['replicates'] or 'none'}, results {'written' if t['results_written'] else 'not yet'}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
