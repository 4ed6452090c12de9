"""Renderers of the speed and memory benchmarks: rollout throughput and the distillation step's memory."""

from __future__ import annotations

from .common import gib, load, mean, num, pct, sci, secs, source, table, times


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
             source(name, d, "python -m bench.rollout_throughput")]
    return "\n".join(lines)


STAGES = ("teacher_load", "forward", "loss", "backward", "optimizer")
MODES = {"dense": "dense fp32 logits", "ours": "ours (`hidden` store, chunked loss)",
         "dense_ckpt": "dense fp32 logits", "ours_ckpt": "ours (`hidden` store, chunked loss)"}


def _distill_command(d: dict) -> str:
    m = d.get("machine", {})
    env = "".join(f"{k}={v} " for k, v in (m.get("allocator") or {}).items() if v)
    limit = f" --mem-limit-gb {m['mem_limit_gb']:g}" if m.get("mem_limit_gb") is not None else ""
    return f"{env}python -m bench.distill_memory{limit}"


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


def render_demo_time() -> str:
    """README's line on how long ``make demo`` (``ssb run configs/default.yaml``) takes, from ``demo.json``."""
    name = "demo.json"
    d = load(name)
    stages = sorted(d["stages"].items(), key=lambda kv: -kv[1])
    top = ", ".join(f"{k} {v / 60:.1f}" for k, v in stages if v >= 30)
    cpus = d["provenance"].get("machine", {}).get("cpus")
    return "\n".join([
        f"`make demo` takes **{d['wall_seconds'] / 60:.0f} min** on a {cpus}-core CPU after the install "
        f"(`{d['command']}`; minutes per stage: {top}; load average {num(d['load_avg_at_start'][0], 1)} at the "
        "start). A rerun resumes: finished stages are skipped.", "",
        source(name, d, "python -m bench.demo")])
