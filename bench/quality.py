"""Quality benchmark: base vs SSB vs GRPO on 500 held-out problems of the default task.

    python bench/quality.py [--config configs/default.yaml] [--runs-dir runs] [--n 500]

Runs (or resumes) ``ssb run`` for the config, unchanged, so base, SSB and GRPO are
exactly what the default pipeline trains. Then it evaluates all three (greedy pass@1, the
same prompt) on ``--n`` fresh held-out problems drawn like the training problems but with
another seed (``--seed``) and deduplicated against them, into ``RUN/quality_eval/``.
Writes ``bench/results/quality.json``: ``n_problems``; per model under
``models.base|ssb|grpo`` the ``accuracy`` and its 95% Wilson ``ci``; ``diff_ssb_base`` and
``diff_ssb_grpo``, each with the paired ``value``, its 95% ``ci`` (Newcombe, paired) and
the exact McNemar ``p_value``; and the smallest difference this sample can detect.
Nothing is tuned on these problems: the config is fixed before the run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ssb.config import load_config  # noqa: E402
from ssb.compare import load_results, load_summaries, paired_table  # noqa: E402
from ssb.evaluate import evaluate, training_questions  # noqa: E402
from ssb.pipeline import run_pipeline  # noqa: E402


def mde_paired(n: int, discordant: float, alpha_z: float = 1.96, power_z: float = 0.8416) -> float:
    """Smallest paired difference detectable with 80% power at two-sided 5% (normal
    approximation to McNemar), given the fraction of discordant problems."""
    return (alpha_z + power_z) * math.sqrt(max(discordant, 1e-9) / n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--runs-dir", default=str(ROOT / "runs"))
    ap.add_argument("--n", type=int, default=500, help="held-out problems")
    ap.add_argument("--seed", type=int, default=20261122, help="seed of the held-out problems")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.json"))
    args = ap.parse_args()

    cfg = load_config(args.config, [f"runs_dir={args.runs_dir}"])
    t0 = time.time()
    run = run_pipeline(cfg)
    if cfg.eval.holdout is None:
        raise SystemExit(f"{args.config}: eval.holdout is not set; the quality benchmark needs held-out problems")
    holdout = cfg.eval.holdout.model_copy(update={"limit": args.n, "seed": args.seed})
    eval_cfg = cfg.eval.model_copy(update={"holdout": holdout, "benches": ["holdout"], "limit": None})
    qdir = run.file("quality_eval")
    exclude = training_questions(run)
    for label, adapter in (("base", None), ("ssb", run.file("student")), ("grpo", run.file("grpo"))):
        if adapter is not None and not (adapter / "adapter_config.json").exists():
            print(f"{label}: no adapter at {adapter}; skipped")
            continue
        evaluate(cfg.model, adapter, ["holdout"], cfg.prompt, cfg.generation, eval_cfg, qdir / label,
                 exclude=exclude, label=label)
    results = load_results(qdir)  # label -> bench -> per-sample records
    summaries = load_summaries(qdir)
    bench = "holdout"
    models = {}
    for label in ("base", "ssb", "grpo"):
        s = summaries.get(label, {}).get("benches", {}).get(bench)
        if s is None:
            models[label] = {"accuracy": None, "correct": 0, "n": 0, "ci": None}
            continue
        models[label] = {"accuracy": s["accuracy"], "correct": s["correct"], "n": s["n_problems"],
                         "ci": list(s["ci"]), "ci_method": s["ci_method"],
                         "mean_completion_tokens": s["completion_tokens"]["mean"]}
    pairs = {(p["a"], p["b"]): p for p in paired_table(results) if p["bench"] == bench}

    def diff(a: str, b: str) -> dict | None:
        p = pairs.get((a, b))
        if p is None and (b, a) in pairs:
            q = pairs[(b, a)]
            p = dict(q, diff=-q["diff"], ci=[-q["ci"][1], -q["ci"][0]], a_only=q["b_only"], b_only=q["a_only"])
        if p is None:
            return None
        disc = (p["a_only"] + p["b_only"]) / p["n"]
        return {"value": p["diff"], "ci": p["ci"], "p_value": p["p_value"], "test": p["test"],
                "ci_method": p["ci_method"], "a_only": p["a_only"], "b_only": p["b_only"],
                "min_detectable_diff_80pct_power": mde_paired(p["n"], disc)}

    n_problems = models["base"]["n"]
    m = run.manifest()["stages"]
    out = {
        "config": str(Path(args.config).resolve().relative_to(ROOT)),
        "bench": bench,
        "holdout": {"task": [t.model_dump() for t in holdout.tasks], "seed": args.seed,
                    "deduplicated_against_training": True},
        "decoding": "greedy pass@1, same prompt (system + worked example) as training",
        "n_problems": n_problems,
        "models": models,
        "diff_ssb_base": diff("ssb", "base"),
        "diff_ssb_grpo": diff("ssb", "grpo"),
        "diff_grpo_base": diff("grpo", "base"),
        "training": {
            "problems": m.get("rollout", {}).get("problems"),
            "rollout_accuracy": m.get("rollout", {}).get("accuracy"),
            "yield": m.get("rollout", {}).get("yield"),
            "pairs": m.get("curate", {}).get("pairs_written"),
            "ssb_seconds": sum(m.get(s, {}).get("seconds", 0) or 0 for s in ("rollout", "curate", "logits", "distill")),
            "grpo_seconds": m.get("grpo", {}).get("train_seconds"),
            "grpo_steps": m.get("grpo", {}).get("steps"),
            "grpo_generated_tokens": m.get("grpo", {}).get("generated_tokens"),
            "ssb_generated_tokens": (m.get("rollout", {}).get("generated_tokens") or 0)
            + (m.get("curate", {}).get("teacher_tokens") or 0),
        },
        "run_dir": str(run.path),
        "wall_seconds_this_invocation": round(time.time() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")

    print(f"\nquality benchmark: {bench}, {n_problems} held-out problems (greedy pass@1)\n")
    print(f"{'model':<6} {'accuracy':>9} {'correct':>9} {'95% CI':>16}")
    for label, v in models.items():
        if v["n"]:
            print(f"{label:<6} {v['accuracy']:>9.1%} {v['correct']:>4}/{v['n']:<4} "
                  f"[{v['ci'][0]:.1%}, {v['ci'][1]:.1%}]")
    for key in ("diff_ssb_base", "diff_ssb_grpo", "diff_grpo_base"):
        d = out[key]
        if d:
            print(f"{key:<15} {d['value'] * 100:+.1f} pt  95% CI [{d['ci'][0] * 100:+.1f}, {d['ci'][1] * 100:+.1f}]"
                  f"  McNemar p={d['p_value']:.3g}  detectable at 80% power: {d['min_detectable_diff_80pct_power'] * 100:.1f} pt")
    print(f"\nsaved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
