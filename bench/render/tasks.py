"""Renderers of the task suite (``python -m bench.tasks`` -> ``bench/results/tasks.json``): one row per task
(README), and per task its replicates and the quality of its held-out answers (docs/tasks.md)."""

from __future__ import annotations

from ssb.report.stats import reading

from .common import difference, interval, load, num, pct, pts, source, table

SHORT = {"base": "base", "ssb": "SSB", "sft": "SFT", "rft": "RFT", "grpo": "GRPO", "sdft": "SDFT"}
READ = {"above": "beats", "level": "is level with", "below": "is below"}  # stats.reading of an interval


def _diff(d: dict) -> str:
    """A difference, in bold where it is significant (its interval excludes 0)."""
    return f"**{difference(d)}**" if d["significant"] else difference(d)


def _acc(a: dict) -> str:
    return pct(a["value"])


def _words(s: dict, other: str) -> str:
    parts = [f"{len(s[k])} {w}" for k, w in (("above", "above"), ("level", "level (interval holds 0)"),
                                               ("below", "below")) if s[k]]
    return f"vs {other}: " + ", ".join(parts)


def _working(w: dict | None) -> str:
    """A replicate's pairs: checked equalities per solution / share with 2+ / share copied from the shown rollout."""
    if not w or w.get("equalities_per_solution") is None:
        return "—"
    return f"{w['equalities_per_solution']:.2f} / {pct(w['multi_step_share'], 0)} / {pct(w['copies_of_shown_rollout'], 0)}"


def _rejected(r: dict) -> str:
    """A replicate's rejected teacher replies: wrong answer (verified) / false working (consistent) / any other gate."""
    g = r.get("teacher_rejected_by_gate")
    if not g:
        return "—"
    other = sum(v for k, v in g.items() if k not in ("verified", "consistent"))
    return f"{g.get('verified', 0)} / {g.get('consistent', 0)} / {other}"


def _shared(tasks: list[dict]) -> str:
    """How much the replicates' training problems overlap (``replicate_training``), in words."""
    parts = [f"`{t['name']}` {'/'.join(map(str, t['replicate_training']['shared_with_replicate_0']))} of "
             f"{t['replicate_training']['training_problems']}" for t in tasks if t.get("replicate_training")]
    return ("Training problems the replicates share with replicate 0: " + ", ".join(parts) + " (replicates drawn at data "
            "seeds one apart, as the untuned comparisons' were, share nearly all: they measure sampling and training "
            "randomness, not the draw of problems; see docs/compare.md).") if parts else ""


def render_tasks_main() -> str:
    d = load("tasks.json")
    rows = []
    for t in d["tasks"]:
        a = t["accuracy"]
        name = f"`{t['name']}`" + ("" if t["in_range"] else " (base below range)" if t["base_accuracy"] < d["range"][0]
                                   else " (base above range)")
        best = t.get("ssb_best")
        rows.append([name, "yes" if t["multi_step"] else "no", pct(t.get("pairs_multi_step_share"), 0),
                     *(_acc(a[k]) if k in a else "—" for k in ("base", "ssb", "sft", "rft", "grpo", "sdft")),
                     pct(best["value"]) + ("" if best["arm"] == "ssb" else "¹") if best else "—",
                     _diff(t["ssb_base"]), _diff(t["ssb_grpo"]), _diff(t["ssb_sft"])])
    n = d["tasks"][0]["n_problems"]
    reps = sorted({len(t["replicates"]) for t in d["tasks"]})
    head = (f"{n} held-out problems per task, greedy pass@1, {'/'.join(map(str, reps))} replicates pooled; "
            "differences are SSB minus the other arm with a 95% interval, in bold where it excludes 0"
            + (" (" + ", ".join(f"`{t['name']}`" for t in d["tasks"] if t.get("tuning")) + ", tuned: a bootstrap over "
               "replicates and held-out problems; the others: over held-out problems)"
               if any(t.get("tuning") for t in d["tasks"]) else " (a bootstrap over held-out problems)") + ". "
            "GRPO held to SSB's FLOPs; every arm on the same problems, prompt and LoRA. " + _shared(d["tasks"]))
    t = table(["task", "multi-step", "pairs with 2+ steps", "base", "SSB", "SFT", "RFT", "GRPO", "SDFT", "SSB best",
               "SSB − base", "SSB − GRPO", "SSB − SFT"], rows, "llrrrrrrrrrrr")
    s = d["summary"]
    tally = "; ".join(_words(s[k], o) for k, o in (("ssb_base", "base"), ("ssb_grpo", "GRPO"), ("ssb_sft", "SFT"),
                                                      ("ssb_rft", "RFT")))
    return (f"{head}\n\n{t}\n\nSSB across the {d['n_tasks']} tasks, {tally}.\n\n{best_sentences(d['tasks'])}\n\n"
            + source("tasks.json", d, "python -m bench.tasks", " (each task's comparison: its `results` file)"))


