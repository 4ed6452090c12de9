"""The suite's tuned rerun, one task at a time, across sessions: what each task's comparison runs, and how far it got.

    python -m bench.suite_rerun --list                 # the three commands
    python -m bench.suite_rerun --run chain_sum        # run (or resume) one task's comparison: bench.compare
    python -m bench.suite_rerun --state                # bench/results/suite_state.json: what is done so far
    python -m bench.suite_rerun --save chain_sum       # pack what is finished into bench/results/suite/chain_sum/

Every in-range task of the suite (``bench/tasks.py``'s SUITE) is compared with the same protocol: every arm
(base, SSB, SFT, RFT, GRPO, SDFT and three SSB loss variants) tuned on a validation draw (``--tune``), three
replicates on independent training draws, 400 held-out problems. The default task keeps its curves (the
accuracy-vs-FLOPs plot of docs/baselines.md); the others run without them. A comparison's directory is
``runs/suite/<task>`` (``runs/`` is git-ignored): a rerun resumes it stage by stage and trial by trial, so a
task may take several sessions. ``--state`` reads those directories and writes, per task, every tuning
trial done (with its validation accuracy and training seconds), every replicate's stages done, and whether
the results file is written: the partial state committed while a task is still running. Nothing in it is a
held-out number.

``runs/`` does not outlive a session's machine, so what a task has finished is also committed, in packs
(``--save``; ``--run`` restores them first) under ``bench/results/suite/<task>/``: one per scored tuning
trial, one for the finished search, one for the held-out draw and the base model, one per replicate once
trained and evaluated (:func:`units`). A pack holds the text files only
(manifests, configs, logs, pairs, rollouts, evaluation records), no adapter or teacher signal: a restored
replicate is not trained or evaluated again (its manifest says done, its evaluations are read back), and
what is still to run starts where the packs end. A pack is written once and never changed.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from ssb.comparison.defaults import TRAINED_BY
from ssb.comparison.tuning import kind

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
    # a search restored from its pack (bench/results/suite/): its trials are in tuning.json, not on disk
    seen = {t["trial"] for t in trials}
    recorded = json.loads((tune / "tuning.json").read_text())["tuning"] if (tune / "tuning.json").is_file() else {}
    for arm, rec in recorded.items():
        for x in rec["trials"]:
            if Path(x["run_dir"]).name not in seen:
                trials.append({"trial": Path(x["run_dir"]).name, "trained": [TRAINED_BY[kind(arm)]],
                               "validation_accuracy": x["validation_accuracy"], "validation_n": x["validation_n"],
                               "train_seconds": x["seconds"]["train"], "from_record": True})
    trials.sort(key=lambda t: t["trial"])
    replicates = {}
    for r in sorted(p for p in d.glob("r[0-9]*") if p.is_dir()):
        stages = _manifest(r).get("stages", {})
        replicates[r.name] = [s for s in STAGES if stages.get(s, {}).get("status") == "done"]
    return {"task": name, "dir": str(d.relative_to(ROOT)) if d.is_relative_to(ROOT) else str(d),
            "tuning_done": (tune / "tuning.json").is_file(), "trials": trials,
            "trials_scored": sum(t["validation_accuracy"] is not None for t in trials), "replicates": replicates,
            "results_written": (d / "results.json").is_file(),
            "command": ("python -m bench.compare " + " ".join(command(name))) if name in {t[0] for t in TASKS} else None}


PACKS = ROOT / "bench" / "results" / "suite"
TEXT = (".json", ".jsonl", ".yaml", ".md", ".txt", ".csv")
MAX_FILE_BYTES = 20 * 2**20


def _text_files(top: Path) -> list[Path]:
    """The text files under ``top``, outside adapter directories (what peft saved: its config without its
    weights would pass for an adapter) and trainer checkpoints."""
    out = []
    for f in sorted(top.rglob("*")) if top.is_dir() else [top] if top.is_file() else []:
        parents = [f.parent, *f.parent.parents]
        if (not f.is_file() or f.suffix not in TEXT or f.stat().st_size > MAX_FILE_BYTES
                or any((p / "adapter_config.json").is_file() or p.name.startswith("checkpoint-") for p in parents)):
            continue
        out.append(f)
    return out


def _seconds(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def units(d: Path) -> dict[str, tuple[list[Path], dict[str, dict]]]:
    """The finished parts of comparison directory ``d``: pack name -> (its files, its evaluations' seconds
    per ``seconds.json`` they belong in). Each part, once finished, never changes:

    * ``trial-<name>``: a scored tuning trial (its run directory and its validation evaluation);
    * ``tune``: the finished search (``tune/tuning.json``), the validation draw and the base model on it;
    * ``heldout``: the held-out draw and the base model on it (once a replicate is evaluated);
    * ``r<i>``: replicate i once trained and evaluated (``eval/r<i>.done.json``): its run directories
      (``r<i>``, ``r<i>-<arm>``) and evaluations (``eval/r<i>-*``)."""
    out: dict[str, tuple[list[Path], dict[str, dict]]] = {}
    tune, val = d / "tune", d / "tune" / "validation"
    vsec, esec = _seconds(val / "seconds.json"), _seconds(d / "eval" / "seconds.json")
    for summary in sorted(val.glob("*/summary.json")):
        name = summary.parent.name
        if name != "base" and (tune / name / "manifest.json").is_file():
            out[f"trial-{name}"] = ([*_text_files(tune / name), *_text_files(val / name)],
                                    {"tune/validation": {k: v for k, v in vsec.items() if k == name}})
    if (tune / "tuning.json").is_file():
        out["tune"] = ([tune / "tuning.json", *sorted(val.glob("holdout.problems*")), *_text_files(val / "base")],
                       {"tune/validation": {k: v for k, v in vsec.items() if k == "base"}})
    done = sorted(d.glob("eval/r*.done.json"))
    if done:
        files = [*sorted(d.glob("eval/holdout.problems*")), *_text_files(d / "eval" / "base")]
        out["heldout"] = (files, {"eval": {k: v for k, v in esec.items() if k == "base"}})
    for marker in done:
        r = json.loads(marker.read_text())["replicate"]
        dirs = [d / f"r{r}", *sorted(d.glob(f"r{r}-*")), *sorted(d.glob(f"eval/r{r}-*"))]
        files = [marker, *[f for x in dirs for f in _text_files(x)]]
        out[f"r{r}"] = (files, {"eval": {k: v for k, v in esec.items() if k.startswith(f"r{r}-")}})
    return out


def save(task: str, root: Path = RUNS, packs: Path = PACKS) -> list[Path]:
    """Write a pack of every finished part of ``task``'s comparison that has none yet; returns those written."""
    d, out = root / task, []
    for name, (files, seconds) in units(d).items():
        dest = packs / task / f"{name}.tar.gz"
        if dest.is_file():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            for f in files:
                tar.add(f, arcname=str(f.relative_to(d)), recursive=False)
            for where, entries in seconds.items():
                if entries:
                    data = json.dumps(entries, indent=1).encode()
                    info = tarfile.TarInfo(f"{where}/seconds.{name}.json")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        tmp.rename(dest)
        out.append(dest)
    return out


