"""Stage 6: accuracy with confidence intervals, pass@k, and paired model comparisons.

    ssb eval --model runs/NAME/student --bench gsm8k,math500,aime2024 [--n 8 --temperature 0.7]
    ssb eval --model runs/NAME                 # base + every adapter of the run, then a paired table

The model sees exactly what it saw at training: ``prompts.student_messages`` through
the chat template, base and adapter alike (adapters load with
``peft.PeftModel.from_pretrained`` and are merged for generation).

Per benchmark the stage writes ``<out>/<bench>.jsonl``, one line per problem (id, gold,
completions, extracted answers, grades, tokens, finish reasons), appended as problems
finish so a killed eval resumes where it stopped; then ``<out>/summary.json`` with
accuracy, its 95% interval (Wilson for 0/1 scores, paired-bootstrap over problems for
n > 1 sampled completions), pass@k for k <= n, completion-length statistics and the
truncated count. ``compare.py`` pairs models on the same problem ids.
Under ``accelerate launch`` each process evaluates its share of the problems into a shard
file, merged in problem order by the main process (``distributed.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Iterable

from .errors import SSBError
from . import distributed, stats
from .config import DataConfig, EvalConfig, GenerationConfig, ModelConfig, PromptConfig
from .compare import load_results, load_summaries, paired_table, print_tables
from .rundir import JsonlWriter, Run, atomic_write_json, iter_batches, read_jsonl

log = logging.getLogger(__name__)

HOLDOUT = "holdout"
HOLDOUT_ALIASES = ("holdout", "train_like")


class EvalError(SSBError, RuntimeError):
    pass


def outputs(label: str) -> tuple[str, ...]:
    """What the ``eval_<label>`` stage of a run writes (``ssb run --force eval_<label>``
    removes it). The holdout problem set ``eval/holdout.problems.jsonl`` is shared by every
    label and stays."""
    return (f"eval/{label}",)


# ----------------------------------------------------------------------------- problems


def training_questions(run: Run) -> set[str]:
    """Normalised questions the run trains on: its data config's problems plus whatever
    ``rollouts.jsonl`` holds (the holdout set must avoid both)."""
    from .data import load_problems, normalize_question, question_keys

    out = question_keys(load_problems(run.cfg.data))
    for rec in read_jsonl(run.file("rollouts.jsonl")):
        q = (rec.get("problem") or {}).get("question")
        if q:
            out.add(normalize_question(q))
    return out


def holdout_problems(holdout: DataConfig | None, exclude: set[str], cache: Path | None = None) -> tuple[list, dict]:
    """Problems generated like the training data (another seed), distinct and never in
    ``exclude`` (normalised training questions). The chosen set is saved to ``cache`` the
    first time so every model of a run is scored on the same problems.

    Returns ``(problems, info)``; ``info`` says how deduplication shaped the set (it shifts
    the difficulty mix: small tasks lose their easiest, most repeated questions to the
    training set): ``wanted``, ``candidates_drawn``, ``dropped_duplicates_of_training``,
    ``dropped_repeats`` (a question drawn twice), ``dropped_duplicates`` (the two together),
    ``kept``, and ``exhausted`` (True when the distinct questions outside training ran out
    before ``wanted``). No problem left at all raises :class:`EvalError` with those counts."""
    from .data import Problem, load_problems, normalize_question

    if holdout is None:
        raise EvalError("bench 'holdout' needs eval.holdout (a data config, e.g. reasoning_gym with another seed)")
    spec = holdout.model_dump(mode="json")
    sidecar = cache.with_suffix(".config.json") if cache is not None else None
    info_path = cache.with_suffix(".info.json") if cache is not None else None
    if cache is not None and cache.exists():
        made_with = json.loads(sidecar.read_text()) if sidecar.exists() else None
        if made_with is not None and made_with != spec:
            raise EvalError(f"{cache} was drawn with another eval.holdout ({made_with}); delete it (and the "
                            "eval/*/holdout.jsonl files) to draw the new holdout set")
        probs = [Problem.from_dict(r) for r in read_jsonl(cache)]
        saved = json.loads(info_path.read_text()) if info_path.exists() else {}
        return probs, {**saved, "cache": str(cache), "kept": len(probs)}
    stats: dict = {}
    drawn = load_problems(holdout, exclude=exclude, stats=stats)  # reasoning-gym draws on past duplicates
    seen: set[str] = set()
    kept, repeats = [], 0
    for p in drawn:  # other sources may repeat a question
        key = normalize_question(p.question)
        if key in seen or key in exclude:
            repeats += 1
            continue
        seen.add(key)
        kept.append(p)
    of_training = stats.get("dropped_excluded", 0)
    repeats += stats.get("dropped_repeats", 0)
    info = {"source": holdout.source, "seed": holdout.seed, "excluded_training_questions": len(exclude),
            "wanted": holdout.limit, "candidates_drawn": stats.get("candidates", len(drawn)),
            "dropped_duplicates_of_training": of_training, "dropped_repeats": repeats,
            "dropped_duplicates": of_training + repeats, "kept": len(kept),
            "exhausted": bool(stats.get("exhausted")) or (holdout.limit is not None and len(kept) < holdout.limit)}
    if stats.get("dropped_inconsistent"):
        info["dropped_inconsistent"] = stats["dropped_inconsistent"]
    counts = (f"drew {info['candidates_drawn']:,} candidates: {of_training:,} were training questions, "
              f"{repeats:,} repeats; kept {len(kept):,} of the {holdout.limit or len(kept):,} wanted")
    if not kept:
        raise EvalError(
            f"holdout: no problem left outside the training set ({counts}). The training data "
            f"({len(exclude):,} questions) uses up the distinct questions eval.holdout can generate: widen "
            "eval.holdout's task options, train on fewer problems (data.limit), or evaluate on another source")
    if info["exhausted"]:
        log.warning("holdout: only %d distinct problems outside the training set (%s); the held-out set is "
                    "smaller than eval.holdout.limit", len(kept), counts)
    elif info["dropped_duplicates"]:
        log.info("holdout: %s", counts)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(sidecar, spec)
        atomic_write_json(info_path, info)
        with JsonlWriter(cache) as w:
            for p in kept:
                w.write(p.to_dict())
    return kept, info


def bench_problems(bench: str, eval_cfg: EvalConfig, exclude: set[str] | None = None,
                   cache_dir: Path | None = None) -> tuple[list, dict]:
    """Problems of one benchmark: a built-in name, a data file, or ``holdout``; the first
    ``eval_cfg.limit`` of them (holdout: its own limit)."""
    from .data import load_benchmark

    if bench in HOLDOUT_ALIASES:
        cache = cache_dir / f"{HOLDOUT}.problems.jsonl" if cache_dir is not None else None
        probs, info = holdout_problems(eval_cfg.holdout, exclude or set(), cache)
    elif Path(bench).suffix in (".jsonl", ".json", ".parquet", ".csv") or Path(bench).exists():
        probs = load_data_file(bench)
        info = {"source": str(bench)}
    else:
        probs = load_benchmark(bench, "test")
        info = {"source": bench}
    if eval_cfg.limit is not None and bench not in HOLDOUT_ALIASES:
        probs = probs[: eval_cfg.limit]
    ids = [p.id for p in probs]
    if len(set(ids)) != len(ids):
        raise EvalError(f"{bench}: problem ids are not unique; give the file an id column")
    return probs, info


def load_data_file(path: str | Path) -> list:
    """Problems of a user file; its ``id`` column names them when every row has one,
    else the row index does."""
    from .data import DataError, load_problems

    cfg = DataConfig(source=str(path), split="test", shuffle=False, limit=None, id_field="id")
    try:
        return load_problems(cfg)
    except DataError as exc:
        if exc.bad is None or exc.bad.field != "id":  # only a missing/duplicate id falls back to row numbers
            raise
        return load_problems(cfg.model_copy(update={"id_field": None}))


def bench_name(bench: str) -> str:
    """File-safe name of a benchmark (a data file is named after its stem)."""
    if bench in HOLDOUT_ALIASES:
        return HOLDOUT
    name = Path(bench).stem if Path(bench).suffix else bench
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ----------------------------------------------------------------------------- model


def load_for_eval(model_cfg: ModelConfig, adapter: str | Path | None = None, merge: bool = True):
    """Load the base model and, when ``adapter`` is given, apply it with
    ``peft.PeftModel.from_pretrained``; ``merge`` folds it into the weights (plain
    weights generate faster with transformers; same function)."""
    from .models import load_model

    loaded = load_model(model_cfg)
    if adapter is None:
        return loaded
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").exists():
        raise EvalError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    from peft import PeftModel

    model = PeftModel.from_pretrained(loaded.model, str(adapter))
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return dataclasses.replace(loaded, model=model, name=f"{loaded.name} + {adapter}")


def sampling_for(eval_cfg: EvalConfig, gen_cfg: GenerationConfig):
    from .generation import Sampling

    return Sampling(
        n=eval_cfg.n,
        temperature=eval_cfg.temperature,
        top_k=0,
        top_p=eval_cfg.top_p,
        max_new_tokens=eval_cfg.max_new_tokens or gen_cfg.max_new_tokens,
        seed=eval_cfg.seed,
    )


# ----------------------------------------------------------------------------- per-sample records


def _outcome_str(outcome: Any) -> str:
    return str(getattr(outcome, "value", outcome))


def score_record(problem, completions: list) -> dict:
    """One JSONL line: the problem's completions graded with ``grading.grade``."""
    from .grading import grade

    grades = [grade(problem, c.text) for c in completions]
    return {
        "id": problem.id,
        "question": problem.question,
        "answer": problem.answer,
        "completions": [c.text for c in completions],
        "extracted": [g.extracted for g in grades],
        "grades": [_outcome_str(g.outcome) for g in grades],
        "correct": [bool(g.correct) for g in grades],
        "formats": [g.fmt for g in grades],
        "completion_tokens": [int(c.completion_tokens) for c in completions],
        "finish_reasons": [c.finish_reason for c in completions],
        "prompt_tokens": int(completions[0].prompt_tokens) if completions else 0,
    }


