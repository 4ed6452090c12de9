"""One training step of ``python -m bench.distill_memory`` in a process of its own, so its peak RSS is clean.

    python -m bench.distill_step MODE --workdir DIR --steps N --shape {embedded,qwen2.5-0.5b}

``MODE``: ``dense`` (the full-vocabulary reference: the whole teacher logits tensor, full softmaxes)
or ``ours`` (hidden-store rows for the answer positions + the chunked loss), ``_ckpt`` appended for
gradient checkpointing. Prints one JSON line: the peak RSS and seconds of each stage (teacher load, forward,
loss, backward, optimizer), step seconds and tokens/s. ``DIR`` holds the batch written by
``distill_memory.py`` (``batch.json``, ``dense.safetensors``, ``hidden.safetensors``).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ssb.config_train import DistillConfig, LoRAConfig
from ssb.signal.lm_head import answer_hidden_states
from ssb.signal.losses import TeacherSignal, distill_loss
from ssb.models import load_model, lora_config

from ._meta import ROOT


def lora(model, r: int = 32):
    from peft import get_peft_model

    return get_peft_model(model, lora_config(LoRAConfig(r=r)))



QWEN_SHAPE = dict(vocab_size=151_936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, intermediate_size=4_864, tie_word_embeddings=True,
                  max_position_embeddings=32_768, rope_theta=1_000_000.0, rms_norm_eps=1e-6)


def qwen_shape_model():
    """Qwen2.5-0.5B's architecture with random (seeded, reproducible) weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1234)
    return Qwen2ForCausalLM(Qwen2Config(**QWEN_SHAPE)).eval()



