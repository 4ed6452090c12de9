"""Rollout throughput on the embedded model, two workloads, useful tokens/s for

  (a) a faithful baseline: HF ``generate`` one sequence at a time (as the paper's
      reference code samples its rollouts), sampling with the model's own sampler,
  (b) our hf backend, batched: continuous batching with the KV cache (up to ``--hf-batch``
      rows; a finished row's place goes to a waiting sequence), every row encoding its whole
      prompt (``generation.prefix_cache: false``),
  (c) our hf backend with prefix reuse (``prefix_cache: true``, the default): the prefix
      all prompts share is encoded once, the prompt the K samples share once,
  (d) our llamacpp backend (llama-cpp-python on the Q4_1 GGUF, continuous batching, with
      its prefix reuse); recorded with the error when llama-cpp-python is not installed.

Workloads (temperature 0.8, top-k 50, K samples per problem, same prompts for all rows):

* ``gsm8k``: GSM8K test problems, the default system prompt + question, 256 new tokens
  (long answers, short shared prefix);
* ``chain_sum``: configs/default.yaml's workload: reasoning-gym chain_sum (2 terms, 1-2
  digits), its system prompt + worked example, K=4, 64 new tokens (short answers, a long
  prefix shared by every prompt).

"Useful" tokens are the generated tokens up to and including the end-of-turn token
(padding and the tokens a batch keeps computing for finished rows do not count). The
baseline is slow, so it runs on the first ``baseline_seqs`` sequences of a workload and
its total time is extrapolated from its tokens/s (printed as such). CPU seconds of this
process are recorded beside wall seconds: on a shared machine they show the work done.

    python -m bench.rollout_throughput [--workloads gsm8k,chain_sum] [--skip a,b,c,d]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from ssb.config import GenerationConfig, PromptConfig, load_config
from ssb.data.load import load_benchmark, load_problems
from ssb.generation.engine import Sampling, derive_seed, stop_token_ids
from ssb.generation.hf import HFGenerator
from ssb.generation.llamacpp import LlamaCppGenerator
from ssb.models import load_model
from ssb.prompts import render_prompt_ids, student_messages

from ._meta import ROOT, provenance

RESULTS = ROOT / "bench" / "results" / "rollout_throughput.json"

WORKLOADS = {
    "gsm8k": dict(problems=16, k=4, max_new_tokens=256, baseline_seqs=3),
    "chain_sum": dict(problems=64, k=4, max_new_tokens=64, baseline_seqs=6),
}


def useful_tokens(gen_ids: list[int], stops: set[int]) -> int:
    for i, t in enumerate(gen_ids):
        if t in stops:
            return i + 1
    return len(gen_ids)


def _clock() -> tuple[float, float]:
    return time.time(), time.process_time()


def _row(seqs: int, tokens: int, t0: tuple[float, float]) -> dict:
    dt, dc = time.time() - t0[0], time.process_time() - t0[1]
    return {"sequences": seqs, "useful_tokens": tokens, "seconds": round(dt, 2), "cpu_seconds": round(dc, 2),
            "tokens_per_s": round(tokens / dt, 2)}


@torch.no_grad()
def baseline_sequential(loaded, prompts: list[list[int]], sampling: Sampling, n_seqs: int) -> dict:
    """HF generate, batch of one, sampling with the model's own sampler."""
    model, tok = loaded.model, loaded.tokenizer
    stops = stop_token_ids(tok, model)
    jobs = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)][:n_seqs]
    tokens, t0 = 0, _clock()
    for i, j in jobs:
        torch.manual_seed(derive_seed(sampling.seed, i, j) % 2**31)
        ids = torch.tensor([prompts[i]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                             max_new_tokens=sampling.max_new_tokens, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id)
        tokens += useful_tokens(out[0, ids.shape[1]:].tolist(), set(stops))
    return _row(len(jobs), tokens, t0)


def ours(gen, convs, sampling: Sampling) -> dict:
    t0 = _clock()
    out = gen.generate(convs, sampling, progress=f"bench[{gen.backend}]")
    comps = [c for cs in out for c in cs]
    r = _row(len(comps), sum(c.completion_tokens for c in comps), t0)  # already cut at the stop token
    r["truncated"] = sum(c.finish_reason == "length" for c in comps)
    return r


def workload(name: str, problems: int):
    """(conversations, description) of a workload."""
    if name == "gsm8k":
        probs = load_benchmark("gsm8k", "test")[:problems]
        prompt = PromptConfig()
        return [student_messages(prompt, p.question) for p in probs], "gsm8k test[:N], default system prompt"
    if name == "chain_sum":
        cfg = load_config(ROOT / "configs" / "default.yaml")
        data = cfg.data.model_copy(update={"limit": problems})
        probs = load_problems(data)
        return ([student_messages(cfg.prompt, p.question) for p in probs],
                "reasoning-gym chain_sum as in configs/default.yaml (its system prompt + worked example)")
    raise SystemExit(f"unknown workload {name!r} ({', '.join(WORKLOADS)})")


def run_workload(loaded, name: str, spec: dict, args, skip: set[str]) -> dict:
    convs, desc = workload(name, spec["problems"])
    tok = loaded.tokenizer
    prompts = [render_prompt_ids(tok, c) for c in convs]
    sampling = Sampling(n=spec["k"], temperature=0.8, top_k=50, top_p=1.0, max_new_tokens=spec["max_new_tokens"],
                        seed=0)
    total_seqs = len(convs) * spec["k"]
    common = 0
    while common < min(map(len, prompts)) and len({p[common] for p in prompts}) == 1:
        common += 1
    rows: dict[str, dict] = {}
    print(f"== {name}: {len(convs)} problems x K={spec['k']}, {spec['max_new_tokens']} new tokens; prompts "
          f"{min(map(len, prompts))}-{max(map(len, prompts))} tokens, {common} shared by all", flush=True)

    if "a" not in skip:
        r = baseline_sequential(loaded, prompts, sampling, min(spec["baseline_seqs"], total_seqs))
        r["extrapolated_seconds_all"] = round(r["seconds"] * total_seqs / r["sequences"], 1)
        r["note"] = f"measured on {r['sequences']} of {total_seqs} sequences; total time extrapolated"
        rows["a_hf_sequential"] = r
        print(f"(a) {r}", flush=True)
    if "b" not in skip:
        rows["b_hf_batched"] = ours(HFGenerator(loaded, args.hf_batch, prefix_cache=False), convs, sampling)
        rows["b_hf_batched"]["batch_size"] = args.hf_batch
        print(f"(b) {rows['b_hf_batched']}", flush=True)
    if "c" not in skip:
        rows["c_hf_prefix_cache"] = ours(HFGenerator(loaded, args.hf_batch, prefix_cache=True), convs, sampling)
        rows["c_hf_prefix_cache"]["batch_size"] = args.hf_batch
        print(f"(c) {rows['c_hf_prefix_cache']}", flush=True)
    if "d" not in skip:
        try:
            gen = LlamaCppGenerator(GenerationConfig(backend="llamacpp", prefix_cache=True), loaded,
                                    parallel=args.llamacpp_parallel)
            rows["d_llamacpp"] = ours(gen, convs, sampling)
            rows["d_llamacpp"]["parallel"] = args.llamacpp_parallel
            rows["d_llamacpp"]["n_threads"] = gen.engine.n_threads
            del gen
        except Exception as exc:  # llama-cpp-python missing: say so in the table
            rows["d_llamacpp"] = {"error": f"{type(exc).__name__}: {exc}", "note": "not run"}
        print(f"(d) {rows['d_llamacpp']}", flush=True)

    base = rows.get("a_hf_sequential", {}).get("tokens_per_s")
    for r in rows.values():
        if base and r.get("tokens_per_s"):
            r["speedup_vs_sequential"] = round(r["tokens_per_s"] / base, 2)
    fast = [r["tokens_per_s"] for k, r in rows.items() if k != "a_hf_sequential" and r.get("tokens_per_s")]
    return {
        "workload": {"problems": len(convs), "k": spec["k"], "max_new_tokens": spec["max_new_tokens"],
                     "temperature": sampling.temperature, "top_k": sampling.top_k, "dataset": desc,
                     "prompt_tokens_min": min(map(len, prompts)), "prompt_tokens_max": max(map(len, prompts)),
                     "prefix_tokens_shared_by_all": common},
        "results": rows,
        "speedup_best_vs_sequential": round(max(fast) / base, 2) if base and fast else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--problems", type=int, default=None, help="override every workload's problem count")
    ap.add_argument("--baseline-seqs", type=int, default=None, help="override the baseline's sequence count")
    ap.add_argument("--hf-batch", type=int, default=GenerationConfig().batch_size,
                    help="rows decoded together by the hf backend (default: generation.batch_size's default)")
    ap.add_argument("--llamacpp-parallel", type=int, default=64, help="llama.cpp sequence slots")
    ap.add_argument("--skip", default="", help="comma list of a,b,c,d to skip")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default); on a machine other processes load, 1 avoids "
                    "threads waiting on each other")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if args.threads:
        torch.set_num_threads(args.threads)

    load_start = os.getloadavg()
    t_start = time.time()
    loaded = load_model("embedded", device="cpu")
    workloads = {}
    for name in filter(None, args.workloads.split(",")):
        spec = dict(WORKLOADS[name])
        if args.problems:
            spec["problems"] = args.problems
        if args.baseline_seqs:
            spec["baseline_seqs"] = args.baseline_seqs
        workloads[name] = run_workload(loaded, name, spec, args, skip)

    speedups = [w["speedup_best_vs_sequential"] for w in workloads.values()]
    result = {
        "model": loaded.name,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg(),
                    "bench_wall_seconds": round(time.time() - t_start, 1)},
        "workloads": workloads,
        "speedup_best_vs_sequential": min(speedups) if speedups and None not in speedups else None,
    }
    print()
    print(f"{'workload':<11}{'backend':<20}{'seqs':>6}{'useful tok':>12}{'seconds':>10}{'cpu s':>9}{'tok/s':>9}"
          f"{'x (a)':>8}")
    for wname, w in workloads.items():
        for name, r in w["results"].items():
            if "error" in r:
                print(f"{wname:<11}{name:<20}  {r['error']}")
                continue
            print(f"{wname:<11}{name:<20}{r['sequences']:>6}{r['useful_tokens']:>12}{r['seconds']:>10}"
                  f"{r['cpu_seconds']:>9}{r['tokens_per_s']:>9}{r.get('speedup_vs_sequential', ''):>8}")
        if "a_hf_sequential" in w["results"]:
            a = w["results"]["a_hf_sequential"]
            print(f"{wname:<11}(a) {a['note']}: ~{a['extrapolated_seconds_all']} s")
        print(f"{wname:<11}best / sequential = {w['speedup_best_vs_sequential']}")
    print(f"speedup_best_vs_sequential (min over workloads) = {result['speedup_best_vs_sequential']}")
    result["provenance"] = provenance(ROOT / "configs" / "default.yaml")  # the chain_sum workload's config
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
