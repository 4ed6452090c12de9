"""Quality benchmark: base vs SSB (per teacher hint) vs GRPO, replicated, on held-out problems.

    python -m bench.quality [--config configs/default.yaml] [--replicates 2] [--n 400]
                            [--arms answer,correct,contrastive,none] [--grpo-lrs 2e-5,6e-5,2e-4]

Replicates. Replicate 0 is ``ssb run CONFIG`` as committed (its training stages; the
benchmark evaluates everything itself); replicate r > 0 is the same config with other
training problems (``data.seed + r``) and other sampling and training seeds (rollout,
curate, teacher, distill, GRPO).

Arms. Each arm is one ``teacher.hint`` value (``answer``: the verified final answer;
``correct``: a verified correct rollout; ``contrastive``: the paper's correct + most common
wrong rollout; ``none``: the bare question, the control) and is trained on every replicate
from that replicate's rollouts (copied, never regenerated), with everything else as in the
config. The config's own hint is the arm reported as ``ssb``. Each arm's students are also
evaluated on the validation draw (``validation_accuracy``), so that a hint can be chosen by a
rule that never looks at the held-out problems. ``contrastive`` needs a
template that shows the wrong rollout: :data:`ssb.comparison.spec.CONTRASTIVE_TEMPLATE` (the config's template
with the wrong rollout added) is used.

GRPO. Its learning rate is chosen by a stated rule, never on the held-out problems: on
replicate 0, GRPO is trained once per ``--grpo-lrs`` value (same problems, prompt, LoRA and
budget as the config says) and each student is evaluated on a *validation* draw (problems
generated like the training data with ``--val-seed``, deduplicated against every replicate's
training problems and the held-out set); the highest validation accuracy wins, ties to the
lower learning rate. That run is replicate 0's GRPO; the other replicates train with the
chosen value. The schedule is ``grpo.lr_scheduler`` of the config (constant by default: with
a budget the stopping step is not known in advance). The budget is the config's
(``grpo.budget``); both sides' wall-clock (all invocations) and generated tokens are recorded
per replicate, so a reader sees what a wall-clock match gave each side.

Evaluation. Every model greedy pass@1 with the training prompt on the same ``--n`` held-out
problems (``--seed``, deduplicated against every replicate's training problems); the base
model is deterministic and evaluated once. Per replicate and pooled over replicates, the differences
are ``ssb compare``'s (``ssb.comparison.results.pooled``: Newcombe's method 10 with the
continuity-corrected phi and exact McNemar per replicate; the mean over replicates with a 95% interval
from a bootstrap over held-out problems, one resample for every replicate and model).

A thin caller of ``ssb.comparison``: the replicate and arm overrides, the copying of a replicate's
rollouts, correctness vectors, paired and pooled differences and their interval methods are
``ssb compare``'s; this script adds GRPO's learning rate chosen on a validation draw and its results
file's layout. ``ssb compare`` with the arms ``ssb:<hint>`` measures the hint arms the same way.

Writes ``bench/results/quality.json`` (rendered into the docs by ``python -m bench.render``):
``provenance`` (commit, dirty paths, config), ``invocations`` (every invocation's commit: a rerun
resumes the same run directories, so the first one trained what later ones re-aggregate), ``config``, ``n_problems``, ``holdout``,
``validation``, ``models`` (base / ssb / grpo pooled), ``diff_ssb_base``, ``diff_ssb_grpo``,
``diff_grpo_base``, ``arms`` (per hint: pooled accuracy, differences against base, GRPO and
the config's arm, pairs and gate counts per replicate), ``grpo`` (settings and the learning
rate selection), ``replicates`` (seeds, run directories, compute of both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ssb.comparison.spec import HINTS, ablation_overrides, copy_stages, replicate_overrides
from ssb.comparison.results import INTERVALS, correct_vector, pooled
from ssb.config import load_config
from ssb.data.heldout import training_questions
from ssb.data.problem import normalize_question
from ssb.pipeline import run_pipeline
from ssb.report import stats
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run
from ssb.rundir.table import stage_names
from ssb.stages.evaluate import evaluate

from ._meta import ROOT, dirty_paths, provenance

SSB_STAGES = stage_names(counts_toward_ssb_cost=True)  # what SSB spends (the stage table)
TRAIN_STAGES = [s for s in SSB_STAGES if s != "rollout"]  # each arm reruns these on shared rollouts
LR_RULE = ("GRPO trained on replicate 0 once per candidate learning rate; each student evaluated greedy on the "
           "validation draw; highest validation accuracy wins, ties to the lower learning rate")


def arm_overrides(hint: str) -> list[str]:
    """A hint arm's overrides: ``ssb compare``'s ``ssb:<hint>`` arm (the contrastive hint with its template)."""
    return ablation_overrides(f"ssb:{hint}", None)


def no_answer_rate(records: list[dict]) -> float:
    grades = [g for r in records for g in r["grades"]]
    return sum(g == "no_answer" for g in grades) / len(grades) if grades else 0.0


# ----------------------------------------------------------------------------- runs


def refuse_other_hint(cfg) -> None:
    """A replicate's run directory is resumed, never retrained: one whose student was trained
    with another ``teacher.hint`` than the config's would be reported as the config's arm."""
    saved = cfg.run_dir / "config.yaml"
    if saved.is_file() and (old := load_config(saved).teacher.hint) != cfg.teacher.hint:
        raise SystemExit(f"{cfg.run_dir} was trained with teacher.hint={old}, the config says {cfg.teacher.hint}: "
                         "pass another --runs-dir (the run directories are named by replicate, not by hint)")


def train_arm(args, name: str, r: int, hint: str, main: Run) -> Run:
    """The SSB student of one hint on replicate ``r``'s rollouts."""
    cfg = load_config(args.config, [f"runs_dir={args.runs_dir}", f"name={name}-r{r}-{hint}"]
                      + replicate_overrides(load_config(args.config), r) + arm_overrides(hint))
    run = Run.create(cfg)
    copy_stages(main, run, ("rollout",), ("rollouts.jsonl",))  # the replicate's rollouts, never regenerated
    run_pipeline(cfg, only=TRAIN_STAGES)
    return run


