"""PNG plots for the report (matplotlib, Agg backend): curation funnel, training curves,
benchmark accuracy with 95% intervals, completion lengths. Each function writes one file
and returns its path (``None`` when there is nothing to plot)."""

from __future__ import annotations

from pathlib import Path

from .paired import label_key

COLORS = {"base": "#8c8c8c", "grpo": "#e07b39", "ssb": "#2b7bba", "sft": "#d62728", "rft": "#9467bd", "sdft": "#2ca02c"}


def _plt():
    import matplotlib  # lazy: ~0.7 s, paid only when a plot is drawn (pyplot after the Agg backend)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(label: str, i: int) -> str:
    return COLORS.get(label, f"C{i % 10}")


def _save(fig, path: Path) -> Path:
    """Lay out, write and close ``fig``: every plot is saved the same way (PNG, 110 dpi)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_funnel(f: dict, path: Path) -> Path:
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    steps = [("training problems", f["problems"]), ("≥1 correct rollout", f["with_correct"]),
             ("correct and wrong rollouts", f["mixed"])]
    if f.get("kept_without_correct") is not None:  # curate.keep=any_wrong
        steps.append(("+ kept with only wrong rollouts", f["mixed"] + f["kept_without_correct"]))
    if f.get("teacher_tried") is not None:
        steps.append(("sent to the hinted teacher", f["teacher_tried"]))
    if f["pairs"] is not None:
        steps.append(("pairs that passed every gate", f["pairs"]))
    names = [s[0] for s in steps][::-1]
    vals = [s[1] for s in steps][::-1]
    bars = ax.barh(names, vals, color=["#174a72", "#1f5f91", "#2b7bba", "#6aa5d2", "#a6c8e4", "#c9dcec"][-len(vals):])
    for b, v in zip(bars, vals):
        share = f" ({100 * v / f['problems']:.0f}%)" if f["problems"] else ""
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v}{share}", va="center", fontsize=9)
    ax.set_xlim(0, max(vals + [1]) * 1.3)
    ax.set_title("curation funnel (problems)")
    order = ["correct", "wrong", "no_answer", "timeout"]
    keys = [k for k in order if k in f["outcomes"]] + [k for k in f["outcomes"] if k not in order]
    counts = [f["outcomes"][k] for k in keys]
    cols = {"correct": "#3a9a3a", "wrong": "#c83e3e", "no_answer": "#9a9a9a", "timeout": "#d9a400"}
    ax2.bar(keys, counts, color=[cols.get(k, "#777777") for k in keys])
    for i, c in enumerate(counts):
        ax2.text(i, c, f"{c}", ha="center", va="bottom", fontsize=9)
    ax2.set_title(f"rollout outcomes (n={f['rollouts']})")
    ax2.set_ylim(0, max(counts + [1]) * 1.15)
    return _save(fig, path)


# ----------------------------------------------------------------------------- training curves


def _series(recs: list[dict], *keys: str) -> tuple[list, list]:
    """(steps, values) of the first key present in each record."""
    xs, ys = [], []
    for r in recs:
        for k in keys:
            if r.get(k) is not None:
                xs.append(r.get("step", len(xs) + 1))
                ys.append(float(r[k]))
                break
    return xs, ys


def plot_curves(recs: list[dict], panels: list[tuple[str, tuple[str, ...]]], title: str, path: Path,
                hlines: dict[str, tuple[float, str]] | None = None) -> Path | None:
    """One panel per ``(ylabel, keys)``, each present key a line (an all-zero line is
    dropped when the panel has another); ``hlines``: ylabel -> (y, text) reference line."""
    plt = _plt()
    drawn = []
    for ylabel, keys in panels:
        lines = [(k, *_series(recs, k)) for k in keys]
        lines = [ln for ln in lines if ln[1]]
        if len(lines) > 1:
            lines = [ln for ln in lines if any(v != 0 for v in ln[2])] or lines[:1]
        if lines:
            drawn.append((ylabel, lines))
    if not drawn:
        return None
    fig, axes = plt.subplots(1, len(drawn), figsize=(4 * len(drawn), 3.2), squeeze=False)
    for ax, (ylabel, lines) in zip(axes[0], drawn):
        for i, (k, xs, ys) in enumerate(lines):
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=k, ls="-" if i == 0 else "--")
        if hlines and ylabel in hlines:
            y, text = hlines[ylabel]
            ax.axhline(y, color="#c83e3e", lw=1, ls=":", label=text)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(lines) > 1 or (hlines and ylabel in hlines):
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


SSB_PANELS = [("loss", ("loss", "kd", "ce", "reverse_kl")), ("grad norm", ("grad_norm",)),
              ("answer tokens / example", ("answer_tokens_per_example",))]
GRPO_PANELS = [("reward (fraction correct)", ("reward",)), ("completion length (tokens)", ("completion_length",)),
               ("loss / KL", ("loss", "kl")), ("generated tokens (cumulative)", ("generated_tokens",))]


# ----------------------------------------------------------------------------- benchmarks


def plot_accuracy(summaries: dict, path: Path) -> Path | None:
    """Grouped bars per benchmark with 95% error bars and k/n labels."""
    plt = _plt()
    labels = sorted(summaries, key=label_key)
    benches = sorted({b for s in summaries.values() for b, v in s.get("benches", {}).items() if v.get("n_problems")})
    if not benches:
        return None
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(5, 2.2 * len(benches) * max(1, len(labels) / 2)), 3.8))
    for i, label in enumerate(labels):
        for j, bench in enumerate(benches):
            b = summaries[label].get("benches", {}).get(bench)
            if not b or not b.get("n_problems"):
                continue
            acc, (lo, hi) = 100 * b["accuracy"], b["ci"]
            x = j + (i - (len(labels) - 1) / 2) * width
            ax.bar(x, acc, width * 0.92, color=_color(label, i), label=label if j == 0 else None,
                   yerr=[[acc - 100 * lo], [100 * hi - acc]], capsize=4, ecolor="#333333")
            n_s = b["n_problems"] * b.get("samples_per_problem", 1)
            ax.text(x, 100 * hi + 1, f"{acc:.1f}%\n{b.get('correct', '?')}/{n_s}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(benches)))
    ax.set_xticklabels([f"{b}\n(1 problem = {summaries_points(summaries, b):.2g} pt)" for b in benches])
    ax.set_ylabel("accuracy (%), 95% CI")
    top = max(100 * b["ci"][1] for s in summaries.values() for b in s.get("benches", {}).values()
              if b.get("n_problems"))
    ax.set_ylim(0, min(100, top + 15) if top < 85 else 110)
    # outside the axes: inside, it covers the count labels above the bars
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("accuracy per benchmark")
    return _save(fig, path)


def summaries_points(summaries: dict, bench: str) -> float:
    for s in summaries.values():
        b = s.get("benches", {}).get(bench)
        if b and b.get("n_problems"):
            return b["points_per_problem"]
    return float("nan")


def plot_lengths(results: dict, path: Path) -> Path | None:
    """Completion length (tokens) per model and benchmark: box plots with the mean marked."""
    plt = _plt()
    labels = sorted(results, key=label_key)
    benches = sorted({b for r in results.values() for b in r})
    if not benches:
        return None
    fig, axes = plt.subplots(1, len(benches), figsize=(max(5.5, 1.6 * len(labels)) * len(benches), 3.8),
                             squeeze=False)
    for ax, bench in zip(axes[0], benches):
        data, names, cols = [], [], []
        for i, label in enumerate(labels):
            lens = [t for rec in results[label].get(bench, []) for t in rec.get("completion_tokens", [])]
            if lens:
                data.append(lens)
                names.append(label)
                cols.append(_color(label, i))
        if not data:
            continue
        bp = ax.boxplot(data, showmeans=True, patch_artist=True, widths=0.6)
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels(names)
        for patch, c in zip(bp["boxes"], cols):
            patch.set_facecolor(c)
            patch.set_alpha(0.55)
        top = max(max(lens) for lens in data)
        for k, lens in enumerate(data, start=1):
            ax.text(k, top * 1.04, f"mean {sum(lens) / len(lens):.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, top * 1.15)
        ax.set_title(bench)
        ax.set_ylabel("completion tokens")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("completion length per model")
    return _save(fig, path)


def plot_compute_curves(doc: dict, path: Path) -> Path | None:
    """``ssb compare``: held-out accuracy (pooled over replicates, 95% interval) against training
    FLOPs (log x), one line per arm; the base model as a horizontal band."""
    curves = {a: pts for a, pts in (doc.get("curves") or {}).items() if pts}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    base = doc["arms"].get("base", {})
    if "accuracy" in base:
        ax.axhline(100 * base["accuracy"], color=COLORS["base"], lw=1, ls="--", label="base")
        ax.axhspan(100 * base["ci"][0], 100 * base["ci"][1], color=COLORS["base"], alpha=0.12)
    for i, (arm, pts) in enumerate(sorted(curves.items())):
        x = [p["flops"] for p in pts]
        y = [100 * p["accuracy"] for p in pts]
        err = [[100 * (p["accuracy"] - p["ci"][0]) for p in pts], [100 * (p["ci"][1] - p["accuracy"]) for p in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, color=_color(arm, i), label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("training compute (FLOPs, report/ledger.py's rule)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"accuracy vs compute ({doc['n_problems']} held-out problems, {doc['n_replicates']} replicates)")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)
