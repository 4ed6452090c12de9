"""How a GRPO or SDFT step splits between generation and training, with TRL's sampling and with ssb's engine.

    python -m bench.grpo_generation [--config configs/default.yaml] [--steps 8] [--batch-sizes 8,32]
    python -m bench.grpo_generation --stage sdft --upstream runs/suite/chain_sum/r0 [--batch-sizes 8,32]

For each batch size (completions per step) and each generator (``grpo.generator`` / ``sdft.generator``;
``trl``: TRL's ``model.generate``; ``ssb``: ssb's hf engine through TRL's ``rollout_func``,
``stages/grpo_rollout.py``), the stage trains ``--steps`` steps from the base model on the config's
training problems (a fresh run directory each, same seed, ``budget=steps``) and records the
seconds spent generating and scoring completions (``generation_seconds``) against the whole
training time, completions and generated tokens per second of generation, and the median step.
SDFT's hints are SSB's: ``--upstream`` names a run directory whose rollouts and curation each SDFT
run takes (nothing generated for them). Ratios are ssb over trl in the same invocation. Everything
runs in one process, one variant after the other: run it on an otherwise idle machine (the load
average is recorded).

Writes ``bench/results/<stage>_generation.json`` (``grpo_generation.json``, ``sdft_generation.json``):
``provenance``, ``settings``, ``variants`` (one per batch size and generator) and ``ratios`` (per batch
size: ``generation_completions_per_s`` and ``step_seconds``, ssb / trl).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from ssb.config import load_config
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run
from ssb.stages.grpo import run_grpo

from ._meta import ROOT, provenance


def one(config: str, runs: Path, generator: str, batch: int, steps: int, stage: str = "grpo",
        upstream: Path | None = None) -> dict:
    cfg = load_config(config, [f"runs_dir={runs}", f"name={stage}-{generator}-b{batch}", f"{stage}.budget=steps",
                               f"{stage}.max_steps={steps}", f"{stage}.batch_size={batch}",
                               f"{stage}.generator={generator}"])
    run = Run.create(cfg)
    if upstream is not None:  # SDFT's hints: the upstream run's rollouts and curation, as they are
        for f in ("rollouts.jsonl", "selections.jsonl"):
            run.file(f).write_bytes((upstream / f).read_bytes())
    if stage == "sdft":
        from ssb.stages.sdft import run_sdft  # lazy: trl's experimental trainer

        info = run_sdft(run)
    else:
        info = run_grpo(run)
    log = read_jsonl(run.file(f"{stage}_log.jsonl"))
    secs = [b["seconds"] - a["seconds"] for a, b in zip([{"seconds": 0.0}] + log, log)]
    gen = info["generation_seconds"]
    return {"generator": generator, "batch_size": batch, "steps": info["steps"], "completions": info["completions"],
            "generated_tokens": info["generated_tokens"], "generation_seconds": gen,
            "train_seconds": info["train_seconds"], "generation_share": gen / info["train_seconds"],
            "generation_completions_per_s": info["completions"] / gen,
            "generation_tokens_per_s": info["generated_tokens"] / gen,
            "step_seconds_median": statistics.median(secs),
            **({"reward_mean": statistics.mean(r["reward"] for r in log)} if stage == "grpo" else
               {"distillation_loss_mean": statistics.mean(r["sdft/distillation_loss"] for r in log
                                                          if "sdft/distillation_loss" in r)})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-sizes", default="8,32")
    ap.add_argument("--stage", choices=("grpo", "sdft"), default="grpo")
    ap.add_argument("--upstream", type=Path, help="sdft: a run directory with rollouts.jsonl and selections.jsonl")
    ap.add_argument("--out", help="default: bench/results/<stage>_generation.json")
    args = ap.parse_args()
    if args.stage == "sdft" and (args.upstream is None or not (args.upstream / "selections.jsonl").is_file()):
        ap.error(f"--stage sdft needs --upstream RUN with rollouts.jsonl and selections.jsonl (got {args.upstream})")
    out_path = Path(args.out or ROOT / "bench" / "results" / f"{args.stage}_generation.json")
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for generator in ("trl", "ssb"):
                v = one(args.config, Path(tmp), generator, batch, args.steps, args.stage, args.upstream)
                print(json.dumps(v), flush=True)
                variants.append(v)
    ratios = {}
    for batch in sorted({v["batch_size"] for v in variants}):
        t, s = (next(v for v in variants if v["batch_size"] == batch and v["generator"] == g) for g in ("trl", "ssb"))
        ratios[str(batch)] = {"generation_completions_per_s": s["generation_completions_per_s"]
                              / t["generation_completions_per_s"],
                              "step_seconds": s["step_seconds_median"] / t["step_seconds_median"]}
    out = {"provenance": provenance(args.config), "settings": {"stage": args.stage, "steps": args.steps,
                                                               "config": args.config,
                                                               "upstream": str(args.upstream) if args.upstream else None},
           "variants": variants, "ratios": ratios, "load_average_at_write": list(os.getloadavg())}
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(ratios, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