def train_grpo(args, name: str, r: int, lr: float, main: Run) -> Run:
    """GRPO on replicate ``r``'s problems with learning rate ``lr``; SSB's stage records are
    copied from ``main`` so its budget is that replicate's SSB cost."""
    cfg = load_config(args.config, [f"runs_dir={args.runs_dir}", f"name={name}-r{r}-grpo-lr{lr:g}", f"grpo.lr={lr}"]
                      + replicate_overrides(load_config(args.config), r))
    run = Run.create(cfg)
    copy_stages(main, run, tuple(SSB_STAGES), ("rollouts.jsonl",))  # and SSB's stage records: its budget
    run_pipeline(cfg, only=["grpo"])
    return run


def side_compute(run: Run, stages: tuple[str, ...]) -> dict:
    return {"seconds": round(sum(run.stage_seconds(s) or 0 for s in stages), 1),
            "seconds_by_stage": {s: run.stage_seconds(s) for s in stages}}


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--runs-dir", default=str(ROOT / "runs"))
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--n", type=int, default=400, help="held-out problems")
    ap.add_argument("--seed", type=int, default=20261122, help="seed of the held-out problems")
    ap.add_argument("--val-n", type=int, default=200, help="validation problems (GRPO's learning rate)")
    ap.add_argument("--val-seed", type=int, default=20261129, help="seed of the validation problems")
    ap.add_argument("--arms", default="answer,correct,contrastive,none", help=f"teacher.hint values ({', '.join(HINTS)})")
    ap.add_argument("--grpo-lrs", default="2e-5,6e-5,2e-4", help="GRPO learning rates tried on the validation draw")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.json"))
    args = ap.parse_args()
    t0 = time.time()
    prov = {**provenance(args.config), "dirty_paths": dirty_paths()}
    # the runs are resumed, not redone: keep the provenance of every invocation that worked on them
    # (the first one trained what later ones only re-aggregate)
    old = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    history = old.get("invocations") or ([old["provenance"]] if "provenance" in old and "arms" in old else [])
    prov["invocations"] = history + [{k: prov[k] for k in ("commit", "dirty", "dirty_paths", "date")}]
    base_cfg = load_config(args.config, [f"runs_dir={args.runs_dir}"])
    if base_cfg.eval.holdout is None:
        raise SystemExit(f"{args.config}: eval.holdout is not set; the quality benchmark needs held-out problems")
    arms = [a for a in args.arms.split(",") if a]
    if base_cfg.teacher.hint not in arms:
        arms.insert(0, base_cfg.teacher.hint)
    for a in arms:
        if a not in HINTS:
            raise SystemExit(f"unknown arm {a!r}; arms are teacher.hint values: {', '.join(HINTS)}")
    lrs = sorted(float(x) for x in args.grpo_lrs.split(",") if x)
    name = base_cfg.name
    R = range(args.replicates)

    # 1. the config as committed (training stages) on every replicate: rollouts + the config's arm
    mains: dict[int, Run] = {}
    for r in R:
        cfg = load_config(args.config, [f"runs_dir={args.runs_dir}", f"name={name}-r{r}"]
                          + replicate_overrides(base_cfg, r))
        refuse_other_hint(cfg)
        mains[r] = run_pipeline(cfg, only=["rollout"] + TRAIN_STAGES)

    # 2. held-out and validation problems, deduplicated against every replicate's training problems
    qdir = Path(args.runs_dir) / f"{name}-quality"
    exclude: set[str] = set()
    for run in mains.values():
        exclude |= training_questions(run)
    holdout = base_cfg.eval.holdout.model_copy(update={"limit": args.n, "seed": args.seed})
    eval_cfg = base_cfg.eval.model_copy(update={"holdout": holdout, "benches": ["holdout"], "limit": None})
    records: dict[str, list[dict]] = {}

    def run_eval(label: str, adapter: Path | None, cfg=eval_cfg, where: Path = qdir / "eval", excl=exclude):
        if label not in records:
            evaluate(base_cfg.model, adapter, ["holdout"], base_cfg.prompt, base_cfg.generation, cfg, where / label,
                     exclude=excl, label=label)
            records[label] = read_jsonl(where / label / "holdout.jsonl")
        return records[label]

    run_eval("base", None)
    held = {normalize_question(r["question"]) for r in records["base"]}
    val_holdout = base_cfg.eval.holdout.model_copy(update={"limit": args.val_n, "seed": args.val_seed})
    val_cfg = eval_cfg.model_copy(update={"holdout": val_holdout})
    val_exclude = exclude | held

    def run_val(label: str, adapter: Path | None):
        return run_eval(f"val-{label}", adapter, val_cfg, qdir / "val", val_exclude)

    # 3. GRPO's learning rate on the validation draw (replicate 0), then GRPO on every replicate
    selection = []
    grpo_runs: dict[int, Run] = {}
    for lr in lrs:
        run = train_grpo(args, name, 0, lr, mains[0])
        recs = run_val(f"grpo-lr{lr:g}", run.file("grpo"))
        k = sum(bool(x["correct"][0]) for x in recs)
        st = run.stage("grpo")
        selection.append({"lr": lr, "val_accuracy": k / len(recs), "val_ci": list(stats.wilson(k, len(recs))),
                          "steps": st.get("steps"), "generated_tokens": st.get("generated_tokens"),
                          "seconds": run.stage_seconds("grpo"), "run_dir": str(run.path)})
        print(f"[grpo lr {lr:g}] validation accuracy {k}/{len(recs)}", flush=True)
    best = max(selection, key=lambda s: (s["val_accuracy"], -s["lr"]))
    chosen = best["lr"]
    base_val = run_val("base", None)
    grpo_runs[0] = Run.open(best["run_dir"])
    for r in R:
        if r > 0:
            grpo_runs[r] = train_grpo(args, name, r, chosen, mains[r])
        run_eval(f"r{r}-grpo", grpo_runs[r].file("grpo"))

    # 4. the hint arms on every replicate (the config's own arm is the main run)
    arm_runs: dict[tuple[str, int], Run] = {}
    out: dict = {}
    for hint in arms:  # the JSON is rewritten after each arm, so a killed run leaves what it has
        for r in R:
            run = mains[r] if hint == base_cfg.teacher.hint else train_arm(args, name, r, hint, mains[r])
            arm_runs[hint, r] = run
            if (run.file("student") / "adapter_config.json").exists():
                run_eval(f"r{r}-{hint}", run.file("student"))
                run_val(f"r{r}-{hint}", run.file("student"))  # what a rule could pick the hint by
        out = write_results(args, prov, base_cfg, arms, mains, arm_runs, grpo_runs, records, qdir, selection,
                            chosen, base_val, t0)
    print_summary(out)
    print(f"\nsaved {args.out}")
    return 0


