"""``ssb compare``'s results: pooled accuracies, paired differences, compute, curves, output quality.

Pure functions over evaluation records and ledgers (no torch): :mod:`arms` runs the arms and
calls :func:`results`, which returns the ``results.json`` document; :func:`markdown` renders it.

Statistics. Per replicate, every arm against base and against SSB on the same held-out
problems: Newcombe's interval (method 10, continuity-corrected phi) and the exact McNemar p
(``stats.paired_diff``). Pooled over replicates: the mean accuracy and difference, with a 95%
bootstrap interval ``ci`` that resamples replicates and held-out problems (``stats.TWO_WAY``:
run-to-run variance counts; every verdict and bold mark reads it) and ``ci_problems``, the
problems-only interval; each resample is shared by every model, so the pairing is kept
(``stats.bootstrap_pooled``). The base model is deterministic (greedy) and evaluated once; its
vector stands for every replicate.

Output quality (the "right answer for the right reasons" check), per arm over its held-out
answers: ``states_equation`` (the share that write at least one ``a op b = c`` equality),
``equations_hold`` (of those, the share whose every checked equality holds:
``gates.arithmetic_errors`` finds none), ``shows_work`` (text beyond the answer statement:
``gates.work_text``), ``mean_tokens`` and ``no_answer_rate``.
"""

from __future__ import annotations

import re
from statistics import mean
from typing import Any

from ..grading.gates import arithmetic_errors, equalities_hold, work_text
from ..report import stats

EQUATION = re.compile(r"\d\s*[-+*/×x÷]\s*-?\d[\d.,]*\s*=\s*-?\d")
REACH_POINTS = (1, 2, 3, 5)  # "compute to reach base + N points"
INTERVALS = {"per_replicate": "Newcombe (1998) method 10, continuity-corrected phi; exact McNemar p",
             "pooled": "mean over replicates; ci: 95% interval from 4000 resamples of a " + stats.TWO_WAY,
             "pooled_problems": "ci_problems: 95% interval from the same 4000 resamples of held-out problems alone "
                                "(every replicate kept), the variance of the held-out draw without run-to-run variance"}


def correct_vector(records: list[dict], ids: list[str]) -> list[bool]:
    by_id = {str(r["id"]): bool(r["correct"][0]) for r in records}
    return [by_id[i] for i in ids]


def output_quality(records: list[dict]) -> dict[str, float]:
    """Share of answers with an equation, share of those whose equations all hold, share that show
    work, mean completion tokens, no-answer rate (first completion of each record); and per equality:
    checked equalities per answer (the steps it writes out) and the share of them that hold."""
    texts = [r["completions"][0] for r in records]
    links = [equalities_hold(t) for t in texts]
    flat = [x for eqs in links for x in eqs]
    with_eq = [t for t in texts if EQUATION.search(t)]
    grades = [r["grades"][0] for r in records]
    tokens = [r["completion_tokens"][0] for r in records if r.get("completion_tokens")]
    return {"n": len(texts),
            "states_equation": len(with_eq) / len(texts) if texts else 0.0,
            "equations_hold": (sum(not arithmetic_errors(t) for t in with_eq) / len(with_eq)) if with_eq else None,
            "shows_work": sum(bool(work_text(t).strip()) for t in texts) / len(texts) if texts else 0.0,
            "mean_tokens": mean(tokens) if tokens else None,
            "no_answer_rate": sum(g == "no_answer" for g in grades) / len(grades) if grades else 0.0,
            "equalities_per_answer": len(flat) / len(texts) if texts else 0.0,
            "equalities_hold": sum(flat) / len(flat) if flat else None}


def pair_working(pairs: list[dict], rollouts: list[dict]) -> dict[str, float | int | None]:
    """What SSB's pairs teach: checked equalities per teacher solution (its steps), the share with two or
    more (multi-step working), the share whose equalities all hold, and the share that are verbatim
    copies of the correct rollout the teacher was shown (``hint_correct``)."""
    by_id = {str(r["id"]): r for r in rollouts}
    steps = [equalities_hold(p["solution"]) for p in pairs]
    shown = [(by_id[str(p["id"])]["completions"][p["correct_index"]], p["solution"]) for p in pairs
             if p.get("correct_index") is not None and str(p["id"]) in by_id]
    copies = sum(a.strip() == b.strip() for a, b in shown)
    n = len(pairs)
    return {"n": n, "equalities_per_solution": sum(map(len, steps)) / n if n else None,
            "multi_step_share": sum(len(x) >= 2 for x in steps) / n if n else None,
            "equalities_hold": sum(all(x) for x in steps if x) / max(1, sum(bool(x) for x in steps)) if n else None,
            "copies_of_shown_rollout": copies / len(shown) if shown else None}


