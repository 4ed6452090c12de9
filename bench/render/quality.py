"""Renderers of ``python -m bench.quality``'s results: base, SSB and GRPO pooled; the hint arms; the default run's cost."""

from __future__ import annotations

from ssb.report.stats import reading

from .common import difference, interval, load, mean, num, pct, pts, source, table


QUALITY_COMMAND = "python -m bench.quality"
HINT_WORDS = {"answer": "the verified final answer", "correct": "a verified correct rollout",
              "contrastive": "a correct and the most common wrong rollout (the paper)",
              "none": "nothing: the bare question (the control)"}


def verdict(a: str, b: str, d: dict | None) -> str:
    """What a pooled difference ``a − b`` says, in words that follow its interval."""
    if not d:
        return f"{a} vs {b}: not measured"
    word = {"above": f"{a} is ahead of {b}", "below": f"{a} is behind {b}",
            "level": f"{a} and {b} are not distinguishable here (the interval holds zero)"}[reading(d["ci"])]
    return f"{word}: {difference(d)}"


def _per_rep(d: dict | None) -> str:
    if not d or not d.get("per_replicate"):
        return "—"
    return "; ".join(f"{pts(100 * r['value'])} ({r['a_only']} fixed / {r['b_only']} broken, p = {r['p_value']:.3f})"
                     for r in d["per_replicate"])


def _quality_source(d: dict) -> str:
    prov = d["provenance"]
    code_dirty = [p for p in prov.get("dirty_paths", []) if p.startswith(("src/", "configs/", "bench/quality.py"))]
    note = ""
    if prov.get("dirty") and not code_dirty:
        note = " (the uncommitted changes were docs and other benches, not the code or config that ran)"
    lrs = ",".join(f"{c['lr']:g}" for c in d["grpo"]["selection"]["candidates"])
    cmd = (f"{QUALITY_COMMAND} --replicates {d['n_replicates']} --n {d['n_problems']} "
           f"--arms {','.join(d['arms'])} --grpo-lrs {lrs}")
    trained = (d.get("trained_at_commit") or "")[:7]
    if trained and trained != (d.get("commit") or "")[:7]:
        note += (f"; its runs were trained at commit {trained}, and later invocations resumed them "
                 "(evaluations added, tables re-aggregated; `invocations` in the file)")
    return source("quality.json", d, cmd, note)


def render_quality_main() -> str:
    d = load("quality.json")
    names = {"base": "base", "ssb": f"SSB (`teacher.hint: {d['ssb_settings']['hint']}`)", "grpo": "GRPO"}
    rows = []
    for m, v in d["models"].items():
        per = ", ".join(pct(a) for a in v["per_replicate_accuracy"])
        rows.append([names.get(m, m), f"**{pct(v['accuracy'])}**", interval(100 * v["ci"][0], 100 * v["ci"][1],
                     signed=False), per, pct(v["no_answer_rate"])])
    diffs = [[label, f"**{difference(d[key])}**", _per_rep(d[key])] for label, key in
             (("SSB − base", "diff_ssb_base"), ("SSB − GRPO", "diff_ssb_grpo"), ("GRPO − base", "diff_grpo_base"))
             if d.get(key)]
    sel = d["grpo"]["selection"]
    cands = ", ".join(f"{c['lr']:g}: {pct(c['val_accuracy'])}" for c in sel["candidates"])
    reps = d["replicates"]
    compute = table(["replicate", "SSB seconds", "SSB generated tokens", "GRPO seconds", "GRPO steps",
                     "GRPO completions", "GRPO generated tokens"],
                    [[str(r["replicate"]), num(r["ssb"]["seconds"], 0), num(r["ssb"]["generated_tokens"]),
                      num(r["grpo"]["seconds"], 0), num(r["grpo"]["steps"]), num(r["grpo"]["completions"]),
                      num(r["grpo"]["generated_tokens"])] for r in reps])
    task = ", ".join(t["name"] for t in d["holdout"]["task"])
    lines = [
        f"{d['n_problems']} held-out `{task}` problems, greedy pass@1, {d['n_replicates']} replicates "
        "(other sampling and training seeds; their training problems were drawn at data seeds one apart, which "
        "reasoning-gym turns into the same problems shifted by one, so they share nearly all of them: "
        "see docs/compare.md); pooled = mean over replicates, 95% interval from a bootstrap "
        "over held-out problems.",
        "",
        table(["model", "accuracy", "95% CI", "per replicate", "no answer"], rows),
        "",
        table(["paired difference", "pooled", "per replicate (Newcombe, exact McNemar)"], diffs, "llr"),
        "",
        "In words: " + "; ".join(verdict(x, y, d.get(k)) for x, y, k in (
            ("SSB", "the base", "diff_ssb_base"), ("SSB", "GRPO", "diff_ssb_grpo"),
            ("GRPO", "the base", "diff_grpo_base"))) + ".",
        "",
        f"GRPO's learning rate, chosen on {d['validation']['n']} validation problems (never the held-out ones; "
        f"accuracy per candidate: {cands}): **{sel['chosen_lr']:g}**, schedule `{d['grpo']['settings']['lr_scheduler']}`, "
        f"budget `{d['grpo']['settings']['budget']}`. What each side spent:",
        "",
        compute,
        "",
        _quality_source(d),
    ]
    return "\n".join(lines)


def render_quality_arms() -> str:
    d = load("quality.json")
    rows = []
    for hint, a in d["arms"].items():
        if "accuracy" not in a:
            continue
        name = f"`{hint}`" + (" (the config's when run)" if a["config_default"] else "")
        val = a.get("validation_accuracy")
        rows.append([name, HINT_WORDS.get(hint, hint), ", ".join(str(p) for p in a["pairs"]),
                     pct(mean(val)) if val else "—", pct(a["accuracy"]),
                     difference(a["vs_base"]), difference(a["vs_grpo"]), difference(a.get("vs_config_default"))])
    base_val = d["validation"]["base_accuracy"]
    lines = [table(["`teacher.hint`", "the hinted prompt shows", "pairs per replicate",
                    f"validation (base {pct(base_val)})", "held-out accuracy", "vs base", "vs GRPO",
                    "vs the config's hint when run"], rows, "llrrrrrr"),
             "",
             "In words: " + "; ".join(
                 verdict(f"`{h}`", "the base", a["vs_base"]) + ", " + verdict(f"`{h}`", "GRPO", a["vs_grpo"])
                 for h, a in d["arms"].items() if "accuracy" in a) + ".",
             "",
             f"Each arm trained on every replicate's rollouts (the same problems), evaluated on the same "
             f"{d['n_problems']} held-out problems; differences pooled over replicates with 95% bootstrap intervals.",
             "",
             _quality_source(d)]
    return "\n".join(lines)


def render_default_run() -> str:
    d = load("quality.json")
    r0 = d["replicates"][0]
    by = r0["ssb"]["seconds_by_stage"]
    rows = [[s, num(v, 0)] for s, v in by.items()] + [["GRPO (the baseline, `grpo.budget`)", num(r0["grpo"]["seconds"], 0)]]
    then = f"`teacher.hint: {d['ssb_settings']['hint']}`, `grpo.budget: {d['grpo']['settings']['budget']}`"
    lines = ["What the default config's training stages cost on this machine (replicate 0 of the quality "
             f"benchmark, `ssb run configs/default.yaml` without its evaluations), seconds, with the default config "
             f"as it was then ({then}); today's: [Compare](#what-each-stage-of-the-default-run-costs):",
             "", table(["stage", "seconds"], rows), "", _quality_source(d)]
    return "\n".join(lines)