def _check_settings(existing: list[dict], n: int, path: Path) -> None:
    bad = [r["id"] for r in existing if len(r.get("completions", [])) != n]
    if bad:
        raise EvalError(
            f"{path} holds records with another number of completions than n={n} (e.g. {bad[0]!r}); "
            "delete it or write to another --out"
        )


def eval_bench(generator, problems: list, prompt_cfg: PromptConfig, sampling, path: Path,
               batch_size: int, desc: str = "") -> list[dict]:
    """Generate + grade the problems not yet in ``path``; return the records of ``problems``."""
    from tqdm.auto import tqdm

    from .prompts import student_messages

    from .generation import derive_seed

    # distributed hook: records of the canonical file + shard files; todo = this process's share
    existing = {str(r["id"]): r for r in distributed.read_records(path)}
    _check_settings(list(existing.values()), sampling.n, path)
    todo = [p for p in distributed.shard(problems) if str(p.id) not in existing]
    # one generator batch per call (hf): progress and a JSONL flush after each; vLLM
    # schedules its own batches, so it gets bigger calls
    per_call = batch_size * (16 if getattr(generator, "backend", "hf") == "vllm" else 1)
    chunk = max(1, per_call // sampling.n)
    if todo:
        with JsonlWriter(distributed.shard_path(path)) as w, tqdm(total=len(todo),
                                          desc=desc or path.stem, unit="problem") as bar:
            for batch in iter_batches(todo, chunk):
                convs = [student_messages(prompt_cfg, p.question) for p in batch]
                # per-problem seeds: a resumed or re-batched eval samples the same completions
                seeds = [derive_seed(sampling.seed, p.id) for p in batch]
                outs = generator.generate(convs, sampling, progress=False, seeds=seeds)
                for p, comps in zip(batch, outs):
                    rec = score_record(p, comps)
                    w.write(rec)
                    existing[str(p.id)] = rec
                bar.update(len(batch))
    if distributed.is_distributed() or distributed.shard_files(path):  # distributed hook: merge shards
        distributed.merge(path, order=[str(p.id) for p in problems])
        existing = {str(r["id"]): r for r in read_jsonl(path)}
    return [existing[str(p.id)] for p in problems]


# ----------------------------------------------------------------------------- summaries


def pass_ks(n: int) -> list[int]:
    """k values reported for n samples: 1, 2, 4, ... and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def summarize(records: list[dict], seed: int = 0) -> dict:
    """Accuracy, 95% interval, pass@k, lengths and failure counts of one benchmark."""
    if not records:
        return {"n_problems": 0, "accuracy": None, "ci": None}
    n = len(records[0]["correct"])
    per_problem = [sum(r["correct"]) / len(r["correct"]) for r in records]
    n_problems = len(records)
    total_correct = sum(sum(r["correct"]) for r in records)
    out: dict[str, Any] = {"n_problems": n_problems, "samples_per_problem": n}
    if n == 1:
        k = int(total_correct)
        lo, hi = stats.wilson(k, n_problems)
        out.update(accuracy=k / n_problems, correct=k, ci=[lo, hi], ci_method="wilson")
    else:
        acc = sum(per_problem) / n_problems
        # problems are the sampling unit: bootstrap over them; never narrower than the
        # Wilson interval of all samples (which the bootstrap undercuts at 0% or 100%)
        boot = stats.paired_bootstrap(per_problem, [0.0] * n_problems, iters=4000, seed=seed)["ci"]
        wil = stats.wilson(int(total_correct), n_problems * n)
        out.update(accuracy=acc, correct=int(total_correct), ci=[min(boot[0], wil[0]), max(boot[1], wil[1])],
                   ci_method="max(bootstrap over problems, wilson over samples)")
        out["pass_at_k"] = {str(k): stats.mean_pass_at_k([(n, sum(r["correct"])) for r in records], k)
                            for k in pass_ks(n)}
        solved = sum(1 for r in records if any(r["correct"]))
        out["solved_any"] = solved
    out["points_per_problem"] = 100.0 / n_problems
    lengths = [t for r in records for t in r["completion_tokens"]]
    out["completion_tokens"] = stats.length_stats(lengths)
    out["completion_tokens_correct"] = stats.length_stats(
        [t for r in records for t, c in zip(r["completion_tokens"], r["correct"]) if c])
    grades = [g for r in records for g in r["grades"]]
    out["outcomes"] = {g: grades.count(g) for g in sorted(set(grades))}
    out["truncated"] = sum(f == "length" for r in records for f in r["finish_reasons"])
    # collapse guard: a trained model that stops giving answers shows here first (report.py flags it)
    out["no_answer_rate"] = out["outcomes"].get("no_answer", 0) / len(grades) if grades else 0.0
    out["truncation_rate"] = out["truncated"] / len(grades) if grades else 0.0
    formats = [f for r in records for f in r.get("formats", [])]
    out["formats"] = {f: formats.count(f) for f in sorted(set(formats))}
    return out


# ----------------------------------------------------------------------------- entry points


def evaluate(model_cfg: ModelConfig, adapter: str | Path | None, benches: Iterable[str],
             prompt_cfg: PromptConfig, gen_cfg: GenerationConfig, eval_cfg: EvalConfig,
             out_dir: str | Path, data_file: str | Path | None = None,
             exclude: set[str] | None = None, label: str | None = None, loaded=None) -> dict:
    """Evaluate one model (base or base + adapter) on ``benches`` (plus ``data_file``) and
    write ``out_dir/<bench>.jsonl`` and ``out_dir/summary.json``; return the summary.

    ``exclude``: normalised training questions the ``holdout`` bench must avoid.
    ``loaded``: an already loaded model (skips loading; ``adapter`` is then ignored)."""
    from .generate import make_generator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    benches = [b for b in benches if b] + ([str(data_file)] if data_file else [])
    if not benches:
        raise EvalError("nothing to evaluate: give benchmarks (--bench) or a data file (--data)")
    if eval_cfg.n < 1:
        raise EvalError(f"eval.n must be >= 1, got {eval_cfg.n}")
    if eval_cfg.n > 1 and eval_cfg.temperature <= 0:
        raise EvalError(f"eval.n={eval_cfg.n} sampled completions need eval.temperature > 0")
    with distributed.main_process_first():  # distributed hook: the main process draws + caches holdout first
        problem_sets = {bench_name(b): bench_problems(b, eval_cfg, exclude, out_dir.parent) for b in benches}
    t0 = time.time()
    if adapter is not None and gen_cfg.backend == "llamacpp":
        raise EvalError("generation.backend=llamacpp cannot apply a PEFT adapter (the GGUF has base weights); "
                        "use --backend hf or vllm")
    pending = any(str(p.id) not in {str(r["id"]) for r in read_jsonl(out_dir / f"{name}.jsonl")}
                  for name, (probs, _) in problem_sets.items() for p in probs)
    generator = None
    if pending:  # a finished eval re-summarises without loading the model
        if loaded is None:
            loaded = load_for_eval(model_cfg, adapter, merge=gen_cfg.backend == "hf")
        generator = make_generator(gen_cfg, loaded, model_cfg, str(adapter) if adapter else None)
    sampling = sampling_for(eval_cfg, gen_cfg)
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    model_name = loaded.name if loaded is not None else summary.get("model", model_cfg.name_or_path)
    summary.update(label=label or out_dir.name, model=model_name,
                   adapter=str(adapter) if adapter else None, n=eval_cfg.n,
                   temperature=eval_cfg.temperature, top_p=eval_cfg.top_p,
                   max_new_tokens=sampling.max_new_tokens, seed=eval_cfg.seed)
    summary.setdefault("benches", {})
    for name, (problems, info) in problem_sets.items():
        records = eval_bench(generator, problems, prompt_cfg, sampling, out_dir / f"{name}.jsonl",
                             gen_cfg.batch_size, desc=f"{summary['label']}/{name}")
        summary["benches"][name] = {**summarize(records, eval_cfg.seed), "problems": info}
        if distributed.is_main():  # distributed hook: one writer
            atomic_write_json(summary_path, summary)
    summary["seconds"] = round(time.time() - t0, 2)
    if distributed.is_main():  # distributed hook: one writer
        atomic_write_json(summary_path, summary)
    return summary


def run_eval(run: Run, label: str, adapter: str | Path | None = None) -> dict:
    """Evaluate the run's model (``adapter``: a PEFT directory of the run) on
    ``run.cfg.eval.benches`` into ``eval/<label>/``; returns manifest stats."""
    cfg = run.cfg
    needs_holdout = any(b in HOLDOUT_ALIASES for b in cfg.eval.benches)
    with run.stage_run(f"eval_{label}") as info:
        exclude = training_questions(run) if needs_holdout else set()
        summary = evaluate(cfg.model, adapter, cfg.eval.benches, cfg.prompt, cfg.generation, cfg.eval,
                           run.file(f"eval/{label}"), exclude=exclude, label=label)
        for name, b in summary["benches"].items():
            info[name] = {"accuracy": b["accuracy"], "ci": b["ci"], "n_problems": b["n_problems"],
                          "correct": b.get("correct"), "truncated": b["truncated"],
                          "mean_tokens": b["completion_tokens"]["mean"]}
    return info


# ----------------------------------------------------------------------------- CLI


def _eval_cfg_from_args(base: EvalConfig, args) -> EvalConfig:
    upd: dict[str, Any] = {}
    if getattr(args, "data", None):
        upd["benches"] = []  # --data replaces --bench
    elif getattr(args, "bench", None):  # None: the config's eval.benches
        upd["benches"] = [b.strip() for b in args.bench.split(",") if b.strip()]
    for field in ("limit", "n", "temperature", "max_new_tokens"):
        if getattr(args, field, None) is not None:
            upd[field] = getattr(args, field)
    if upd.get("n", base.n) > 1 and "temperature" not in upd and base.temperature <= 0:
        upd["temperature"] = 0.7  # sampled pass@k needs a temperature; say so in the summary
        log.warning("--n > 1 without --temperature: sampling at T=0.7")
    return base.model_copy(update=upd)


def _model_source(model: str, base: str | None) -> tuple[ModelConfig | None, Path | None, Run | None]:
    """``(model config, adapter dir, run)`` for ``--model``: a run dir, an adapter dir
    (inside a run or standalone), or a model id/path."""
    path = Path(model)
    if (path / "config.yaml").exists() and (path / "manifest.json").exists():
        return None, None, Run.open(path)
    if (path / "adapter_config.json").exists():
        run = Run.open(path.parent) if (path.parent / "config.yaml").exists() else None
        if base:
            return ModelConfig(name_or_path=base), path, None
        if run is not None:
            return run.cfg.model, path, run
        meta = json.loads((path / "adapter_config.json").read_text())
        if not meta.get("base_model_name_or_path"):
            raise EvalError(f"{path}: adapter does not name its base model; pass --base")
        return ModelConfig(name_or_path=meta["base_model_name_or_path"]), path, None
    return ModelConfig(name_or_path=model), None, None


def evaluate_cli(args) -> dict:
    """``ssb eval``: evaluate a model, an adapter, or every model of a run; print the tables."""
    from .config import RunConfig, load_config

    model_cfg, adapter, run = _model_source(args.model, getattr(args, "base", None))
    cfg = run.cfg if run is not None else (load_config(args.config) if getattr(args, "config", None) else RunConfig())
    eval_cfg = _eval_cfg_from_args(cfg.eval, args)
    gen_cfg = cfg.generation
    if getattr(args, "backend", None):
        gen_cfg = gen_cfg.model_copy(update={"backend": args.backend})
    exclude = training_questions(run) if run is not None and any(
        b in HOLDOUT_ALIASES for b in eval_cfg.benches) else set()

    jobs: list[tuple[str, ModelConfig, Path | None, Path]] = []
    if model_cfg is None:  # a whole run: base + each adapter it has
        for label, sub in (("base", None), ("ssb", "student"), ("grpo", "grpo")):
            if sub is None or (run.file(sub) / "adapter_config.json").exists():
                jobs.append((label, run.cfg.model, run.file(sub) if sub else None, run.file(f"eval/{label}")))
    else:
        label = adapter.name if adapter is not None else Path(model_cfg.name_or_path).name
        if run is not None and adapter is not None:
            label = {"student": "ssb", "grpo": "grpo"}.get(adapter.name, adapter.name)
        out = Path(args.out) if getattr(args, "out", None) else (
            run.file(f"eval/{label}") if run is not None else Path("eval") / bench_name(label))
        jobs.append((label, model_cfg, adapter, out))

    # summaries are keyed by output directory (the paired table pairs directories); each
    # carries the model's label (run/adapter label or model name), which the tables show
    summaries = {}
    for label, mcfg, adp, out in jobs:
        summaries[Path(out).name] = evaluate(mcfg, adp, eval_cfg.benches, cfg.prompt, gen_cfg, eval_cfg, out,
                                             data_file=getattr(args, "data", None), exclude=exclude, label=label)
    out_dirs = {Path(o).parent for *_, o in jobs}
    pairs = []
    if len(out_dirs) == 1:  # every label lives side by side: compare them on shared problems
        eval_dir = out_dirs.pop()
        summaries = {**load_summaries(eval_dir), **summaries}
        pairs = paired_table(load_results(eval_dir), seed=eval_cfg.seed)
    print_tables(summaries, pairs)
    return {"summaries": summaries, "paired": pairs}
