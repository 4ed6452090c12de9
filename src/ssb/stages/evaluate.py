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
truncated count. ``report/paired.py`` pairs models on the same problem ids.

Every record carries what made it: ``sampling`` (the :class:`~ssb.generation.engine.Sampling`
fields: n, temperature, top_k, top_p, max_new_tokens, seed) and ``model`` (the base model's
``name_or_path``, a local path resolved to an absolute one, and the sha256 of the adapter's
files, None for the base model). An output directory holds one model at one setting: before
loading anything, :func:`evaluate` compares the records of every bench it is asked for and
of every bench ``summary.json`` already lists with what this eval asks, and refuses with an
:class:`EvalError` naming each difference and the flag / config field that set it, never
regenerating or relabelling on its own (``ssb eval``: pass ``--out`` or delete the file; a
pipeline stage: ``ssb run CONFIG --force eval_<label>``). Records written before ssb
recorded these (no ``sampling`` key) are refused the same way: what made them is unknown.
Under ``accelerate launch`` each process evaluates its share of the problems into a shard
file, merged in problem order by the main process (``rundir/distributed.py``).

Here: loading the model to evaluate, generating, scoring, summarising, and the stage entry
point :func:`run_eval` (the ``eval_<label>`` stages of the stage table). Which problems a bench
names (and the held-out set) is ``data/heldout.py``; what ``ssb eval``'s arguments mean is
``cli_eval.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterable

from tqdm.auto import tqdm

from ..config import EvalConfig, GenerationConfig, ModelConfig, PromptConfig
from ..data.heldout import HOLDOUT_ALIASES, EvalError, bench_name, bench_problems, training_questions
from ..generation.engine import Sampling, derive_seed
from ..grading.grade import grade
from ..prompts import student_messages
from ..report import stats
from ..rundir import distributed
from ..rundir.jsonl import JsonlWriter, atomic_write_json, read_jsonl
from ..rundir.run import Run, iter_batches

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- model


def load_for_eval(model_cfg: ModelConfig, adapter: str | Path | None = None, merge: bool = True):
    """Load the base model and, when ``adapter`` is given, apply it with
    ``peft.PeftModel.from_pretrained``; ``merge`` folds it into the weights (plain
    weights generate faster with transformers; same function)."""
    from ..models import load_model  # imports torch: kept out of this module's import

    loaded = load_model(model_cfg)
    if adapter is None:
        return loaded
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").exists():
        raise EvalError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    from peft import PeftModel  # heavy: imported only to apply an adapter

    from ..training import known_warnings_filtered  # transformers, as peft

    with known_warnings_filtered():
        model = PeftModel.from_pretrained(loaded.model, str(adapter))
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return dataclasses.replace(loaded, model=model, name=f"{loaded.name} + {adapter}")


def sampling_for(eval_cfg: EvalConfig, gen_cfg: GenerationConfig) -> Sampling:
    """The eval's :class:`Sampling`: ``eval.*`` with top-k off and ``eval.max_new_tokens``
    falling back to ``generation.max_new_tokens``."""
    return Sampling(
        n=eval_cfg.n,
        temperature=eval_cfg.temperature,
        top_k=0,
        top_p=eval_cfg.top_p,
        max_new_tokens=eval_cfg.max_new_tokens or gen_cfg.max_new_tokens,
        seed=eval_cfg.seed,
    )


# ----------------------------------------------------------------------------- what made a record

# where each recorded setting comes from: named in the error that refuses a mismatch
SETTING_SOURCES = {
    "n": "--n / eval.n",
    "temperature": "--temperature / eval.temperature",
    "top_k": "top-k is always off in evals",
    "top_p": "eval.top_p",
    "max_new_tokens": "--max-new-tokens / eval.max_new_tokens, default generation.max_new_tokens",
    "seed": "eval.seed",
    "base": "--model / --base / model.name_or_path",
    "adapter_sha256": "--model: another or re-trained adapter",
}
FIX_CLI = "pass --out to write elsewhere or delete {path}"


