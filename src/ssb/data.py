"""Problems: the built-in benchmarks, user files (.jsonl/.parquet/.csv), Hugging Face
datasets and reasoning-gym generators, all turned into one record, :class:`Problem`.

Bad input rows fail loudly with ``file:line: field: reason`` (or are skipped and counted
with ``skip_bad``), so a broken dataset never silently shrinks a run. A missing question or
answer field names the fields the row does have and how to map them. An empty file is an
error; a UTF-8 byte-order mark (Excel/Windows exports) is read past.

Ids are keys (rollouts, pairs and eval records are keyed by problem id), so with an id
field a duplicate id is a bad row. Without one, ids are ``<file stem>-<row>``; duplicate
values in an unused ``id`` column, and duplicate questions, are reported as warnings by
:func:`validate_file`.

Heavy libraries (datasets, pyarrow, reasoning_gym) are imported inside the functions
that need them: ``ssb.grading`` imports this module in its worker processes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import unicodedata
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .errors import SSBError
from .prompts import special_token_hits

if TYPE_CHECKING:
    from .config import DataConfig, ReasoningGymTask

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- records


@dataclass
class Problem:
    """One problem: a question and its gold final answer (a string)."""

    id: str
    question: str
    answer: str
    solution: str | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Problem":
        missing = [k for k in ("id", "question", "answer") if k not in d]
        if missing:
            raise ValueError(f"problem record lacks {', '.join(missing)}: {str(d)[:200]}")
        return cls(
            id=str(d["id"]),
            question=d["question"],
            answer=str(d["answer"]),
            solution=d.get("solution"),
            metadata=dict(d.get("metadata") or {}),
        )


@dataclass
class BadRow:
    """A row that could not be turned into a Problem (``line`` is 1-based)."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass
class LoadResult:
    problems: list[Problem]
    skipped: list[BadRow] = field(default_factory=list)


class DataError(SSBError, ValueError):
    """A bad input row (or a bad data source); ``bad`` says where when it is a row."""

    def __init__(self, message: str, bad: BadRow | None = None):
        super().__init__(message)
        self.bad = bad


