"""Render the benchmark tables of the docs from their results files.

    python -m bench.render           # rewrite every results block in place
    python -m bench.render --check   # exit 1 listing each stale block (file:line renderer), 0 when all are current

A results block in README.md, docs/*.md or bench/README.md is (each marker a line of its own)

    <!-- results: NAME -->
    ...
    <!-- /results -->

and the text between the two markers is the output of the renderer ``NAME`` (:data:`RENDERERS`;
the renderers live beside this module in ``compare.py``, ``tasks.py``, ``quality.py``, ``speed.py`` and
``teacher.py``, what they share in ``common.py``): a markdown table read from a ``bench/results/*.json``
file and a one-line caption naming that file, the commit it ran (its ``provenance``, written by
``bench/_meta.py``) and the command that regenerates it. One renderer reads code, not results:
``config.py``'s ``config_reference``, docs/configuration.md's table of every config field, made from the
config model and ``configs/default.yaml``. Never edit inside a block: rerun the
benchmark, then this command.

A results file written before provenance was recorded is captioned with the commit that last
committed it (``git log -1 -- FILE``), labelled as such. That hash changes when the file is
committed, after the docs were rendered, so ``--check`` does not compare it (the numbers are
compared); without ``--check`` it writes the current one.

A block whose name is in :data:`PENDING` (a renderer not written yet) renders as an empty block
with a comment; any other unknown name is an error.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .common import ROOT, RenderError
from .compare import (render_baselines_flops, render_compare_details, render_compare_main, render_compare_tuning, render_default_run_cost,
                      render_grpo_generation, render_sdft_generation, render_task_base)
from .config import render_config_reference
from .quality import render_default_run, render_quality_arms, render_quality_main
from .speed import render_demo_time, render_distill_memory, render_distill_stores, render_rollout_throughput
from .tasks import (render_answer_sign, render_rounds_main, render_rounds_readme, render_tasks_changes, render_tasks_details,
                    render_tasks_main)
from .teacher import (render_signal_shares, render_teacher_signal, render_teacher_signal_answer_hint,
                      render_teacher_signal_hints, render_teacher_signal_tasks)

# Blocks whose renderer is not written yet: they render empty (a comment says so). Remove a
# name from here when its renderer is registered.
PENDING: set[str] = set()

RENDERERS: dict[str, Callable[[], str]] = {
    "rollout_throughput": render_rollout_throughput,
    "distill_memory": render_distill_memory,
    "distill_stores": render_distill_stores,
    "teacher_signal": render_teacher_signal,
    "teacher_signal_answer_hint": render_teacher_signal_answer_hint,
    "teacher_signal_hints": render_teacher_signal_hints,
    "quality_main": render_quality_main,
    "compare_main": render_compare_main,
    "compare_details": render_compare_details,
    "compare_tuning": render_compare_tuning,
    "grpo_generation": render_grpo_generation,
    "sdft_generation": render_sdft_generation,
    "task_base": render_task_base,
    "tasks_main": render_tasks_main,
    "tasks_details": render_tasks_details,
    "tasks_changes": render_tasks_changes,
    "teacher_signal_tasks": render_teacher_signal_tasks,
    "quality_arms": render_quality_arms,
    "default_run": render_default_run,
    "default_run_cost": render_default_run_cost,
    "rounds_main": render_rounds_main,
    "rounds_readme": render_rounds_readme,
    "config_reference": render_config_reference,
    "demo_time": render_demo_time,
    "signal_shares": render_signal_shares,
    "baselines_flops": render_baselines_flops,
    "answer_sign": render_answer_sign,
}

OPEN_RE = re.compile(r"^<!-- results: (\S+) -->[ \t]*$", re.M)  # a marker is a line of its own
CLOSE = "<!-- /results -->"
CLOSE_RE = re.compile(r"^<!-- /results -->[ \t]*$", re.M)
# the git-derived part of a caption for a results file without recorded provenance
LEGACY_RE = re.compile(r"\((?:committed in [0-9a-f]+|uncommitted|not in git); provenance not recorded\)")
LEGACY_MASK = "(<git>; provenance not recorded)"


def doc_files(root: Path = ROOT) -> list[Path]:
    """The files whose results blocks are rendered: README.md, docs/*.md, bench/README.md."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "bench" / "README.md"]
    return [f for f in files if f.is_file()]


# ----------------------------------------------------------------------------- blocks


@dataclass
class Block:
    name: str
    line: int  # 1-based line of the opening marker
    start: int  # offset of the block's body (after the opening marker's newline)
    end: int  # offset of the closing marker
    body: str


def blocks(text: str, where: str = "") -> list[Block]:
    """The results blocks of ``text``; an unclosed or nested block is a :class:`RenderError`."""
    out = []
    for m in OPEN_RE.finditer(text):
        nl = text.find("\n", m.end())
        start = len(text) if nl < 0 else nl + 1
        close = CLOSE_RE.search(text, start)
        end = close.start() if close else -1
        nxt = OPEN_RE.search(text, start)
        line = text.count("\n", 0, m.start()) + 1
        if close is None or (nxt and nxt.start() < end):
            raise RenderError(f"{where}:{line}: block `{m.group(1)}` has no `{CLOSE}` before the next block or the end")
        out.append(Block(m.group(1), line, start, end, text[start:end]))
    return out


def render(name: str, cache: dict[str, str] | None = None) -> str:
    """The body of a block ``name``: blank line, the renderer's markdown, blank line."""
    if cache is not None and name in cache:
        return cache[name]
    if name in RENDERERS:
        body = "\n" + RENDERERS[name]().strip("\n") + "\n\n"
    elif name in PENDING:
        body = f"<!-- pending: no renderer `{name}` in bench/render/cli.py yet -->\n"
    else:
        raise RenderError(f"unknown renderer `{name}` (bench/render/cli.py RENDERERS: {', '.join(sorted(RENDERERS))})")
    if cache is not None:
        cache[name] = body
    return body


def same(current: str, expected: str) -> bool:
    """Equal but for the git-derived commit of a results file without recorded provenance."""
    return LEGACY_RE.sub(LEGACY_MASK, current) == LEGACY_RE.sub(LEGACY_MASK, expected)


def process(path: Path, write: bool, cache: dict[str, str] | None = None) -> list[str]:
    """Stale blocks of ``path`` as ``file:line: renderer (reason)``; with ``write``, rewrite
    every block to its current rendering (errors are still reported)."""
    text = path.read_text()
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    problems, pieces, at = [], [], 0
    for b in blocks(text, str(rel)):
        try:
            expected = render(b.name, cache)
        except (RenderError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"{rel}:{b.line}: {b.name} (error: {exc})")
            continue
        if not same(b.body, expected):
            problems.append(f"{rel}:{b.line}: {b.name} (stale)")
        pieces += [text[at:b.start], expected]
        at = b.end
    pieces.append(text[at:])
    new = "".join(pieces)
    if write and new != text:
        path.write_text(new)
    return [p for p in problems if not write or "(error" in p]


def _each(files: list[Path] | None, write: bool) -> list[str]:
    """:func:`process` over ``files`` (default: :func:`doc_files`), one render cache for all."""
    cache: dict[str, str] = {}
    out: list[str] = []
    for f in files if files is not None else doc_files():
        try:
            out += process(f, write=write, cache=cache)
        except RenderError as exc:
            out.append(str(exc))
    return out


def check(files: list[Path] | None = None) -> list[str]:
    """Every stale or failing block of ``files`` (default: :func:`doc_files`)."""
    return _each(files, write=False)


def write(files: list[Path] | None = None) -> list[str]:
    """Rewrite every block of ``files`` in place; returns the errors (blocks left as they were)."""
    return _each(files, write=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="list stale blocks and exit 1 if any; write nothing")
    ap.add_argument("files", nargs="*", type=Path, help="default: README.md, docs/*.md, bench/README.md")
    args = ap.parse_args(argv)
    files = [f.resolve() for f in args.files] or None
    problems = check(files) if args.check else write(files)
    for p in problems:
        print(p, file=sys.stderr)
    if args.check and problems:
        print(f"{len(problems)} results block(s) not current: run `python -m bench.render`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

