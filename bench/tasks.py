"""The task suite across tasks: SSB against the base model, GRPO and SFT on each task, one table.

    python -m bench.tasks        # after python -m bench.compare ran on every task of SUITE

Each task's comparison is ``python -m bench.compare`` on its config (arms base, ssb, sft, rft, grpo; ≥ 2
replicates), saved beside this file's output: ``bench/results/tasks/<task>.json`` (the default task,
two-term chain_sum, is ``bench/results/compare.json``). This script reads them, checks that every
task has ≥ 2 replicates, the same held-out size and every arm, and writes
``bench/results/tasks.json``: ``provenance``, ``range`` (the base accuracy a task should sit in),
``tasks`` (per task ``name``, ``config``, ``results`` (its compare file), ``multi_step`` and ``why``
(what its solutions should show), ``base_accuracy`` (+ ``base_ci``, held-out, pooled), ``replicates``
(per replicate: seeds, rollout accuracy, pairs and what their solutions show (``pair_working``),
accuracy per arm, SSB minus base with its interval and exact McNemar p), ``replicate_training`` (how many
training problems each replicate shares with replicate 0: ``training_problems``, ``shared_with_replicate_0``), ``pairs_multi_step_share`` and
``pairs_copies_of_shown_rollout`` (means over replicates), the pooled differences ``ssb_base``, ``ssb_grpo``, ``ssb_sft`` and ``ssb_rft``
(SSB minus the other arm: ``value``, ``ci`` (bootstrap 95%: replicates and problems resampled, in results made
since the two-way bootstrap), ``ci_problems`` (problems only, where recorded), ``significant``), ``accuracy`` and
``flops`` per arm, ``output_quality`` per arm, ``grpo_flops_ratio``, ``interval_method``), ``interval_method``
(the pooled intervals' method when every task shares it, else per task) and ``summary`` (counts of
tasks where SSB is significantly above / level with / below each other arm).
Rendered into README.md (``tasks_main``) and docs/tasks.md (``tasks_details``) by ``python -m bench.render``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ssb.report.stats import reading

from .aggregate import RESULTS, ROOT, SuiteError, cli, difference, mean

RANGE = (0.15, 0.60)
ARMS = ("base", "ssb", "sft", "rft", "grpo")
OPTIONAL = ("sdft",)  # reported where a task's comparison has it (the on-policy arm; after the tuned rerun)
BEST_AGAINST = ("base", "sft", "rft", "grpo", "sdft")  # ssb_best_<arm>: SSB's best loss minus that arm

# name, config, compare results file, multi-step, what its solutions should show
SUITE = [
    ("chain_sum", "configs/default.yaml", "compare.json", False,
     "two one- or two-digit terms: one equation (a + b = c) is the whole solution"),
    ("chain_sum3", "configs/tasks/chain_sum3.yaml", "tasks/chain_sum3.json", True,
     "three one-digit terms: the intermediate sum on its own line, then the second operation"),
    ("basic_arithmetic", "configs/tasks/basic_arithmetic.yaml", "tasks/basic_arithmetic.json", True,
     "three one-digit terms with + and *: the product on its own line, then the sum; not addition alone"),
    ("products", "configs/tasks/products.yaml", "tasks/products.json", True,
     "a two-digit factor split into tens and units: two partial products, then their sum; not addition"),
]


def _rep(arm: dict, i: int) -> float:
    """Replicate ``i``'s accuracy; the base model is evaluated once (one model, the same held-out problems)."""
    accs = arm["per_replicate_accuracy"]
    return accs[i] if len(accs) > 1 else accs[0]


def shared_training(config: str, seeds: list[int]) -> dict:
    """Training problems replicate i > 0 shares with replicate 0, redrawn from the config at each replicate's
    recorded data seed (reasoning-gym draws are deterministic): seeds one apart draw the same problems shifted
    by one, which every comparison before the data-seed stride (ssb.comparison.spec.DATA_SEED_STRIDE) did."""
    from ssb.config import load_config  # lazy: pydantic, reasoning-gym
    from ssb.data.load import load_problems
    from ssb.data.problem import question_keys

    draws = [question_keys(load_problems(load_config(ROOT / config, [f"data.seed={s}"]).data)) for s in seeds]
    return {"training_problems": len(draws[0]), "shared_with_replicate_0": [len(d & draws[0]) for d in draws[1:]]}