def best_sentences(tasks: list[dict]) -> str:
    """Per task, whether SSB's best loss (chosen on validation among the paper's loss and its variants)
    beats SFT and GRPO at matched compute, read from its intervals; tasks without a tuned rerun say so."""
    out, unmeasured = [], [f"`{t['name']}`" for t in tasks if not t.get("ssb_best")]
    for t in tasks:
        b = t.get("ssb_best")
        if not b:
            continue
        c = t.get("ssb_best_choice") or {}
        which = ("the paper's loss" if b["arm"] == "ssb" else f"`{b['arm']}`") + (
            f" (validation {pct(c['validation_accuracy'])} against the paper loss's {pct(c['paper']['validation_accuracy'])}"
            f", of {len(c.get('candidates', {}))} SSB losses)" if c else "")
        vs = [f"{READ[reading(t[k]['ci'])]} {o} ({difference(t[k])})" for k, o in
              (("ssb_best_sft", "SFT"), ("ssb_best_grpo", "GRPO"), ("ssb_best_sdft", "SDFT")) if t.get(k)]
        out.append(f"`{t['name']}`: SSB's best loss on validation is {which}; on the held-out problems it "
                   + ", ".join(vs) + ".")
    if unmeasured:
        out.append(f"SSB's loss variants (SSB best) not measured on {', '.join(unmeasured)}: "
                   f"{'its comparison predates' if len(unmeasured) == 1 else 'their comparisons predate'} the tuned rerun.")
    return ("¹ a loss variant, not the paper's. " if any((t.get("ssb_best") or {}).get("arm", "ssb") != "ssb"
                                                          for t in tasks) else "") + " ".join(out)


def render_tasks_changes() -> str:
    """docs/tasks.md: what the tuned rerun changed, per task and arm: pooled held-out accuracy and SSB minus
    the arm, before (``tasks_untuned.json``: configured hyper-parameters, 2 replicates) and after
    (``tasks.json`` where the task's comparison has ``tuning``); a task not rerun yet says so."""
    now, before = load("tasks.json"), load("tasks_untuned.json")
    old = {t["name"]: t for t in before["tasks"]}
    from ..suite_rerun import TASKS as RERUN  # the tasks the rerun covers (products stays as it was)

    rows, waiting = [], []
    for t in [t for t in now["tasks"] if t["name"] in {r[0] for r in RERUN}]:
        o = old.get(t["name"])
        if not o or not t.get("tuning"):
            waiting.append(f"`{t['name']}`")
            continue
        for arm in ("base", "ssb", "sft", "rft", "grpo", "sdft"):
            a, b = (o["accuracy"].get(arm) or {}).get("value"), (t["accuracy"].get(arm) or {}).get("value")
            chosen = (t["tuning"].get(arm) or {}).get("chosen", {}).get("lr")
            d_old, d_new = o.get(f"ssb_{arm}"), t.get(f"ssb_{arm}")
            rows.append([f"`{t['name']}`", SHORT[arm], pct(a), pct(b),
                         pts(100 * (b - a)) if a is not None and b is not None else "—",
                         f"{chosen:.3g}" if chosen else "—", (_diff(d_old) if "significant" in d_old else difference(d_old)) if d_old and arm != "ssb" else "—",
                         _diff(d_new) if d_new and arm != "ssb" else "—"])
    head = ("Each rerun task's arms before the rerun (`bench/results/tasks_untuned.json`: the configured "
            "hyper-parameters, 2 replicates, most tasks' replicates on nearly the same training problems) and "
            "after it (every arm's learning rate chosen on a validation draw, 3 replicates on independent draws, "
            "intervals over replicates and problems). The held-out draws differ too: the rerun's also excludes the "
            "validation draw and the independent training draws, so every arm's accuracy, the base model's included, "
            "moved with the draw; SSB minus each arm, measured within one comparison, is what compares across the two.")
    t = table(["task", "arm", "held-out before", "after", "change", "learning rate chosen", "SSB − arm before",
               "SSB − arm after"], rows, "llrrrrrr") if rows else ""
    time = "\n".join(_time_line(t) for t in now["tasks"] if t["name"] in {r[0] for r in RERUN} and t.get("tuning")
                     and t.get("hours_by_part"))
    tail = f"Not rerun yet: {', '.join(waiting)} (`python -m bench.suite_rerun --run TASK`)." if waiting else ""
    return "\n\n".join(x for x in (head, t, time, tail, source("tasks.json", now, "python -m bench.tasks")) if x)


