"""Teacher-signal storage and distillation memory: dense fp32 logits vs the `hidden` and `topk` stores.

    python bench/distill_memory.py            # embedded SmolLM2-135M, CPU; writes bench/results/distill_memory.json

1. storage bytes per answer token: dense fp32 (4 × vocab) vs hidden (fp16, and bf16) vs topk k ∈ {16, 64, 256};
2. loss relative error and gradient cosine (LoRA parameters) of each store vs dense, at T=2 and T=1,
   on GSM8K pairs (hinted teacher prompt, gold solution as the reply);
3. one training step at batch 4, sequence ≈ 1024 tokens, each in its own subprocess so its peak RSS
   is clean: a faithful dense baseline (the full-vocabulary teacher tensor for every position, loaded
   like a stored logits file, + a full softmax over student and teacher logits of every position) vs
   ours (hidden store rows for the answer positions + chunked loss on answer positions only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ssb.alignment import align_pair
from ssb.config import DistillConfig
from ssb.losses import TeacherSignal, answer_hidden_states, distill_loss, reference_loss
from ssb.models import load_model
from ssb.teacher_logits import encode, teacher_hidden

ROOT = Path(__file__).resolve().parent
GSM8K = ROOT.parent / "src" / "ssb" / "benchmarks" / "gsm8k" / "train.jsonl"
SYSTEM = "You are a careful math tutor. Solve the problem step by step, then give the final answer as \\boxed{ANSWER}."
TOPK = (16, 64, 256)


def gsm8k(n: int, offset: int = 0) -> list[dict]:
    with GSM8K.open() as f:
        rows = [json.loads(line) for _, line in zip(range(offset + n), f)]
    return rows[offset:]


def make_pair(tok, row: dict, solution: str | None = None):
    q = row["question"]
    sol = solution if solution is not None else row["solution"].split("####")[0] + f"\\boxed{{{row['answer']}}}"
    student = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
    teacher = [{"role": "system", "content": SYSTEM},
               {"role": "user", "content": f"{q}\n\nHint: a correct solution reaches {row['answer']}; "
                                           "explain the steps clearly."}]
    return align_pair(tok, teacher, student, sol)


def lora(model, r: int = 32):
    from peft import LoraConfig, get_peft_model

    dc = DistillConfig()
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=dc.lora_alpha, target_modules=dc.target_modules,
                                            task_type="CAUSAL_LM"))


def batch_tensors(pairs, pad_id, student=True):
    from ssb.teacher_logits import _pad_batch

    seqs = [p.student_ids if student else p.teacher_ids for p in pairs]
    plen = [len(p.student_prompt_ids if student else p.teacher_prompt_ids) for p in pairs]
    return _pad_batch(seqs, plen, [len(p.reply_ids) for p in pairs], pad_id)


# ----------------------------------------------------------------------------- 1 + 2: storage and fidelity


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def fidelity(lm, n_pairs: int) -> dict:
    model, tok = lm.model, lm.tokenizer
    pairs = [make_pair(tok, r) for r in gsm8k(n_pairs)]
    head = model.get_output_embeddings()
    V, H = head.weight.shape
    with torch.no_grad():
        h_t = torch.cat(teacher_hidden(model, pairs, tok.pad_token_id))  # exact fp32 teacher state
        t_logits = F.linear(h_t, head.weight)  # == the model's dense logits (checked in teacher_logits.check_head)
    n = h_t.shape[0]

    torch.manual_seed(0)
    student = lora(model)
    for name, p in student.named_parameters():  # a student that moved off the base (B = 0 at init)
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1e-3)
    params = [p for p in student.parameters() if p.requires_grad]
    ids, attn, answer = batch_tensors(pairs, tok.pad_token_id)
    h_s = answer_hidden_states(student, ids, attn, answer)
    targets = torch.cat([torch.tensor(p.reply_ids) for p in pairs])

    def grads(loss):
        g = torch.autograd.grad(loss, params, retain_graph=True)
        return torch.cat([x.flatten() for x in g])

    stores = {"hidden": TeacherSignal("hidden", hidden=h_t.half()),
              "hidden_bf16": TeacherSignal("hidden", hidden=h_t.bfloat16())}
    sizes = {"dense": 4 * V, "hidden": 2 * H, "hidden_bf16": 2 * H}
    out = {"answer_tokens": n, "pairs": n_pairs, "vocab_size": V, "hidden_size": H, "rows": {}}
    for T in (2.0, 1.0):
        dense = reference_loss(F.linear(h_s, head.weight), t_logits, temperature=T)
        g_dense = grads(dense)
        sigs = dict(stores)
        for k in TOPK:
            enc = encode(h_t, "topk", torch.float16, head, k, T)
            sigs[f"topk{k}"] = TeacherSignal("topk", temperature=T, **enc)
            sizes[f"topk{k}"] = sum(v.element_size() * v[0].numel() for v in enc.values())
        for name, sig in sigs.items():
            loss = distill_loss(h_s, head.weight, None, sig, targets, temperature=T).loss
            row = out["rows"].setdefault(name, {"store": name, "bytes_per_token": sizes[name]})
            row[f"loss_rel_error_T{T:g}"] = abs(float(loss.detach()) - float(dense.detach())) / abs(float(dense.detach()))
            row[f"grad_cosine_T{T:g}"] = cosine(grads(loss), g_dense)
            if name.startswith("topk"):
                p = torch.exp(sig.topk_logits.float() / T - sig.lse[:, None]).sum(-1)
                row[f"teacher_mass_outside_topk_T{T:g}"] = float(1 - p.mean())
        out[f"dense_loss_T{T:g}"] = float(dense.detach())
    out["dense_bytes_per_token"] = sizes["dense"]
    return out


# ----------------------------------------------------------------------------- 3: one training step (subprocess)


def step_batch(tok, batch: int, seq: int):
    """`batch` pairs of ≈ `seq` tokens: a GSM8K question + several worked solutions as one long reply."""
    rows = gsm8k(batch * 12, offset=100)
    pairs = []
    for b in range(batch):
        group = rows[b * 12:(b + 1) * 12]
        text = ""
        for r in group:
            text += r["solution"].split("####")[0] + "\n"
            pair = make_pair(tok, group[0], text)
            if len(pair.student_ids) >= seq:
                break
        ids = tok(text, add_special_tokens=False)["input_ids"]
        over = len(pair.student_ids) - seq
        if over > 0:  # trim the reply text to land at ≈ seq tokens
            pair = make_pair(tok, group[0], tok.decode(ids[: len(ids) - over - 2]))
        pairs.append(pair)
    return pairs


def prepare_step(lm, batch: int, seq: int, workdir: Path) -> dict:
    """Teacher signals for the step benchmark, written like a stored teacher file would be."""
    from safetensors.torch import save_file

    model, tok = lm.model, lm.tokenizer
    pairs = step_batch(tok, batch, seq)
    ids_t, attn_t, ans_t = batch_tensors(pairs, tok.pad_token_id, student=False)
    with torch.no_grad():
        dense = model(input_ids=ids_t, attention_mask=attn_t).logits.float()  # [B, S_t, V] every position
        hidden = torch.cat(teacher_hidden(model, pairs, tok.pad_token_id)).half()
    save_file({"logits": dense.contiguous()}, str(workdir / "dense.safetensors"))
    save_file({"hidden": hidden.contiguous()}, str(workdir / "hidden.safetensors"))
    spec = [{"student_ids": p.student_ids, "teacher_ids": p.teacher_ids, "student_prompt": len(p.student_prompt_ids),
             "teacher_prompt": len(p.teacher_prompt_ids), "reply": len(p.reply_ids)} for p in pairs]
    (workdir / "batch.json").write_text(json.dumps(spec))
    return {"batch": batch, "seq_tokens": [len(p.student_ids) for p in pairs],
            "answer_tokens": sum(len(p.reply_ids) for p in pairs),
            "dense_file_bytes": (workdir / "dense.safetensors").stat().st_size,
            "hidden_file_bytes": (workdir / "hidden.safetensors").stat().st_size}


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


def one_step(mode: str, workdir: Path, steps: int, T: float = 2.0) -> dict:
    """Runs in a fresh process: load model, LoRA, teacher file, then `steps` training steps."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    lm = load_model("embedded", device="cpu")
    student = lora(lm.model)
    student.train()  # as the Trainer does (LoRA dropout is 0); checkpointing only acts in train mode
    if mode == "ours_ckpt":  # the distill.gradient_checkpointing switch: recompute activations in backward
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        student.enable_input_require_grads()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    spec = json.loads((workdir / "batch.json").read_text())
    pad = lm.tokenizer.pad_token_id
    width = max(len(s["student_ids"]) for s in spec)
    ids = torch.full((len(spec), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    answer = torch.zeros_like(ids, dtype=torch.bool)
    for i, s in enumerate(spec):
        ids[i, : len(s["student_ids"])] = torch.tensor(s["student_ids"])
        attn[i, : len(s["student_ids"])] = 1
        answer[i, s["student_prompt"] - 1: s["student_prompt"] - 1 + s["reply"]] = True
    head = lm.model.get_output_embeddings()
    # warm-up (lazy kernel/allocator initialisation) on a short input, outside the measurement
    student(input_ids=ids[:1, :16]).logits.float().sum().backward()
    opt.zero_grad(set_to_none=True)
    import gc

    gc.collect()
    load_peak = peak_rss_mb()
    rss_before = rss_mb()
    reset_peak_rss()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        if mode == "dense":
            # the reference recipe: load the full teacher logits, full student logits, full softmaxes, mask after
            t_all = load_file(str(workdir / "dense.safetensors"))["logits"]
            t_rows = torch.cat([t_all[i, s["teacher_prompt"] - 1: s["teacher_prompt"] - 1 + s["reply"]]
                                for i, s in enumerate(spec)])
            t_full = torch.zeros(len(spec), width, t_all.shape[-1])
            t_full[answer] = t_rows  # teacher tensor aligned to the student's positions: B × S × V
            del t_all, t_rows
            logits = student(input_ids=ids, attention_mask=attn).logits.float()
            log_q = F.log_softmax(logits / T, -1)
            log_p = F.log_softmax(t_full / T, -1)
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            loss = (kl * answer).sum() / answer.sum() * T * T
        else:
            hidden = load_file(str(workdir / "hidden.safetensors"))["hidden"]
            h = answer_hidden_states(student, ids, attn, answer)
            loss = distill_loss(h, head.weight, None, TeacherSignal("hidden", hidden=hidden), temperature=T,
                                chunk_size=DistillConfig().chunk_size).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        del loss
    tokens = int(attn.sum())
    best = min(times)
    return {"mode": mode, "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_step_mb": round(rss_before, 1),
            "load_peak_rss_mb": round(load_peak, 1),
            "step_seconds": [round(t, 3) for t in times], "tokens_per_step": tokens,
            "answer_tokens_per_step": int(answer.sum()), "tokens_per_s": round(tokens / best, 1)}


def run_step_subprocess(mode: str, workdir: Path, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--step", mode, "--workdir", str(workdir), "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} step failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def table(res: dict) -> str:
    lines = ["| store | bytes/token | vs dense | loss rel err T=2 | grad cos T=2 | loss rel err T=1 | grad cos T=1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
             f"| dense fp32 | {res['dense_bytes_per_token']:,} | 1× | 0 | 1 | 0 | 1 |"]
    for r in res["all_stores"]:
        lines.append(f"| {r['store']} | {r['bytes_per_token']:,} | {res['dense_bytes_per_token'] / r['bytes_per_token']:.0f}× "
                     f"| {r['loss_rel_error_T2']:.2e} | {r['grad_cosine_T2']:.6f} | {r['loss_rel_error_T1']:.2e} "
                     f"| {r['grad_cosine_T1']:.6f} |")
    d, o = res["step"]["dense"], res["step"]["ours"]
    lines += ["", "| training step (batch 4, ≈1024 tokens) | peak RSS MB | RSS before step MB | tokens/s |",
              "| --- | ---: | ---: | ---: |",
              f"| dense baseline | {d['peak_rss_mb']:,.0f} | {d['rss_before_step_mb']:,.0f} | {d['tokens_per_s']} |",
              f"| ours (hidden, chunked) | {o['peak_rss_mb']:,.0f} | {o['rss_before_step_mb']:,.0f} | {o['tokens_per_s']} |",
              f"| ratio | {res['peak_mem_ratio']:.2f}× lower | | {res['tokens_per_s_ratio']:.2f}× faster |"]
    c = res["step"].get("ours_ckpt")
    if c:
        lines += [f"| ours + gradient checkpointing | {c['peak_rss_mb']:,.0f} | {c['rss_before_step_mb']:,.0f} "
                  f"| {c['tokens_per_s']} |",
                  f"| ratio (with checkpointing) | {res['peak_mem_ratio_with_checkpointing']:.2f}× lower | "
                  f"| {res['tokens_per_s_ratio_with_checkpointing']:.2f}× faster |"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6, help="GSM8K pairs for the fidelity comparison")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=1, help="timed training steps per mode, after a short warm-up")
    ap.add_argument("--out", default=str(ROOT / "results" / "distill_memory.json"))
    ap.add_argument("--step", choices=["dense", "ours", "ours_ckpt"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    if args.step:
        print(json.dumps(one_step(args.step, Path(args.workdir), args.steps)))
        return

    t0 = time.time()
    lm = load_model("embedded", device="cpu")
    fid = fidelity(lm, args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        batch = prepare_step(lm, args.batch, args.seq, workdir)
        del lm
        step = {"batch": batch, "dense": run_step_subprocess("dense", workdir, args.steps),
                "ours": run_step_subprocess("ours", workdir, args.steps),
                "ours_ckpt": run_step_subprocess("ours_ckpt", workdir, args.steps)}
    rows = list(fid["rows"].values())
    hidden = fid["rows"]["hidden"]
    res = {
        "model": "embedded (SmolLM2-135M-Instruct)",
        "device": "cpu",
        "store": "hidden",
        "bytes_per_token": hidden["bytes_per_token"],
        "dense_bytes_per_token": fid["dense_bytes_per_token"],
        "bytes_ratio": fid["dense_bytes_per_token"] / hidden["bytes_per_token"],
        "loss_rel_error": hidden["loss_rel_error_T2"],
        "grad_cosine": hidden["grad_cosine_T2"],
        "peak_mem_ratio": step["dense"]["peak_rss_mb"] / step["ours"]["peak_rss_mb"],
        "peak_mem_delta_ratio": (step["dense"]["peak_rss_mb"] - step["dense"]["rss_before_step_mb"])
        / max(step["ours"]["peak_rss_mb"] - step["ours"]["rss_before_step_mb"], 1e-9),
        "tokens_per_s_ratio": step["ours"]["tokens_per_s"] / step["dense"]["tokens_per_s"],
        # the same loss with distill.gradient_checkpointing=true (not the default: ~30% more compute)
        "peak_mem_ratio_with_checkpointing": step["dense"]["peak_rss_mb"] / step["ours_ckpt"]["peak_rss_mb"],
        "tokens_per_s_ratio_with_checkpointing": step["ours_ckpt"]["tokens_per_s"] / step["dense"]["tokens_per_s"],
        "topk_sweep": [r for r in rows if r["store"].startswith("topk")],
        "all_stores": rows,
        "fidelity": {k: v for k, v in fid.items() if k != "rows"},
        "step": step,
        "targets": {"bytes_ratio": 150, "loss_rel_error": 1e-3, "grad_cosine": 0.999, "peak_mem_ratio": 4,
                    "tokens_per_s_ratio": 1.5},
        "seconds": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
    }
    tg = res["targets"]
    res["missed_targets"] = [k for k, ok in {
        "bytes_ratio": res["bytes_ratio"] >= tg["bytes_ratio"],
        "loss_rel_error": res["loss_rel_error"] <= tg["loss_rel_error"],
        "grad_cosine": res["grad_cosine"] >= tg["grad_cosine"],
        "peak_mem_ratio": res["peak_mem_ratio"] >= tg["peak_mem_ratio"],
        "tokens_per_s_ratio": res["tokens_per_s_ratio"] >= tg["tokens_per_s_ratio"]}.items() if not ok]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(f"\nmissed targets: {res['missed_targets'] or 'none'}   ({res['seconds']} s)   -> {args.out}")


if __name__ == "__main__":
    main()
