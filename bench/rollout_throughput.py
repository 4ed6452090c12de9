"""Rollout throughput on the embedded model: useful tokens/s for

  (a) a faithful baseline: HF ``generate`` one sequence at a time (as the paper's
      reference code samples its rollouts),
  (b) our hf backend: length-sorted, left-padded batches with the KV cache,
  (c) our llamacpp backend: many sequences in one llama.cpp batch, continuous batching.

Same 32 GSM8K test problems x K=4 samples x 256 new tokens, same prompt (system prompt +
question through the chat template), temperature 0.8, top-k 50. "Useful" tokens are the
generated tokens up to and including the end-of-turn token (padding and the tokens a
batch keeps computing for finished rows do not count).

The baseline is slow, so it is measured on the first ``--baseline-seqs`` sequences and
its total time is extrapolated from its tokens/s (printed as such).

    python bench/rollout_throughput.py [--problems 32 --k 4 --max-new-tokens 256]
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

from ssb.config import GenerationConfig, PromptConfig
from ssb.data import load_benchmark
from ssb.engine_llamacpp import LlamaCppGenerator
from ssb.generate import HFGenerator, Sampling, derive_seed, stop_token_ids
from ssb.models import load_model
from ssb.prompts import render_prompt_ids, student_messages

RESULTS = Path(__file__).parent / "results" / "rollout_throughput.json"


def useful_tokens(gen_ids: list[int], stops: set[int]) -> int:
    for i, t in enumerate(gen_ids):
        if t in stops:
            return i + 1
    return len(gen_ids)


@torch.no_grad()
def baseline_sequential(loaded, prompts: list[list[int]], sampling: Sampling, n_seqs: int) -> dict:
    """HF generate, batch of one, sampling with the model's own sampler."""
    model, tok = loaded.model, loaded.tokenizer
    stops = stop_token_ids(tok, model)
    jobs = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)][:n_seqs]
    tokens, t0 = 0, time.time()
    for i, j in jobs:
        torch.manual_seed(derive_seed(sampling.seed, i, j) % 2**31)
        ids = torch.tensor([prompts[i]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                             max_new_tokens=sampling.max_new_tokens, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id)
        tokens += useful_tokens(out[0, ids.shape[1]:].tolist(), set(stops))
    dt = time.time() - t0
    return {"sequences": len(jobs), "useful_tokens": tokens, "seconds": round(dt, 2),
            "tokens_per_s": round(tokens / dt, 2)}


def ours(gen, convs, sampling: Sampling) -> dict:
    t0 = time.time()
    out = gen.generate(convs, sampling, progress=f"bench[{gen.backend}]")
    dt = time.time() - t0
    comps = [c for cs in out for c in cs]
    tokens = sum(c.completion_tokens for c in comps)  # already cut at the stop token
    return {"sequences": len(comps), "useful_tokens": tokens, "seconds": round(dt, 2),
            "tokens_per_s": round(tokens / dt, 2), "truncated": sum(c.finish_reason == "length" for c in comps)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--baseline-seqs", type=int, default=8, help="sequences the one-at-a-time baseline runs")
    ap.add_argument("--hf-batch", type=int, default=32)
    ap.add_argument("--llamacpp-parallel", type=int, default=16)
    ap.add_argument("--skip", default="", help="comma list of a,b,c to skip")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    loaded = load_model("embedded", device="cpu")
    problems = load_benchmark("gsm8k", "test")[: args.problems]
    convs = [student_messages(PromptConfig(), p.question) for p in problems]
    prompts = [render_prompt_ids(loaded.tokenizer, c) for c in convs]
    sampling = Sampling(n=args.k, temperature=0.8, top_k=50, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    total_seqs = len(convs) * args.k
    rows: dict[str, dict] = {}

    if "a" not in skip:
        r = baseline_sequential(loaded, prompts, sampling, min(args.baseline_seqs, total_seqs))
        r["extrapolated_seconds_all"] = round(r["seconds"] * total_seqs / r["sequences"], 1)
        r["note"] = f"measured on {r['sequences']} of {total_seqs} sequences; total time extrapolated"
        rows["a_hf_sequential"] = r
        print(f"(a) {r}", flush=True)
    if "b" not in skip:
        rows["b_hf_batched"] = ours(HFGenerator(loaded, args.hf_batch), convs, sampling)
        rows["b_hf_batched"]["batch_size"] = args.hf_batch
        print(f"(b) {rows['b_hf_batched']}", flush=True)
    if "c" not in skip:
        try:
            gen = LlamaCppGenerator(GenerationConfig(backend="llamacpp"), loaded, parallel=args.llamacpp_parallel)
            rows["c_llamacpp"] = ours(gen, convs, sampling)
            rows["c_llamacpp"]["parallel"] = args.llamacpp_parallel
        except Exception as exc:  # llama-cpp-python missing: say so in the table
            rows["c_llamacpp"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"(c) {rows['c_llamacpp']}", flush=True)

    base = rows.get("a_hf_sequential", {}).get("tokens_per_s")
    for r in rows.values():
        if base and r.get("tokens_per_s"):
            r["speedup_vs_sequential"] = round(r["tokens_per_s"] / base, 2)
    fast = [r["tokens_per_s"] for k, r in rows.items() if k != "a_hf_sequential" and r.get("tokens_per_s")]
    result = {
        "model": loaded.name,
        "workload": {"problems": len(convs), "k": args.k, "max_new_tokens": args.max_new_tokens,
                     "temperature": sampling.temperature, "top_k": sampling.top_k, "dataset": "gsm8k test[:N]"},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg()},
        "results": rows,
        "speedup_best_vs_sequential": round(max(fast) / base, 2) if base and fast else None,
    }
    print()
    print(f"{'backend':<22}{'seqs':>6}{'useful tok':>12}{'seconds':>10}{'tok/s':>9}{'x (a)':>8}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<22}  {r['error']}")
            continue
        print(f"{name:<22}{r['sequences']:>6}{r['useful_tokens']:>12}{r['seconds']:>10}{r['tokens_per_s']:>9}"
              f"{r.get('speedup_vs_sequential', ''):>8}")
    if "a_hf_sequential" in rows:
        print(f"(a) {rows['a_hf_sequential']['note']}: ~{rows['a_hf_sequential']['extrapolated_seconds_all']} s")
    print(f"speedup_best_vs_sequential = {result['speedup_best_vs_sequential']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