def task_entry(name: str, config: str, results: str, multi_step: bool, why: str,
               results_dir: Path = RESULTS) -> dict:
    path = results_dir / results
    if not path.is_file():
        raise SuiteError(f"{path}: missing; run python -m bench.compare --config {config} "
                         f"--out bench/results/{results} first")
    d = json.loads(path.read_text())
    arms = d.get("arms", {})
    missing = [a for a in ARMS if "accuracy" not in arms.get(a, {})]
    if missing:
        raise SuiteError(f"{path}: arms {missing} have no held-out accuracy (rerun its comparison)")
    if d.get("n_replicates", 0) < 2:
        raise SuiteError(f"{path}: {d.get('n_replicates')} replicate(s); the suite asks for at least 2")
    ssb = arms["ssb"]
    here = ARMS + tuple(a for a in OPTIONAL if "accuracy" in arms.get(a, {}))
    reps = []
    for i, r in enumerate(d["replicates"]):
        sb = ssb["vs_base"]["per_replicate"][i]
        reps.append({"replicate": r["replicate"], "seed": r.get("seed"), "rollout_accuracy": r.get("rollout_accuracy"),
                     "pairs": r.get("pairs"), "pair_working": r.get("pair_working"),
                     "teacher_rejected_by_gate": r.get("teacher_rejected_by_gate"), "accuracy": {a: _rep(arms[a], i) for a in here},
                     "ssb_base": {"value": sb["value"], "ci": sb["ci"], "p_value": sb.get("p_value")}})
    grpo_ratio = None
    fl = {a: (arms[a].get("compute") or {}).get("flops") for a in here}
    if fl["grpo"] and fl["ssb"]:
        grpo_ratio = fl["grpo"] / fl["ssb"]
    return {
        "name": name, "config": config, "results": f"bench/results/{results}", "multi_step": multi_step, "why": why,
        "n_problems": d["n_problems"], "base_accuracy": arms["base"]["accuracy"], "base_ci": arms["base"]["ci"],
        "in_range": RANGE[0] <= arms["base"]["accuracy"] <= RANGE[1],
        "replicates": reps,
        "replicate_training": shared_training(config, [r["seed"]["data"] for r in d["replicates"]]),
        # what the pairs teach, over replicates: the share of teacher solutions with two or more checked steps
        "pairs_multi_step_share": mean([(r["pair_working"] or {}).get("multi_step_share") for r in reps]),
        "pairs_copies_of_shown_rollout": mean([(r["pair_working"] or {}).get("copies_of_shown_rollout") for r in reps]),
        "ssb_base": difference(ssb["vs_base"], +1), "ssb_grpo": difference(arms["grpo"].get("vs_ssb"), -1),
        "ssb_sft": difference(arms["sft"].get("vs_ssb"), -1), "ssb_rft": difference(arms["rft"].get("vs_ssb"), -1),
        **{f"ssb_{a}": difference(arms[a].get("vs_ssb"), -1) for a in OPTIONAL if a in here},
        "accuracy": {a: {"value": arms[a]["accuracy"], "ci": arms[a]["ci"],
                         **({"ci_problems": arms[a]["ci_problems"]} if "ci_problems" in arms[a] else {})} for a in here},
        **best_entries(d.get("ssb_best")),
        "interval_method": (d.get("interval_method") or {}).get("pooled"),
        # ssb compare --tune: per arm its trials (overrides, validation accuracy) and the chosen values; None: untuned
        "tuning": d.get("tuning"), "tuning_protocol": d.get("tuning_protocol"),
        "flops": fl, "grpo_flops_ratio": grpo_ratio,
        "output_quality": {a: arms[a].get("output_quality") for a in here},
        "commit": d.get("commit"), "trained_at_commit": d.get("trained_at_commit"),
        "hours": round(d["timing"]["total_seconds"] / 3600, 2) if d.get("timing") else None,
        # where that wall-clock went: each stage over every run directory, the evaluations, --tune's trials
        "hours_by_part": {k: round(v / 3600, 2) for k, v in d["timing"]["by_part"].items()} if d.get("timing") else None,
    }


def best_entries(best: dict | None) -> dict:
    """SSB's loss chosen on validation (compare's ``ssb_best``, from ``ssb compare --tune`` with ``ssb:``
    loss arms): ``ssb_best`` (the arm and its pooled held-out accuracy), ``ssb_best_choice`` (the arm, its
    overrides and validation accuracy beside the paper loss's, every candidate) and ``ssb_best_<arm>``
    (best minus that arm, pooled, with ``ci``). Empty without it."""
    if not best:
        return {}
    out = {"ssb_best": {"arm": best["arm"], "value": best["accuracy"], "ci": best["ci"],
                        **({"ci_problems": best["ci_problems"]} if "ci_problems" in best else {}),
                        "per_replicate": best.get("per_replicate_accuracy"),
                        "flops": (best.get("compute") or {}).get("flops")},
           "ssb_best_choice": best.get("choice")}
    out.update({f"ssb_best_{a}": difference(best["vs"][a], +1) for a in BEST_AGAINST if a in best.get("vs", {})})
    return out


def summary(tasks: list[dict]) -> dict:
    """Per other arm, the tasks where SSB is significantly above it, level (the interval holds 0), below."""
    out = {}
    keys = ["ssb_base", "ssb_grpo", "ssb_sft", "ssb_rft", "ssb_sdft"] + [f"ssb_best_{a}" for a in BEST_AGAINST]
    for key in [k for k in keys if any(t.get(k) for t in tasks)]:
        s = {"above": [], "level": [], "below": [], "missing": []}
        for t in tasks:
            s[reading(t[key]["ci"]) if t.get(key) else "missing"].append(t["name"])
        out[key] = s
    return out


def build(results_dir: Path = RESULTS, suite=SUITE) -> dict:
    tasks = [task_entry(*row, results_dir=results_dir) for row in suite]
    sizes = {t["n_problems"] for t in tasks}
    if len(sizes) != 1:
        raise SuiteError(f"held-out sizes differ across tasks: {sorted(sizes)}; rerun with one --n")
    methods = {t["interval_method"] for t in tasks}
    return {"range": list(RANGE), "n_tasks": len(tasks), "multi_step_tasks": sum(t["multi_step"] for t in tasks),
            # the pooled intervals' method: one for the suite, else per task (results from before the two-way bootstrap)
            "interval_method": methods.pop() if len(methods) == 1 else {t["name"]: t["interval_method"] for t in tasks},
            "tasks": tasks, "summary": summary(tasks)}


def main() -> int:
    return cli(__doc__, build, RESULTS / "tasks.json", lambda doc: [
        f"{t['name']}: base {100 * t['base_accuracy']:.1f}%, SSB-base {100 * t['ssb_base']['value']:+.1f}, "
        f"SSB-GRPO {100 * t['ssb_grpo']['value']:+.1f}, SSB-SFT {100 * t['ssb_sft']['value']:+.1f}" for t in doc["tasks"]])


if __name__ == "__main__":
    sys.exit(main())