def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Linux: reset the process's peak RSS (VmHWM) to its current RSS, so the step's peak is clean."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def one_step(mode: str, workdir: Path, steps: int, T: float = 2.0, shape: str = "embedded") -> dict:
    """Runs in a fresh process: load model, LoRA, teacher file, then `steps` training steps.
    ``mode``: dense | ours, ``_ckpt`` appended for gradient checkpointing."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    if shape == "qwen2.5-0.5b":
        base = qwen_shape_model()
        pad = 0
    else:
        lm = load_model("embedded", device="cpu")
        base, pad = lm.model, lm.tokenizer.pad_token_id
    student = lora(base)
    student.train()  # as the Trainer does (LoRA dropout is 0); checkpointing only acts in train mode
    ckpt = mode.endswith("_ckpt")
    mode = mode.removesuffix("_ckpt")
    if ckpt:  # the distill.gradient_checkpointing switch: recompute activations in backward
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        student.enable_input_require_grads()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    spec = json.loads((workdir / "batch.json").read_text())
    width = max(len(s["student_ids"]) for s in spec)
    ids = torch.full((len(spec), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    answer = torch.zeros_like(ids, dtype=torch.bool)
    for i, s in enumerate(spec):
        ids[i, : len(s["student_ids"])] = torch.tensor(s["student_ids"])
        attn[i, : len(s["student_ids"])] = 1
        answer[i, s["student_prompt"] - 1: s["student_prompt"] - 1 + s["reply"]] = True
    head = base.get_output_embeddings()
    # warm-up (lazy kernel/allocator initialisation) on a short input, outside the measurement
    student(input_ids=ids[:1, :16]).logits.float().sum().backward()
    opt.zero_grad(set_to_none=True)
    gc.collect()
    load_peak = peak_rss_mb()
    rss_before = rss_mb()
    reset_peak_rss()
    stages: dict[str, float] = {}
    stage_seconds: dict[str, float] = {}
    clock = [0.0]

    def mark(stage: str) -> None:  # peak RSS and seconds since the previous mark (first step only)
        if not times:
            now = time.perf_counter()
            stages[stage] = round(peak_rss_mb(), 1)
            stage_seconds[stage] = round(now - clock[0], 3)
            reset_peak_rss()
            clock[0] = time.perf_counter()

    times: list[float] = []
    for _ in range(steps):
        t0 = clock[0] = time.perf_counter()
        if mode == "dense":
            # the reference recipe: load the full teacher logits, full student logits, full softmaxes, mask after
            t_all = load_file(str(workdir / "dense.safetensors"))["logits"]
            t_rows = torch.cat([t_all[i, s["teacher_prompt"] - 1: s["teacher_prompt"] - 1 + s["reply"]]
                                for i, s in enumerate(spec)])
            t_full = torch.zeros(len(spec), width, t_all.shape[-1])
            t_full[answer] = t_rows  # teacher tensor aligned to the student's positions: B × S × V
            del t_all, t_rows
            mark("teacher_load")
            logits = student(input_ids=ids, attention_mask=attn).logits.float()
            mark("forward")
            log_q = F.log_softmax(logits / T, -1)
            log_p = F.log_softmax(t_full / T, -1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            loss = (kl * answer).sum() / answer.sum() * T * T
            del logits, log_q, log_p, kl, t_full
            mark("loss")
        else:
            hidden = load_file(str(workdir / "hidden.safetensors"))["hidden"]
            mark("teacher_load")
            h = answer_hidden_states(student, ids, attn, answer)
            mark("forward")
            loss = distill_loss(h, head.weight, None, TeacherSignal("hidden", hidden=hidden), temperature=T,
                                chunk_size=DistillConfig().chunk_size).loss
            del h, hidden
            mark("loss")
        loss.backward()
        mark("backward")
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark("optimizer")
        times.append(time.perf_counter() - t0)
        del loss
    tokens = int(attn.sum())
    best = min(times)
    return {"mode": mode + ("_ckpt" if ckpt else ""), "shape": shape, "gradient_checkpointing": ckpt,
            "peak_rss_mb": max(stages.values()), "rss_before_step_mb": round(rss_before, 1),
            "stage_peak_rss_mb": stages, "stage_seconds": stage_seconds, "load_peak_rss_mb": round(load_peak, 1),
            "step_seconds": [round(t, 3) for t in times], "tokens_per_step": tokens,
            "answer_tokens_per_step": int(answer.sum()), "tokens_per_s": round(tokens / best, 1)}


def run_step_subprocess(mode: str, workdir: Path, steps: int, shape: str = "embedded",
                        mem_limit_gb: float = 0) -> dict:
    """One step in a fresh process. ``mem_limit_gb``: its address-space limit (RLIMIT_AS), so a
    variant that does not fit fails with an allocation error (recorded) instead of pushing a
    shared machine into the OOM killer."""
    import resource

    cmd = [sys.executable, "-m", "bench.distill_step", mode, "--workdir", str(workdir), "--steps", str(steps),
           "--shape", shape]
    limit = int(mem_limit_gb * 2**30)

    def cap():
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, preexec_fn=cap, cwd=ROOT)
    if out.returncode != 0:
        if limit and ("can't allocate memory" in out.stderr or "MemoryError" in out.stderr):
            print(f"  {shape:<13} {mode:<10} did not fit in {mem_limit_gb} GB of address space", flush=True)
            return {"mode": mode, "shape": shape, "error": f"did not fit in {mem_limit_gb} GB (RLIMIT_AS)",
                    "mem_limit_mb": limit / 2**20, "stderr_tail": out.stderr[-400:]}
        raise RuntimeError(f"{shape} {mode} step failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {shape:<13} {mode:<10} peak {r['peak_rss_mb']:>8,.0f} MB  {r['tokens_per_s']:>7} tok/s  "
          f"stages {r['stage_peak_rss_mb']}  ({time.time() - t0:.0f} s)", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["dense", "ours", "dense_ckpt", "ours_ckpt"])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--shape", default="embedded", choices=["embedded", "qwen2.5-0.5b"])
    args = ap.parse_args()
    print(json.dumps(one_step(args.mode, Path(args.workdir), args.steps, shape=args.shape)))


if __name__ == "__main__":
    main()