def write_results(args, prov, base_cfg, arms, mains, arm_runs, grpo_runs, records, qdir, selection, chosen,
                  base_val, t0) -> dict:
    ids = [str(r["id"]) for r in records["base"]]
    vec = {label: correct_vector(recs, ids) for label, recs in records.items() if not label.startswith("val-")}
    nar = {label: no_answer_rate(recs) for label, recs in records.items()}
    R = sorted(mains)
    default = base_cfg.teacher.hint

    def pooled_entry(labels: list[str]) -> dict:
        return {"per_replicate_accuracy": [sum(vec[x]) / len(ids) for x in labels],
                "no_answer_rate": sum(nar[x] for x in labels) / len(labels)}

    # pooled vectors: base (deterministic, one eval) repeated per replicate so pairs line up
    models = {"base": ["base"] * len(R), "grpo": [f"r{r}-grpo" for r in R]}
    for hint in arms:
        models[f"ssb:{hint}"] = [f"r{r}-{hint}" for r in R]
    models = {m: labels for m, labels in models.items() if all(x in vec for x in labels)}
    pairs = []
    for m in models:
        if m.startswith("ssb:"):
            pairs += [(m, "base"), (m, "grpo")] + ([(m, f"ssb:{default}")] if m != f"ssb:{default}" else [])
    pairs.append(("grpo", "base"))
    pairs = [p for p in pairs if p[0] in models and p[1] in models]
    accuracy, diffs = pooled(vec, models, pairs)

    def diff(a: str, b: str) -> dict | None:
        return diffs.get((a, b))

    out_models = {}
    for m, labels in models.items():
        if m in ("base", "grpo") or m == f"ssb:{default}":
            key = "ssb" if m.startswith("ssb:") else m
            out_models[key] = {**accuracy[m], **pooled_entry(labels[:1] if m == "base" else labels)}

    gc = base_cfg.grpo
    grpo_settings = {"lr": chosen, "lr_scheduler": gc.lr_scheduler, "budget": gc.budget,
                     "batch_size": gc.batch_size, "num_generations": gc.num_generations or base_cfg.rollout.k,
                     "temperature": gc.temperature, "beta": gc.beta, "epochs": gc.epochs,
                     "lora": base_cfg.lora.model_dump()}
    arm_out = {}
    for hint in arms:
        m = f"ssb:{hint}"
        runs = [arm_runs[hint, r] for r in R if (hint, r) in arm_runs]
        teach = [run.stage("teacher") for run in runs]
        entry = {"hint": hint, "config_default": hint == default, "grpo_paired_against": grpo_settings,
                 "overrides": [] if hint == default else arm_overrides(hint),
                 "run_dirs": [str(run.path) for run in runs],
                 "pairs": [t.get("pairs_written") for t in teach],
                 "teacher_tokens": [t.get("teacher_tokens") for t in teach],
                 "teacher_rejected_by_gate": [t.get("replies_rejected_by_gate") for t in teach]}
        val = [records.get(f"val-r{r}-{hint}") for r in R]
        if all(val):
            entry["validation_accuracy"] = [sum(bool(x["correct"][0]) for x in v) / len(v) for v in val]
        if m in models:
            entry.update(accuracy[m], **pooled_entry(models[m]),
                         vs_base=diff(m, "base"), vs_grpo=diff(m, "grpo"),
                         vs_config_default=diff(m, f"ssb:{default}") if hint != default else None)
        arm_out[hint] = entry

    reps = []
    for r in R:
        main = mains[r]
        st = main.manifest()["stages"]
        g = grpo_runs[r].stage("grpo") if r in grpo_runs else {}
        ssb_tokens = (st.get("rollout", {}).get("generated_tokens") or 0) + (st.get("teacher", {}).get("teacher_tokens") or 0)
        reps.append({
            "replicate": r,
            "seed": {"data": main.cfg.data.seed, "rollout": main.cfg.rollout.seed, "curate": main.cfg.curate.seed,
                     "teacher": main.cfg.teacher.seed, "distill": main.cfg.distill.seed, "grpo": main.cfg.grpo.seed},
            "run_dir": str(main.path), "rollout_accuracy": st.get("rollout", {}).get("accuracy"),
            "ssb": {**side_compute(main, SSB_STAGES), "generated_tokens": ssb_tokens,
                    "rollouts": st.get("rollout", {}).get("rollouts")},
            "grpo": {"run_dir": str(grpo_runs[r].path) if r in grpo_runs else None,
                     "seconds": grpo_runs[r].stage_seconds("grpo") if r in grpo_runs else None,
                     "train_seconds": g.get("train_seconds"), "steps": g.get("steps"),
                     "completions": g.get("completions"), "generated_tokens": g.get("generated_tokens"),
                     "budget_seconds": g.get("budget_seconds"), "budget_tokens": g.get("budget_tokens"),
                     "stopped_by": g.get("stopped_by")},
        })

    holdout_info = json.loads((qdir / "eval" / "base" / "summary.json").read_text())["benches"]["holdout"].get("problems")
    val_info = json.loads((qdir / "val" / "val-base" / "summary.json").read_text())["benches"]["holdout"].get("problems")
    invocations = prov.get("invocations", [])
    out = {
        "provenance": {k: v for k, v in prov.items() if k != "invocations"},
        "commit": prov["commit"],
        "invocations": invocations,
        "trained_at_commit": invocations[0]["commit"] if invocations else prov["commit"],
        "config": prov["config"]["path"],
        "bench": "holdout",
        "decoding": "greedy pass@1, the training prompt (system + worked example)",
        "n_problems": len(ids),
        "n_replicates": len(R),
        "holdout": {"task": [t.model_dump() for t in base_cfg.eval.holdout.tasks], "seed": args.seed,
                    "deduplicated_against_training_of_all_replicates": True, "draw": holdout_info},
        "validation": {"seed": args.val_seed, "n": len(base_val), "deduplicated_against": "training and held-out",
                       "base_accuracy": sum(bool(x["correct"][0]) for x in base_val) / len(base_val),
                       "draw": val_info},
        "interval_method": INTERVALS,
        "models": out_models,
        "diff_ssb_base": diff(f"ssb:{default}", "base"),
        "diff_ssb_grpo": diff(f"ssb:{default}", "grpo"),
        "diff_grpo_base": diff("grpo", "base"),
        "arms": arm_out,
        "grpo": {"settings": grpo_settings,
                 "selection": {"rule": LR_RULE, "candidates": selection, "chosen_lr": chosen}},
        "ssb_settings": {"hint": default, "solution": base_cfg.teacher.solution, "lr": base_cfg.distill.lr,
                         "lr_scheduler": base_cfg.distill.lr_scheduler, "epochs": base_cfg.distill.epochs,
                         "temperature": base_cfg.distill.temperature},
        "replicates": reps,
        "load_average_at_write": list(os.getloadavg()),
        "wall_seconds_this_invocation": round(time.time() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


def _pt(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{100 * d['value']:+.1f} pt [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]"


def print_summary(out: dict) -> None:
    print(f"\nquality benchmark: {out['n_problems']} held-out problems, {out['n_replicates']} replicates, "
          f"GRPO lr {out['grpo']['selection']['chosen_lr']:g}\n")
    for m, v in out["models"].items():
        reps = ", ".join(f"{100 * a:.1f}" for a in v["per_replicate_accuracy"])
        print(f"{m:<6} {100 * v['accuracy']:>6.1f}%  [{100 * v['ci'][0]:.1f}, {100 * v['ci'][1]:.1f}]  ({reps})")
    for key in ("diff_ssb_base", "diff_ssb_grpo", "diff_grpo_base"):
        print(f"{key:<15} {_pt(out[key])}")
    print()
    for hint, a in out["arms"].items():
        if "accuracy" in a:
            print(f"hint={hint:<12} pairs {a['pairs']}  {100 * a['accuracy']:.1f}%  vs base {_pt(a['vs_base'])}  "
                  f"vs grpo {_pt(a['vs_grpo'])}  vs config {_pt(a.get('vs_config_default'))}")


if __name__ == "__main__":
    sys.exit(main())