def _time_line(t: dict) -> str:
    """Where one task's tuned comparison spent its wall-clock (this CPU, every invocation summed)."""
    parts = sorted(t["hours_by_part"].items(), key=lambda kv: -kv[1])
    top = ", ".join(f"{k.removeprefix('stage:')} {v:.1f} h" for k, v in parts if v >= 0.05)
    return f"- `{t['name']}`'s tuned comparison took {t['hours']:.1f} h of wall-clock on this CPU: {top}."


def render_tasks_details() -> str:
    d = load("tasks.json")
    out = []
    for t in d["tasks"]:
        rows = [[str(r["replicate"]), str(r["pairs"]), _working(r.get("pair_working")), _rejected(r),
                 pct(r["rollout_accuracy"]),
                 *(pct(r["accuracy"].get(k)) for k in ("base", "ssb", "sft", "rft", "grpo", "sdft")),
                 difference(r["ssb_base"]),
                 f"{r['ssb_base']['p_value']:.3f}" if r["ssb_base"].get("p_value") is not None else "—"]
                for r in t["replicates"]]
        reps = table(["replicate", "pairs", "pairs' steps / 2+ steps / copies", "teacher replies rejected: wrong / "
                      "false working / other", "rollout accuracy", "base", "SSB", "SFT", "RFT", "GRPO", "SDFT",
                      "SSB − base (Newcombe 95%)", "McNemar p"], rows, "lrrrrrrrrrrrr")
        q = t["output_quality"]
        qrow = [[SHORT[k], pct(q[k]["equations_hold"]),
                 f"{q[k]['equalities_per_answer']:.2f}" if "equalities_per_answer" in q[k] else "—",
                 pct(q[k].get("equalities_hold")), f"{q[k]['mean_tokens']:.1f}", pct(q[k]["no_answer_rate"]),
                 f"{t['flops'][k]:.2e}" if t["flops"].get(k) else "—"] for k in SHORT if q.get(k)]
        qt = table(["arm", "answers whose equations hold", "equalities per answer", "equalities that hold",
                    "mean tokens", "no answer", "FLOPs"], qrow)
        ratio = f"{t['grpo_flops_ratio']:.2f}x" if t.get("grpo_flops_ratio") else "—"
        out.append(f"### `{t['name']}` (`{t['config']}`)\n\n{t['why'][0].upper() + t['why'][1:]}. "
                   f"Base {pct(t['base_accuracy'])} {interval(100 * t['base_ci'][0], 100 * t['base_ci'][1], signed=False)}; "
                   f"SSB − RFT {_diff(t['ssb_rft'])}; GRPO spent {ratio} SSB's FLOPs. Full results: "
                   f"`{t['results']}`.\n\n{reps}\n\nHeld-out answers, all replicates (of the answers stating an "
                   f"equation, the share whose equalities all hold; the equalities checked per answer, and the "
                   f"share of them that hold):\n\n{qt}")
    return "\n\n".join(out) + "\n\n" + source("tasks.json", d, "python -m bench.tasks")


def _setting(t: dict) -> str:
    return (f"{t['training_problems']} training problems" + (f" (`{' '.join(t['overrides'])}`)" if t.get("overrides") else "")
            + f", {t['n_problems']} held-out problems, {t['n_replicates']} replicates pooled"
            + "".join(f" (replicate {i} shares {k} of its training problems with replicate 0)"
                      for i, k in (t.get("training_shared_with_replicate_0") or {}).items()))


