"""Bootstrapping rounds: round r's student becomes round r + 1's model.

    ssb run CONFIG --set rounds=3          ssb rounds --run runs/NAME

Round 1 is the run itself (rollout ... distill). Each later round ``r`` (2 .. ``rounds.n``) is a
run directory of its own, ``rounds/r<r>/``, whose config is the run's with two changes: its model is
``rounds/r<r>/model/``, round r-1's model with round r-1's student adapter merged into the weights
(``merge_and_unload``, saved as safetensors), and its seeds are offset. There it runs rollout (all of
round r-1's problems, or with ``rounds.problems: unsolved`` those round r-1's rollouts did not get
K of K right), curate, teacher (the round's model with the hint: round r's teacher is round r's
model), logits, distill (a fresh LoRA of ``lora``'s shape on the merged weights), the held-out
eval (``eval/ssb``, on the run's own held-out problems) and its report. Merged rather than stacked:
every backend (hf, vllm) and every stage loads a merged model as a plain model directory, and the
teacher signal's hidden-state store stays exact (the frozen model of a round is its teacher).

Collapse guard: each round's student is scored on a validation draw (``rounds.validation``, by
default ``eval.holdout``'s generator at another seed, deduplicated against training and the held-out
problems: never the held-out problems); no further round runs once a round's validation accuracy is
more than ``rounds.stop_drop`` below the previous round's (or a round writes no pair). Per round
``rounds/rounds.json`` records problems, rollout accuracy, pairs, the rollouts' no-answer rate and
length, validation and held-out accuracy, the student's validation no-answer rate and length, FLOPs
(the round's and all rounds' so far: ``report/ledger.py``'s ``ssb@<r>`` arms) and the stop decision.

Every step resumes: a merged model, a finished stage or evaluation is never redone.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
from pathlib import Path

from ..config import RunConfig
from ..data.heldout import training_questions
from ..data.problem import Problem, normalize_question
from ..errors import SSBError
from ..report.funnel import rollout_counts
from ..rundir.jsonl import atomic_write_json, read_jsonl
from ..rundir.run import Run
from ..rundir.table import get_stage

log = logging.getLogger(__name__)

SEED_STEP = 1000  # round r's rollout, curate, teacher and distill seeds: the run's + (r - 1) x SEED_STEP
VALIDATION_SEED_STEP = 1_000_003  # past every index a reasoning-gym draw reaches (data/gym.py MAX_DRAWS)
SUB_STAGES = ["curate", "teacher", "logits", "distill", "eval_ssb", "report"]


class RoundsError(SSBError, ValueError):
    """Rounds cannot run with this config or run directory."""


def round_dir(run: Run, r: int) -> Path:
    return run.file(f"rounds/r{r}")


def round_config(cfg: RunConfig, run: Run, r: int) -> RunConfig:
    """Round ``r``'s config: the run's, with the merged model, offset seeds, no baselines, no GRPO."""
    step = (r - 1) * SEED_STEP
    return cfg.model_copy(update={
        "name": f"r{r}", "runs_dir": str(run.file("rounds")),
        "model": cfg.model.model_copy(update={"name_or_path": str(round_dir(run, r) / "model"), "gguf_file": None,
                                              "revision": None}),
        "data": cfg.data.model_copy(update={"draw_chunk": None}),
        "rollout": cfg.rollout.model_copy(update={"seed": cfg.rollout.seed + step}),
        "curate": cfg.curate.model_copy(update={"seed": cfg.curate.seed + step}),
        "teacher": cfg.teacher.model_copy(update={"seed": cfg.teacher.seed + step}),
        "distill": cfg.distill.model_copy(update={"seed": cfg.distill.seed + step, "save_every_epoch": False}),
        "grpo": cfg.grpo.model_copy(update={"enabled": False}),
        "baselines": cfg.baselines.model_copy(update={"sft": False, "rft": False}),
        "rounds": cfg.rounds.model_copy(update={"n": 1}),
    })


def merge_model(model_cfg, adapter: Path, out: Path) -> None:
    """``model_cfg``'s model with ``adapter`` merged into its weights, saved to ``out`` (atomically)."""
    from .evaluate import load_for_eval  # lazy: torch

    if (out / "config.json").is_file():
        return
    loaded = load_for_eval(model_cfg, adapter, merge=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = loaded.model
    model.hf_quantizer = None  # a dequantized GGUF model saves as plain weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    loaded.tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    log.info("[rounds] merged %s into %s", adapter, out)


def round_problems(cfg: RunConfig, prev: Run) -> list:
    """The problems round r rolls out: round r-1's (``prev``), all or the unsolved ones."""
    recs = read_jsonl(prev.file("rollouts.jsonl"))
    return [Problem.from_dict(r["problem"]) for r in recs
            if cfg.rounds.problems == "all" or not all(g == "correct" for g in r.get("grades", []))]


def validation(run: Run, label: str, model_cfg, adapter: Path) -> dict:
    """``adapter`` on ``model_cfg`` scored on the validation draw into ``rounds/validation/<label>``."""
    from .evaluate import evaluate  # lazy: torch

    cfg = run.cfg
    src = cfg.rounds.validation or cfg.eval.holdout or cfg.data
    if cfg.rounds.validation is None:
        src = src.model_copy(update={"seed": src.seed + VALIDATION_SEED_STEP})
    src = src.model_copy(update={"limit": cfg.rounds.validation_n, "draw_chunk": None})
    held = read_jsonl(run.file("eval/holdout.problems.jsonl"))
    exclude = training_questions(run) | {normalize_question(p["question"]) for p in held if p.get("question")}
    ecfg = cfg.eval.model_copy(update={"holdout": src, "benches": ["holdout"], "limit": None, "n": 1,
                                       "temperature": 0.0})
    s = evaluate(model_cfg, adapter, ["holdout"], cfg.prompt, cfg.generation, ecfg,
                 run.file(f"rounds/validation/{label}"), exclude=exclude, label=f"validation-{label}",
                 fix="delete {path} (the rounds stage scores it again)")
    b = s["benches"]["holdout"]
    recs = read_jsonl(run.file(f"rounds/validation/{label}/holdout.jsonl"))
    no_answer = sum(r.get("extracted", [None])[0] in (None, "") for r in recs)
    return {"accuracy": b["accuracy"], "ci": b["ci"], "n": b["n_problems"],
            "no_answer_rate": round(no_answer / len(recs), 4) if recs else None,
            "mean_tokens": b["completion_tokens"]["mean"]}


def round_row(r: int, run: Run) -> dict:
    """What one round made: its rollouts (the round's model before training), pairs, held-out accuracy."""
    recs = read_jsonl(run.file("rollouts.jsonl"))
    c = rollout_counts(recs, run.cfg.curate.no_answer_is_wrong)
    held = run.stage("eval_ssb").get("holdout") or {}
    return {"round": r, "run_dir": str(run.path), "model": run.cfg.model.name_or_path,
            "problems": c["problems"], "rollout_accuracy": c["accuracy"], "with_both": c["with_both"],
            "pairs": len(read_jsonl(run.file("pairs.jsonl"))),
            "rollout_no_answer_rate": round(c["outcomes"].get("no_answer", 0) / c["rollouts"], 4)
            if c["rollouts"] else None,
            "rollout_mean_tokens": round(c["generated_tokens"] / c["rollouts"], 2) if c["rollouts"] else None,
            "heldout": {k: held.get(k) for k in ("accuracy", "ci", "n_problems")} if held else None}


def stop_decision(rows: list[dict], stop_drop: float) -> dict | None:
    """The collapse guard: stop once the last round's validation accuracy is more than ``stop_drop``
    below the round before it (None: go on)."""
    if len(rows) < 2:
        return None
    drop = rows[-2]["validation"]["accuracy"] - rows[-1]["validation"]["accuracy"]
    if drop > stop_drop + 1e-12:
        return {"after_round": rows[-1]["round"], "reason": f"validation accuracy fell {drop:.3f} (more than "
                f"rounds.stop_drop = {stop_drop}) from round {rows[-2]['round']}"}
    return None


def run_stages(sub: Run, names: list[str]) -> None:
    """``names`` of the stage table on a round's run directory, in order, each once (the report always)."""
    for name in names:
        st = get_stage(name)
        if sub.stage_done(name) and name != "report":
            continue
        pairs = sub.file("pairs.jsonl")
        if st.needs_pairs and not (pairs.is_file() and pairs.stat().st_size):
            sub.set_stage(name, status="skipped", reason="no verified pairs")
            continue
        log.info("[rounds] %s: %s", sub.path.name, name)
        t0 = time.time()
        entry = getattr(importlib.import_module(st.module), st.entry)
        result = entry(sub, st.label, adapter=sub.file(st.adapter)) if st.is_eval else entry(sub)
        if not sub.stage_done(name):  # entry points that do not keep their own manifest entry
            sub.set_stage(name, status="done", seconds=round(time.time() - t0, 2),
                          **(result if isinstance(result, dict) else {}))


def run_rounds(run: Run) -> dict:
    """Rounds 2 .. ``rounds.n`` (see the module doc); returns the manifest stats."""
    from ..report.ledger import ledger, model_params
    from .rollout import run_rollout

    cfg = run.cfg
    if cfg.generation.backend == "llamacpp":
        raise RoundsError("rounds need generation.backend hf or vllm: llama.cpp reads a GGUF file, and a round's "
                          "model is a merged safetensors directory")
    out = run.file("rounds/rounds.json")
    with run.stage_run("rounds") as info:
        params = model_params(cfg)
        rows = [{**round_row(1, run), "model": cfg.model.name_or_path,
                 "validation": validation(run, "r1", cfg.model, run.file("student"))}]
        prev, prev_model, stop = run, cfg.model, None
        for r in range(2, cfg.rounds.n + 1):
            d = round_dir(run, r)
            d.mkdir(parents=True, exist_ok=True)
            merge_model(prev_model, prev.file("student"), d / "model")
            sub_cfg = round_config(cfg, run, r)
            sub = Run.create(sub_cfg)
            for f in ("holdout.problems.jsonl", "holdout.problems.config.json", "holdout.problems.info.json"):  # the run's held-out problems
                src, dst = run.file(f"eval/{f}"), sub.file(f"eval/{f}")
                if src.is_file() and not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
            if not sub.stage_done("rollout"):
                problems = round_problems(cfg, prev)
                log.info("[rounds] round %d: %d problems (%s) with %s", r, len(problems), cfg.rounds.problems,
                         sub_cfg.model.name_or_path)
                run_rollout(sub, problems=problems)
            run_stages(sub, SUB_STAGES)
            row = round_row(r, sub)
            if not row["pairs"] or not (sub.file("student") / "adapter_config.json").is_file():
                rows.append(row)
                stop = {"after_round": r, "reason": "the round wrote no verified pair"}
                break
            row["validation"] = validation(run, f"r{r}", sub_cfg.model, sub.file("student"))
            rows.append(row)
            stop = stop_decision(rows, cfg.rounds.stop_drop)
            if stop:
                break
            prev, prev_model = sub, sub_cfg.model
        arms = ledger(run, params, all_arms=True)["arms"]
        for row in rows:
            key = "ssb" if row["round"] == 1 else f"ssb@{row['round']}"
            own = ledger(Run.open(row["run_dir"]), params)["arms"].get("ssb", {}) if row["round"] > 1 else arms.get("ssb", {})
            row["flops"] = own.get("flops")
            row["cumulative_flops"] = arms.get(key, {}).get("flops")
        best = max(rows, key=lambda x: ((x.get("validation") or {}).get("accuracy", -1), -x["round"]))
        doc = {"n": cfg.rounds.n, "problems": cfg.rounds.problems, "stop_drop": cfg.rounds.stop_drop,
               "rounds": rows, "stopped": stop, "best_round_on_validation": best["round"],
               "merge": "each round's adapter merged into the weights (merge_and_unload); a fresh LoRA per round"}
        atomic_write_json(out, doc)
        info.update(rounds_run=len(rows), stopped=stop, best_round_on_validation=best["round"],
                    validation_accuracy=[(x.get("validation") or {}).get("accuracy") for x in rows],
                    heldout_accuracy=[(x.get("heldout") or {}).get("accuracy") for x in rows])
    return info