def adapter_digest(adapter: str | Path | None) -> str | None:
    """sha256 over the names and bytes of an adapter directory's ``adapter_*`` files (config
    and weights, sorted by name); None without an adapter. A re-trained adapter at the same
    path gets another digest, a moved one keeps its own."""
    if adapter is None:
        return None
    h = hashlib.sha256()
    for f in sorted(Path(adapter).glob("adapter_*")):
        if f.is_file():
            h.update(f.name.encode() + b"\0")
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def model_identity(model_cfg: ModelConfig, adapter: str | Path | None) -> dict:
    """The ``model`` stamp of a record: ``base`` (``model.name_or_path``; a local path made
    absolute, so a relative and an absolute spelling match) and ``adapter_sha256``
    (:func:`adapter_digest`)."""
    base = model_cfg.name_or_path
    if Path(base).exists():
        base = str(Path(base).resolve())
    return {"base": base, "adapter_sha256": adapter_digest(adapter)}


def record_stamp(sampling: Sampling, model: dict | None = None) -> dict:
    """The keys :func:`score_record` adds to each record: ``sampling`` (every
    :class:`Sampling` field) and ``model`` (:func:`model_identity`, when given)."""
    stamp: dict[str, Any] = {"sampling": dataclasses.asdict(sampling)}
    if model is not None:
        stamp["model"] = dict(model)
    return stamp


def _check_settings(existing: list[dict], stamp: dict, path: Path, fix: str = FIX_CLI) -> None:
    """Raise :class:`EvalError` unless every record of ``existing`` carries the ``sampling``
    (and, when ``stamp`` has one, ``model``) of ``stamp``: one line naming each differing
    setting (first differing record), where it is set (:data:`SETTING_SOURCES`) and ``fix``
    (``{path}`` filled in). Records without a ``sampling`` key predate settings recording and
    are refused too."""
    for rec in existing:
        if "sampling" not in rec or ("model" in stamp and "model" not in rec):
            raise EvalError(
                f"{path} holds records written before ssb recorded their sampling settings and model "
                f"(e.g. {rec.get('id')!r}), so this eval cannot tell whether they match it: "
                + fix.format(path=path))
        diffs = []
        for section in ("sampling", "model"):
            if section not in stamp:
                continue
            for key, want in stamp[section].items():
                have = rec[section].get(key, "<unrecorded>")
                if have != want:
                    diffs.append(f"{key}={have!r}, this eval asks {want!r} ({SETTING_SOURCES.get(key, key)})")
        if diffs:
            raise EvalError(f"{path} was generated with " + "; ".join(diffs) + ": " + fix.format(path=path))


# ----------------------------------------------------------------------------- per-sample records


def _outcome_str(outcome: Any) -> str:
    return str(getattr(outcome, "value", outcome))


def score_record(problem, completions: list, stamp: dict | None = None) -> dict:
    """One JSONL line: the problem's completions graded with ``grading.grade``, then the keys
    of ``stamp`` (:func:`record_stamp`: the settings and model that made them)."""
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
        **(stamp or {}),
    }


def eval_bench(generator, problems: list, prompt_cfg: PromptConfig, sampling: Sampling, path: Path,
               batch_size: int, desc: str = "", model: dict | None = None, fix: str = FIX_CLI) -> list[dict]:
    """Generate + grade the problems not yet in ``path``; return the records of ``problems``.

    Each new record is stamped with :func:`record_stamp` (``sampling``, and ``model``: a
    :func:`model_identity`); records already in ``path`` that another setting or model made
    raise :class:`EvalError` (:func:`_check_settings`, ``fix`` says what to do)."""
    stamp = record_stamp(sampling, model)
    # distributed hook: records of the canonical file + shard files; todo = this process's share
    existing = {str(r["id"]): r for r in distributed.read_records(path)}
    _check_settings(list(existing.values()), stamp, path, fix)
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
                    rec = score_record(p, comps, stamp)
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
    # collapse guard: a trained model that stops giving answers shows here first (the report flags it)
    out["no_answer_rate"] = out["outcomes"].get("no_answer", 0) / len(grades) if grades else 0.0
    out["truncation_rate"] = out["truncated"] / len(grades) if grades else 0.0
    formats = [f for r in records for f in r.get("formats", [])]
    out["formats"] = {f: formats.count(f) for f in sorted(set(formats))}
    return out


