"""Renderers of ``python -m bench.teacher_signal``'s results: the teacher's distribution over a run's solutions."""

from __future__ import annotations

from pathlib import Path

from .common import load, pct, runnable, source, table


ARMS = {
    "run": "the run's own teacher prompt",
    "student": "the bare question (what the student sees)",
    "no_examples": "the run's hinted turn without the worked example",
    "contrastive": "the paper's hint: answer + most common wrong rollout",
    "answer": "the verified answer, `(The answer is N.)`",
    "answer_boxed": "the verified answer, `(The answer is \\boxed{N}.)`",
    "answer_hint_unboxed": "the verified answer, `(The answer is N.)`",
    "value": "only the number, `(N)`",
}
SCRIPT_ARMS = {"run", "student", "no_examples", "contrastive", "answer", "answer_boxed", "value"}  # teacher_signal.py's


def _teacher_signal(name: str) -> str:
    d = load(name)
    n = d["pairs"]
    has_box = any("boxed_prob" in r for r in d["results"].values())
    header = ["teacher sees", "top token ≠ solution", "ends early (pairs)", "mean log-prob",
              "answer digits: top token right", "answer log-prob"]
    if has_box:
        header += ["`\\boxed`: top token right", "`\\boxed`: probability"]
    rows = []
    for arm, r in d["results"].items():
        row = [f"`{arm}`: {ARMS.get(arm, arm)}", pct(r["argmax_miss"]), f"{round(r['early_end'] * n)} of {n}",
               f"{r['mean_logprob']:.3f}", pct(r["answer_argmax_acc"]), f"{r['answer_logprob']:.3f}"]
        if has_box:
            row += [pct(r.get("boxed_argmax_acc")), pct(r.get("boxed_prob"))]
        rows.append(row)
    run = Path(d["run"]).name
    command, after = f"python -m bench.teacher_signal --run RUN --limit {n}", ""
    if name != "teacher_signal.json":
        command += f" --out bench/results/{name}"
    if set(d["results"]) <= SCRIPT_ARMS:
        command += f" --arms {','.join(d['results'])}"
    else:
        command += " --arms ARMS"
        after = " (the arms: see the note)"
    lines = [table(header, rows, "l" + "r" * (len(header) - 1)), ""]
    if d.get("note"):
        lines += [f"Note recorded with the results: {d['note']}", ""]
    lines.append(f"{n} pairs of the run `{run}` ({d.get('model')} model). " + source(name, d, command, after))
    return "\n".join(lines)


def render_teacher_signal() -> str:
    return _teacher_signal("teacher_signal.json")


def render_teacher_signal_answer_hint() -> str:
    return _teacher_signal("teacher_signal_answer_hint.json")


def render_teacher_signal_hints() -> str:
    return _teacher_signal("teacher_signal_hints.json")


def render_teacher_signal_tasks() -> str:
    """Per task run: how far the hinted teacher's distribution over the pairs' solutions is from the
    bare student's before training (what SSB's KL can teach), from ``teacher_signal_tasks.json``."""
    d = load("teacher_signal_tasks.json")
    rows = []
    for r in d["runs"]:
        t, s = r["results"]["run"], r["results"]["student"]
        rows.append([f"`{Path(r['run']).parent.name}` {Path(r['run']).name}", str(r["pairs"]), f"{t['mean_logprob']:.3f}",
                     f"{s['mean_logprob']:.3f}", pct(t["argmax_miss"]), pct(s["argmax_miss"]),
                     pct(t["answer_argmax_acc"]), pct(s["answer_argmax_acc"])])
    t = table(["run", "pairs", "log-prob per solution token: teacher", "student", "argmax misses: teacher",
               "student", "first result's argmax right: teacher", "student"], rows, "lrrrrrrr")
    return (f"{t}\n\nTeacher: the run's hinted teacher prompt; student: the bare question, before any training. "
            "SSB's loss pulls the student toward the teacher's distribution, SFT's toward probability 1 on every "
            "solution token (log-prob 0).\n\n" + source("teacher_signal_tasks.json", d, runnable(d["command"])))


def render_signal_shares() -> str:
    """docs/method.md's "what the teacher signal carries": per task, where the paper's loss puts its gradient
    and what the hint adds, from ``signal.json`` (``python -m bench.signal_shares``)."""
    name = "signal.json"
    d = load(name)
    variant = ", ".join(f"{k}={v}" for k, v in d["variant"].items())
    header = ["task", "pairs", "reply tokens", "base q > 0.9", "paper loss: gradient norm² on them",
              "paper loss: loss on them", f"{variant}: gradient norm² on them", "hint gain: mean", "median",
              "> 0.5", "< −0.1"]
    best = any("ssb_best" in t for t in d["tasks"])
    if best:  # --best-from: the loss each task's ssb compare --tune chose on validation
        header.insert(7, "SSB best's loss: gradient norm² on them")
    rows = []
    for t in d["tasks"]:
        g, p, v = t["hint_gain"], t["losses"]["paper"], t["losses"]["variant"]
        b = t["losses"].get("ssb_best")
        row = [f"`{t['task']}`", str(t["pairs"]), f"{t['tokens']:,}", pct(t["confident_share_of_tokens"]),
               f"**{pct(p['confident_share_of_grad'])}**", pct(p["confident_share_of_loss"]),
               pct(v["confident_share_of_grad"]), f"{g['mean']:+.3f}", f"{g['q50']:+.3f}",
               pct(g["share_above_0.5"]), pct(g["share_below_-0.1"])]
        if best:
            row.insert(7, f"{pct(b['confident_share_of_grad'])} (`{t['ssb_best']['arm']}`)" if b else "—")
        rows.append(row)
    runs = " ".join(f"--run {t['task']}=DIR" for t in d["tasks"]) + (
        f" --best-from {d['best_from']}" if d.get("best_from") else "")
    note = ("Each task's run: its config (`configs/default.yaml` for `chain_sum`, `configs/tasks/<task>.yaml`) "
            "through the `logits` stage, replicate 0's seeds; nothing trained. Shares are of the tokens, of "
            "the summed loss and of the summed squared gradient norm with respect to the student's logits at "
            "step 0 (the student is the base model), on the tokens the base model already predicts with "
            "q > 0.9. Hint gain: log p_teacher − log q_base of the solution token, in nats.")
    return "\n".join([table(header, rows), "", note, "", source(name, d, f"python -m bench.signal_shares {runs}")])
