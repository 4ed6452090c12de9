"""`ssb report --run runs/NAME`: ``report.md`` and PNG plots of what happened in a run.

Everything is read from the run directory (manifest, rollouts, pairs, training logs,
eval files); any stage that has not run is shown as "not run" instead of failing:

* curation funnel: problems -> problems with both a correct and a wrong rollout ->
  verified teacher pairs (plus the rollout outcome mix);
* SSB training curves (loss / KD, grad norm, answer tokens per example) from ``train_log.jsonl``;
* GRPO reward and completion length per step from ``grpo_log.jsonl``, and the token budget;
* the benchmark table base / GRPO / SSB with 95% intervals and paired differences,
  an accuracy bar chart with error bars, and completion lengths per model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .pipeline import SSB_STAGES
from .rundir import Run, atomic_write_text, read_jsonl

log = logging.getLogger(__name__)

NOT_RUN = "_not run_"
OUTPUTS: tuple[str, ...] = ("report.md", "plots")  # removed by `ssb run --force report`
COLORS = {"base": "#8c8c8c", "grpo": "#e07b39", "ssb": "#2b7bba"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(label: str, i: int) -> str:
    return COLORS.get(label, f"C{i % 10}")


def _num(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


# ----------------------------------------------------------------------------- curation funnel


def funnel_counts(run: Run) -> dict | None:
    """Counts from ``rollouts.jsonl`` / ``pairs.jsonl``; None when rollouts never ran."""
    rollouts = read_jsonl(run.file("rollouts.jsonl"))
    if not rollouts:
        return None
    wrong_kinds = {"wrong"} | ({"no_answer"} if run.cfg.curate.no_answer_is_wrong else set())
    outcomes: dict[str, int] = {}
    with_correct = with_wrong = mixed = 0
    for r in rollouts:
        grades = r.get("grades", [])
        for g in grades:
            outcomes[g] = outcomes.get(g, 0) + 1
        c = any(g == "correct" for g in grades)
        w = any(g in wrong_kinds for g in grades)
        with_correct += c
        with_wrong += w
        mixed += c and w
    n_roll = sum(outcomes.values())
    pairs = read_jsonl(run.file("pairs.jsonl"))
    cur, teach = run.stage("curate"), run.stage("teacher")
    return {
        "problems": len(rollouts),
        "rollouts": n_roll,
        "rollout_accuracy": outcomes.get("correct", 0) / n_roll if n_roll else None,
        "outcomes": outcomes,
        "with_correct": with_correct,
        "with_wrong": with_wrong,
        # curate's own count (it groups answers by equivalence) when it ran
        "mixed": cur.get("with_both", mixed),
        "teacher_tried": teach.get("teacher_tried"),
        "pairs": len(pairs) if run.file("pairs.jsonl").exists() else None,
        "rejected_by_gate": teach.get("replies_rejected_by_gate") or {},
    }


def plot_funnel(f: dict, path: Path) -> Path:
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    steps = [("training problems", f["problems"]), ("≥1 correct rollout", f["with_correct"]),
             ("correct and wrong rollouts", f["mixed"])]
    if f.get("teacher_tried") is not None:
        steps.append(("sent to the hinted teacher", f["teacher_tried"]))
    if f["pairs"] is not None:
        steps.append(("pairs that passed every gate", f["pairs"]))
    names = [s[0] for s in steps][::-1]
    vals = [s[1] for s in steps][::-1]
    bars = ax.barh(names, vals, color=["#1f5f91", "#2b7bba", "#6aa5d2", "#a6c8e4", "#c9dcec"][-len(vals):])
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SSB_PANELS = [("loss", ("loss", "kd", "ce", "reverse_kl")), ("grad norm", ("grad_norm",)),
              ("answer tokens / example", ("answer_tokens_per_example",))]
GRPO_PANELS = [("reward (fraction correct)", ("reward",)), ("completion length (tokens)", ("completion_length",)),
               ("loss / KL", ("loss", "kl")), ("generated tokens (cumulative)", ("generated_tokens",))]


# ----------------------------------------------------------------------------- benchmarks


def plot_accuracy(summaries: dict, path: Path) -> Path | None:
    """Grouped bars per benchmark with 95% error bars and k/n labels."""
    from .compare import _label_key

    plt = _plt()
    labels = sorted(summaries, key=_label_key)
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summaries_points(summaries: dict, bench: str) -> float:
    for s in summaries.values():
        b = s.get("benches", {}).get(bench)
        if b and b.get("n_problems"):
            return b["points_per_problem"]
    return float("nan")


def plot_lengths(results: dict, path: Path) -> Path | None:
    """Completion length (tokens) per model and benchmark: box plots with the mean marked."""
    from .compare import _label_key

    plt = _plt()
    labels = sorted(results, key=_label_key)
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- markdown


def _stage_table(manifest: dict) -> list[str]:
    stages = manifest.get("stages", {})
    from .pipeline import STAGE_NAMES

    lines = ["| stage | status | seconds |", "|---|---|---|"]
    for name in STAGE_NAMES + [s for s in stages if s not in STAGE_NAMES]:
        if name == "report":
            continue
        st = stages.get(name)
        if st is None:
            lines.append(f"| {name} | not run | |")
        else:
            err = f" ({st['error'][:80]})" if st.get("error") else ""
            lines.append(f"| {name} | {st.get('status', '?')}{err} | {_num(st.get('seconds'))} |")
    return lines


def _kv_table(d: dict, skip: tuple[str, ...] = ()) -> list[str]:
    rows = [(k, v) for k, v in d.items()
            if k not in skip and not isinstance(v, (dict, list)) and k not in ("status", "started", "finished", "error")]
    if not rows:
        return []
    return ["| | |", "|---|---|"] + [f"| {k} | {_num(v)} |" for k, v in rows]


def _img(md: list[str], path: Path | None, run: Run, alt: str) -> None:
    if path is not None:
        md.append(f"![{alt}]({path.relative_to(run.path).as_posix()})")
        md.append("")


def _budget_lines(manifest: dict) -> list[str]:
    st = manifest.get("stages", {})
    ssb_tokens = [st.get("rollout", {}).get("generated_tokens"), st.get("teacher", {}).get("teacher_tokens")]
    ssb_total = sum(t for t in ssb_tokens if t is not None) if any(t is not None for t in ssb_tokens) else None
    ssb_secs = sum(st.get(s, {}).get("seconds") or 0 for s in SSB_STAGES)
    g = st.get("grpo", {})
    lines = ["| | SSB (rollouts + teacher + logits + distill) | GRPO |", "|---|---|---|",
             f"| generated tokens | {_num(ssb_total)} | {_num(g.get('generated_tokens'))} |",
             f"| wall-clock seconds | {_num(round(ssb_secs, 1)) if ssb_secs else '—'} | {_num(g.get('seconds'))} |",
             f"| optimizer steps | {_num(st.get('distill', {}).get('steps') or st.get('distill', {}).get('global_step'))} "
             f"| {_num(g.get('steps'))} |"]
    if g.get("stopped_by"):
        if g.get("budget_seconds") is not None:
            limit = f"{_num(round(g['budget_seconds'], 1))} s"
        elif g.get("budget_tokens") is not None:
            limit = f"{_num(g['budget_tokens'])} tokens"
        else:
            limit = "no budget"
        lines.append(f"\nGRPO stopped by: {g['stopped_by']} ({limit}; {g.get('budget_source', '')}).")
    return lines


def _gate_lines(f: dict, teach: dict) -> list[str]:
    """Teacher replies rejected per gate (a problem may be retried, so replies > problems)."""
    if not teach:
        return [f"Teacher: {NOT_RUN}."]
    lines = [f"Solution source: `{teach.get('solution', 'generate')}`; {teach.get('teacher_tried', 0)} problems "
             f"sent to the teacher, {teach.get('pairs_written', 0)} pairs kept "
             f"({', '.join(f'{k}: {v}' for k, v in (teach.get('pairs_by_source') or {}).items()) or 'none'}).", "",
             "| gate | replies rejected |", "|---|---:|"]
    lines += [f"| {g} | {n} |" for g, n in f.get("rejected_by_gate", {}).items()]
    if teach.get("student_logprob_mean") is not None:
        lines += ["", f"Mean log-prob per token of kept solutions under the bare student prompt: "
                      f"{teach['student_logprob_mean']:.3f} (min {teach['student_logprob_min']:.3f})."]
    return lines


def collapse_flags(summaries: dict, base: str = "base", margin: float = 0.02) -> list[str]:
    """Trained models whose no-answer rate exceeds the base model's by more than ``margin``
    on a benchmark: the student may have learned to ramble instead of answering."""
    flags = []
    base_b = summaries.get(base, {}).get("benches", {})
    for label, s in summaries.items():
        if label == base:
            continue
        for bench, b in s.get("benches", {}).items():
            ref = base_b.get(bench, {}).get("no_answer_rate")
            got = b.get("no_answer_rate")
            if ref is not None and got is not None and got > ref + margin:
                flags.append(f"**{label}** on {bench}: no-answer rate {100 * got:.1f}% vs base {100 * ref:.1f}% "
                             f"(+{100 * (got - ref):.1f} pt > {100 * margin:.0f} pt): check its completions for "
                             "copied scaffolding or loops")
    return flags


def write_report(run: Run) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for ``run``; returns the report path."""
    from .compare import compare, load_results, load_summaries, markdown_tables

    plots = run.file("plots")
    plots.mkdir(parents=True, exist_ok=True)
    manifest = run.manifest()
    stages = manifest.get("stages", {})
    cfg = run.cfg
    title = cfg.report.title or f"SSB run `{cfg.name}`"
    md = [f"# {title}", "",
          f"Model: `{cfg.model.name_or_path}` · training data: `{cfg.data.source}`"
          f"{' (' + ', '.join(t.name for t in cfg.data.tasks) + ')' if cfg.data.tasks else ''}"
          f" · K = {cfg.rollout.k} · prompt examples: {len(cfg.prompt.examples)} · "
          f"eval: {', '.join(cfg.eval.benches)} (n = {cfg.eval.n}, T = {cfg.eval.temperature})", "",
          "## Stages", ""] + _stage_table(manifest) + [""]

    # -- benchmark first: it is what a reader looks for
    md += ["## Benchmarks", ""]
    summaries = load_summaries(run.file("eval"))
    if summaries:
        pairs = compare(run)
        md += ["Accuracy with its 95% interval (Wilson for greedy pass@1), the raw count, and how many "
               "points one problem is worth. Paired differences compare models on the same problems "
               "(exact McNemar test; Newcombe interval for paired proportions; paired bootstrap when "
               "n > 1 samples per problem). The exact test is conservative, so near p = 0.05 the "
               "interval may exclude 0 while p is just above 0.05.", "", markdown_tables(summaries, pairs), ""]
        rates = [f"| {label} | {bench} | {100 * b.get('no_answer_rate', 0):.1f}% | {100 * b.get('truncation_rate', 0):.1f}% |"
                 for label, s in sorted(summaries.items()) for bench, b in s.get("benches", {}).items()
                 if b.get("no_answer_rate") is not None]
        if rates:
            md += ["Collapse guard: no-answer and truncation rates per model.", "",
                   "| model | bench | no answer | truncated |", "|---|---|---:|---:|"] + rates + [""]
        md += [f"⚠ {x}" for x in collapse_flags(summaries)] + [""]
        _img(md, plot_accuracy(summaries, plots / "accuracy.png"), run, "accuracy")
        results = load_results(run.file("eval"))
        _img(md, plot_lengths(results, plots / "lengths.png"), run, "completion lengths")
    else:
        md += [f"Evaluation: {NOT_RUN}.", ""]

    # -- curation
    md += ["## Curation funnel", ""]
    f = funnel_counts(run)
    if f is None:
        md += [f"Rollouts: {NOT_RUN}.", ""]
    else:
        acc = f"{100 * f['rollout_accuracy']:.1f}%" if f["rollout_accuracy"] is not None else "—"
        pairs_txt = f"{f['pairs']} verified pairs" if f["pairs"] is not None else f"pairs: {NOT_RUN}"
        md += [f"{f['problems']} problems × K = {cfg.rollout.k} rollouts; per-rollout accuracy {acc}; "
               f"{f['mixed']} problems had both a correct and a wrong rollout; {pairs_txt}.", ""]
        _img(md, plot_funnel(f, plots / "funnel.png"), run, "curation funnel")
        md += _kv_table(stages.get("curate", {})) + [""]
        md += ["### Teacher gates", ""] + _gate_lines(f, stages.get("teacher", {})) + [""]

    # -- SSB training
    md += ["## SSB distillation", ""]
    train = read_jsonl(run.file("train_log.jsonl"))
    if train:
        _img(md, plot_curves(train, SSB_PANELS, "SSB student training", plots / "ssb_training.png"), run,
             "SSB training curves")
        md += _kv_table(stages.get("distill", {})) + [""]
    else:
        md += [f"Distillation: {NOT_RUN}.", ""]

    # -- GRPO
    md += ["## GRPO baseline", ""]
    glog = read_jsonl(run.file("grpo_log.jsonl"))
    if glog:
        budget = stages.get("grpo", {}).get("budget_tokens")
        hl = {"generated tokens (cumulative)": (budget, "SSB token budget")} if budget else None
        _img(md, plot_curves(glog, GRPO_PANELS, "GRPO (TRL) training", plots / "grpo_training.png", hl), run,
             "GRPO training curves")
    else:
        md += [f"GRPO: {NOT_RUN if cfg.grpo.enabled else '_disabled in the config_'}.", ""]
    md += ["### Compute budget", ""] + _budget_lines(manifest) + [""]

    path = run.file("report.md")
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    return path
