"""Renderers of ``ssb compare``'s results (``python -m bench.compare`` -> ``bench/results/compare.json``):
the arms with their compute, the verdict, the compute-accuracy curves, K sensitivity and output quality."""

from __future__ import annotations

import re

from .common import RESULTS, difference, interval, load, num, pct, runnable, source, table

NAMES = {"base": "base", "ssb": "SSB", "sft": "SFT (teacher's solutions, cross-entropy)",
         "rft": "RFT (own correct rollouts, cross-entropy)", "grpo": "GRPO",
         "sdft": "SDFT (on-policy self-distillation, hinted teacher)"}
PLOT = "docs/img/accuracy_vs_flops.png"  # python -m bench.plot_compare, from compare.json
UNTUNED = "compare_untuned.json"  # compare.json as it was before the tuned rerun (configured hyper-parameters)


def _flops(x: float | None) -> str:
    return "—" if not x else f"{x:.2e}"


def portable(command: str) -> str:
    """A recorded ``bench.compare`` command without its ``--dir`` when that names an absolute path of the
    machine it ran on: the comparison's default directory (``<runs_dir>/<name>-compare``) stands instead."""
    return re.sub(r" --dir /\S+", "", command)


def _compare_source(d: dict) -> str:
    note = ""
    trained = (d.get("trained_at_commit") or "")[:7]
    if trained and trained != (d.get("commit") or "")[:7]:
        note = (f"; its runs were trained at commit {trained}, later invocations resumed them "
                "(`invocations` in the file)")
    return source("compare.json", d, portable(runnable(d.get("command", "python -m bench.compare"))), note)


def _replicates(d: dict) -> str:
    """What the replicates varied: their seeds, and how many training problems they share with replicate 0
    (``training_shared_with_replicate_0``; for a comparison made before it was recorded, ``replicate_training``
    of its task in ``tasks.json``)."""
    shared = d.get("training_shared_with_replicate_0")
    task = next((t for t in load("tasks.json").get("tasks", []) if t.get("results") == "bench/results/compare.json"
                 and t.get("config") == d.get("config")), None)
    rt = (task or {}).get("replicate_training") or {}
    total = rt.get("training_problems")
    if shared is None:
        shared = dict(enumerate(rt.get("shared_with_replicate_0", []), 1))
    if not shared:
        return "other sampling and training seeds"
    total = total or (d.get("replicates") or [{}])[0].get("training_problems")
    counts = "/".join(str(v) for v in shared.values()) + (f" of {total}" if total else "")
    return f"other sampling, training and data seeds; their training problems share {counts} with replicate 0's"


def _name(arm: str, d: dict) -> str:
    if arm == "ssb":
        return f"SSB (`teacher.hint: {d.get('ssb_hint', '?')}`)"
    return NAMES.get(arm, f"`{arm}`")


def render_compare_main() -> str:
    d = load("compare.json")
    rows = []
    for arm, a in d["arms"].items():
        if "accuracy" not in a:
            rows.append([_name(arm, d), a.get("status", "—")] + [""] * 5)
            continue
        c = a.get("compute") or {}
        rows.append([_name(arm, d), f"**{pct(a['accuracy'])}** {interval(100 * a['ci'][0], 100 * a['ci'][1], signed=False)}",
                     difference(a.get("vs_base")), difference(a.get("vs_ssb")), _flops(c.get("flops")),
                     num(c.get("generated_tokens")), num(c.get("trained_tokens"))])
    head = (f"{d['n_problems']} held-out problems, greedy pass@1, {d['n_replicates']} replicates ({_replicates(d)}); "
            f"pooled = {_pooled_method(d)}. GRPO's budget: `{d.get('grpo_budget')}`. Compute: training FLOPs by "
            "`ledger.py`'s rule (mean over replicates), tokens generated and trained.")
    t = table(["arm", "held-out accuracy [95% CI]", "vs base", "vs SSB", "FLOPs", "generated tokens",
               "trained tokens"], rows, "lrrrrrr")
    verdict = "\n".join(f"- {v}" for v in d.get("verdict", []))
    return f"{head}\n\n{t}\n\n{verdict}\n{_timing_line(d)}\n\n{_compare_source(d)}"


def _pooled_method(d: dict) -> str:
    """How the pooled intervals were made, as the results file records it."""
    m = (d.get("interval_method") or {}).get("pooled")
    return (m or "mean over replicates, 95% interval from a bootstrap over held-out problems").rstrip(".")


