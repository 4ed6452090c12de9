"""Comparing evaluated models: paired differences on shared problems, and the tables.

:func:`paired_table` pairs every two labels of an ``eval/`` directory on the problem ids
they share: exact McNemar test + Newcombe interval for greedy (one completion) runs, a
paired bootstrap over problems for sampled runs; each p-value also Holm-adjusted over the
comparisons of its benchmark (``p_holm``). The table helpers print or render the
accuracy table (with raw counts and "one problem = x points") and the paired table.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from ..rundir.jsonl import atomic_write_json, read_jsonl
from ..rundir.run import Run
from . import stats

LABEL_ORDER = ("base", "grpo", "ssb")  # reference first: differences read "later minus earlier"


# ----------------------------------------------------------------------------- comparisons


def label_key(label: str) -> tuple[int, str]:
    """Sort key for model labels: ``LABEL_ORDER`` first, in that order, then the rest by name."""
    return (LABEL_ORDER.index(label) if label in LABEL_ORDER else len(LABEL_ORDER), label)


def load_results(eval_dir: str | Path, labels: set[str] | None = None) -> dict[str, dict[str, list[dict]]]:
    """``{label: {bench: records}}`` from ``eval_dir/<label>/<bench>.jsonl`` (only ``labels``, when given)."""
    out: dict[str, dict[str, list[dict]]] = {}
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        return out
    for d in sorted(p for p in eval_dir.iterdir() if p.is_dir() and (labels is None or p.name in labels)):
        benches = {f.stem: read_jsonl(f) for f in sorted(d.glob("*.jsonl"))}
        if benches:
            out[d.name] = benches
    return out


def paired_table(results: dict[str, dict[str, list[dict]]], seed: int = 0) -> list[dict]:
    """Paired differences for each pair of labels on each shared benchmark, over the
    problem ids both evaluated. Row: ``bench, a, b, n, diff`` (a minus b), ``ci``,
    ``p_value``, ``test``, ``a_only``/``b_only`` (problems only one of them solved)."""
    rows = []
    labels = sorted(results, key=label_key)
    for ref, other in combinations(labels, 2):
        for bench in sorted(set(results[ref]) & set(results[other])):
            a = {str(r["id"]): r for r in results[other][bench]}
            b = {str(r["id"]): r for r in results[ref][bench]}
            ids = sorted(set(a) & set(b))
            if not ids:
                continue
            binary = all(len(a[i]["correct"]) == 1 and len(b[i]["correct"]) == 1 for i in ids)
            if binary:
                res = stats.paired_diff([a[i]["correct"][0] for i in ids], [b[i]["correct"][0] for i in ids])
                res["a_only"], res["b_only"] = res.pop("x_only"), res.pop("y_only")
            else:
                res = stats.paired_bootstrap([sum(a[i]["correct"]) / len(a[i]["correct"]) for i in ids],
                                             [sum(b[i]["correct"]) / len(b[i]["correct"]) for i in ids],
                                             iters=4000, seed=seed)
            rows.append({"bench": bench, "a": other, "b": ref, **res})
    return with_holm(rows)


def with_holm(rows: list[dict]) -> list[dict]:
    """``rows`` with ``p_holm``: each row's p-value Holm-adjusted over the comparisons of its benchmark
    (:func:`stats.holm`; the family is every pair of models evaluated on that benchmark)."""
    for bench in {r["bench"] for r in rows}:
        family = [r for r in rows if r["bench"] == bench]
        for r, p in zip(family, stats.holm([r["p_value"] for r in family])):
            r["p_holm"] = p
    return rows


def compare(run: Run) -> list[dict]:
    """Paired comparison of every evaluated label of a run; also saved to ``eval/compare.json``."""
    rows = paired_table(load_results(run.file("eval")), seed=run.cfg.eval.seed)
    if rows:
        atomic_write_json(run.file("eval/compare.json"), rows)
    return rows


# ----------------------------------------------------------------------------- tables


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def display_names(summaries: dict[str, dict]) -> dict[str, str]:
    """``{directory label: name to show}``: the run/adapter label the summary was written
    with (``ssb``, ``grpo``, an adapter's name), not the output folder's name; the folder's
    name only where two summaries carry the same label."""
    names = {key: str(s.get("label") or key) for key, s in summaries.items()}
    taken = [n for n in names.values()]
    return {key: (n if taken.count(n) == 1 else key) for key, n in names.items()}


def summary_rows(summaries: dict[str, dict]) -> list[dict]:
    """Flatten ``{label: summary}`` into one row per (bench, label) for printing."""
    rows = []
    names = display_names(summaries)
    for label in sorted(summaries, key=label_key):
        for bench, b in sorted(summaries[label].get("benches", {}).items()):
            if not b.get("n_problems"):
                continue
            n_samples = b["n_problems"] * b.get("samples_per_problem", 1)
            count = f"{b['correct']}/{n_samples}" if b.get("correct") is not None else ""
            pk = b.get("pass_at_k") or {}
            top = max(pk, key=int) if pk else None
            rows.append({
                "bench": bench, "label": names[label], "accuracy": f"{pct(b['accuracy'])}%", "count": count,
                "ci": f"[{pct(b['ci'][0])}, {pct(b['ci'][1])}]",
                "one_problem": f"{b['points_per_problem']:.2f} pt",
                "pass_at_k": f"{pct(pk[top])}% k={top}" if top else "",
                "mean_tokens": "—" if b["completion_tokens"]["mean"] is None else f"{b['completion_tokens']['mean']:.0f}",
                "truncated": str(b["truncated"]),
            })
    return rows


SUMMARY_COLUMNS = [("bench", "bench"), ("label", "model"), ("accuracy", "acc"), ("count", "correct"),
                   ("ci", "95% CI"), ("one_problem", "1 problem"), ("pass_at_k", "pass@k"),
                   ("mean_tokens", "tokens"), ("truncated", "trunc")]
PAIRED_COLUMNS = ["bench", "A − B", "n", "diff (pt)", "95% CI (pt)", "only A/B", "p", "p Holm", "test"]
TEXT_COLUMNS = ("bench", "model", "A − B", "test")  # left-aligned
HOLM_NOTE = ("p: one comparison's; p Holm: adjusted for every comparison on the same benchmark (Holm), the one "
             "to read when picking a model among several")
WRAPPING = ("model", "A − B")  # the only columns that may wrap (long model names); headers never do


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def paired_rows(rows: list[dict], names: dict[str, str] | None = None) -> list[list[str]]:
    names = names or {}
    return [[r["bench"], f"{names.get(r['a'], r['a'])} − {names.get(r['b'], r['b'])}", str(r["n"]),
             f"{100 * r['diff']:+.1f}", f"[{100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}]",
             f"{r['a_only']}/{r['b_only']}" if "a_only" in r else "", _p(r["p_value"]),
             _p(r["p_holm"]) if "p_holm" in r else "",
             {"mcnemar-exact": "McNemar", "sign-flip-permutation": "permutation"}.get(r["test"], r["test"])]
            for r in rows]


def _summary_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The accuracy table's columns, without pass@k when no row has it (greedy evals)."""
    return [(k, h) for k, h in SUMMARY_COLUMNS if k != "pass_at_k" or any(r[k] for r in rows)]


def markdown_tables(summaries: dict[str, dict], pairs: list[dict]) -> str:
    """The benchmark and paired-difference tables as Markdown."""
    rows = summary_rows(summaries)
    cols = _summary_columns(rows)
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[k] for k, _ in cols) + " |" for r in rows]
    if pairs:
        lines += ["", "| " + " | ".join(PAIRED_COLUMNS) + " |", "|" + "---|" * len(PAIRED_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in paired_rows(pairs, display_names(summaries))]
    return "\n".join(lines)


TERMINAL_DROP = ("one_problem",)  # shown under the table instead (one value per benchmark)


def terminal_tables(summaries: dict[str, dict], pairs: list[dict] | None = None) -> list:
    """The two rich tables, laid out to stay readable in an 80-column terminal: no vertical
    rules, one space between columns, headers never cut (long model names wrap instead);
    what one problem is worth goes under the accuracy table, one value per benchmark."""
    from rich import box  # lazy: ~0.06 s, only for terminal tables (report needs none)
    from rich.table import Table

    def table(title: str, heads: list[str], widths: dict[str, int], caption: str | None = None) -> Table:
        t = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), show_edge=False,
                  title_justify="left", caption_justify="left")
        for head in heads:
            t.add_column(head, justify="left" if head in TEXT_COLUMNS else "right",
                         min_width=widths.get(head, len(head)), no_wrap=head not in WRAPPING, overflow="fold")
        return t

    rows = summary_rows(summaries)
    cols = [(k, h) for k, h in _summary_columns(rows) if k not in TERMINAL_DROP]
    worth = {r["bench"]: r["one_problem"] for r in rows}
    caption = "one problem = " + ", ".join(f"{v} ({b})" for b, v in worth.items()) if worth else None
    bench_width = min(12, max([len("bench")] + [len(r["bench"]) for r in rows]))
    acc = table("accuracy with its 95% interval", [h for _, h in cols], {"bench": bench_width}, caption)
    for r in rows:
        acc.add_row(*(r[k] for k, _ in cols))
    out = [acc]
    if pairs:
        prow = paired_rows(pairs, display_names(summaries))
        bench_width = min(12, max([len("bench")] + [len(r[0]) for r in prow]))
        tests = {r[-1] for r in prow}
        heads = PAIRED_COLUMNS if len(tests) > 1 else PAIRED_COLUMNS[:-1]  # one test: named in the caption
        note = [f"test: {tests.pop()}"] if len(heads) < len(PAIRED_COLUMNS) else []
        note += [HOLM_NOTE] if any("p_holm" in r for r in pairs) else []
        pt = table("paired differences on the same problems (A − B, percentage points)", heads,
                   {"bench": bench_width}, "; ".join(note) or None)
        for r in prow:
            pt.add_row(*r[:len(heads)])
        out.append(pt)
    return out


def print_tables(summaries: dict[str, dict], pairs: list[dict] | None = None, console=None) -> None:
    """Rich tables on the terminal: accuracy with counts and interval, then paired differences."""
    from rich.console import Console  # lazy: see terminal_tables

    console = console or Console()
    for t in terminal_tables(summaries, pairs):
        console.print(t)


def load_summaries(eval_dir: str | Path, labels: set[str] | None = None) -> dict[str, dict]:
    """``{label: summary.json}`` of every label under ``eval_dir`` (only ``labels``, when given)."""
    out = {}
    eval_dir = Path(eval_dir)
    if eval_dir.is_dir():
        for f in sorted(eval_dir.glob("*/summary.json")):
            if labels is None or f.parent.name in labels:
                out[f.parent.name] = json.loads(f.read_text(encoding="utf-8"))
    return out