def normalize_question(q: str) -> str:
    """Canonical form used for de-duplication and train/eval overlap checks:
    Unicode NFKC, lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", q).lower().split())


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


# ----------------------------------------------------------------------------- row validation


class _RowMaker:
    """Turns raw rows (dicts) into Problems, checking fields and id uniqueness."""

    def __init__(self, file: str, question_field: str, answer_field: str, id_field: str | None, skip_bad: bool):
        self.file, self.q, self.a, self.idf = file, question_field, answer_field, id_field
        self.skip_bad = skip_bad
        self.prefix = Path(file).stem if not file.startswith("hf:") else file[3:].replace("/", "_")
        self.seen: set[str] = set()
        self.problems: list[Problem] = []
        self.skipped: list[BadRow] = []

    def bad(self, line: int, fld: str, reason: str) -> None:
        b = BadRow(self.file, line, fld, reason)
        if not self.skip_bad:
            raise DataError(str(b), b)
        self.skipped.append(b)

    def add(self, row: Any, line: int, index: int) -> None:
        """Validate one row; ``line`` is what the user sees, ``index`` the 0-based row number."""
        if not isinstance(row, dict):
            return self.bad(line, "(row)", f"expected an object, got {type(row).__name__}")
        try:
            question = self._text(row, self.q, allow_numbers=False)
            answer = self._text(row, self.a, allow_numbers=True)
            pid = self._id(row, index)
        except _FieldError as e:
            return self.bad(line, e.field, e.reason)
        if pid in self.seen:
            return self.bad(line, self.idf or "id", f"duplicate id {pid!r}")
        self.seen.add(pid)
        solution = row.get("solution")
        extras = {k: _jsonable(v) for k, v in row.items() if k not in (self.q, self.a, self.idf, "solution")}
        self.problems.append(
            Problem(pid, question, answer, solution if isinstance(solution, str) else None, extras)
        )

    def _text(self, row: dict, name: str, allow_numbers: bool) -> str:
        if name not in row:
            raise _FieldError(name, "missing" + _mapping_hint(name, row, "question" if name == self.q else "answer"))
        if row[name] is None or _is_nan(row[name]):
            raise _FieldError(name, "missing")
        v = row[name]
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise _FieldError(name, "not valid UTF-8") from None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or (
            not allow_numbers and not isinstance(v, str)
        ):
            want = "a string or a number" if allow_numbers else "a string"
            raise _FieldError(name, f"wrong type: expected {want}, got {type(v).__name__}")
        if isinstance(v, float):
            v = str(int(v)) if v.is_integer() else repr(v)
        v = str(v)
        if _has_surrogates(v):
            raise _FieldError(name, "not valid UTF-8")
        if not v.strip():
            raise _FieldError(name, "empty")
        return v

    def _id(self, row: dict, index: int) -> str:
        if self.idf is None:
            return f"{self.prefix}-{index}"
        if self.idf not in row:
            raise _FieldError(self.idf, "missing" + _mapping_hint(self.idf, row, "id"))
        v = row.get(self.idf)
        if v is None or isinstance(v, bool) or not isinstance(v, (str, int)) or str(v).strip() == "":
            raise _FieldError(self.idf, "missing or not a string/integer id")
        return str(v)


def _mapping_hint(name: str, row: dict, role: str) -> str:
    """"; the row has fields: a, b; map yours with --question-field NAME (data.question_field)"."""
    keys = [str(k) for k in row]
    shown = ", ".join(keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")
    return (f" (no field {name!r}); the row has fields: {shown or '(none)'}; say which field holds the {role} "
            f"with --{role}-field NAME (data.{role}_field in a config)")


class _FieldError(Exception):
    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v


def _has_surrogates(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _jsonable(v: Any) -> Any:
    """Make a value JSON-serialisable: tuples/sets -> lists, bytes/others -> str."""
    return json.loads(json.dumps(v, default=lambda o: sorted(o, key=str) if isinstance(o, (set, frozenset)) else str(o)))


# ----------------------------------------------------------------------------- local files


_BOM = b"\xef\xbb\xbf"


def _jsonl_rows(path: Path, maker: _RowMaker) -> None:
    index = 0
    data = path.read_bytes()
    if data.startswith(_BOM):  # Windows/Excel exports
        data = data[len(_BOM) :]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            maker.bad(lineno, "(line)", f"not valid UTF-8 (byte {e.start})")
            index += 1
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            maker.bad(lineno, "(line)", f"invalid JSON: {e.msg} at column {e.colno}")
            index += 1
            continue
        maker.add(row, lineno, index)
        index += 1


def _csv_rows(path: Path, maker: _RowMaker) -> None:
    # surrogateescape keeps undecodable bytes as lone surrogates, found per field later.
    data = path.read_bytes()
    if data.startswith(_BOM):  # Excel's "CSV UTF-8" starts with one: the header would read "\ufeffquestion"
        data = data[len(_BOM) :]
    text = data.decode("utf-8", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    start = 2  # the header is line 1
    for index, row in enumerate(reader):
        if None in row:  # more cells than header columns
            maker.bad(start, "(row)", f"{len(row[None])} cell(s) beyond the header's {len(reader.fieldnames)}")
        else:
            maker.add(row, start, index)
        start = reader.line_num + 1


def _parquet_rows(path: Path, maker: _RowMaker) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types
        raise DataError(f"{path}: cannot read parquet file: {e}") from e
    for index, row in enumerate(table.to_pylist()):
        maker.add(row, index + 1, index)


_READERS = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}


def load_file(
    path: str | Path,
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str | None = None,
    skip_bad: bool = False,
) -> LoadResult:
    """Load problems from a .jsonl, .csv or .parquet file.

    Columns other than question/answer/id/``solution`` go to ``metadata``. Without
    ``id_field`` the id is ``<file stem>-<0-based row>``. A bad row raises
    :class:`DataError` naming ``file:line`` (the row number for parquet) and the field;
    with ``skip_bad`` it is skipped and listed in ``LoadResult.skipped``. A file without
    rows raises :class:`DataError`.
    """
    path = Path(path)
    if path.is_dir():
        hint = (f"; a dataset saved with datasets' save_to_disk is read as source hf:{path}"
                if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() else "")
        raise DataError(f"{path}: is a directory, not a data file (give a .jsonl, .csv or .parquet file{hint})")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .csv or .parquet)")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    maker = _RowMaker(str(path), question_field, answer_field, id_field, skip_bad)
    reader(path, maker)
    if not maker.problems and not maker.skipped:
        raise DataError(f"{path}: no rows (the file is empty{' but for its header' if reader is _csv_rows else ''}); "
                        "a data file needs one problem per row")
    return LoadResult(maker.problems, maker.skipped)


def validate_file(
    path: str | Path,
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str | None = None,
) -> dict:
    """Check every row of a file; returns ``{file, rows, ok, bad: [BadRow as dict],
    warnings: [str]}``. Raises :class:`DataError` for a file that cannot be read at all
    (missing, a directory, empty). Warnings: duplicate values in an ``id`` column that is
    not used as the id field (ids are keys: pass ``--id-field id`` to use it, and then
    duplicates are bad rows), and duplicate questions."""
    res = load_file(path, question_field, answer_field, id_field, skip_bad=True)
    warnings = []
    if id_field is None:
        for col in ("id", "ID", "Id", "_id"):
            vals = [p.metadata[col] for p in res.problems if col in p.metadata]
            if vals:
                dups = _duplicates([str(v) for v in vals])
                if dups:
                    warnings.append(
                        f"column {col!r} has {len(dups)} duplicate value(s) (e.g. {dups[0]!r}); it is not used as "
                        f"the id (ids are row numbers) unless you pass --id-field {col}, and then each duplicate "
                        "is a bad row since ids are keys")
                break
    flagged = [(p.id, hits) for p in res.problems if (hits := special_token_hits(f"{p.question}\n{p.answer}"))]
    if flagged:  # prompts encode them as text, but such rows usually come from scraped chat logs
        warnings.append(f"{len(flagged)} row(s) contain chat control-token text (e.g. id {flagged[0][0]!r}: "
                        f"{', '.join(flagged[0][1][:3])}); ssb encodes it as plain text, but check those rows")
    dq = _duplicates([normalize_question(p.question) for p in res.problems])
    if dq:
        warnings.append(f"{len(dq)} question(s) appear more than once (after normalising case and spaces), "
                        f"e.g. {dq[0][:80]!r}")
    return {
        "file": str(path),
        "rows": len(res.problems) + len(res.skipped),
        "ok": len(res.problems),
        "bad": [asdict(b) for b in res.skipped],
        "warnings": warnings,
    }


def _duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    dups: dict[str, None] = {}  # insertion-ordered set
    for v in values:
        if v in seen:
            dups[v] = None
        seen.add(v)
    return list(dups)


# ----------------------------------------------------------------------------- Hugging Face datasets


def load_hf_dataset(
    name: str,
    split: str = "train",
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str | None = None,
    skip_bad: bool = False,
) -> LoadResult:
    """Load a split with ``datasets.load_dataset(name, split=split)``; a directory written
    by ``Dataset.save_to_disk`` is read with ``datasets.load_from_disk`` instead."""
    import datasets

    p = Path(name)
    try:
        if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"hf:{name}: no split {split!r}; it has: {', '.join(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, split=split)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types
        raise DataError(f"hf:{name}: cannot load split {split!r}: {type(e).__name__}: {e}") from e
    maker = _RowMaker(f"hf:{name}", question_field, answer_field, id_field, skip_bad)
    for index, row in enumerate(ds):
        maker.add(row, index + 1, index)
    return LoadResult(maker.problems, maker.skipped)


# ----------------------------------------------------------------------------- reasoning-gym

# basic_arithmetic computes answers with floor division ("/" -> "//"), so a few
# problems with "/" have answers that differ from the written expression (checked in
# reasoning-gym 0.1.25: 19 of 644 division problems among 2000 drawn). Such entries
# are dropped: we re-evaluate the expression exactly and keep only those that agree.
#
# Small tasks have a finite set of distinct questions (chain_sum with 2 terms of 1-2
# digits: about 16,400), and reasoning-gym seeds entry i of a dataset with ``seed + i``,
# so two seeds draw the same entries shifted by their difference. We therefore draw
# until enough distinct new questions are found, and call a task's space exhausted when
# EXHAUSTED_AFTER draws in a row bring nothing new (or after MAX_DRAWS draws in all).
EXHAUSTED_AFTER = 20_000
MAX_DRAWS = 1_000_000


def _exact_value(expr: str):
    import ast
    from fractions import Fraction

    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b}

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("unsupported expression")

    return ev(ast.parse(expr, mode="eval").body)


def _entry_is_consistent(task: str, entry: dict) -> bool:
    """False for generator entries whose gold answer contradicts their question."""
    if task != "basic_arithmetic":
        return True
    expr = (entry.get("metadata") or {}).get("expression")
    if not expr or "/" not in expr:
        return True
    from fractions import Fraction

    try:
        return _exact_value(expr) == Fraction(str(entry["answer"]))
    except (ValueError, ZeroDivisionError, SyntaxError):
        return False


def _split_by_weight(size: int, tasks: list["ReasoningGymTask"]) -> list[int]:
    """Largest-remainder split of ``size`` over the task weights."""
    total = sum(t.weight for t in tasks)
    if total <= 0:
        raise DataError("reasoning_gym: task weights must sum to a positive number")
    shares = [size * t.weight / total for t in tasks]
    counts = [int(s) for s in shares]
    order = sorted(range(len(tasks)), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in order[: size - sum(counts)]:
        counts[i] += 1
    return counts


def _draw_task(task: "ReasoningGymTask", want: int, seed: int, seen: set[str], exclude: set[str],
               stats: dict) -> list[Problem]:
    """Up to ``want`` problems whose questions are neither in ``seen`` (drawn already) nor
    in ``exclude``; ``stats`` gets the counts (candidates, dropped, kept, exhausted)."""
    import reasoning_gym

    out: list[Problem] = []
    counts = {"candidates": 0, "dropped_excluded": 0, "dropped_repeats": 0, "dropped_inconsistent": 0}
    next_index, gen_size, last_new = 0, max(want, 1), 0
    stop = None
    while stop is None:
        try:
            ds = reasoning_gym.create_dataset(task.name, size=gen_size, seed=seed, **task.options)
        except Exception as e:  # noqa: BLE001 - bad names/options raise various types
            raise DataError(f"reasoning_gym: cannot create task {task.name!r} with {task.options}: {e}") from e
        # Entries depend only on (seed, index), so a larger size extends the same sequence.
        for index in range(next_index, gen_size):
            entry = ds[index]
            counts["candidates"] += 1
            key = normalize_question(entry["question"])
            if key in exclude:
                counts["dropped_excluded"] += 1
            elif key in seen:
                counts["dropped_repeats"] += 1
            elif not _entry_is_consistent(task.name, entry):
                counts["dropped_inconsistent"] += 1
            else:
                seen.add(key)
                last_new = index
                entry = _jsonable(entry)
                out.append(
                    Problem(
                        id=f"rg-{task.name}-s{seed}-{index}",
                        question=entry["question"],
                        answer=str(entry["answer"]),
                        metadata={"source": "reasoning_gym", "task": task.name, "entry": entry},
                    )
                )
                if len(out) == want:
                    stop = "enough"
                    break
            if index - last_new >= EXHAUSTED_AFTER:
                stop = "exhausted"
                break
            if counts["candidates"] >= MAX_DRAWS:
                stop = "max_draws"
                break
        next_index, gen_size = gen_size, min(gen_size * 2, MAX_DRAWS)
    counts["kept"] = len(out)
    counts["wanted"] = want
    counts["exhausted"] = stop != "enough"
    stats[task.name] = counts
    if stop != "enough":
        why = (f"no new question in the last {EXHAUSTED_AFTER:,} draws: its space of distinct questions looks "
               "exhausted" if stop == "exhausted" else f"stopped at {MAX_DRAWS:,} draws")
        log.warning("reasoning_gym %s: only %d of %d distinct problems after %d draws (%d excluded, %d repeats, "
                    "%d inconsistent); %s", task.name, len(out), want, counts["candidates"],
                    counts["dropped_excluded"], counts["dropped_repeats"], counts["dropped_inconsistent"], why)
    return out


def reasoning_gym_problems(
    tasks: list["ReasoningGymTask"], size: int, seed: int, exclude: set[str] | None = None,
    stats: dict | None = None,
) -> list[Problem]:
    """Draw ``size`` problems from reasoning-gym tasks, split by weight.

    Questions are unique (by :func:`normalize_question`) across all tasks and never in
    ``exclude`` (normalised training questions, so held-out sets do not overlap them).
    Draws go on until each task has its share or its space of distinct questions looks
    exhausted (see ``EXHAUSTED_AFTER``); then a warning is logged and fewer problems are
    returned. ``stats`` (a dict) receives per-task counts: ``{task: {candidates,
    dropped_excluded, dropped_repeats, dropped_inconsistent, kept, wanted, exhausted}}``.
    """
    if not tasks:
        raise DataError("reasoning_gym: data.tasks is empty; name at least one task (e.g. chain_sum)")
    exclude = set(exclude or ())
    seen: set[str] = set()
    stats = {} if stats is None else stats
    out: list[Problem] = []
    for task, want in zip(tasks, _split_by_weight(size, tasks)):
        if want > 0:
            per_task: dict = {}
            out.extend(_draw_task(task, want, seed, seen, exclude, per_task))
            _merge_counts(stats, per_task[task.name], task.name)
    return out


def _merge_counts(stats: dict, counts: dict, name: str) -> None:
    if name in stats:  # the same task listed twice (other options)
        for k, v in counts.items():
            stats[name][k] = (stats[name][k] or v) if isinstance(v, bool) else stats[name][k] + v
    else:
        stats[name] = dict(counts)


# ----------------------------------------------------------------------------- dispatch


def load_problems(cfg: "DataConfig", exclude: set[str] | None = None, stats: dict | None = None) -> list[Problem]:
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
        elif Path(src).suffix.lower() in _READERS:
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


def question_keys(problems: Iterable[Problem]) -> set[str]:
    """Normalised questions, for ``exclude=`` (e.g. the training set when building a holdout)."""
    return {normalize_question(p.question) for p in problems}
