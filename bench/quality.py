"""Quality benchmark: base vs SSB vs GRPO, replicated, on held-out problems of the default task.

    python bench/quality.py --replicates 2 [--config configs/default.yaml] [--n 500]
                            [--ablation rollout_answer,no_hint,contrastive,unsolved | --ablation none]

Replicate 0 is ``ssb run CONFIG`` exactly as committed (its own evaluation stages only with
``--full-first-run``, the benchmark evaluates everything itself); replicate r > 0 is the
same config with other training problems (``data.seed + r``) and other sampling and
training seeds (rollout, curate, teacher, distill, GRPO), so one run of one seed is not
all we see. Every model is evaluated (greedy pass@1, the training prompt) on the same
``--n`` held-out problems, drawn like the training problems with another seed and
deduplicated against the training problems of every replicate; the base model is
deterministic, so it is evaluated once.

Pooling: per replicate, the paired difference on the held-out problems (exact McNemar,
Newcombe interval). Pooled, the mean over replicates, with a 95% interval from a
bootstrap over held-out problems (the same resample for every replicate and model, so the
pairing is kept). With two replicates the spread between them is shown, not modelled.

Ablation (replicate 0's rollouts reused, nothing regenerated): each arm changes teacher (or
curate) settings of the committed config (``solution: generate``, answer-only hint):
``rollout_answer`` / ``rollout`` (the verified correct rollout is the solution and the hinted
teacher only scores it; the hinted prompt shows only the final answer / another correct
rollout), ``no_hint`` (rollout solutions, ``teacher.hint_context=none``: teacher and student
see the same text, the control), ``contrastive`` (rollout solutions with the paper's hint:
another correct rollout, else the answer, and the most common wrong rollout), ``unsolved``
(rollout solutions plus ``curate.keep=any_wrong``, beyond the paper: the problems whose
rollouts are all wrong are kept too, and the teacher generates their solution with the gold
answer as the hint; the other problems get replicate 0's pairs, up to ``teacher.max_pairs``),
``generate`` (for configs whose default is another source). Each gets its own student,
evaluated on the same held-out problems and paired against replicate 0's SSB student and the
base. An arm's ``teacher_rejected_by_gate`` shows the gates its pairs went through.

Writes ``bench/results/quality.json``: ``n_problems``; ``models.base|ssb|grpo`` with
``accuracy``, ``ci`` and ``no_answer_rate`` (pooled); ``diff_ssb_base``,
``diff_ssb_grpo``, ``diff_grpo_base`` (pooled ``value``/``ci``); ``replicates`` (per
replicate: ``seed``, the three diffs, ``pairs``, accuracies, no-answer rates, run
facts); ``ablation`` entries. Nothing is tuned on these problems.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssb import stats  # noqa: E402
from ssb.config import load_config  # noqa: E402
from ssb.data_eval import training_questions  # noqa: E402
from ssb.evaluate import evaluate  # noqa: E402
from ssb.pipeline import SSB_STAGES, run_pipeline  # noqa: E402
from ssb.rundir import Run, read_jsonl  # noqa: E402

EVAL_STAGES = ["eval_base", "eval_ssb", "eval_grpo", "report"]
CONTRASTIVE_TEMPLATE = ("A correct solution:\n{correct}\n\nA wrong solution (its answer {wrong_answer} is wrong):\n"
                        "{wrong}\n\n{question}")
ABLATIONS = {  # each arm changes teacher (or curate) settings of the committed config (solution: generate)
    "generate": ["teacher.solution=generate"],
    "rollout_answer": ["teacher.solution=rollout", "teacher.rollout_hint=answer"],
    "rollout": ["teacher.solution=rollout", "teacher.rollout_hint=other_correct"],
    # the control: rollout solutions and no hint, so teacher and student see the same text (KL 0)
    "no_hint": ["teacher.solution=rollout", "teacher.hint_context=none"],
    # the paper's contrastive hint (another correct rollout, else the answer, and the most common
    # wrong one), on rollout solutions so that only the hint differs from rollout_answer
    "contrastive": ["teacher.solution=rollout", "teacher.hint_context=contrastive", "teacher.rollout_hint=other_correct",
                    "teacher.template=" + json.dumps(CONTRASTIVE_TEMPLATE)],
    # also teach the problems with only wrong rollouts (the teacher generates from the gold answer as hint)
    "unsolved": ["teacher.solution=rollout", "curate.keep=any_wrong"],
}


def replicate_overrides(cfg, r: int) -> list[str]:
    if r == 0:
        return []
    return [f"data.seed={cfg.data.seed + r}", f"rollout.seed={cfg.rollout.seed + r}",
            f"curate.seed={cfg.curate.seed + r}", f"teacher.seed={cfg.teacher.seed + r}",
            f"distill.seed={cfg.distill.seed + r}", f"grpo.seed={cfg.grpo.seed + r}"]


def correct_vector(records: list[dict], ids: list[str]) -> list[bool]:
    by_id = {str(r["id"]): bool(r["correct"][0]) for r in records}
    return [by_id[i] for i in ids]


def no_answer_rate(records: list[dict]) -> float:
    grades = [g for r in records for g in r["grades"]]
    return sum(g == "no_answer" for g in grades) / len(grades) if grades else 0.0


def paired(x: list[bool], y: list[bool]) -> dict:
    """x minus y on the same problems: value, Newcombe CI, exact McNemar p."""
    res = stats.paired_diff(x, y)
    return {"value": res["diff"], "ci": list(res["ci"]), "p_value": res["p_value"],
            "a_only": res["x_only"], "b_only": res["y_only"]}


def bootstrap_pooled(vectors: dict[str, list[list[bool]]], pairs: list[tuple[str, str]], iters: int = 4000,
                     seed: int = 0) -> dict:
    """Pooled accuracies and differences (mean over replicates) with a bootstrap over problems.
    ``vectors[model]`` holds one correctness vector per replicate, aligned on the same problems."""
    n = len(next(iter(vectors.values()))[0])
    rng = random.Random(seed)

    def mean_acc(vs: list[list[bool]], idx: list[int]) -> float:
        return sum(sum(v[i] for i in idx) / len(idx) for v in vs) / len(vs)

    full = list(range(n))
    point = {m: mean_acc(vs, full) for m, vs in vectors.items()}
    draws: dict[str, list[float]] = {m: [] for m in vectors}
    ddraws: dict[tuple[str, str], list[float]] = {p: [] for p in pairs}
    for _ in range(iters):
        idx = [rng.randrange(n) for _ in range(n)]
        acc = {m: mean_acc(vs, idx) for m, vs in vectors.items()}
        for m in vectors:
            draws[m].append(acc[m])
        for a, b in pairs:
            ddraws[(a, b)].append(acc[a] - acc[b])
    ci = lambda xs: [stats.percentile(xs, 2.5), stats.percentile(xs, 97.5)]  # noqa: E731
    return {"models": {m: {"accuracy": point[m], "ci": ci(draws[m])} for m in vectors},
            "diffs": {p: {"value": point[p[0]] - point[p[1]], "ci": ci(ddraws[p])} for p in pairs}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--runs-dir", default=str(ROOT / "runs"))
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--n", type=int, default=500, help="held-out problems")
    ap.add_argument("--seed", type=int, default=20261122, help="seed of the held-out problems")
    ap.add_argument("--ablation", default="rollout_answer,no_hint,contrastive",
                    help=f"comma-separated arms ({', '.join(ABLATIONS)}) on replicate 0's rollouts, or 'none'")
    ap.add_argument("--full-first-run", action="store_true",
                    help="replicate 0 runs every stage of `ssb run` (its own 200-problem evals and report too)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.json"))
    args = ap.parse_args()
    arms = [] if args.ablation in ("", "none") else args.ablation.split(",")
    for a in arms:
        if a not in ABLATIONS:
            raise SystemExit(f"unknown ablation arm {a!r}; choose from {', '.join(ABLATIONS)}")

    t0 = time.time()
    base_cfg = load_config(args.config, [f"runs_dir={args.runs_dir}"])
    if base_cfg.eval.holdout is None:
        raise SystemExit(f"{args.config}: eval.holdout is not set; the quality benchmark needs held-out problems")
    name = base_cfg.name
    runs: list[tuple[int, Run]] = []
    for r in range(args.replicates):
        cfg = load_config(args.config, [f"runs_dir={args.runs_dir}", f"name={name}-r{r}"]
                          + replicate_overrides(base_cfg, r))
        t_run = time.time()
        full = r == 0 and args.full_first_run
        run = run_pipeline(cfg, skip=None if full else EVAL_STAGES)
        if full and not run.manifest().get("wall_seconds_full_run"):
            run.update_manifest(wall_seconds_full_run=round(time.time() - t_run, 1))
        runs.append((r, run))

    # the held-out set: one for everybody, deduplicated against every replicate's training problems
    holdout = base_cfg.eval.holdout.model_copy(update={"limit": args.n, "seed": args.seed})
    eval_cfg = base_cfg.eval.model_copy(update={"holdout": holdout, "benches": ["holdout"], "limit": None})
    qdir = Path(args.runs_dir) / f"{name}-quality" / "eval"
    exclude: set[str] = set()
    for _, run in runs:
        exclude |= training_questions(run)
    models: dict[str, tuple[Path | None, Path]] = {"base": (None, qdir / "base")}
    for r, run in runs:
        for label, sub in (("ssb", "student"), ("grpo", "grpo")):
            if (run.file(sub) / "adapter_config.json").exists():
                models[f"r{r}-{label}"] = (run.file(sub), qdir / f"r{r}-{label}")
    records: dict[str, list[dict]] = {}

    def run_evals():
        for label, (adapter, out) in models.items():
            if label not in records:
                evaluate(base_cfg.model, adapter, ["holdout"], base_cfg.prompt, base_cfg.generation, eval_cfg, out,
                         exclude=exclude, label=label)
                records[label] = read_jsonl(out / "holdout.jsonl")

    run_evals()
    arm_runs: dict[str, Run] = {}
    write_results(args, base_cfg, runs, arm_runs, records, qdir, holdout, t0)
    # ablation arms: replicate 0's rollouts, one teacher setting changed; the JSON is rewritten after each
    r0 = runs[0][1]
    for arm in arms:
        cfg = load_config(args.config, [f"runs_dir={args.runs_dir}", f"name={name}-r0-{arm}"] + ABLATIONS[arm])
        run = Run.create(cfg)
        if not run.file("rollouts.jsonl").exists():
            run.file("rollouts.jsonl").write_bytes(r0.file("rollouts.jsonl").read_bytes())
            run.set_stage("rollout", **{k: v for k, v in r0.stage("rollout").items()})
        run_pipeline(cfg, only=["curate", "teacher", "logits", "distill"])
        arm_runs[arm] = run
        if (run.file("student") / "adapter_config.json").exists():
            models[f"r0-{arm}"] = (run.file("student"), qdir / f"r0-{arm}")
            run_evals()
        write_results(args, base_cfg, runs, arm_runs, records, qdir, holdout, t0)
    print(f"\nsaved {args.out}")
    return 0


def write_results(args, base_cfg, runs, arm_runs, records, qdir, holdout, t0) -> dict:
    ids = [str(r["id"]) for r in records["base"]]
    vec = {label: correct_vector(recs, ids) for label, recs in records.items()}
    nar = {label: no_answer_rate(recs) for label, recs in records.items()}
    holdout_info = json.loads((qdir / "base" / "summary.json").read_text())["benches"]["holdout"].get("problems")

    reps = []
    for r, run in runs:
        st = run.manifest()["stages"]
        rep = {"replicate": r, "seed": {"data": run.cfg.data.seed, "rollout": run.cfg.rollout.seed,
                                        "teacher": run.cfg.teacher.seed, "distill": run.cfg.distill.seed,
                                        "grpo": run.cfg.grpo.seed},
               "run_dir": str(run.path), "pairs": st.get("teacher", {}).get("pairs_written"),
               "teacher_rejected_by_gate": st.get("teacher", {}).get("replies_rejected_by_gate"),
               "rollout_accuracy": st.get("rollout", {}).get("accuracy"),
               "ssb_seconds": round(sum(st.get(s, {}).get("seconds") or 0 for s in SSB_STAGES), 1),
               "grpo_seconds": st.get("grpo", {}).get("train_seconds"),
               "grpo_steps": st.get("grpo", {}).get("steps")}
        for label in ("ssb", "grpo"):
            if f"r{r}-{label}" in vec:
                rep[f"accuracy_{label}"] = sum(vec[f"r{r}-{label}"]) / len(ids)
                rep[f"no_answer_rate_{label}"] = nar[f"r{r}-{label}"]
        if f"r{r}-ssb" in vec:
            rep["diff_ssb_base"] = paired(vec[f"r{r}-ssb"], vec["base"])
        if f"r{r}-ssb" in vec and f"r{r}-grpo" in vec:
            rep["diff_ssb_grpo"] = paired(vec[f"r{r}-ssb"], vec[f"r{r}-grpo"])
        if f"r{r}-grpo" in vec:
            rep["diff_grpo_base"] = paired(vec[f"r{r}-grpo"], vec["base"])
        reps.append(rep)

    pooled_vecs = {"base": [vec["base"]] * len(runs),
                   "ssb": [vec[f"r{r}-ssb"] for r, _ in runs if f"r{r}-ssb" in vec],
                   "grpo": [vec[f"r{r}-grpo"] for r, _ in runs if f"r{r}-grpo" in vec]}
    pooled_vecs = {k: v for k, v in pooled_vecs.items() if v}
    # pair replicate-wise: only replicates that have both models
    pooled = bootstrap_pooled(pooled_vecs, [p for p in (("ssb", "base"), ("ssb", "grpo"), ("grpo", "base"))
                                            if p[0] in pooled_vecs and p[1] in pooled_vecs])
    out_models = {}
    for m, v in pooled["models"].items():
        labels = ["base"] if m == "base" else [f"r{r}-{m}" for r, _ in runs if f"r{r}-{m}" in vec]
        out_models[m] = {**v, "ci_method": "bootstrap over held-out problems, mean over replicates",
                         "no_answer_rate": sum(nar[x] for x in labels) / len(labels),
                         "per_replicate_accuracy": [sum(vec[x]) / len(ids) for x in labels]}

    ablation = []
    for arm, run in arm_runs.items():
        label = f"r0-{arm}"
        st = run.manifest()["stages"]
        entry = {"arm": arm, "overrides": ABLATIONS[arm], "pairs": st.get("teacher", {}).get("pairs_written"),
                 "pairs_by_source": st.get("teacher", {}).get("pairs_by_source"),
                 "teacher_tokens": st.get("teacher", {}).get("teacher_tokens"), "run_dir": str(run.path),
                 # the gates the arm's pairs went through (an arm trained before a gate existed lacks it)
                 "teacher_rejected_by_gate": st.get("teacher", {}).get("replies_rejected_by_gate")}
        if label in vec:
            entry.update(accuracy=sum(vec[label]) / len(ids), no_answer_rate=nar[label],
                         diff_vs_base=paired(vec[label], vec["base"]))
            if "r0-ssb" in vec:
                entry["diff_vs_main"] = paired(vec[label], vec["r0-ssb"])
        ablation.append(entry)

    d = pooled["diffs"]
    out = {
        "config": str(Path(args.config).resolve().relative_to(ROOT)),
        "bench": "holdout",
        "holdout": {"task": [t.model_dump() for t in holdout.tasks], "seed": args.seed,
                    "deduplicated_against_training_of_all_replicates": True, "draw": holdout_info},
        "decoding": "greedy pass@1, same prompt (system + worked example) as training",
        "n_problems": len(ids),
        "n_replicates": len(runs),
        "pooling": "mean over replicates of the paired difference; 95% CI from 4000 bootstrap resamples of "
                   "held-out problems (same resample for every replicate and model)",
        "models": out_models,
        "diff_ssb_base": d.get(("ssb", "base")),
        "diff_ssb_grpo": d.get(("ssb", "grpo")),
        "diff_grpo_base": d.get(("grpo", "base")),
        "no_answer_rate": {m: v["no_answer_rate"] for m, v in out_models.items()},
        "replicates": reps,
        "ablation_main": {"teacher.solution": base_cfg.teacher.solution, "teacher.hint_context": base_cfg.teacher.hint_context,
                          "teacher.rollout_hint": base_cfg.teacher.rollout_hint},
        "ablation": ablation,
        "wall_seconds_this_invocation": round(time.time() - t0, 1),
        "default_run_wall_seconds": runs[0][1].manifest().get("wall_seconds_full_run"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print_summary(out)
    return out


def _pt(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{100 * d['value']:+.1f} pt [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]"


def print_summary(out: dict) -> None:
    print(f"\nquality benchmark: {out['n_problems']} held-out problems, {out['n_replicates']} replicates\n")
    print(f"{'model':<6} {'accuracy':>9}  {'95% CI':<16} {'no answer':>9}  per replicate")
    for m, v in out["models"].items():
        reps = ", ".join(f"{100 * a:.1f}" for a in v["per_replicate_accuracy"])
        print(f"{m:<6} {100 * v['accuracy']:>8.1f}%  [{100 * v['ci'][0]:.1f}, {100 * v['ci'][1]:.1f}]"
              f"{'':<3} {100 * v['no_answer_rate']:>8.1f}%  {reps}")
    for key in ("diff_ssb_base", "diff_ssb_grpo", "diff_grpo_base"):
        print(f"{key:<15} pooled {_pt(out[key])}   per replicate: "
              + "; ".join(_pt(r.get(key)) for r in out["replicates"]))
    if out["ablation"]:
        print(f"\n{'ablation (replicate 0)':<24} {'pairs':>5} {'accuracy':>9}  {'vs base':<26} vs the config as committed")
        for a in out["ablation"]:
            acc = f"{100 * a['accuracy']:.1f}%" if "accuracy" in a else "—"
            print(f"{a['arm']:<24} {a['pairs'] or 0:>5} {acc:>9}  {_pt(a.get('diff_vs_base')):<26} "
                  f"{_pt(a.get('diff_vs_main'))}")


if __name__ == "__main__":
    sys.exit(main())