def render_baselines_flops() -> str:
    """docs/baselines.md: each trained arm of the default task's comparison at its compute: pooled held-out
    accuracy, FLOPs and their ratio to SSB's, and the points of its curve (after each epoch, at each share
    of a budgeted arm's budget); the plot drawn from the same file."""
    d = load("compare.json")
    arms, curves = d["arms"], d.get("curves", {})
    ssb = ((arms.get("ssb") or {}).get("compute") or {}).get("flops")
    rows = []
    for arm, a in arms.items():
        if arm == "base" or "accuracy" not in a:
            continue
        f = (a.get("compute") or {}).get("flops")
        pts_ = ", ".join(f"{p['point']}: {_flops(p['flops'])} → {pct(p['accuracy'])}" for p in curves.get(arm, []))
        rows.append([_name(arm, d), f"{pct(a['accuracy'])} {interval(100 * a['ci'][0], 100 * a['ci'][1], signed=False)}",
                     difference(a.get("vs_ssb")), _flops(f), f"{f / ssb:.2f}×" if f and ssb else "—", pts_ or "—"])
    missing = [a for a in ("sft", "rft", "grpo", "sdft") if "accuracy" not in arms.get(a, {})]
    head = (f"The default task (`{d['config']}`), {d['n_problems']} held-out problems, {d['n_replicates']} replicates "
            f"pooled (base {pct(arms['base']['accuracy'])}); intervals: {_pooled_method(d)}. FLOPs by `ledger.py`'s "
            "rule, mean over replicates; GRPO and SDFT are held to SSB's. Curve points: e*: after epoch *, p*: at a "
            "share of the budget, half_pairs: SSB on half its pairs.")
    plot = f"\n\n![held-out accuracy against FLOPs]({PLOT.removeprefix('docs/')})" if _plot_exists() else ""
    gap = f"\n\nNot run in this comparison: {', '.join(missing)}." if missing else ""
    t = table(["arm", "held-out [95% CI]", "minus SSB", "FLOPs", "× SSB's", "curve: FLOPs → held-out"], rows, "lrrrrl")
    return f"{head}\n\n{t}{gap}{plot}\n\n{_compare_source(d)}"


def _plot_exists() -> bool:
    from .._meta import ROOT

    return (ROOT / PLOT).is_file()


def render_default_run_cost() -> str:
    """What each stage of the default config cost in replicate 0 of its comparison (README links here)."""
    d = load("compare.json")
    r0 = d["replicates"][0]
    cpus = ((d.get("provenance") or {}).get("machine") or {}).get("cpus")
    rows = [[s, num(v, 0)] for s, v in r0["seconds_by_stage"].items()]
    total = sum(v for s, v in r0["seconds_by_stage"].items())
    settings = f"`teacher.hint: {d.get('ssb_hint')}`, `grpo.budget: {d.get('grpo_budget')}`"
    return (f"Each stage of `{d['config']}` ({settings}) in replicate 0 of its comparison: every arm's training stages, no evaluation, seconds of wall-clock "
            f"on {cpus or '?'} CPU cores ({num(total / 60, 0)} min in all; `ssb run` trains SSB and GRPO, the "
            "baselines sft and rft only when `baselines.sft` / `baselines.rft` are on):\n\n"
            + table(["stage", "seconds"], rows) + "\n\n" + _compare_source(d))


def _timing_line(d: dict) -> str:
    tm = d.get("timing")
    if not tm:
        return ""
    top = list(tm["by_part"].items())[:4]
    parts = ", ".join(f"{k.removeprefix('stage:')} {v / 60:.0f} min" for k, v in top)
    return (f"- The whole comparison took {tm['total_seconds'] / 3600:.1f} h of wall-clock on this machine "
            f"({tm['evaluations']} evaluations); the largest parts: {parts}.")