# ----------------------------------------------------------------------------- entry points


def evaluate(model_cfg: ModelConfig, adapter: str | Path | None, benches: Iterable[str],
             prompt_cfg: PromptConfig, gen_cfg: GenerationConfig, eval_cfg: EvalConfig,
             out_dir: str | Path, data_file: str | Path | None = None,
             exclude: set[str] | None = None, label: str | None = None, loaded=None,
             fix: str = FIX_CLI) -> dict:
    """Evaluate one model (base or base + adapter) on ``benches`` (plus ``data_file``) and
    write ``out_dir/<bench>.jsonl`` and ``out_dir/summary.json``; return the summary.

    Records already in ``out_dir`` (of these benches and of those ``summary.json`` lists)
    that other sampling settings or another model made raise :class:`EvalError` before any
    model is loaded; ``fix`` is the remedy the message ends with (``{path}``: the file).

    ``exclude``: normalised training questions the ``holdout`` bench must avoid.
    ``loaded``: an already loaded model (skips loading; ``adapter`` is then not applied but
    still identifies the model in the records)."""
    from ..generation.factory import make_generator  # torch + backends: only when something is left to generate

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
    sampling = sampling_for(eval_cfg, gen_cfg)
    model_id = model_identity(model_cfg, adapter)
    summary_path = out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    # one model at one setting per directory: what is there (asked for or already summarised)
    # must match, or the summary below would relabel it
    stamp = record_stamp(sampling, model_id)
    for name in dict.fromkeys([*problem_sets, *summary.get("benches", {})]):
        path = out_dir / f"{name}.jsonl"
        _check_settings(distributed.read_records(path), stamp, path, fix)
    pending = any(str(p.id) not in {str(r["id"]) for r in read_jsonl(out_dir / f"{name}.jsonl")}
                  for name, (probs, _) in problem_sets.items() for p in probs)
    generator = None
    if pending:  # a finished eval re-summarises without loading the model
        if loaded is None:
            loaded = load_for_eval(model_cfg, adapter, merge=gen_cfg.backend == "hf")
        generator = make_generator(gen_cfg, loaded, model_cfg, str(adapter) if adapter else None)
    model_name = loaded.name if loaded is not None else summary.get("model", model_cfg.name_or_path)
    summary.update(label=label or out_dir.name, model=model_name,
                   adapter=str(adapter) if adapter else None, n=eval_cfg.n,
                   temperature=eval_cfg.temperature, top_p=eval_cfg.top_p,
                   max_new_tokens=sampling.max_new_tokens, seed=eval_cfg.seed)
    summary.setdefault("benches", {})
    for name, (problems, info) in problem_sets.items():
        records = eval_bench(generator, problems, prompt_cfg, sampling, out_dir / f"{name}.jsonl",
                             gen_cfg.batch_size, desc=f"{summary['label']}/{name}", model=model_id, fix=fix)
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
                           run.file(f"eval/{label}"), exclude=exclude, label=label,
                           fix=f"`ssb run CONFIG --force eval_{label}` regenerates it, or delete {{path}}")
        for name, b in summary["benches"].items():
            info[name] = {"accuracy": b["accuracy"], "ci": b["ci"], "n_problems": b["n_problems"],
                          "correct": b.get("correct"), "truncated": b["truncated"],
                          "mean_tokens": b["completion_tokens"]["mean"]}
    return info
