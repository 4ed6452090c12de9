"""Comparing evaluated models: paired differences on shared problems, and the tables.

:func:`paired_table` pairs every two labels of an ``eval/`` directory on the problem ids
they share: exact McNemar test + Newcombe interval for greedy (one completion) runs, a
paired bootstrap over problems for sampled runs. The table helpers print or render the
accuracy table (with raw counts and "one problem = x points") and the paired table.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from . import stats
from .rundir import Run, atomic_write_json, read_jsonl

LABEL_ORDER = ("base", "grpo", "ssb")  # reference first: differences read "later minus earlier"


# ----------------------------------------------------------------------------- comparisons


def _label_key(label: str) -> tuple[int, str]:
    return (LABEL_ORDER.index(label) if label in LABEL_ORDER else len(LABEL_ORDER), label)


def load_results(eval_dir: str | Path) -> dict[str, dict[str, list[dict]]]:
    """``{label: {bench: records}}`` from ``eval_dir/<label>/<bench>.jsonl``."""
    out: dict[str, dict[str, list[dict]]] = {}
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        return out
    for d in sorted(p for p in eval_dir.iterdir() if p.is_dir()):
        benches = {f.stem: read_jsonl(f) for f in sorted(d.glob("*.jsonl"))}
        if benches:
            out[d.name] = benches
    return out


def paired_table(results: dict[str, dict[str, list[dict]]], seed: int = 0) -> list[dict]:
    """Paired differences for each pair of labels on each shared benchmark, over the
    problem ids both evaluated. Row: ``bench, a, b, n, diff`` (a minus b), ``ci``,
    ``p_value``, ``test``, ``a_only``/``b_only`` (problems only one of them solved)."""
    rows = []
    labels = sorted(results, key=_label_key)
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


def summary_rows(summaries: dict[str, dict]) -> list[dict]:
    """Flatten ``{label: summary}`` into one row per (bench, label) for printing."""
    rows = []
    for label in sorted(summaries, key=_label_key):
        for bench, b in sorted(summaries[label].get("benches", {}).items()):
            if not b.get("n_problems"):
                continue
            n_samples = b["n_problems"] * b.get("samples_per_problem", 1)
            count = f"{b['correct']}/{n_samples}" if b.get("correct") is not None else ""
            pk = b.get("pass_at_k") or {}
            top = max(pk, key=int) if pk else None
            rows.append({
                "bench": bench, "label": label, "accuracy": f"{pct(b['accuracy'])}%", "count": count,
                "ci": f"[{pct(b['ci'][0])}, {pct(b['ci'][1])}]",
                "one_problem": f"{b['points_per_problem']:.2f} pt",
                "pass_at_k": f"pass@{top} {pct(pk[top])}%" if top else "",
                "mean_tokens": "—" if b["completion_tokens"]["mean"] is None else f"{b['completion_tokens']['mean']:.0f}",
                "truncated": str(b["truncated"]),
            })
    return rows


SUMMARY_COLUMNS = [("bench", "bench"), ("label", "model"), ("accuracy", "acc"), ("count", "correct"),
                   ("ci", "95% CI"), ("one_problem", "1 problem"), ("pass_at_k", "pass@k"),
                   ("mean_tokens", "tokens"), ("truncated", "trunc")]
PAIRED_COLUMNS = ["bench", "A − B", "n", "diff (pt)", "95% CI (pt)", "only A/B", "p", "test"]


def paired_rows(rows: list[dict]) -> list[list[str]]:
    return [[r["bench"], f"{r['a']} − {r['b']}", str(r["n"]), f"{100 * r['diff']:+.1f}",
             f"[{100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}]",
             f"{r['a_only']}/{r['b_only']}" if "a_only" in r else "",
             f"{r['p_value']:.3g}", {"mcnemar-exact": "McNemar", "sign-flip-permutation": "permutation"}.get(r["test"], r["test"])] for r in rows]


def markdown_tables(summaries: dict[str, dict], pairs: list[dict]) -> str:
    """The benchmark and paired-difference tables as Markdown."""
    rows = summary_rows(summaries)
    lines = ["| " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " |",
             "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(r[k] for k, _ in SUMMARY_COLUMNS) + " |" for r in rows]
    if pairs:
        lines += ["", "| " + " | ".join(PAIRED_COLUMNS) + " |", "|" + "---|" * len(PAIRED_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in paired_rows(pairs)]
    return "\n".join(lines)


def print_tables(summaries: dict[str, dict], pairs: list[dict] | None = None) -> None:
    """Rich tables on the terminal: accuracy with counts and interval, then paired differences."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="accuracy, 95% interval; '1 problem' = what one problem moves the score")
    for _, head in SUMMARY_COLUMNS:
        table.add_column(head, justify="left" if head in ("bench", "model") else "right")
    for r in summary_rows(summaries):
        table.add_row(*(r[k] for k, _ in SUMMARY_COLUMNS))
    console.print(table)
    if pairs:
        pt = Table(title="paired differences on the same problems (A − B, percentage points)")
        for head in PAIRED_COLUMNS:
            pt.add_column(head, justify="left" if head in ("bench", "A − B", "test") else "right")
        for r in paired_rows(pairs):
            pt.add_row(*r)
        console.print(pt)


def load_summaries(eval_dir: str | Path) -> dict[str, dict]:
    """``{label: summary.json}`` of every label under ``eval_dir``."""
    out = {}
    eval_dir = Path(eval_dir)
    if eval_dir.is_dir():
        for f in sorted(eval_dir.glob("*/summary.json")):
            out[f.parent.name] = json.loads(f.read_text(encoding="utf-8"))
    return out