def paired(x: list[bool], y: list[bool]) -> dict:
    """x minus y on the same problems: value, Newcombe CI, exact McNemar p, discordant counts."""
    res = stats.paired_diff(x, y)
    return {"value": res["diff"], "ci": list(res["ci"]), "p_value": res["p_value"],
            "a_only": res["x_only"], "b_only": res["y_only"]}


def pooled(vec: dict[str, list[bool]], models: dict[str, list[str]], pairs: list[tuple[str, str]],
           iters: int = 4000) -> tuple[dict[str, dict], dict[tuple[str, str], dict]]:
    """Per model (``models[m]``: one eval label per replicate, ``vec[label]`` its correctness vector),
    the accuracy pooled over replicates with its bootstrap interval; per pair ``(a, b)``, a minus b
    pooled (``stats.bootstrap_pooled``) and per replicate (:func:`paired`) under ``per_replicate``."""
    boot = stats.bootstrap_pooled({m: [vec[x] for x in labs] for m, labs in models.items()}, pairs, iters=iters)
    diffs = {(a, b): {**d, "per_replicate": [paired(vec[x], vec[y]) for x, y in zip(models[a], models[b])]}
             for (a, b), d in boot["diffs"].items()}
    return boot["models"], diffs


def matched_grpo(name: str, models) -> str | None:
    """The GRPO arm at SSB-after-k-rounds' compute (``ssb compare`` with ``ssb@<k>`` arms): ``grpo@<k>``,
    or ``grpo`` itself for the last round (GRPO's budget is all rounds'); None without rounds."""
    last = max([int(m[4:]) for m in models if m.startswith("ssb@")], default=1)
    if last == 1 or not (name == "ssb" or name.startswith("ssb@")):
        return None
    k = 1 if name == "ssb" else int(name[4:])
    g = "grpo" if k == last else f"grpo@{k}"
    return g if g in models else None


def _mean_compute(per_rep: list[dict]) -> dict:
    keys = [k for k in per_rep[0] if isinstance(per_rep[0][k], (int, float))]
    return {k: mean(float(c.get(k) or 0) for c in per_rep) for k in keys}


BEST_AGAINST = ("base", "sft", "rft", "grpo", "sdft")  # the arms ssb_best is set against


def results(arms: dict[str, dict], records: dict[str, list[dict]], base_label: str, curves: dict[str, list[dict]],
            iters: int = 4000, best: str | None = None) -> dict[str, Any]:
    """The ``results.json`` body.

    ``arms[name]``: ``labels`` (one eval label per replicate, whose records are ``records[label]``),
    ``compute`` (one ledger entry per replicate), anything else is copied. ``curves[name]``: points
    with ``labels`` (per replicate), ``flops`` (per replicate) and descriptive fields. ``best``: the SSB
    arm chosen on validation (``tuning.best_variant``): ``ssb_best`` gets its pooled accuracy and, under
    ``vs``, its pooled difference against each arm of :data:`BEST_AGAINST` (best minus that arm)."""
    ids = [str(r["id"]) for r in records[base_label]]
    n_rep = max(len(a["labels"]) for a in arms.values() if a["labels"])
    vec = {lab: correct_vector(recs, ids) for lab, recs in records.items()}
    models = {"base": [base_label] * n_rep}
    models.update({name: a["labels"] for name, a in arms.items() if name != "base" and a["labels"]
                   and all(lab in vec for lab in a["labels"])})
    pairs = [(m, "base") for m in models if m != "base"]
    pairs += [(m, "ssb") for m in models if m not in ("base", "ssb") and "ssb" in models]
    matched = {m: g for m in models if (g := matched_grpo(m, models))}
    pairs += list(matched.items())
    best = best if best in models else None
    against = [m for m in BEST_AGAINST if m in models] if best else []
    pairs += [(best, m) for m in against if (best, m) not in pairs]
    accuracy, diffs = pooled(vec, models, pairs, iters)

    def diff(a: str, b: str) -> dict | None:
        return diffs.get((a, b))

    out_arms: dict[str, dict] = {}
    for name in ["base", *[n for n in arms if n != "base"]]:
        a = arms.get(name, {})
        if name not in models:
            out_arms[name] = {**{k: v for k, v in a.items() if k not in ("labels", "compute")},
                              "status": "not evaluated"}
            continue
        labs = models[name][:1] if name == "base" else models[name]
        comp = a.get("compute") or []
        out_arms[name] = {
            **{k: v for k, v in a.items() if k not in ("labels", "compute")},
            **accuracy[name],
            "per_replicate_accuracy": [sum(vec[x]) / len(ids) for x in labs],
            "vs_base": diff(name, "base"), "vs_ssb": diff(name, "ssb"),
            **({"matched_grpo": matched[name], "vs_matched_grpo": diff(name, matched[name])} if name in matched else {}),
            "compute": {**_mean_compute(comp), "per_replicate": comp} if comp else None,
            "output_quality": output_quality([r for x in labs for r in records[x]]),
        }
    out = {"n_problems": len(ids), "n_replicates": n_rep, "interval_method": INTERVALS, "arms": out_arms,
           "curves": curve_points(curves, vec, ids, iters), "reach": reach(curves, vec, ids, base_label)}
    if best:
        b = out_arms[best]
        out["ssb_best"] = {"arm": best, **{k: b[k] for k in accuracy[best]}, "per_replicate_accuracy":
                           b["per_replicate_accuracy"], "compute": b["compute"],
                           "vs": {m: diffs[(best, m)] for m in against}}
    return out


