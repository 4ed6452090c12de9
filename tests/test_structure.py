"""The shape of src/ssb: no import cycle between our modules (every import statement, lazy
ones inside functions included) and no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ssb"
MAX_LINES = 400
# Modules known to be over the limit, as strict xfails (fixing one makes its test fail until it
# leaves this set). Empty since issue 10 split data, evaluate and grading.
OVERSIZE_TODO: set[str] = set()


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SRC.glob("*.py"))}


def _imports(path: Path, names: set[str]) -> set[str]:
    """Our modules that ``path`` imports anywhere in its body (``from . import x``,
    ``from .x import y``, ``import ssb.x``, ``from ssb import x``, ``from ssb.x import y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "ssb" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                continue  # outside the package
            if node.level == 1:
                mod = node.module
            elif node.module and (node.module == "ssb" or node.module.startswith("ssb.")):
                mod = node.module[4:] or None
            else:
                continue
            if mod:
                found.add(mod.split(".")[0])
            else:  # from . import a, b / from ssb import a
                found.update(a.name for a in node.names)
    return {m for m in found if m in names and m != path.stem}


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_parser_sees_every_kind_of_import(tmp_path):
    (tmp_path / "a.py").write_text(
        "from . import b\nfrom .c import x\nimport ssb.d\nfrom ssb import e\nfrom ssb.f import y\n"
        "def g():\n    from .h import z\n    import os\n")
    assert _imports(tmp_path / "a.py", set("abcdefgh")) == set("bcdefh")


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in src/ssb: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="issue 10 todo: split"))
                                  if n in OVERSIZE_TODO else n for n in sorted(_modules())])
def test_module_size(name):
    n = len(_modules()[name].read_text().splitlines())
    assert n <= MAX_LINES, f"src/ssb/{name}.py has {n} lines (at most {MAX_LINES})"
