"""The records every data source produces and every stage reads: :class:`Problem`, and
:class:`BadRow` / :class:`DataError` for input that cannot become one.

Also the canonical form of a question (:func:`normalize_question`) used to de-duplicate
and to keep held-out sets apart from training data. Nothing here imports more than the
standard library, so grading and its worker processes can use the record cheaply.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from ..errors import SSBError


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


class DataError(SSBError, ValueError):
    """A bad input row (or a bad data source); ``bad`` says where when it is a row."""

    def __init__(self, message: str, bad: BadRow | None = None):
        super().__init__(message)
        self.bad = bad


def normalize_question(q: str) -> str:
    """Canonical form used for de-duplication and train/eval overlap checks:
    Unicode NFKC, lower case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", q).lower().split())


def question_keys(problems: Iterable[Problem]) -> set[str]:
    """Normalised questions, for ``exclude=`` (e.g. the training set when building a holdout)."""
    return {normalize_question(p.question) for p in problems}


def jsonable(v: Any) -> Any:
    """Make a value JSON-serialisable (metadata is saved with the problem): tuples/sets ->
    lists, bytes/others -> str."""
    return json.loads(json.dumps(v, default=lambda o: sorted(o, key=str) if isinstance(o, (set, frozenset)) else str(o)))