def curve_points(curves: dict[str, list[dict]], vec: dict[str, list[bool]], ids: list[str], iters: int) -> dict:
    """Per arm, its points sorted by mean FLOPs: pooled accuracy with its bootstrap interval."""
    out: dict[str, list[dict]] = {}
    for arm, points in curves.items():
        rows = []
        for p in points:
            if not all(lab in vec for lab in p["labels"]):
                continue
            acc = stats.bootstrap_pooled({"m": [vec[x] for x in p["labels"]]}, [], iters=iters)["models"]["m"]
            rows.append({**{k: v for k, v in p.items() if k not in ("labels", "flops")},
                         "flops": mean(p["flops"]), "flops_per_replicate": p["flops"], **acc,
                         "per_replicate_accuracy": [sum(vec[x]) / len(ids) for x in p["labels"]]})
        out[arm] = sorted(rows, key=lambda r: r["flops"])
    return out


def reach(curves: dict[str, list[dict]], vec: dict[str, list[bool]], ids: list[str], base_label: str) -> dict:
    """Per arm and N in :data:`REACH_POINTS`: the fewest FLOPs of a curve point whose pooled accuracy
    is at least base + N points (None: no point reaches it)."""
    base = sum(vec[base_label]) / len(ids)
    out: dict[str, dict] = {}
    for arm, points in curves.items():
        accs = [(mean(p["flops"]), mean(sum(vec[x]) / len(ids) for x in p["labels"])) for p in points
                if all(x in vec for x in p["labels"])]
        out[arm] = {f"+{n}pt": min((f for f, a in accs if a >= base + n / 100), default=None) for n in REACH_POINTS}
    return out