def render_rounds_main() -> str:
    """docs/rounds.md: per task, each round's held-out accuracy, its difference to round 1 and to GRPO at
    its compute, its compute; then what the round's pairs and its student's answers look like and the
    collapse figures (``python -m bench.rounds`` -> ``bench/results/rounds.json``)."""
    d = load("rounds.json")
    out = []
    for t in d["tasks"] + d.get("variants", []):
        acc, looks = [], []
        for r in t["rounds"]:
            c, w, h = r["collapse"], r.get("pairs_written") or {}, r.get("heldout_answers") or {}
            acc.append([str(r["round"]), f"{pct(r['accuracy'])} {interval(100 * r['ci'][0], 100 * r['ci'][1], signed=False)}",
                        " / ".join(pct(a) for a in r["per_replicate_accuracy"]),
                        _diff(r["vs_round1"]) if r["vs_round1"] else "—",
                        f"{pct(r['grpo_accuracy'])} (`{r['grpo_arm']}`)" if r.get("grpo_arm") else "not run",
                        _diff(r["vs_grpo"]) if r["vs_grpo"] else "—",
                        f"{r['flops']:.2e}" if r.get("flops") else "—", (f"{r['grpo_flops']:.2e} ({r['grpo_flops_ratio']:.2f}×)" if r.get("grpo_flops") else "—")])
            looks.append([str(r["round"]), f"{r['rolled_out']:.0f}" if r.get("rolled_out") is not None else "—",
                          f"{r['pairs']:.0f}" if r.get("pairs") is not None else "—",
                          num(w.get("equalities_per_solution"), 2), pct(w.get("ends_as_taught"), 0),
                          pct(c["rollout_no_answer_rate"]), pct(c["validation_accuracy"]),
                          pct(c["heldout_no_answer_rate"]), f"{c['heldout_mean_tokens']:.1f}",
                          num(h.get("equalities_per_answer"), 2), pct(h.get("equalities_hold")),
                          str(c["stop_rule_would_stop"])])
        tab = table(["round", "held-out [95% CI]", "per replicate", "− round 1", "GRPO at its compute", "SSB − GRPO",
                     "SSB FLOPs (rounds 1..r)", "GRPO FLOPs (× SSB's)"], acc, "lrrrrrrr")
        tab2 = table(["round", "problems rolled out", "pairs", "pairs: equalities per solution", "pairs ending as taught",
                      "rollouts: no answer", "validation", "held-out: no answer", "held-out tokens",
                      "held-out: equalities per answer", "held-out: equalities that hold",
                      "replicates where validation fell"], looks, "lrrrrrrrrrrr")
        other = [o for o in t.get("overrides") or [] if not o.startswith("data.limit=")]
        stopped = (f"GRPO stopped by: {', '.join(map(str, t['grpo_stopped_by']))} (per replicate)"
                   if any(t["grpo_stopped_by"]) else "GRPO not run")
        out.append(f"### `{t['name']}` (`{t['config']}`{''.join(f', `{o}`' for o in other)})\n\nBase {pct(t['base_accuracy'])}; "
                   f"{_setting(t)}; bootstrap 95% intervals (bold: excludes 0); {stopped}. "
                   f"Full results: `{t['results']}`.\n\n{tab}\n\nWhat each round's "
                   f"teacher wrote (its pairs, means over replicates; ending as taught: the last line is the worked "
                   f"examples' `The answer is \\boxed{{N}}.`), how its student answers and the collapse figures "
                   f"(validation: the stop rule's draw, never the held-out problems):\n\n{tab2}")
    if d.get("missing"):
        out.append("Not measured yet: " + ", ".join(f"`{m}`" for m in d["missing"]) + ".")
    return "\n\n".join(out) + "\n\n" + source("rounds.json", d, "python -m bench.rounds")


def render_rounds_readme() -> str:
    """README: one sentence, what the last round buys over round 1 and against GRPO at its compute, counted
    over the tasks measured (the rounds file's ``summary``), linking docs/rounds.md where each round is read."""
    d = load("rounds.json")
    n, last = len(d["tasks"]), "/".join(sorted({str(t["rounds"][-1]["round"]) for t in d["tasks"]}))
    missing = (" (not measured yet: " + ", ".join(f"`{m}`" for m in d["missing"]) + ")") if d.get("missing") else ""
    return (f"**Rounds** ([docs/rounds.md](docs/rounds.md)): SSB over rounds 1 to {last}, each round's student "
            f"merged into the next round's model, on {n} task{'s' if n > 1 else ''}{missing}: round {last} "
            f"{_words(d['summary']['vs_round1'], 'round 1')}; {_words(d['summary']['vs_grpo'], 'GRPO held to the same FLOPs')} "
            "(bootstrap 95% intervals).\n\n" + source("rounds.json", d, "python -m bench.rounds"))


def render_answer_sign() -> str:
    """docs/tasks.md: the arms on the negative-answer problems and on the others (``bench.answer_sign``)."""
    d = load("answer_sign.json")
    rows = []
    for arm, s in d["held_out"].items():
        if not s["n"]:
            continue
        rows.append([f"`{arm}`" if ":" in arm else SHORT.get(arm, arm), pct(s["accuracy"]),
                     f"{s['negative_correct']} of {s['negative_n']}", pct(s["writes_a_negative_answer"]),
                     pct(s["positive_accuracy"])])
    tr = d["training"]
    words = "; ".join(f"replicate {r[1:]}: {x['negative']} of {x['problems']} training problems have a negative answer, "
                      f"{x['negative_with_a_correct_rollout']} of them a correct rollout, "
                      f"{x['pairs_with_a_negative_answer']} of {x['pairs']} pairs" for r, x in tr.items())
    reps = ", ".join(map(str, d["replicates_evaluated"]))
    b = d["held_out"]["base"]
    return "\n".join([
        f"`{d['task']}`: {b['negative_n']} of its {b['n']} held-out problems ({pct(b['negative_n'] / b['n'])}) have a "
        f"negative answer. Each arm's held-out answers, pooled over replicate(s) {reps}:", "",
        table(["arm", "accuracy", "negative answers solved", "replies with a negative number",
               "accuracy, positive answers"], rows, "lrrrr"), "",
        f"Training draws: {words}.", "",
        source("answer_sign.json", d, f"python -m bench.answer_sign --task {d['task']}")])
