"""The problems an eval runs on: a built-in benchmark, a user file, or ``holdout``, a set
drawn like the training data (another seed) that never repeats a training question.

The holdout set is drawn once per run and pinned in ``eval/holdout.problems.jsonl`` (with
``.config.json``: the ``eval.holdout`` it was drawn with, and ``.info.json``: how
deduplication against training shaped it), so every model of a run is scored on the same
problems.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..config import DataConfig, EvalConfig
from ..errors import SSBError
from ..rundir.jsonl import JsonlWriter, atomic_write_json, read_jsonl
from ..rundir.run import Run
from .load import load_benchmark, load_problems
from .problem import DataError, Problem, normalize_question, question_keys

log = logging.getLogger(__name__)

HOLDOUT = "holdout"
HOLDOUT_ALIASES = ("holdout", "train_like")


class EvalError(SSBError, RuntimeError):
    """An eval that cannot run as asked (no problems, a stale holdout set, a bad model or setting)."""


def training_questions(run: Run) -> set[str]:
    """Normalised questions the run trains on: its data config's problems plus whatever
    ``rollouts.jsonl`` holds (the holdout set must avoid both)."""
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
    ``eval_cfg.limit`` of them (holdout: of the set drawn and pinned at ``eval.holdout.limit``, which
    stays whole for the run's other evals; ``info['limit']`` says it was cut)."""
    if bench in HOLDOUT_ALIASES:
        cache = cache_dir / f"{HOLDOUT}.problems.jsonl" if cache_dir is not None else None
        probs, info = holdout_problems(eval_cfg.holdout, exclude or set(), cache)
    elif Path(bench).suffix in (".jsonl", ".json", ".parquet", ".csv") or Path(bench).exists():
        probs = load_data_file(bench)
        info = {"source": str(bench)}
    else:
        probs = load_benchmark(bench, "test")
        info = {"source": bench}
    if eval_cfg.limit is not None:
        if bench in HOLDOUT_ALIASES and len(probs) > eval_cfg.limit:
            info = {**info, "limit": eval_cfg.limit}
        probs = probs[: eval_cfg.limit]
    ids = [p.id for p in probs]
    if len(set(ids)) != len(ids):
        raise EvalError(f"{bench}: problem ids are not unique; give the file an id column")
    return probs, info


def load_data_file(path: str | Path) -> list:
    """Problems of a user file; its ``id`` column names them when every row has one,
    else the row index does."""
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