def verdict(doc: dict) -> list[str]:
    """Plain sentences: which arm wins at matched compute (GRPO's budget is SSB's FLOPs), each arm
    against base, with intervals; "not significant" where the interval holds zero."""
    arms = doc["arms"]

    def pt(d: dict) -> str:
        sig = ", not significant" if stats.reading(d["ci"]) == "level" else ""
        return f"{100 * d['value']:+.1f} pt [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]{sig}"

    lines = []
    g, s = arms.get("grpo", {}), arms.get("ssb", {})
    for name, a in arms.items():  # rounds: each round against GRPO where its compute ends
        m = arms.get(a.get("matched_grpo") or "", {})
        if a.get("vs_matched_grpo") and a.get("compute") and m.get("compute") and a["compute"]["flops"]:
            lines.append(f"{name} against GRPO at its compute ({a['matched_grpo']}, "
                         f"{m['compute']['flops'] / a['compute']['flops']:.2f}x its FLOPs): "
                         f"{name} minus GRPO {pt(a['vs_matched_grpo'])}.")
    if g.get("vs_ssb") and s.get("compute") and g.get("compute") and not lines:
        ratio = g["compute"]["flops"] / s["compute"]["flops"] if s["compute"]["flops"] else float("nan")
        d = g["vs_ssb"]
        winner = {"above": "GRPO", "below": "SSB", "level": "neither (the interval holds zero)"}[stats.reading(d["ci"])]
        budget = doc.get("grpo_budget", "flops")
        where = (f"At matched compute (GRPO's budget is SSB's FLOPs; it spent {ratio:.2f}x)" if budget == "flops"
                 else f"With GRPO's budget in {budget} (it spent {ratio:.2f}x SSB's FLOPs, so compute is not matched)")
        lines.append(f"{where} the winner is {winner}: GRPO minus SSB {pt(d)}.")
    b = doc.get("ssb_best")
    if b:  # SSB's loss chosen on validation, against the others on the held-out problems
        c = b.get("choice") or {}
        chosen = (f"the paper's loss (ssb; validation {100 * c['validation_accuracy']:.1f}%)" if b["arm"] == "ssb"
                  else f"{b['arm']} (validation {100 * c['validation_accuracy']:.1f}% against the paper loss's "
                  f"{100 * c['paper']['validation_accuracy']:.1f}%)") if c else b["arm"]
        lines.append(f"SSB's best loss on validation is {chosen}: {100 * b['accuracy']:.1f}% held-out; "
                     + "; ".join(f"minus {m} {pt(d)}" for m, d in b["vs"].items()) + ".")
    for name, a in arms.items():
        if name != "base" and a.get("vs_base"):
            flops = a["compute"]["flops"] if a.get("compute") else None
            cost = f" at {flops:.3g} FLOPs" if flops else ""
            vs_ssb = f"; vs SSB {pt(a['vs_ssb'])}" if a.get("vs_ssb") else ""
            lines.append(f"{name}: {100 * a['accuracy']:.1f}% held-out{cost}, vs base {pt(a['vs_base'])}{vs_ssb}.")
    return lines


def markdown(doc: dict) -> str:
    """The results table (one row per arm) and the verdict, as markdown."""
    def pct(x):
        return "—" if x is None else f"{100 * x:.1f}"

    def d(x):
        return "—" if not x else f"{100 * x['value']:+.1f} [{100 * x['ci'][0]:+.1f}, {100 * x['ci'][1]:+.1f}]"

    rows = ["| arm | held-out % [95% CI] | vs base (pt) | vs SSB (pt) | FLOPs | generated tokens | trained tokens "
            "| equations hold % | no answer % |", "|---|---|---|---|---|---|---|---|---|"]
    for name, a in doc["arms"].items():
        if "accuracy" not in a:
            rows.append(f"| {name} | {a.get('status', '—')} | | | | | | | |")
            continue
        c, q = a.get("compute") or {}, a["output_quality"]
        rows.append(f"| {name} | {pct(a['accuracy'])} [{pct(a['ci'][0])}, {pct(a['ci'][1])}] | {d(a['vs_base'])} "
                    f"| {d(a['vs_ssb'])} | {c.get('flops', 0):.3g} | {c.get('generated_tokens', 0):,.0f} "
                    f"| {c.get('trained_tokens', 0):,.0f} | {pct(q['equations_hold'])} | {pct(q['no_answer_rate'])} |")
    head = (f"{doc['n_problems']} held-out problems, {doc['n_replicates']} replicates; pooled intervals: "
            f"{doc['interval_method']['pooled']}.")
    return "\n".join([head, "", *rows, "", *verdict(doc), "", *tuning_table(doc)])


def tuning_table(doc: dict) -> list[str]:
    """``--tune``'s trials per arm (validation accuracy at each learning rate; the chosen one in bold)."""
    if not doc.get("tuning"):
        return []
    v = doc["tuning_protocol"]["validation"]
    base = doc["tuning_protocol"].get("base_validation_accuracy")
    rows = [f"Tuned on replicate 0, scored on {v['n']} validation problems (never the held-out ones"
            + (f"; the base model scores {100 * base:.1f}% on them" if base is not None else "") + "): "
            f"{doc['tuning_protocol']['rule']}.", "", "| arm | key | learning rate: validation % | chosen |",
            "|---|---|---|---|"]
    for arm, t in doc["tuning"].items():
        cells = ", ".join(("**" if x["lr"] == t["chosen"]["lr"] else "") + f"{x['lr']:.3g}: "
                          f"{100 * x['validation_accuracy']:.1f}" + ("**" if x["lr"] == t["chosen"]["lr"] else "")
                          + (" (edge)" if x.get("edge_extension") else "") for x in t["trials"])
        rows.append(f"| {arm} | `{t['key']}` | {cells} | {t['chosen']['lr']:.3g} |")
    return [*rows, ""]
