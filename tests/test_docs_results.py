"""Every benchmark figure in the docs comes from a results file (``python -m bench.render``).

(a) every results block of README.md, docs/*.md and bench/README.md is what its renderer
    makes of the results file now (``python -m bench.render --check``, run in-process);
(b) a number changed inside a rendered block fails that check (on a copy, never the real files);
(c) no benchmark figure is typed by hand outside a rendered block, in the docs or in the
    comments of configs/*.yaml (a separate test).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from bench import _meta as meta
from bench.render import cli as render
from bench.render import common as _results

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- (a) blocks are current


def test_every_results_block_is_current():
    problems = render.check()
    assert not problems, "stale results blocks (run `python -m bench.render`):\n" + "\n".join(problems)


def test_the_docs_have_results_blocks_and_every_renderer_is_shown():
    used = {b.name for f in render.doc_files() for b in render.blocks(f.read_text(), str(f))}
    # issue 24: README's one table is the suite across tasks (the default task's row is compare.json's);
    # issue 23: the default task's full comparison is rendered from compare.json in docs/compare.md
    assert "tasks_main" in {b.name for b in render.blocks((ROOT / "README.md").read_text())}
    assert "compare_main" in {b.name for b in render.blocks((ROOT / "docs" / "compare.md").read_text())}
    missing = set(render.RENDERERS) - used
    assert not missing, f"renderers no doc shows: {sorted(missing)}"
    assert used <= set(render.RENDERERS) | render.PENDING


def test_pending_names_are_not_registered_twice():
    # a renderer that exists must leave PENDING, so that its blocks are checked
    assert not (render.PENDING & set(render.RENDERERS)), "remove these from PENDING: " + ", ".join(
        sorted(render.PENDING & set(render.RENDERERS)))


# ----------------------------------------------------------------------------- (b) a changed number fails


def _copy_docs(tmp_path: Path) -> list[Path]:
    out = []
    for f in render.doc_files():
        dst = tmp_path / f.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
        out.append(dst)
    return out


def test_a_number_changed_inside_a_rendered_block_fails_the_check(tmp_path):
    files = _copy_docs(tmp_path)
    assert render.check(files) == []
    target = next(f for f in files if f.name == "README.md" and f.parent.name == "bench")
    text = target.read_text()
    block = next(b for b in render.blocks(text) if b.name == "rollout_throughput")
    m = re.search(r"\d+\.\d", block.body)
    digit = m.group()[-1]
    changed = block.body[:m.end() - 1] + str((int(digit) + 1) % 10) + block.body[m.end():]
    target.write_text(text[:block.start] + changed + text[block.end:])
    problems = render.check(files)
    assert len(problems) == 1 and "rollout_throughput (stale)" in problems[0], problems
    assert f":{block.line}:" in problems[0]
    # rendering repairs it, and touches nothing else
    assert render.write(files) == []
    assert target.read_text() == text and render.check(files) == []


def test_a_legacy_commit_hash_is_not_compared_but_the_numbers_are(tmp_path):
    files = _copy_docs(tmp_path)
    target = next(f for f in files if f.name == "method.md")
    text = target.read_text()
    assert "provenance not recorded" in text  # teacher_signal.json predates provenance
    target.write_text(re.sub(r"committed in [0-9a-f]+;", "committed in 0000000;", text))
    assert render.check(files) == []


def test_unknown_and_pending_renderers(tmp_path, monkeypatch):
    doc = tmp_path / "x.md"
    doc.write_text("a\n<!-- results: no_such_renderer -->\n<!-- /results -->\n")
    assert "unknown renderer" in render.check([doc])[0]
    pending = "a_renderer_to_come"
    monkeypatch.setattr(render, "PENDING", {pending})
    doc.write_text(f"a\n<!-- results: {pending} -->\n<!-- /results -->\n")
    assert render.check([doc]) == [f"{doc}:2: {pending} (stale)"]
    assert render.write([doc]) == [] and render.check([doc]) == []
    assert "pending" in doc.read_text()
    doc.write_text("<!-- results: rollout_throughput -->\nno end\n")
    assert "has no" in render.check([doc])[0]


def test_main_exit_codes(tmp_path, capsys):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- results: distill_memory -->\nold\n<!-- /results -->\n")
    assert render.main(["--check", str(doc)]) == 1
    assert "distill_memory (stale)" in capsys.readouterr().err
    assert render.main([str(doc)]) == 0
    assert render.main(["--check", str(doc)]) == 0


def test_formats():
    assert _results.pct(0.4503) == "45.0%"
    assert _results.pts(4.7) == "+4.7 pt" and _results.pts(-1.25) == "-1.2 pt"
    assert _results.interval(1.6, 7.9) == "[+1.6, +7.9]"
    assert _results.interval(27.8, 36.8, signed=False) == "[27.8, 36.8]"
    assert _results.times(12.13) == "12.1×"
    assert _results.num(196608) == "196,608"


def test_the_tuning_table_marks_each_choice_and_the_edge_trial(monkeypatch):
    """docs/compare.md's search table: every trial per arm in learning-rate order, the chosen one in bold,
    an arm with the edge extension counted as such; an untuned comparison says it was not tuned."""
    from bench.render import compare as rc

    trial = lambda lr, acc: {"lr": lr, "overrides": [f"distill.lr={lr}"], "validation_accuracy": acc}  # noqa: E731
    doc = {"commit": "0" * 40, "config": "configs/default.yaml", "ssb_hint": "correct", "tuning": {
        "ssb": {"key": "distill.lr", "configured": 2e-4, "grid": [6.32e-5, 2e-4, 6.32e-4],
                "trials": [trial(2e-4, 0.30), trial(6.32e-5, 0.29), trial(6.32e-4, 0.27)],
                "chosen": {"lr": 2e-4, "validation_accuracy": 0.30}},
        "grpo": {"key": "grpo.lr", "configured": 2e-4, "grid": [6.32e-5, 2e-4, 6.32e-4],
                 "trials": [trial(6.32e-5, 0.32), trial(2e-4, 0.31), trial(6.32e-4, 0.0), trial(2e-5, 0.31)],
                 "chosen": {"lr": 6.32e-5, "validation_accuracy": 0.32}}},
        "tuning_protocol": {"rule": "the highest validation accuracy", "validation": {"n": 300, "seed": 7},
                            "base_validation_accuracy": 0.24}}
    monkeypatch.setattr(rc, "load", lambda name: doc)
    out = rc.render_compare_tuning()
    ssb = next(line for line in out.splitlines() if line.startswith("| SSB"))
    grpo = next(line for line in out.splitlines() if line.startswith("| GRPO"))
    assert "6.32e-05 → 29.0%, **0.0002 → 30.0%**, 0.000632 → 27.0%" in ssb and "| 3 |" in ssb
    assert grpo.index("2e-05") < grpo.index("6.32e-05") and "**6.32e-05 → 32.0%**" in grpo and "4 (edge +1)" in grpo
    assert "300 validation problems (seed 7" in out and "the base model: 24.0%" in out
    monkeypatch.setattr(rc, "load", lambda name: {k: v for k, v in doc.items() if k != "tuning"})
    assert rc.render_compare_tuning().startswith("This comparison was not tuned")


def test_caption_with_recorded_provenance():
    prov = {"commit": "0123456789abcdef", "dirty": True, "date": "2025-01-02T03:04:05+00:00",
            "config": {"path": "configs/default.yaml", "sha256": "ab" * 32}}
    cap = _results.source("x.json", {"provenance": prov}, "python -m bench.x")
    assert "commit 0123456, uncommitted changes; 2025-01-02; config `configs/default.yaml` sha256 abababab" in cap
    assert "Regenerate: `python -m bench.x`" in cap
    # a command recorded before bench/ was a package is shown as it runs now
    assert _results.runnable("python bench/compare.py --n 4") == "python -m bench.compare --n 4"


def test_provenance_fields(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    p = meta.provenance(cfg)
    assert set(p) == {"commit", "dirty", "date", "config", "python", "torch", "machine"}
    assert p["config"] == {"path": str(cfg), "sha256": hashlib.sha256(b"name: x\n").hexdigest()}
    assert p["date"].endswith("+00:00") and p["machine"]["cpus"]
    json.dumps(p)  # goes into a results file as is
    assert meta.provenance()["config"] is None


# ----------------------------------------------------------------------------- (c) nothing typed by hand

NUM = r"(?<![\w./])[+\-−]?\d[\d,]*(?:\.\d+)?"
FIGURES = re.compile("|".join([
    NUM + r"\s?%",  # 45.0%
    NUM + r"\s?(?:pt|pts|points?)\b",  # +4.7 pt, 10.8 points
    NUM + r"[×x](?![\w\d])(?!\s*[\d≈])",  # 12.1×, 4.89x (not a shape like 4 × 1024)
    NUM + r"\s?(?:s|sec|seconds?|ms|min|minutes?|h|hours?|CPU-s)\b(?!-)",  # 791 s, 13.2 min
    NUM + r"\s?tok(?:ens)?/s\b",  # 223 tok/s
    NUM + r"\s?(?:[KMGT]i?B|kB)\b",  # 19.4 GB, 128 MiB
    NUM + r"\s(?:B)\b",  # 1,152 B (bytes; "3B" in a model name is not)
    r"\[" + NUM + r",\s*" + NUM + r"\]",  # [+1.6, +7.9]
]))

# Figures that are facts, not measurements; each with why. Keep this short: a measured number
# belongs in a results file and a rendered block.
ALLOWED = {
    "95%": "the confidence level of the intervals, a setting",
    "37.6%": "the paper's reported MATH500 pass@1 (arXiv 2512.05105), quoted as the paper's",
    "44.8%": "the paper's reported MATH500 pass@1 (arXiv 2512.05105), quoted as the paper's",
    "55.4%": "the paper's reported MATH500 pass@1 (arXiv 2512.05105), quoted as the paper's",
    "1,152 B": "2 bytes × SmolLM2-135M's hidden size 576: computed from the model's shape",
    "196,608 B": "4 bytes × SmolLM2-135M's vocabulary 49,152: computed from the model's shape",
}


def _outside_blocks(text: str) -> str:
    """``text`` with the body of every results block blanked (line numbers kept)."""
    for b in reversed(render.blocks(text)):
        text = text[:b.start] + re.sub(r"[^\n]", " ", b.body) + text[b.end:]
    return text


def typed_figures(text: str) -> list[tuple[int, str]]:
    return [(text.count("\n", 0, m.start()) + 1, m.group().strip()) for m in FIGURES.finditer(text)
            if m.group().strip().lstrip("+") not in ALLOWED]


def _comments(yaml_text: str) -> str:
    """Only the comments of a YAML file (a ``#`` outside quotes to the line's end), lines kept."""
    out = []
    for line in yaml_text.splitlines():
        quote, cut = None, None
        for i, ch in enumerate(line):
            if quote:
                quote = None if ch == quote and line[i - 1] != "\\" else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
                cut = i
                break
        out.append(line[cut:] if cut is not None else "")
    return "\n".join(out)


def test_the_scan_finds_typed_figures():
    text = ("SSB 45.0% (+9.0 pt [+4.1, +13.8]), 12.1× faster, 791 s, 223 tok/s, 19.4 GB, 1.07x, 3,660 B.\n"
            "20-60% of the time.\n"
            "Not figures: Qwen2.5-3B, Qwen2.5-0.5B, 4 × 1,024 tokens, K=4, lr 2e-4, r=32, 95%, the paper's 37.6%.")
    assert [f for _, f in typed_figures(text)] == ["45.0%", "+9.0 pt", "[+4.1, +13.8]", "12.1×", "791 s",
                                                    "223 tok/s", "19.4 GB", "1.07x", "3,660 B", "60%"]
    assert typed_figures("<!-- results: x -->\n45.0%\n<!-- /results -->\n") != []
    assert typed_figures(_outside_blocks("<!-- results: x -->\n45.0%\n<!-- /results -->\n")) == []
    assert _comments('a: "#1 45.0%" # 12 s\n# 3% here\nb: 4\n') == "# 12 s\n# 3% here\n"


def test_no_benchmark_figure_typed_in_the_docs():
    found = [f"{f.relative_to(ROOT)}:{line}: {fig}" for f in render.doc_files()
             for line, fig in typed_figures(_outside_blocks(f.read_text()))]
    assert not found, ("benchmark figures typed by hand (put them in a results file and a rendered block, "
                       "or drop them):\n" + "\n".join(found))


def test_every_allowed_figure_is_used():
    text = "\n".join(_outside_blocks(f.read_text()) for f in render.doc_files())
    unused = [a for a in ALLOWED if a not in text]
    assert not unused, f"remove from ALLOWED, nothing quotes them: {unused}"


def test_no_benchmark_figure_typed_in_config_comments():
    found = [f"{f.relative_to(ROOT)}:{line}: {fig}" for f in sorted((ROOT / "configs").rglob("*.yaml"))
             for line, fig in typed_figures(_comments(f.read_text()))]
    assert not found, "benchmark figures in config comments:\n" + "\n".join(found)


# ----------------------------------------------------------------------------- links between the pages


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file."""
    out = set()
    for m in re.finditer(r"^#+\s+(.+?)\s*$", path.read_text(), re.M):
        out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def test_links_between_the_docs_resolve():
    bad = []
    for f in render.doc_files():
        text = re.sub(r"```.*?```", "", f.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (f.parent / path).resolve() if path else f
            if not dest.exists():
                bad.append(f"{f.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{f.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)
