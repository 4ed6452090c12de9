"""The shape of src/ssb (every .py, subpackages included, named dotted: ``stages.teacher``): the layers
that docs/architecture.md states, in order, with no import from a lower layer to a higher one (every import
statement, lazy ones inside functions included), so no import cycle and no two packages importing each
other; at most 14 top-level modules; no module over 400 lines of code (blank, comment, docstring and
config field description lines not counted); no re-export; only the CLI, `ssb compare`
(``comparison.arms``) and the Python API (``api``) import the orchestrator (``pipeline``);
``ssb/__init__.py`` imports the API only lazily (``import ssb`` stays light); every stage of the stage
table (``rundir/table.py``, standard library only) is a module of ``ssb.stages`` with its entry function;
the subpackages' ``__init__.py`` files are their docstrings."""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

import pytest

from ssb.rundir.table import STAGES

SRC = Path(__file__).resolve().parents[1] / "src" / "ssb"
ARCHITECTURE = SRC.parents[1] / "docs" / "architecture.md"
MAX_CODE_LINES = 400
MAX_TOP_LEVEL_MODULES = 14


def _name(path: Path, root: Path = SRC) -> str:
    """``stages/teacher.py`` -> ``stages.teacher``; a package's ``__init__.py`` -> the package
    (``stages``); the top package's own ``__init__.py`` -> ``""``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path = SRC) -> dict[str, Path]:
    return {_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(target: str, names: set[str]) -> str | None:
    """The module ``target`` (dotted, relative to ssb) names, or the closest package above it
    that is one of ours (``from .data.load import X`` with ``X`` a function: ``data.load``)."""
    while target:
        if target in names:
            return target
        target = target.rpartition(".")[0]
    return None


def _imports(path: Path, names: set[str], name: str | None = None) -> set[str]:
    """Our modules that ``path`` (module ``name``, dotted) imports anywhere in its body
    (``from . import x``, ``from .x import y``, ``from ..x import y`` inside a subpackage,
    ``import ssb.x``, ``from ssb import x``, ``from ssb.x import y``). Importing ``a.b`` also
    runs package ``a``'s ``__init__``, so that is an edge too."""
    name = _name(path, path.parent) if name is None else name
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    package = [p for p in package if p]
    targets: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "ssb" and len(parts) > 1:
                    targets.append(".".join(parts[1:]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    continue  # above the ssb package
                base = package[: len(package) - (node.level - 1)]
            elif node.module and (node.module == "ssb" or node.module.startswith("ssb.")):
                base, node_module = [], node.module[4:]
                targets.extend(_from_targets(base, node_module or None, node.names))
                continue
            else:
                continue
            targets.extend(_from_targets(base, node.module, node.names))
    found: set[str] = set()
    for t in targets:
        mod = _resolve(t, names)
        while mod:  # the module and every package above it
            found.add(mod)
            mod = mod.rpartition(".")[0]
    return {m for m in found if m in names and m != name}


def _from_targets(base: list[str], module: str | None, aliases) -> list[str]:
    """``from <base>.<module> import a, b``: the module itself, and ``<module>.a`` for each
    name (a submodule when one exists; :func:`_resolve` falls back to the module otherwise)."""
    mod = ".".join(base + ([module] if module else []))
    return [mod] + [f"{mod}.{a.name}" if mod else a.name for a in aliases]


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, set(mods), name) for name, path in mods.items()}


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
    assert _imports(tmp_path / "a.py", set("abcdefgh"), "a") == set("bcdefh")