def restore(task: str, root: Path = RUNS, packs: Path = PACKS) -> list[Path]:
    """Unpack ``task``'s packs into its comparison directory (a file already there is kept); each pack's
    evaluation seconds merged into the ``seconds.json`` beside them. Returns the packs read."""
    d, read = root / task, []
    for pack in sorted((packs / task).glob("*.tar.gz")):
        with tarfile.open(pack) as tar:
            for m in tar.getmembers():
                rel = Path(m.name)
                if not m.isfile() or ".." in rel.parts or rel.is_absolute():
                    continue
                data = tar.extractfile(m).read()
                if rel.name.startswith("seconds.") and rel.name != "seconds.json":
                    f = d / rel.parent / "seconds.json"
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_text(json.dumps({**json.loads(data), **_seconds(f)}, indent=1))
                elif not (d / rel).exists():
                    (d / rel).parent.mkdir(parents=True, exist_ok=True)
                    (d / rel).write_bytes(data)
        read.append(pack)
    return read


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--list", action="store_true", help="print each task's bench.compare command")
    g.add_argument("--run", choices=[t[0] for t in TASKS], help="run (or resume) this task's comparison")
    g.add_argument("--state", action="store_true", help="write bench/results/suite_state.json")
    g.add_argument("--save", choices=[t[0] for t in TASKS], help="pack this task's finished parts (bench/results/suite/)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/suite_state.json"))
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join("python -m bench.compare " + " ".join(command(t[0])) for t in TASKS))
        return 0
    if args.save:
        written = save(args.save)
        print("\n".join(f"saved {p.relative_to(ROOT)}" for p in written) or "nothing new to pack", file=sys.stderr)
        return 0
    if args.run:
        for p in restore(args.run):
            print(f"restored {p.relative_to(ROOT)}", file=sys.stderr)
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
