"""Trees the docs show, kept equal to what they describe: README.md's run directory is
``ssb.rundir.table.run_tree()`` (rendered from the stage table), and docs/architecture.md's tree and
code map name exactly the modules under src/ssb."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssb.rundir.table import RUN_FILES, STAGES, Stage, run_tree

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ssb"
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def readme_tree(text: str) -> str:
    """The fenced block of README.md that starts with the line ``runs/default/``."""
    blocks = re.findall(r"^```\n(runs/default/\n.*?)^```$", text, re.M | re.S)
    assert len(blocks) == 1, f"README.md has {len(blocks)} run-directory trees (``` blocks starting 'runs/default/')"
    return blocks[0]


def test_the_readme_run_directory_is_the_rendered_stage_table():
    assert readme_tree(README.read_text()) == run_tree(), (
        "README.md's run-directory tree differs from the stage table's: paste the output of "
        "`python -m ssb.rundir.table` into it")


def test_the_tree_shows_every_output_and_run_file_once():
    tree = run_tree()
    lines = tree.splitlines()[1:]
    paths = [line.split()[0] for line in lines]
    assert len(paths) == len(set(paths))
    for path, _ in RUN_FILES:
        assert any(p.rstrip("/") == path for p in paths), path
    writers = [m.group(1).split(", ") if m else [] for m in (re.match(r"  \S+ +([\w, ]+?): ", x) for x in lines)]
    for s in STAGES:  # a stage's own lines, or the lines it shares with stages of its kind
        assert sum(s.name in w for w in writers) == len(s.outputs), s.name
    owned = {o for s in STAGES for o in s.outputs}
    assert not owned & {p for p, _ in RUN_FILES}, "a run file no stage owns is a stage's output"


def test_about_has_one_line_per_output():
    assert all(s.about and all(s.about) for s in STAGES)
    with pytest.raises(ValueError, match="2 outputs but 1 lines"):
        Stage("x", "ssb.stages.x", "run_x", help="", outputs=("a", "b"), about=("a",))


def test_stages_that_differ_only_by_name_share_lines():
    tree = run_tree("runs/x")
    assert tree.startswith("runs/x/\n")
    assert re.search(r"^  eval/<label>/ +eval_base, eval_ssb, ", tree, re.M)
    assert re.search(r"^  <name>_epochs/ +sft, rft: ", tree, re.M)
    assert re.search(r"^  grpo_points/ +grpo: ", tree, re.M)
    assert re.search(r"^  \.lock +\w", tree, re.M)  # a file with a suffix and nothing else: no "/"


# ----------------------------------------------------------------------------- docs/architecture.md


def modules() -> set[str]:
    """Every module under src/ssb as a path relative to it, subpackage ``__init__.py`` files (docstrings
    only) left out: ``cli.py``, ``rundir/table.py``, ``__init__.py``."""
    return {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
            if p.name != "__init__.py" or p.parent == SRC}


def code_map(text: str) -> set[str]:
    """The modules the code map's table names in its first column (``a.py``, ``pkg/b.py``)."""
    section = text.split("## Code map", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {m for row in rows for m in re.findall(r"`([\w/]+\.py)`", row.split("|")[1])}


def doc_tree(text: str) -> set[str]:
    """The modules the ``src/ssb/`` tree block names: ``pkg/  a.py  b.py`` lines (continued on
    lines indented under the first module), top-level modules on lines without a package."""
    block = re.search(r"^```\nsrc/ssb/\n(.*?)^```$", text, re.M | re.S)
    assert block, f"{ARCHITECTURE.name} has no ``` block starting 'src/ssb/'"
    found, package = set(), ""
    for line in block.group(1).splitlines():
        head = re.match(r"  (\w+)/", line)
        if head:
            package = head.group(1) + "/"
        elif not line.startswith("   "):
            package = ""
        found |= {package + m for m in re.findall(r"\b(\w+\.py)\b", line)}
    return found


def test_the_parsers_read_the_code_map_and_the_tree():
    text = ("```\nsrc/ssb/\n  __init__.py  a.py\n  b.py\n  p/   c.py (note)  d.py\n       e.py\n  q/  data\n```\n\n"
            "## Code map\n\n| module | what |\n| --- | --- |\n| `a.py`, `p/c.py` | x, not `z.py` |\n| `p/d.py` | y |\n")
    assert doc_tree(text) == {"__init__.py", "a.py", "b.py", "p/c.py", "p/d.py", "p/e.py"}
    assert code_map(text) == {"a.py", "p/c.py", "p/d.py"}


@pytest.mark.parametrize("read", [code_map, doc_tree], ids=["code map", "tree"])
def test_architecture_names_every_module(read):
    named, present = read(ARCHITECTURE.read_text()), modules()
    where = f"docs/architecture.md's {read.__name__}"
    assert not present - named, f"modules missing from {where}: {sorted(present - named)}"
    assert not named - present, f"{where} names modules that do not exist: {sorted(named - present)}"