def render_compare_details() -> str:
    d = load("compare.json")
    out = []
    rows = []
    for arm, pts_ in d.get("curves", {}).items():
        for p in pts_:
            what = {"final": "final", "half_pairs": "half the pairs"}.get(p["point"], p["point"])
            rows.append([_name(arm, d), what, _flops(p["flops"]),
                         f"{pct(p['accuracy'])} {interval(100 * p['ci'][0], 100 * p['ci'][1], signed=False)}"])
    out.append("Compute-accuracy points (e*: after epoch *, p*: at a share of GRPO's budget; FLOPs mean over "
               "replicates):\n\n" + table(["arm", "point", "FLOPs", "held-out accuracy [95% CI]"], rows, "llrr"))
    reach = d.get("reach", {})
    if reach:
        ns = list(next(iter(reach.values())).keys())
        out.append("Fewest FLOPs of a point at base + N points (— : no point gets there):\n\n" + table(
            ["arm", *ns], [[_name(a, d), *(_flops(v[n]) for n in ns)] for a, v in reach.items()], "l" + "r" * len(ns)))
    k, k_note = d.get("k_sensitivity"), ""
    if not k and (RESULTS / UNTUNED).is_file():  # the tuned rerun ran without it (--k-max 0): the last one measured
        u = load(UNTUNED)
        k = u.get("k_sensitivity")
        k_note = (f" From the comparison before the tuned rerun (`bench/results/{UNTUNED}`, commit "
                  f"{(u.get('commit') or '?')[:7]}: configured hyper-parameters, its own held-out draw); the tuned "
                  "rerun ran without it (`--k-max 0`).")
    if k:
        trained = {t["k"]: t for t in k.get("trained", [])}
        rows = [[str(y["k"]), num(y["with_both"]), pct(y["yield"]), pct(y["rollout_accuracy"]),
                 num(y["generated_tokens"]), num(trained.get(y["k"], {}).get("pairs")),
                 pct(trained[y["k"]]["accuracy"]) if y["k"] in trained and "accuracy" in trained[y["k"]] else ""]
                for y in k["yield"]]
        out.append(f"K sensitivity (replicate 0; one pass at K = {k['k_max']}, each problem's first K rollouts).{k_note}\n\n"
                   + table(["K", "problems with both", "yield", "rollout accuracy", "generated tokens",
                            "SSB pairs", "SSB held-out"], rows))
    rows = []
    for arm, a in d["arms"].items():
        q = a.get("output_quality")
        if q:
            rows.append([_name(arm, d), pct(q["states_equation"]), pct(q["equations_hold"]), pct(q["shows_work"]),
                         f"{q['mean_tokens']:.1f}" if q.get("mean_tokens") is not None else "—",
                         pct(q["no_answer_rate"])])
    out.append("Held-out answers (all replicates): share stating an equation, of those the share whose equalities "
               "all hold, share showing work, mean tokens, no answer:\n\n"
               + table(["arm", "states an equation", "equations hold", "shows work", "mean tokens", "no answer"], rows))
    reps = d.get("replicates", [])
    rows = [[str(r["replicate"]), num(r.get("pairs")), str((r.get("grpo") or {}).get("steps")),
             (r.get("grpo") or {}).get("stopped_by") or "—",
             pct((r["grpo"]["generation_seconds"] or 0) / r["grpo"]["train_seconds"])
             if (r.get("grpo") or {}).get("train_seconds") else "—"] for r in reps]
    out.append("Per replicate: SSB pairs, GRPO steps, why GRPO stopped, the share of GRPO's wall-clock spent "
               "generating and scoring completions:\n\n"
               + table(["replicate", "pairs", "GRPO steps", "stopped by", "GRPO generating"], rows))
    return "\n\n".join(out) + f"\n\n{_compare_source(d)}"


