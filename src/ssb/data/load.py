"""Problems from any source: the built-in benchmarks, user files (.jsonl/.parquet/.csv),
Hugging Face datasets and reasoning-gym generators, all turned into one record,
:class:`~ssb.data.problem.Problem`.

:func:`load_problems` reads a ``data`` config section from whichever source it names; the
built-in benchmarks (``benchmarks/``, package data) are here too. The other parts of the
``data`` package: the records in ``problem.py``, user files and ``hf:`` datasets (row-by-row
validation) in ``files.py``, reasoning-gym drawing in ``gym.py``, and the problem sets an
eval runs on in ``heldout.py``. Import each name from the module that defines it.
"""

from __future__ import annotations

import json
import logging
import random
from importlib import resources
from pathlib import Path

from ..config import DataConfig
from .files import SUFFIXES, LoadResult, load_file, load_hf_dataset, validate_file
from .gym import reasoning_gym_problems
from .problem import BadRow, DataError, Problem, normalize_question, question_keys

__all__ = ["BENCHMARKS", "BadRow", "DataError", "LoadResult", "Problem", "load_benchmark", "load_file",
           "load_hf_dataset", "load_problems", "normalize_question", "question_keys", "reasoning_gym_problems",
           "validate_file"]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- built-in benchmarks

BENCHMARKS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("train", "test"),
    "math500": ("test",),
    "aime2024": ("test",),
}


def load_benchmark(name: str, split: str = "test") -> list[Problem]:
    """Load a benchmark shipped inside the package (see ``benchmarks/SOURCES.md``)."""
    if name not in BENCHMARKS:
        raise DataError(f"unknown benchmark {name!r}; built-in: {', '.join(BENCHMARKS)}")
    if split not in BENCHMARKS[name]:
        raise DataError(f"benchmark {name!r} has no split {split!r}; it has: {', '.join(BENCHMARKS[name])}")
    res = resources.files("ssb") / "benchmarks" / name / f"{split}.jsonl"
    out = []
    for i, line in enumerate(res.read_text(encoding="utf-8").split("\n")):
        if not line.strip():
            continue
        row = json.loads(line)
        extras = {k: v for k, v in row.items() if k not in ("id", "question", "answer", "solution")}
        out.append(
            Problem(
                id=row["id"],
                question=row["question"],
                answer=row["answer"],
                solution=row.get("solution"),
                metadata={"source": name, **extras},
            )
        )
    return out


# ----------------------------------------------------------------------------- dispatch


def load_problems(cfg: DataConfig, exclude: set[str] | None = None, stats: dict | None = None) -> list[Problem]:
    """Problems described by a :class:`~ssb.config.DataConfig`: shuffled with ``cfg.seed``
    when ``cfg.shuffle``, then cut to ``cfg.limit``. Questions in ``exclude`` (normalised)
    are dropped. ``stats`` (a dict) receives what the exclusion did: ``candidates``,
    ``dropped_excluded``, ``dropped_repeats``, ``kept``, ``wanted``, ``exhausted``, and for
    reasoning-gym the per-task counts under ``tasks``."""
    src = cfg.source
    stats = {} if stats is None else stats
    if src == "reasoning_gym":
        if cfg.limit is None:
            raise DataError("source=reasoning_gym needs data.limit (how many problems to generate)")
        per_task: dict = {}
        problems = reasoning_gym_problems(cfg.tasks, cfg.limit, cfg.seed, exclude, stats=per_task)
        stats.update({k: sum(t[k] for t in per_task.values())
                      for k in ("candidates", "dropped_excluded", "dropped_repeats", "dropped_inconsistent")})
        stats["exhausted"] = any(t["exhausted"] for t in per_task.values())
        stats["tasks"] = per_task
    else:
        if src in BENCHMARKS:
            problems = load_benchmark(src, cfg.split)
        elif src.startswith("hf:"):
            res = load_hf_dataset(src[3:], cfg.split, cfg.question_field, cfg.answer_field, cfg.id_field, cfg.skip_bad)
            problems = _report_skipped(res)
        elif Path(src).suffix.lower() in SUFFIXES:
            res = load_file(src, cfg.question_field, cfg.answer_field, cfg.id_field, cfg.skip_bad)
            problems = _report_skipped(res)
        else:
            raise DataError(
                f"unknown data source {src!r}: use a benchmark ({', '.join(BENCHMARKS)}), 'reasoning_gym', "
                "a .jsonl/.csv/.parquet file, or 'hf:NAME'"
            )
        stats["candidates"] = len(problems)
        if exclude:
            problems = [p for p in problems if normalize_question(p.question) not in exclude]
        stats["dropped_excluded"] = stats["candidates"] - len(problems)
        stats["exhausted"] = cfg.limit is not None and len(problems) < cfg.limit
    if cfg.shuffle:
        problems = list(problems)
        random.Random(cfg.seed).shuffle(problems)
    problems = problems[: cfg.limit] if cfg.limit is not None else problems
    stats["kept"], stats["wanted"] = len(problems), cfg.limit
    return problems


def _report_skipped(res: LoadResult) -> list[Problem]:
    if res.skipped:
        log.warning("skipped %d bad row(s); first: %s", len(res.skipped), res.skipped[0])
    return res.problems
