"""Your own problems: .jsonl/.csv/.parquet files and ``hf:`` datasets, checked row by row.

Bad input rows fail loudly with ``file:line: field: reason`` (or are skipped and counted
with ``skip_bad``), so a broken dataset never silently shrinks a run. A missing question or
answer field names the fields the row does have and how to map them. An empty file is an
error; a UTF-8 byte-order mark (Excel/Windows exports) is read past.

Ids are keys (rollouts, pairs and eval records are keyed by problem id), so with an id
field a duplicate id is a bad row. Without one, ids are ``<file stem>-<row>``; duplicate
values in an unused ``id`` column, and duplicate questions, are reported as warnings by
:func:`validate_file`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..prompts import special_token_hits
from .problem import BadRow, DataError, Problem, jsonable, normalize_question


@dataclass
class LoadResult:
    problems: list[Problem]
    skipped: list[BadRow] = field(default_factory=list)


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
        extras = {k: jsonable(v) for k, v in row.items() if k not in (self.q, self.a, self.idf, "solution")}
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
    import pyarrow.parquet as pq  # heavy and only for parquet files: imported when one is read

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types
        raise DataError(f"{path}: cannot read parquet file: {e}") from e
    for index, row in enumerate(table.to_pylist()):
        maker.add(row, index + 1, index)


_READERS = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
SUFFIXES = tuple(_READERS)  # the file types load_file reads


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
    import datasets  # heavy (pulls in pyarrow, fsspec, ...): imported only for an hf: source

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

