"""Render the benchmark tables of the docs from their results files.

    python bench/render.py           # rewrite every results block in place
    python bench/render.py --check   # exit 1 listing each stale block (file:line renderer), 0 when all are current

A results block in README.md, docs/*.md or bench/README.md is (each marker a line of its own)

    <!-- results: NAME -->
    ...
    <!-- /results -->

and the text between the two markers is the output of the renderer ``NAME`` (:data:`RENDERERS`):
a markdown table read from a ``bench/results/*.json`` file and a one-line caption naming that
file, the commit it ran (its ``provenance``, written by ``bench/_meta.py``) and the command that
regenerates it. Never edit inside a block: rerun the benchmark, then this script.

A results file written before provenance was recorded is captioned with the commit that last
committed it (``git log -1 -- FILE``), labelled as such. That hash changes when the file is
committed, after the docs were rendered, so ``--check`` does not compare it (the numbers are
compared); ``render.py`` without ``--check`` writes the current one.

A block whose name is in :data:`PENDING` (a renderer not written yet) renders as an empty block
with a comment; any other unknown name is an error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _meta  # noqa: E402

ROOT = HERE.parent
RESULTS = HERE / "results"

# Blocks whose renderer is not written yet: they render empty (a comment says so). Remove a
# name from here when its renderer is registered.
PENDING: set[str] = set()

OPEN_RE = re.compile(r"^<!-- results: (\S+) -->[ \t]*$", re.M)  # a marker is a line of its own
CLOSE = "<!-- /results -->"
CLOSE_RE = re.compile(r"^<!-- /results -->[ \t]*$", re.M)
# the git-derived part of a caption for a results file without recorded provenance
LEGACY_RE = re.compile(r"\((?:committed in [0-9a-f]+|uncommitted|not in git); provenance not recorded\)")
LEGACY_MASK = "(<git>; provenance not recorded)"


def doc_files(root: Path = ROOT) -> list[Path]:
    """The files whose results blocks are rendered: README.md, docs/*.md, bench/README.md."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "bench" / "README.md"]
    return [f for f in files if f.is_file()]


# ----------------------------------------------------------------------------- number formats


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.4503 -> ``45.0%``."""
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def pts(x: float | None, digits: int = 1) -> str:
    """A difference in percentage points, signed: 4.7 -> ``+4.7 pt`` (``x`` already in points)."""
    return "—" if x is None else f"{x:+.{digits}f} pt"


def interval(lo: float, hi: float, digits: int = 1, signed: bool = True) -> str:
    """``[lo, hi]``, signed by default (differences): ``[+1.6, +7.9]``."""
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"[{f.format(lo)}, {f.format(hi)}]"


def times(x: float | None, digits: int = 1) -> str:
    """A ratio: 12.13 -> ``12.1×``."""
    return "—" if x is None else f"{x:.{digits}f}×"


def num(x: float | None, digits: int = 0) -> str:
    """A number with thousands separators: 196608 -> ``196,608``."""
    return "—" if x is None else f"{x:,.{digits}f}"


def secs(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f} s"


def gib(mib: float | None, digits: int = 1) -> str:
    """MiB (what the benchmarks record) as GiB: 19355 -> ``18.9 GiB``."""
    return "—" if mib is None else f"{mib / 1024:.{digits}f} GiB"


def sci(x: float | None) -> str:
    """A small error: 4.2e-05 -> ``4.2e-05``; 0.43 -> ``0.434``."""
    if x is None:
        return "—"
    return f"{x:.1e}" if abs(x) < 1e-2 else f"{x:.3f}"


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A markdown table; ``align`` has one character per column, ``l`` or ``r`` (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- sources


def load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file():
        raise RenderError(f"{path.relative_to(ROOT)}: no such results file")
    return json.loads(path.read_text())


def source(name: str, data: dict, command: str, after: str = "") -> str:
    """The caption: results file, the commit and config it ran (or, without recorded provenance,
    the commit that last committed it), and the command that regenerates it."""
    rel = f"bench/results/{name}"
    prov = data.get("provenance")
    if prov:
        commit = (prov.get("commit") or "unknown")[:7]
        parts = [f"commit {commit}" + (", uncommitted changes" if prov.get("dirty") else "")]
        if prov.get("date"):
            parts.append(prov["date"][:10])
        cfg = prov.get("config")
        if cfg:
            parts.append(f"config `{cfg['path']}`" + (f" sha256 {cfg['sha256'][:8]}" if cfg.get("sha256") else ""))
        where = "(" + "; ".join(parts) + ")"
    else:
        path = RESULTS / name
        if _meta.uncommitted(path):
            git = "uncommitted"
        else:
            h = _meta.last_commit(path)
            git = f"committed in {h}" if h else "not in git"
        where = f"({git}; provenance not recorded)"
    return f"_Source: `{rel}` {where}. Regenerate: `{command}`{after}._"


class RenderError(Exception):
    pass


# ----------------------------------------------------------------------------- renderers

BACKENDS = {
    "a_hf_sequential": "one at a time (HF `generate`)",
    "b_hf_batched": "hf batched",
    "c_hf_prefix_cache": "hf + prefix reuse",
    "d_llamacpp": "llama.cpp",
}


def render_rollout_throughput() -> str:
    name = "rollout_throughput.json"
    d = load(name)
    backends = list(dict.fromkeys(k for w in d["workloads"].values() for k in w["results"]))
    header = ["workload"] + [BACKENDS.get(b, b) for b in backends] + ["best × one at a time"]
    rows, notes = [], []
    for wname, w in d["workloads"].items():
        spec = w["workload"]
        label = (f"{wname} ({spec['problems']} problems × K={spec['k']} × {spec['max_new_tokens']} new tokens; "
                 f"{spec['prefix_tokens_shared_by_all']} of {spec['prompt_tokens_min']}–{spec['prompt_tokens_max']} "
                 "prompt tokens shared)")
        cells = []
        for b in backends:
            r = w["results"].get(b)
            if r is None:
                cells.append("not run")
            elif "error" in r:
                cells.append("error")
            elif b == "a_hf_sequential":
                cells.append(num(r["tokens_per_s"], 1))
                notes.append(f"{wname}: {r['sequences']} of {spec['problems'] * spec['k']} sequences")
            else:
                cells.append(f"{num(r['tokens_per_s'], 1)} ({times(r.get('speedup_vs_sequential'))})")
        cells.append(f"**{times(w.get('speedup_best_vs_sequential'))}**")
        rows.append([label] + cells)
    m = d.get("machine", {})
    llama = next((r for w in d["workloads"].values() for k, r in w["results"].items()
                  if k == "d_llamacpp" and "error" not in r), None)
    summary = (f"`speedup_best_vs_sequential` (the lowest over the workloads): "
               f"**{times(d['speedup_best_vs_sequential'])}**. One at a time is measured on the first sequences "
               f"of each workload ({'; '.join(notes)}) and its total time extrapolated.")
    if llama:
        summary += f" llama.cpp: Q4_1 GGUF, {llama['n_threads']} threads, {llama['parallel']} slots."
    if m:
        summary += f" Machine: {m.get('cpus')} CPUs, {m.get('torch_threads')} torch threads"
        if m.get("load_avg_at_start"):
            summary += f", load average {num(m['load_avg_at_start'][0], 1)} at the start"
        summary += "."
    lines = ["Useful tokens/s (× one at a time):", "", table(header, rows), "", summary, "",
             source(name, d, "python bench/rollout_throughput.py")]
    return "\n".join(lines)


STAGES = ("teacher_load", "forward", "loss", "backward", "optimizer")
MODES = {"dense": "dense fp32 logits", "ours": "ours (`hidden` store, chunked loss)",
         "dense_ckpt": "dense fp32 logits", "ours_ckpt": "ours (`hidden` store, chunked loss)"}


def _distill_command(d: dict) -> str:
    m = d.get("machine", {})
    env = "".join(f"{k}={v} " for k, v in (m.get("allocator") or {}).items() if v)
    limit = f" --mem-limit-gb {m['mem_limit_gb']:g}" if m.get("mem_limit_gb") is not None else ""
    return f"{env}python bench/distill_memory.py{limit}"


def render_distill_memory() -> str:
    name = "distill_memory.json"
    d = load(name)
    tg = d.get("targets", {})
    missed = set(d.get("missed_targets", []))

    def met(key: str) -> str:
        return "**not met**" if key in missed else "met"

    head = [
        ["bytes per answer token (`hidden` fp16 vs dense fp32)",
         f"{num(d['bytes_per_token'])} vs {num(d['dense_bytes_per_token'])} ({times(d['bytes_ratio'], 0)})",
         f"≥ {times(tg.get('bytes_ratio'), 0)}", met("bytes_ratio")],
        ["loss relative error vs dense (T=2)", sci(d["loss_rel_error"]), f"≤ {tg.get('loss_rel_error'):g}",
         met("loss_rel_error")],
        ["gradient cosine vs dense (T=2)", f"{d['grad_cosine']:.6f}", f"≥ {tg.get('grad_cosine'):g}",
         met("grad_cosine")],
        ["`peak_mem_ratio` (dense / ours, peak RSS of a step)", f"**{times(d['peak_mem_ratio'], 2)}**",
         f"≥ {times(tg.get('peak_mem_ratio'), 0)}", met("peak_mem_ratio")],
        ["`tokens_per_s_ratio` (ours / dense)", f"**{times(d['tokens_per_s_ratio'], 2)}**",
         f"≥ {times(tg.get('tokens_per_s_ratio'))}", met("tokens_per_s_ratio")],
    ]
    rows = []
    for shape, step in (("Qwen2.5-0.5B shape", d.get("step", {})),
                        ("SmolLM2-135M (embedded)", d.get("embedded", {}).get("step", {}))):
        for mode, r in step.items():
            if mode == "batch" or not isinstance(r, dict) or "peak_rss_mb" not in r:
                continue
            st = r.get("stage_seconds", {})
            rows.append([shape, MODES.get(mode, mode), "yes" if r.get("gradient_checkpointing") else "no",
                         gib(r["peak_rss_mb"]), num(r["tokens_per_s"], 1)]
                        + [num(st.get(s), 1) for s in STAGES] + [num(mean(r["step_seconds"]), 1)])
    b = d.get("step", {}).get("batch", {})
    emb = d.get("embedded", {})
    ckpt = "_with_checkpointing" if d.get("headline_gradient_checkpointing") else ""
    delta = d.get("ratios", {}).get("peak_mem_delta_ratio" + ckpt)
    growth = (f"On the step's own growth of RSS above the loaded model the ratio is {times(delta, 2)}. "
              if delta is not None else "")
    bound = ""
    dense, ours = (d.get("step", {}).get(m) for m in (("dense_ckpt", "ours_ckpt") if d.get(
        "headline_gradient_checkpointing") else ("dense", "ours")))
    if dense and ours and ours.get("stage_seconds"):
        body = ours["stage_seconds"].get("forward", 0) + ours["stage_seconds"].get("backward", 0)
        if body:
            bound = (f" The model body's forward and backward are the same work on both sides, so even a loss that "
                     f"cost nothing would give at most {times(mean(dense['step_seconds']) / body, 2)} (dense step "
                     f"{secs(mean(dense['step_seconds']))} / ours forward + backward {secs(body)}).")
    lines = [
        table(["measure", "value", "target", "met"], head, "lrll"),
        "",
        f"Headline: one training step of a model of Qwen2.5-0.5B's shape (random weights, vocabulary "
        f"{num(b.get('vocab_size'))}), batch {b.get('batch')} × {num(max(b.get('seq_tokens', [0])))} tokens "
        f"({num(b.get('answer_tokens'))} answer tokens), LoRA, "
        f"{'with' if d.get('headline_gradient_checkpointing') else 'without'} gradient checkpointing on both sides. "
        + growth + "Fidelity (loss, gradient): "
        "the embedded model. Embedded model, dense / ours peak RSS: "
        f"{times(emb.get('peak_mem_ratio'), 2)} without checkpointing, "
        f"{times(emb.get('peak_mem_ratio_with_checkpointing'), 2)} with it; tokens/s ours / dense "
        f"{times(emb.get('tokens_per_s_ratio'), 2)} and {times(emb.get('tokens_per_s_ratio_with_checkpointing'), 2)}."
        + bound,
        "",
        "Per mode (peak RSS of the step, tokens/s, and seconds per stage):",
        "",
        table(["model", "teacher signal", "checkpointing", "peak RSS", "tok/s"] + [s.replace("_", " ") for s in STAGES]
              + ["step s"], rows, "lll" + "r" * (len(STAGES) + 3)),
        "",
        source(name, d, _distill_command(d)),
    ]
    return "\n".join(lines)


def render_distill_stores() -> str:
    name = "distill_memory.json"
    d = load(name)
    rows = []
    for r in d["all_stores"]:
        rows.append([f"`{r['store']}`", num(r["bytes_per_token"]),
                     sci(r["loss_rel_error_T2"]), f"{r['grad_cosine_T2']:.4f}",
                     pct(r["teacher_mass_outside_topk_T2"]) if "teacher_mass_outside_topk_T2" in r else "—",
                     sci(r["loss_rel_error_T1"]), f"{r['grad_cosine_T1']:.4f}",
                     pct(r["teacher_mass_outside_topk_T1"]) if "teacher_mass_outside_topk_T1" in r else "—"])
    f = d.get("fidelity", {})
    lines = [
        table(["store", "bytes / answer token", "loss rel. error T=2", "grad cosine T=2",
               "teacher mass outside top-k T=2", "loss rel. error T=1", "grad cosine T=1", "outside top-k T=1"], rows),
        "",
        f"Each store against dense fp32 logits ({num(f.get('dense_bytes_per_token'))} bytes per answer token) on the "
        f"embedded model: {f.get('pairs')} pairs, {num(f.get('answer_tokens'))} answer tokens; loss and gradient of "
        "the LoRA parameters.",
        "",
        source(name, d, _distill_command(d)),
    ]
    return "\n".join(lines)


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
    command, after = f"python bench/teacher_signal.py --run RUN --limit {n}", ""
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


RENDERERS: dict[str, Callable[[], str]] = {
    "rollout_throughput": render_rollout_throughput,
    "distill_memory": render_distill_memory,
    "distill_stores": render_distill_stores,
    "teacher_signal": render_teacher_signal,
    "teacher_signal_answer_hint": render_teacher_signal_answer_hint,
    "teacher_signal_hints": render_teacher_signal_hints,
}


# ----------------------------------------------------------------------------- quality benchmark

QUALITY_COMMAND = "python bench/quality.py"
HINT_WORDS = {"answer": "the verified final answer", "correct": "a verified correct rollout",
              "contrastive": "a correct and the most common wrong rollout (the paper)",
              "none": "nothing: the bare question (the control)"}


def _pp(d: dict | None) -> str:
    """A pooled or paired difference in points with its interval: ``+4.7 pt [+1.6, +7.9]``."""
    if not d:
        return "—"
    return f"{pts(100 * d['value'])} {interval(100 * d['ci'][0], 100 * d['ci'][1])}"


def verdict(a: str, b: str, d: dict | None) -> str:
    """What a pooled difference ``a − b`` says, in words that follow its interval."""
    if not d:
        return f"{a} vs {b}: not measured"
    lo, hi = d["ci"]
    if lo > 0:
        word = f"{a} is ahead of {b}"
    elif hi < 0:
        word = f"{a} is behind {b}"
    else:
        word = f"{a} and {b} are not distinguishable here (the interval holds zero)"
    return f"{word}: {_pp(d)}"


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
    diffs = [[label, f"**{_pp(d[key])}**", _per_rep(d[key])] for label, key in
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
        "(other training problems and seeds); pooled = mean over replicates, 95% interval from a bootstrap "
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
        name = f"`{hint}`" + (" (config)" if a["config_default"] else "")
        val = a.get("validation_accuracy")
        rows.append([name, HINT_WORDS.get(hint, hint), ", ".join(str(p) for p in a["pairs"]),
                     pct(mean(val)) if val else "—", pct(a["accuracy"]),
                     _pp(a["vs_base"]), _pp(a["vs_grpo"]), _pp(a.get("vs_config_default"))])
    base_val = d["validation"]["base_accuracy"]
    lines = [table(["`teacher.hint`", "the hinted prompt shows", "pairs per replicate",
                    f"validation (base {pct(base_val)})", "held-out accuracy", "vs base", "vs GRPO",
                    "vs the config's hint"], rows, "llrrrrrr"),
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
    lines = ["What the default config's training stages cost on this machine (replicate 0 of the quality "
             "benchmark, `ssb run configs/default.yaml` without its evaluations), seconds:",
             "", table(["stage", "seconds"], rows), "", _quality_source(d)]
    return "\n".join(lines)


RENDERERS.update(quality_main=render_quality_main, quality_arms=render_quality_arms, default_run=render_default_run)


# ----------------------------------------------------------------------------- blocks


@dataclass
class Block:
    name: str
    line: int  # 1-based line of the opening marker
    start: int  # offset of the block's body (after the opening marker's newline)
    end: int  # offset of the closing marker
    body: str


def blocks(text: str, where: str = "") -> list[Block]:
    """The results blocks of ``text``; an unclosed or nested block is a :class:`RenderError`."""
    out = []
    for m in OPEN_RE.finditer(text):
        nl = text.find("\n", m.end())
        start = len(text) if nl < 0 else nl + 1
        close = CLOSE_RE.search(text, start)
        end = close.start() if close else -1
        nxt = OPEN_RE.search(text, start)
        line = text.count("\n", 0, m.start()) + 1
        if close is None or (nxt and nxt.start() < end):
            raise RenderError(f"{where}:{line}: block `{m.group(1)}` has no `{CLOSE}` before the next block or the end")
        out.append(Block(m.group(1), line, start, end, text[start:end]))
    return out


def render(name: str, cache: dict[str, str] | None = None) -> str:
    """The body of a block ``name``: blank line, the renderer's markdown, blank line."""
    if cache is not None and name in cache:
        return cache[name]
    if name in RENDERERS:
        body = "\n" + RENDERERS[name]().strip("\n") + "\n\n"
    elif name in PENDING:
        body = f"<!-- pending: no renderer `{name}` in bench/render.py yet -->\n"
    else:
        raise RenderError(f"unknown renderer `{name}` (bench/render.py RENDERERS: {', '.join(sorted(RENDERERS))})")
    if cache is not None:
        cache[name] = body
    return body


def same(current: str, expected: str) -> bool:
    """Equal but for the git-derived commit of a results file without recorded provenance."""
    return LEGACY_RE.sub(LEGACY_MASK, current) == LEGACY_RE.sub(LEGACY_MASK, expected)


def process(path: Path, write: bool, cache: dict[str, str] | None = None) -> list[str]:
    """Stale blocks of ``path`` as ``file:line: renderer (reason)``; with ``write``, rewrite
    every block to its current rendering (errors are still reported)."""
    text = path.read_text()
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    problems, pieces, at = [], [], 0
    for b in blocks(text, str(rel)):
        try:
            expected = render(b.name, cache)
        except (RenderError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"{rel}:{b.line}: {b.name} (error: {exc})")
            continue
        if not same(b.body, expected):
            problems.append(f"{rel}:{b.line}: {b.name} (stale)")
        pieces += [text[at:b.start], expected]
        at = b.end
    pieces.append(text[at:])
    new = "".join(pieces)
    if write and new != text:
        path.write_text(new)
    return [p for p in problems if not write or "(error" in p]


def _each(files: list[Path] | None, write: bool) -> list[str]:
    """:func:`process` over ``files`` (default: :func:`doc_files`), one render cache for all."""
    cache: dict[str, str] = {}
    out: list[str] = []
    for f in files if files is not None else doc_files():
        try:
            out += process(f, write=write, cache=cache)
        except RenderError as exc:
            out.append(str(exc))
    return out


def check(files: list[Path] | None = None) -> list[str]:
    """Every stale or failing block of ``files`` (default: :func:`doc_files`)."""
    return _each(files, write=False)


def write(files: list[Path] | None = None) -> list[str]:
    """Rewrite every block of ``files`` in place; returns the errors (blocks left as they were)."""
    return _each(files, write=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="list stale blocks and exit 1 if any; write nothing")
    ap.add_argument("files", nargs="*", type=Path, help="default: README.md, docs/*.md, bench/README.md")
    args = ap.parse_args(argv)
    files = [f.resolve() for f in args.files] or None
    problems = check(files) if args.check else write(files)
    for p in problems:
        print(p, file=sys.stderr)
    if args.check and problems:
        print(f"{len(problems)} results block(s) not current: run `python bench/render.py`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
