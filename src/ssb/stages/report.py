"""`ssb report --run runs/NAME`: ``report.md`` and PNG plots of what happened in a run.

Everything is read from the run directory (manifest, rollouts, pairs, training logs,
eval files); any stage that has not run is shown as "not run" instead of failing:

* curation funnel: problems -> problems with both a correct and a wrong rollout (and,
  with ``curate.keep: any_wrong``, those kept with only wrong ones) -> verified teacher
  pairs (plus the rollout outcome mix);
* SSB training curves (loss / KD, grad norm, answer tokens per example) from ``train_log.jsonl``;
* GRPO reward and completion length per step from ``grpo_log.jsonl``, and the token budget;
* the benchmark table base / GRPO / SSB with 95% intervals and paired differences,
  an accuracy bar chart with error bars, and completion lengths per model.

It also writes the model card ``README.md`` of each trained adapter (``student/``, ``grpo/``;
``report/modelcard.py``): the report runs last and sees every eval.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..grading.gates import GATES
from ..report.funnel import rollout_counts
from ..report.modelcard import write_model_card
from ..report.paired import compare, load_results, load_summaries, markdown_tables
from ..report.plots import GRPO_PANELS, SSB_PANELS, plot_accuracy, plot_curves, plot_funnel, plot_lengths
from ..report.replicated import one_run_lines
from ..rundir.jsonl import atomic_write_text, read_jsonl
from ..rundir.run import Run, total_seconds
from ..rundir.table import STAGES, stage_names

log = logging.getLogger(__name__)

NOT_RUN = "_not run_"


def _num(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


# ----------------------------------------------------------------------------- curation funnel


def funnel_counts(run: Run) -> dict | None:
    """Counts from ``rollouts.jsonl`` (:func:`funnel.rollout_counts`) / ``pairs.jsonl``; None
    when rollouts never ran."""
    rollouts = read_jsonl(run.file("rollouts.jsonl"))
    if not rollouts:
        return None
    c = rollout_counts(rollouts, run.cfg.curate.no_answer_is_wrong)
    pairs = read_jsonl(run.file("pairs.jsonl"))
    cur, teach = run.stage("curate"), run.stage("teacher")
    return {
        "problems": c["problems"],
        "rollouts": c["rollouts"],
        "rollout_accuracy": c["outcomes"].get("correct", 0) / c["rollouts"] if c["rollouts"] else None,
        "outcomes": c["outcomes"],
        "with_correct": c["with_correct"],
        "with_wrong": c["with_wrong"],
        # curate's own count when it ran (the same count, as the curate stage last saw the rollouts)
        "mixed": cur.get("with_both", c["with_both"]),
        "kept_without_correct": cur.get("kept_without_correct") if run.cfg.curate.keep == "any_wrong" else None,
        "teacher_tried": teach.get("teacher_tried"),
        "pairs": len(pairs) if run.file("pairs.jsonl").exists() else None,
        "rejected_by_gate": teach.get("replies_rejected_by_gate") or {},
    }


# ----------------------------------------------------------------------------- markdown


def _stage_table(manifest: dict, cfg=None) -> list[str]:
    stages = manifest.get("stages", {})
    lines = ["| stage | status | seconds |", "|---|---|---|"]
    names = stage_names()
    off = {s.name: s.off_setting for s in STAGES if cfg is not None and not s.enabled(cfg)}
    for name in names + tuple(s for s in stages if s not in names):
        if name == "report":
            continue
        st = stages.get(name)
        if st is None and name in off:
            lines.append(f"| {name} | off (`{off[name]}`) | |")
        elif st is None:
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
    ssb_stages = stage_names(counts_toward_ssb_cost=True)
    ssb_secs = sum(total_seconds(st.get(s, {})) or 0 for s in ssb_stages)
    g = st.get("grpo", {})
    ssb_flops = (manifest.get("compute") or {}).get("arms", {}).get("ssb", {}).get("flops")
    ssb_flops = "—" if ssb_flops is None else f"{ssb_flops:.3g}"
    lines = [f"| | SSB ({' + '.join(ssb_stages)}) | GRPO |", "|---|---|---|",
             f"| generated tokens | {_num(ssb_total)} | {_num(g.get('generated_tokens'))} |",
             f"| FLOPs (ledger below) | {ssb_flops} | {g['flops']:.3g} |" if g.get("flops") is not None else "",
             f"| wall-clock seconds (all invocations) | {_num(round(ssb_secs, 1)) if ssb_secs else '—'} "
             f"| {_num(total_seconds(g))} |",
             f"| optimizer steps | {_num(st.get('distill', {}).get('steps') or st.get('distill', {}).get('global_step'))} "
             f"| {_num(g.get('steps'))} |"]
    lines = [x for x in lines if x]
    if g.get("generation_seconds") is not None and g.get("train_seconds"):
        lines.append(f"\nGRPO's wall-clock: {g['generation_seconds'] / g['train_seconds']:.0%} generating and "
                     "scoring completions, the rest training.")
    if g.get("stopped_by"):
        if g.get("budget_flops") is not None:
            limit = f"{g['budget_flops']:.3g} FLOPs"
        elif g.get("budget_seconds") is not None:
            limit = f"{_num(round(g['budget_seconds'], 1))} s"
        elif g.get("budget_tokens") is not None:
            limit = f"{_num(g['budget_tokens'])} tokens"
        else:
            limit = "no budget"
        lines.append(f"\nGRPO stopped by: {g['stopped_by']} ({limit}; {g.get('budget_source', '')}).")
    return lines


def _gate_lines(f: dict, teach: dict) -> list[str]:
    """Teacher replies rejected per gate (a problem may be retried, so replies > problems), each
    with what it rejects (:data:`gates.GATES`)."""
    if not teach:
        return [f"Teacher: {NOT_RUN}."]
    by_source = ", ".join(f"{k}: {v}" for k, v in (teach.get("pairs_by_source") or {}).items()) or "none"
    unsolved = "" if teach.get("pairs_without_correct") is None else (  # curate.keep=any_wrong
        f"; {teach['pairs_without_correct']} of {teach.get('tried_without_correct')} problems without a correct "
        "rollout got a pair")
    lines = [f"Solution source: `{teach.get('solution', 'generate')}`; {teach.get('teacher_tried', 0)} problems "
             f"sent to the teacher, {teach.get('pairs_written', 0)} pairs kept ({by_source}){unsolved}.", "",
             "| gate | replies rejected | what it rejects |", "|---|---:|---|"]
    lines += [f"| {g} | {n} | {GATES.get(g, '')} |" for g, n in f.get("rejected_by_gate", {}).items()]
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


def _ledger_lines(run: Run) -> list[str]:
    """The compute ledger (``report/ledger.py``) per arm, also saved to the manifest under ``compute``."""
    from ..report.ledger import KINDS, ledger  # lazy: the parameter count imports torch

    try:
        led = ledger(run)
    except (OSError, ValueError) as exc:  # the model's config cannot be read: no FLOPs
        log.warning("[report] no compute ledger: %s", exc)
        return []
    run.update_manifest(compute=led)
    if not led["arms"]:
        return []
    lines = ["| arm (stages it pays for) | FLOPs | " + " | ".join(k.replace("_", " ") for k in KINDS)
             + " | seconds |", "|---|" + "---:|" * (len(KINDS) + 2)]
    for arm, a in led["arms"].items():
        lines.append(f"| {arm} ({' + '.join(a['stages'])}) | {a['flops']:.3g} | "
                     + " | ".join(_num(a[k]) for k in KINDS) + f" | {_num(round(a['seconds'], 1))} |")
    return lines + ["", f"FLOPs: {led['rule']}."]


def _rounds_lines(run: Run) -> list[str]:
    """Bootstrapping rounds (``rounds/rounds.json``): funnel, collapse figures and accuracy per round."""
    f = run.file("rounds/rounds.json")
    if not f.is_file():
        return []
    doc = json.loads(f.read_text())

    def pct(x):
        return "—" if x is None else f"{100 * x:.1f}%"

    md = ["## Rounds", "", f"{len(doc['rounds'])} of {doc['n']} rounds ran ({doc['merge']}; problems: "
          f"{doc['problems']}). Rollouts are the round's model before it trains; validation is a draw of its own "
          "(the stop rule's), never the held-out problems.", "",
          "| round | problems | rollout acc. | with both | pairs | rollout no answer | rollout tokens | validation | "
          "val. no answer | val. tokens | held-out | cumulative FLOPs |", "|" + "---:|" * 12]
    for r in doc["rounds"]:
        v, h = r.get("validation") or {}, r.get("heldout") or {}
        fl = f"{r['cumulative_flops']:.3g}" if r.get("cumulative_flops") else "—"
        md.append(f"| {r['round']} | {r['problems']} | {pct(r['rollout_accuracy'])} | {r['with_both']} | {r['pairs']} | "
                  f"{pct(r['rollout_no_answer_rate'])} | {r['rollout_mean_tokens']} | {pct(v.get('accuracy'))} | "
                  f"{pct(v.get('no_answer_rate'))} | {v.get('mean_tokens', '—')} | {pct(h.get('accuracy'))} | "
                  f"{fl} |")
    stop = doc.get("stopped")
    md += ["", f"Stopped after round {stop['after_round']}: {stop['reason']}." if stop else "No stop.",
           f"Best round on validation: {doc['best_round_on_validation']}.", ""]
    return md


def write_report(run: Run) -> Path:
    """Write ``report.md`` and ``plots/*.png`` for ``run``; returns the report path."""
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
          "## Stages", ""] + _stage_table(manifest, cfg) + [""]

    # -- benchmark first: it is what a reader looks for
    md += ["## Benchmarks", ""]
    summaries = load_summaries(run.file("eval"))
    if summaries:
        pairs = compare(run)
        n_cmp = max((sum(r["bench"] == b for r in pairs) for b in {r["bench"] for r in pairs}), default=0)
        holm = (f" `p` is one comparison's; with {n_cmp} comparisons per benchmark, `p Holm` is the same p "
                "adjusted for all of them (Holm's step-down), the one to read when picking a model; the "
                "intervals are not adjusted.") if n_cmp > 1 else ""
        md += one_run_lines(run)
        md += ["Accuracy with its 95% interval (Wilson for greedy pass@1), the raw count, and how many "
               "points one problem is worth. Paired differences compare models on the same problems "
               "(exact McNemar test; Newcombe interval for paired proportions; paired bootstrap when "
               "n > 1 samples per problem). The exact test is conservative, so near p = 0.05 the "
               f"interval may exclude 0 while p is just above 0.05.{holm}", "", markdown_tables(summaries, pairs), ""]
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
        unsolved = "" if f["kept_without_correct"] is None else (
            f"; {f['kept_without_correct']} problems with only wrong rollouts kept too "
            "(`curate.keep: any_wrong`, the gold answer as hint)")
        md += [f"{f['problems']} problems × K = {cfg.rollout.k} rollouts; per-rollout accuracy {acc}; "
               f"{f['mixed']} problems had both a correct and a wrong rollout{unsolved}; {pairs_txt}.", ""]
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

    md += _rounds_lines(run)

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
    ledger_lines = _ledger_lines(run)  # saves the ledger to the manifest first
    md += ["### Compute budget", ""] + _budget_lines(run.manifest()) + [""] + ledger_lines + [""]

    path = run.file("report.md")
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    # a model card in every trained adapter (student/: ssb, grpo/: grpo), now that every eval is in
    for s in STAGES:
        if s.is_eval and s.adapter and (run.file(s.adapter) / "adapter_config.json").is_file():
            log.info("[report] model card: %s", write_model_card(run, run.file(s.adapter), s.label))
    return path