def test_the_parser_resolves_imports_inside_subpackages(tmp_path):
    """Relative levels count from the module's own package; a dotted target is the module it
    names, else the module that holds the imported name; every package above is an edge too."""
    root = tmp_path / "ssb"
    for f in ("__init__.py", "top.py", "other.py", "p/__init__.py", "p/a.py", "p/b.py", "p/q/__init__.py",
              "p/q/c.py", "r/__init__.py", "r/d.py"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    (root / "p" / "a.py").write_text(
        "from . import b\nfrom .q.c import fn\nfrom ..top import x\nfrom .. import other\n"
        "def g():\n    import ssb.r.d\n    from ssb.r import d\n    from ... import outside\n")
    mods = _modules(root)
    assert set(mods) == {"", "top", "other", "p", "p.a", "p.b", "p.q", "p.q.c", "r", "r.d"}
    assert _imports(mods["p.a"], set(mods), "p.a") == {"p", "p.b", "p.q", "p.q.c", "top", "other", "r", "r.d"}
    (root / "top.py").write_text("from .p.a import g\nfrom .r import d\n")
    assert _imports(mods["top"], set(mods), "top") == {"p", "p.a", "r", "r.d"}


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in src/ssb: " + " -> ".join(cycle)


def code_lines(source: str) -> int:
    """Lines that hold code: not blank, not comments, not docstrings (any string standing alone as
    a statement), not a string given as a ``description=`` (a config field's documentation). A line
    counts when a token on it lies outside those, closing brackets and commas aside."""
    tree = ast.parse(source)
    prose: list[tuple[tuple[int, int], tuple[int, int]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            prose.append(((node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)))
        elif isinstance(node, ast.keyword) and node.arg == "description":
            prose.append(((node.lineno, node.col_offset), (node.value.end_lineno, node.value.end_col_offset)))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip or tok.string in (")", "]", "}", ",") or any(a <= tok.start and tok.end <= b
                                                                           for a, b in prose):
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines)


def test_code_lines_leave_out_docstrings_comments_and_field_descriptions():
    source = ('"""Module\ndocstring."""\n\n# a comment\nx = Field(1, description="long "\n'
              '          "prose")\n\n\ndef f(a,\n      b):\n    """Doc."""\n    return (a +  # sum\n'
              '            b)\n')
    assert code_lines(source) == 5  # x = Field(...; def f's two lines; return's two lines
    assert code_lines("y = '''a\nb'''\n") == 2  # a multi-line string that is a value is code


@pytest.mark.parametrize("name", [pytest.param(n, id=n or "__init__") for n in sorted(_modules())])
def test_module_size(name):
    path = _modules()[name]
    n = code_lines(path.read_text())
    assert n <= MAX_CODE_LINES, (f"{path.relative_to(SRC.parent)} has {n} lines of code (at most {MAX_CODE_LINES}): "
                                 "split it by concern")


def test_few_top_level_modules():
    top = sorted(p.stem for p in SRC.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top of src/ssb: {top}"


def test_no_module_re_exports():
    """A name is imported from the module that defines it: no import of our own modules marked
    ``noqa: F401``, kept only so that others can import the name from here."""
    found = [f"{p.relative_to(SRC.parent)}:{i}" for p in SRC.rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.match(r"\s*from (\.|ssb\b)", line) and "noqa: F401" in line]
    assert found == [], f"re-exports: {found}"


def layers(text: str | None = None) -> list[list[str]]:
    """The layers as docs/architecture.md states them: the line ``Layers, lowest first: ...``, layers
    separated by ``<``, the units of one layer (top-level modules or subpackages) by ``,``."""
    text = ARCHITECTURE.read_text() if text is None else text
    m = re.search(r"^Layers, lowest first: (.+)$", text, re.M)
    assert m, f"{ARCHITECTURE} states no layers (a line 'Layers, lowest first: a < b, c < ...')"
    return [[u.strip(" `") for u in layer.split(",")] for layer in m.group(1).rstrip(".").split("<")]


def upward_imports(graph: dict[str, set[str]], order: list[list[str]]) -> list[str]:
    """Every import from a unit to a unit of a higher layer, or to another unit of its own layer
    (the units of one layer are independent), as ``a -> b``; a unit in no layer is reported too."""
    rank = {u: i for i, layer in enumerate(order) for u in layer}
    bad = []
    for a, deps in sorted(graph.items()):
        if not a:
            continue
        ua = a.split(".")[0]
        if ua not in rank:
            bad.append(f"{a}: {ua} is in no layer")
            continue
        for b in sorted(deps):
            ub = b.split(".")[0]
            if ub != ua and rank.get(ub, len(rank)) >= rank[ua]:
                bad.append(f"{a} -> {b}")
    return bad


def test_the_layer_check_fails_on_an_upward_import():
    order = [["low"], ["mid", "side"], ["top"]]
    assert upward_imports({"top": {"mid.x", "low"}, "mid.x": {"low"}, "side": set(), "low": set()}, order) == []
    assert upward_imports({"low": {"mid.x"}, "mid.x": set()}, order) == ["low -> mid.x"]
    assert upward_imports({"mid.x": {"side"}, "side": set()}, order) == ["mid.x -> side"]
    assert upward_imports({"stray": set()}, order) == ["stray: stray is in no layer"]
    assert layers("Layers, lowest first: `a` < `b`, `c` < `d`.") == [["a"], ["b", "c"], ["d"]]


def test_imports_go_down_the_layers():
    order = layers()
    units = {p.stem for p in SRC.glob("*.py") if p.name != "__init__.py"}
    units |= {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    stated = {u for layer in order for u in layer}
    assert units == stated, f"docs/architecture.md's layers and src/ssb differ: {sorted(units ^ stated)}"
    bad = upward_imports(import_graph(), order)
    assert bad == [], "imports from a lower layer to a higher one (or within a layer): " + "; ".join(bad)


def test_only_the_cli_imports_the_orchestrator():
    importers = sorted(m for m, deps in import_graph().items() if "pipeline" in deps)
    assert importers == ["api", "cli", "comparison.arms"], ("modules importing ssb.pipeline (only the CLI, ssb compare and "
                                                 f"the Python API may): {importers}")


def test_the_top_package_imports_only_the_api_and_lazily():
    """``ssb/__init__.py``: the version and a module ``__getattr__`` that imports ``api`` on first use;
    no import at module level (``import ssb`` loads no pydantic, no torch)."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert _imports(SRC / "__init__.py", set(_modules()), "") == {"api"}


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_stage_is_a_module_of_the_stages_package(stage):
    package, _, leaf = stage.module.rpartition(".")
    assert package == "ssb.stages", f"stage {stage.name}: {stage.module} is not a module of ssb.stages"
    path = SRC / "stages" / f"{leaf}.py"
    assert path.is_file(), f"stage {stage.name}: no {path.relative_to(SRC.parent)}"
    functions = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert stage.entry in functions, f"stage {stage.name}: {stage.module} has no function {stage.entry}"


def test_stage_names_are_distinct_and_outputs_owned_once():
    names = [s.name for s in STAGES]
    outputs = [o for s in STAGES for o in s.outputs]
    assert len(names) == len(set(names)) and len(outputs) == len(set(outputs))


def _package_inits() -> list[Path]:
    return [p for p in sorted(SRC.rglob("__init__.py")) if p.parent != SRC]


@pytest.mark.parametrize("path", _package_inits(), ids=lambda p: p.parent.name)
def test_subpackage_inits_hold_no_reexports(path):
    """A subpackage's ``__init__.py`` is its docstring; nothing
    is importable from a package that lives in one of its modules."""
    tree = ast.parse(path.read_text())
    ours = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0
            or isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "ssb"
            or isinstance(n, ast.Import) and any(a.name.split(".")[0] == "ssb" for a in n.names)]
    assert ours == [], f"{path.relative_to(SRC.parent)} imports from ssb: {ours}"
    assert [type(n).__name__ for n in tree.body] == ["Expr"], f"{path.relative_to(SRC.parent)}: docstring only"


def test_the_stage_table_is_dependency_free():
    """rundir/table.py imports the standard library only: the CLI's help, GRPO's budget and
    the report read it without pydantic or torch."""
    tree = ast.parse((SRC / "rundir" / "table.py").read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots - set(sys.stdlib_module_names)
