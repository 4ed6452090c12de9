"""Bootstrapping rounds against GRPO at matched compute: ``bench/results/rounds.json``.

    python -m bench.compare --config configs/tasks/basic_arithmetic.yaml --dir runs/rounds-basic_arithmetic \\
        --arms base,ssb,ssb@2,ssb@3,grpo --replicates 2 --n 400 --k-max 0 --no-curves \\
        --set data.limit=160 --out bench/results/rounds/basic_arithmetic.json   # and the same for each task of SUITE
    python -m bench.round_pairs --dir runs/rounds-basic_arithmetic --out bench/results/rounds/basic_arithmetic_pairs.json
    python -m bench.compare --config configs/default.yaml --dir runs/rounds-chain_sum_unsolved \\
        --arms base,ssb,ssb@2,ssb@3 --replicates 2 --n 400 --k-max 0 --no-curves --set data.limit=160 \\
        --set rounds.problems=unsolved --out bench/results/rounds/chain_sum_unsolved.json   # VARIANTS
    python -m bench.rounds

``data.limit=160`` (half the task configs' 320 training problems) keeps a task's comparison (three rounds and
GRPO at three rounds' FLOPs, two replicates) under two hours on a 2-core CPU; each task records its overrides.

Each task's comparison is ``ssb compare`` with the round arms (``src/ssb/comparison/arms.py``): every replicate runs
rounds 1-3 (``rounds.n``, the stop rule recorded but not acted on), and GRPO's FLOPs budget is all three
rounds', with its adapter saved where each round's compute ends (``grpo@1``, ``grpo@2``; ``grpo`` is at
round 3's). What each round's teacher wrote is read from the comparison's directory by
``python -m bench.round_pairs`` into ``bench/results/rounds/<task>_pairs.json``, beside it.

This script reads those files and writes ``bench/results/rounds.json``: ``provenance``, ``missing`` (tasks
of SUITE not measured yet), ``summary`` (per ``vs_round1`` and ``vs_grpo``, the tasks whose last round
is significantly ``above``, ``level`` with or ``below`` round 1 / GRPO at its compute), ``variants`` (as ``tasks``, for the comparisons of VARIANTS that exist: a task
with other round settings, without GRPO), ``tasks`` (per task ``name``, ``config``, ``results``, ``pairs_file``,
``overrides`` (the comparison's ``--set``), ``training_problems``, ``training_shared_with_replicate_0``, ``n_problems``, ``n_replicates``,
``base_accuracy``, ``grpo_stopped_by``, ``hours`` and its ``rounds``) and ``rounds`` (the first task of SUITE whose comparison
exists, named by ``task_of_rounds``: the headline). Each round is ``round``, ``accuracy`` + ``ci``
(held-out, pooled over replicates), ``per_replicate_accuracy``, ``vs_round1`` and ``vs_grpo`` (this round
minus round 1 / minus GRPO at this round's compute: ``value``, ``ci`` (bootstrap 95%), ``significant``),
``grpo_arm``, ``grpo_accuracy``, ``flops`` and ``grpo_flops`` (means over replicates) and
``grpo_flops_ratio`` (below 1 where GRPO stopped before its budget: ``grpo_stopped_by`` per replicate),
``rolled_out`` (problems the round rolled out) and ``pairs``,
``pairs_written`` (the round's pairs: equalities per solution, share with 2+, share whose equalities hold,
share copying the shown rollout, ``ends_as_taught``; means over replicates), ``heldout_answers``
(equalities per held-out answer and the share that hold) and ``collapse`` (held-out no-answer rate and
mean answer tokens; the round's rollouts' no-answer rate and length, its student's validation accuracy,
no-answer rate and length, means over replicates; ``stop_rule_would_stop`` (replicates where validation
fell below the previous round)).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ssb.config import load_config
from ssb.report.stats import reading

from .aggregate import RESULTS, ROOT, SuiteError, cli, difference, mean
SUITE = [  # name, config, compare results file
    ("chain_sum", "configs/default.yaml", "rounds/chain_sum.json"),
    ("basic_arithmetic", "configs/tasks/basic_arithmetic.yaml", "rounds/basic_arithmetic.json"),  # multi-step
]
VARIANTS = [  # a task of SUITE with other round settings (its overrides say which), SSB arms only
    ("chain_sum", "configs/default.yaml", "rounds/chain_sum_unsolved.json"),  # --set rounds.problems=unsolved
]


def _rep_rounds(d: dict, k: int) -> list[dict]:
    """Round ``k``'s row of every replicate's ``rounds/rounds.json`` (recorded by compare)."""
    rows = []
    for r in d["replicates"]:
        rows += [x for x in ((r.get("rounds") or {}).get("rounds") or []) if x["round"] == k]
    return rows


def task_rounds(name: str, config: str, results: str, results_dir: Path = RESULTS, min_replicates: int = 2) -> dict:
    path = results_dir / results
    if not path.is_file():
        raise SuiteError(f"{path}: missing; run python -m bench.compare --config {config} --arms "
                         f"base,ssb,ssb@2,ssb@3,grpo --out bench/results/{results} first")
    d = json.loads(path.read_text())
    arms = d["arms"]
    if d.get("n_replicates", 0) < min_replicates:
        raise SuiteError(f"{path}: {d.get('n_replicates')} replicate(s); rounds are measured on at least {min_replicates}")
    pairs_file = path.with_name(path.stem + "_pairs.json")
    pairs_doc = json.loads(pairs_file.read_text()) if pairs_file.is_file() else {}
    n = max(int(a[4:]) for a in arms if a.startswith("ssb@") and "accuracy" in arms[a])
    rounds = []
    for k in range(1, n + 1):
        arm = arms["ssb" if k == 1 else f"ssb@{k}"]
        if "accuracy" not in arm:
            raise SuiteError(f"{path}: round {k} was not evaluated")
        g = arms.get(arm.get("matched_grpo") or "", {})
        reps = _rep_rounds(d, k)
        prev = _rep_rounds(d, k - 1)
        val = [(x.get("validation") or {}) for x in reps]
        drops = sum(1 for a, b in zip(prev, reps) if k > 1 and (b.get("validation") or {}).get("accuracy", 0)
                    < (a.get("validation") or {}).get("accuracy", 0))
        q = arm["output_quality"]
        written = [x for rep in pairs_doc.get("replicates", []) for x in rep["rounds"] if x["round"] == k]
        rounds.append({
            "round": k, "accuracy": arm["accuracy"], "ci": arm["ci"],
            "per_replicate_accuracy": arm["per_replicate_accuracy"],
            "vs_round1": difference(arm.get("vs_ssb"), +1) if k > 1 else None,
            "vs_grpo": difference(arm.get("vs_matched_grpo"), +1), "grpo_arm": arm.get("matched_grpo"),
            "grpo_accuracy": g.get("accuracy"),
            "flops": (arm.get("compute") or {}).get("flops"), "grpo_flops": (g.get("compute") or {}).get("flops"),
            "grpo_flops_ratio": (g["compute"]["flops"] / arm["compute"]["flops"]
                                 if (g.get("compute") or {}).get("flops") and (arm.get("compute") or {}).get("flops") else None),
            "rolled_out": mean([x.get("problems") for x in reps]), "pairs": mean([x.get("pairs") for x in reps]),
            "pairs_written": {key: mean([x["pair_working"].get(key) for x in written]) for key in
                              ("equalities_per_solution", "multi_step_share", "equalities_hold",
                               "copies_of_shown_rollout")} | {"ends_as_taught": mean([x["ends_as_taught"] for x in written])}
            if written else None,
            "heldout_answers": {key: q.get(key) for key in ("equalities_per_answer", "equalities_hold")},
            "collapse": {
                "heldout_no_answer_rate": q["no_answer_rate"], "heldout_mean_tokens": q["mean_tokens"],
                "rollout_no_answer_rate": mean([x.get("rollout_no_answer_rate") for x in reps]),
                "rollout_mean_tokens": mean([x.get("rollout_mean_tokens") for x in reps]),
                "validation_accuracy": mean([v.get("accuracy") for v in val]),
                "validation_no_answer_rate": mean([v.get("no_answer_rate") for v in val]),
                "validation_mean_tokens": mean([v.get("mean_tokens") for v in val]),
                "stop_rule_would_stop": drops,
            },
        })
    limit = [o.split("=", 1)[1] for o in d.get("overrides") or [] if o.startswith("data.limit=")]
    return {"name": name, "config": config, "results": f"bench/results/{results}", "overrides": d.get("overrides") or [],
            "training_problems": int(limit[-1]) if limit else load_config(ROOT / config).data.limit,
            "n_problems": d["n_problems"], "training_shared_with_replicate_0": d.get("training_shared_with_replicate_0"),
            "n_replicates": d["n_replicates"], "base_accuracy": arms["base"]["accuracy"], "rounds": rounds,
            "commit": d.get("commit"), "trained_at_commit": d.get("trained_at_commit"),
            "grpo_stopped_by": [(r.get("grpo") or {}).get("stopped_by") for r in d["replicates"]],
            "pairs_file": f"bench/results/{Path(results).with_name(pairs_file.name)}" if pairs_doc else None,
            "hours": round(d["timing"]["total_seconds"] / 3600, 2) if d.get("timing") else None}


def build(results_dir: Path = RESULTS, suite=SUITE, variants=VARIANTS) -> dict:
    tasks = [task_rounds(*row, results_dir=results_dir) for row in suite if (results_dir / row[2]).is_file()]
    if not tasks:
        raise SuiteError(f"no rounds comparison under {results_dir}/rounds/; see this script's doc")
    last = {t["name"]: t["rounds"][-1] for t in tasks}
    summary = {k: {w: [n for n, r in last.items() if r[k] and reading(r[k]["ci"]) == w] for w in ("above", "level", "below")}
               for k in ("vs_round1", "vs_grpo")}
    return {"tasks": tasks, "rounds": tasks[0]["rounds"], "task_of_rounds": tasks[0]["name"], "summary": summary,
            "missing": [row[0] for row in suite if not (results_dir / row[2]).is_file()],
            "variants": [task_rounds(*row, results_dir=results_dir) for row in variants if (results_dir / row[2]).is_file()]}


def _line(t: dict, r: dict) -> str:
    vs = r["vs_grpo"]
    return (f"{t['name']} round {r['round']}: {100 * r['accuracy']:.1f}%"
            + (f", minus GRPO at its compute {100 * vs['value']:+.1f}" if vs else ""))


def main() -> int:
    return cli(__doc__, build, RESULTS / "rounds.json",
               lambda doc: [_line(t, r) for t in doc["tasks"] + doc["variants"] for r in t["rounds"]])


if __name__ == "__main__":
    sys.exit(main())