def render_compare_tuning() -> str:
    """docs/compare.md: the search of ``--tune`` (``tuning`` in compare.json): per arm its key, the trials'
    learning rates with their validation accuracy, the chosen value; the rule and the validation draw; which
    SSB loss is ``ssb_best``."""
    d = load("compare.json")
    tuning, proto = d.get("tuning"), d.get("tuning_protocol") or {}
    if not tuning:
        return "This comparison was not tuned: every arm ran at its configured hyper-parameters.\n\n" + _compare_source(d)
    rows = []
    for arm, t in tuning.items():
        chosen = t["chosen"]["lr"]
        trials = ", ".join(("**" if x["lr"] == chosen else "") + f"{x['lr']:.3g} → {pct(x['validation_accuracy'])}"
                           + ("**" if x["lr"] == chosen else "") for x in sorted(t["trials"], key=lambda x: x["lr"]))
        edge = len(t["trials"]) > len(t.get("grid") or [])
        rows.append([_name(arm, d), f"`{t['key']}`", f"{t['configured']:.3g}", str(len(t["trials"])) + (" (edge +1)" if edge else ""),
                     trials, f"**{chosen:.3g}**"])
    v = proto.get("validation") or {}
    base = proto.get("base_validation_accuracy")
    head = (f"Every trainable arm's learning rate, searched on replicate 0's training problems and scored greedy pass@1 "
            f"on {v.get('n', proto.get('validation_n', '?'))} validation problems (seed {v.get('seed', '?')}; "
            f"none in any replicate's training draw or in the held-out draw"
            + (f"; the base model: {pct(base)}" if base is not None else "") + "). "
            f"Rule: {proto.get('rule', '?')}.")
    t = table(["arm", "searched", "configured", "trials", "trials: lr → validation accuracy", "chosen"], rows, "llrrll")
    best = d.get("ssb_best")
    tail = ""
    if best:
        cands = (best.get("choice") or {}).get("candidates") or {}
        n = sum(c.get("trials", 0) for c in cands.values())
        tail = (f"\n\nSSB's best loss on validation (`ssb_best`): {_name(best['arm'], d)}, held-out {pct(best.get('accuracy'))}. "
                f"It was picked among {len(cands)} SSB losses with {n} trials together, so SSB as a family had more "
                "trials than any other arm: a win of `ssb_best` carries that advantage, a loss does not.")
    return f"{head}\n\n{t}{tail}\n\n{_compare_source(d)}"


def render_grpo_generation() -> str:
    return _generation("grpo")


def render_sdft_generation() -> str:
    return _generation("sdft")


def _generation(stage: str) -> str:
    """``bench/results/<stage>_generation.json``: TRL's sampler against ssb's engine in one stage's steps."""
    f = f"{stage}_generation.json"
    d = load(f)
    last = ("mean reward", "reward_mean") if stage == "grpo" else ("mean distillation loss", "distillation_loss_mean")
    rows = [[str(v["batch_size"]), f"`{v['generator']}`", str(v["steps"]), pct(v["generation_share"]),
             f"{v['generation_completions_per_s']:.2f}", f"{v['generation_tokens_per_s']:.0f}",
             f"{v['step_seconds_median']:.1f} s", f"{v[last[1]]:.{2 if stage == 'grpo' else 4}f}"]
            for v in d["variants"]]
    t = table(["completions per step", "sampler", "steps", "time generating", "completions/s generating",
               "tokens/s generating", "median step", last[0]], rows, "llrrrrrr")
    ratios = "; ".join(f"{b} per step: ssb's engine {r['generation_completions_per_s']:.2f}x the completions per "
                       f"second of generation, median step {r['step_seconds']:.2f}x" for b, r in d["ratios"].items())
    load_avg = d.get("load_average_at_write")
    note = f" Load average when written: {load_avg[0]:.1f}." if load_avg else ""
    st = d["settings"]
    cmd = (f"python -m bench.grpo_generation{' --stage sdft' if stage == 'sdft' else ''}"
           f"{' --upstream ' + st['upstream'] if st.get('upstream') else ''} --steps {st['steps']} --batch-sizes "
           + ",".join(sorted({str(v['batch_size']) for v in d['variants']}, key=int)))
    return f"{t}\n\n{ratios}.{note}\n\n{source(f, d, cmd)}"


def render_task_base() -> str:
    d = load("task_base.json")
    lo, hi = d["range"]
    rows = []
    for t in d["tasks"]:
        q = t["output_quality"]
        opts = "; ".join(f"`{x['name']}` " + ", ".join(f"{k}={v}" for k, v in (x.get("options") or {}).items())
                         for x in t["task"])
        rows.append([f"`{t['config']}`", opts, f"**{pct(t['accuracy'])}** {interval(100 * t['ci'][0], 100 * t['ci'][1], signed=False)}",
                     "yes" if t["in_range"] else "no", pct(q["equations_hold"]), pct(q["no_answer_rate"])])
    t = table(["config", "reasoning-gym task", "base greedy accuracy [95% CI]",
               f"in range ({pct(lo, 0)}–{pct(hi, 0)})", "equations hold", "no answer"], rows, "llrrrr")
    drawn = (f", drawn as `ssb compare` draws them (seed {d['seed']}, deduplicated against {d['replicates']} "
             "replicates' training problems)") if d.get("replicates") else ""
    return (f"{t}\n\n{d['n']} held-out problems per task{drawn}, greedy pass@1 with the config's prompt.\n\n"
            + source("task_base.json", d, f"python -m bench.task_base --n {d['n']}"))
