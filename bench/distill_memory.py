"""Teacher-signal storage and distillation memory: dense fp32 logits vs the `hidden` and `topk` stores.

    python bench/distill_memory.py            # embedded SmolLM2-135M, CPU; writes bench/results/distill_memory.json

1. storage bytes per answer token: dense fp32 (4 × vocab) vs hidden (fp16, and bf16) vs topk k ∈ {16, 64, 256};
2. loss relative error and gradient cosine (LoRA parameters) of each store vs dense, at T=2 and T=1,
   on GSM8K pairs (hinted teacher prompt, gold solution as the reply);
3. one training step at batch 4, sequence ≈ 1024 tokens, each in its own subprocess so its peak RSS
   is clean: a faithful dense baseline (the full-vocabulary teacher tensor for every position, loaded
   like a stored logits file, + a full softmax over student and teacher logits of every position) vs
   ours (hidden store rows for the answer positions + chunked loss on answer positions only), each
   with and without gradient checkpointing (like is compared with like), and the peak RSS of each
   stage (teacher load, forward, loss, backward, optimizer) so it shows where memory goes.

Two model shapes for step 3:

* ``qwen2.5-0.5b`` (the headline fields ``peak_mem_ratio`` / ``tokens_per_s_ratio``): Qwen2.5-0.5B's
  shape (vocabulary 151,936, hidden 896, 24 layers, 14 heads / 2 KV heads, intermediate 4,864, tied
  embeddings) built from a ``Qwen2Config`` with random weights (seeded; nothing is downloaded). The
  token ids are the embedded tokenizer's (all < 49,152); the teacher signal is random post-norm
  hidden states (N(0, 1), as an RMSNorm output), and the dense teacher file holds the head's
  logits of them at the answer positions (zeros elsewhere): same sizes as a real teacher's.
* ``embedded`` (SmolLM2-135M, vocabulary 49,152, under ``embedded``): the real model, real
  teacher signal from the hinted prompt.

The fidelity fields (``loss_rel_error``, ``grad_cosine``) come from the embedded model (part 2).

Peak RSS and the allocator: with glibc's default settings, memory freed by a tensor under the
mmap threshold (which grows to 32 MiB as big blocks are freed) stays in the process's heap, so
the RSS of a step measures allocator retention as much as live tensors (a checkpointed forward
of the embedded model at 4 × 1024 tokens: +3.2 GB RSS with 0.39 GB of saved tensors). Run with
``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment (recorded under ``machine.allocator``) and
every tensor over 1 MiB is returned to the system when freed: peak RSS then tracks live memory,
for both modes alike, at some cost in speed (page faults):

    MALLOC_MMAP_THRESHOLD_=1048576 python -m bench.distill_memory --mem-limit-gb 20
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ssb.models import load_model
from ssb.signal.alignment import align_pair
from ssb.signal.lm_head import answer_hidden_states
from ssb.signal.losses import TeacherSignal, distill_loss, reference_loss
from ssb.stages.logits import encode, pad_batch, teacher_hidden

from ._meta import ROOT, provenance
from .distill_step import lora, qwen_shape_model, run_step_subprocess

GSM8K = ROOT / "src" / "ssb" / "benchmarks" / "gsm8k" / "train.jsonl"
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


def batch_tensors(pairs, pad_id, student=True):
    seqs = [p.student_ids if student else p.teacher_ids for p in pairs]
    plen = [len(p.student_prompt_ids if student else p.teacher_prompt_ids) for p in pairs]
    return pad_batch(seqs, plen, [len(p.reply_ids) for p in pairs], pad_id)


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


def _write_spec(pairs, workdir: Path) -> None:
    spec = [{"student_ids": p.student_ids, "teacher_ids": p.teacher_ids, "student_prompt": len(p.student_prompt_ids),
             "teacher_prompt": len(p.teacher_prompt_ids), "reply": len(p.reply_ids)} for p in pairs]
    (workdir / "batch.json").write_text(json.dumps(spec))


def prepare_qwen_step(tok, batch: int, seq: int, workdir: Path) -> dict:
    """Teacher files for the Qwen-shaped model: random post-norm hidden states for the answer
    positions, and the dense [B, S_teacher, V] fp32 logits file the baseline loads."""
    from safetensors.torch import save_file

    pairs = step_batch(tok, batch, seq)
    _write_spec(pairs, workdir)
    model = qwen_shape_model()
    W = model.get_output_embeddings().weight.detach()
    V, H = W.shape
    g = torch.Generator().manual_seed(7)
    n_ans = [len(p.reply_ids) for p in pairs]
    hidden = torch.randn(sum(n_ans), H, generator=g).half()
    width = max(len(p.teacher_ids) for p in pairs)
    dense = torch.zeros(len(pairs), width, V)
    row = 0
    with torch.no_grad():
        for b, p in enumerate(pairs):
            start = len(p.teacher_prompt_ids) - 1
            dense[b, start:start + n_ans[b]] = F.linear(hidden[row:row + n_ans[b]].float(), W)
            row += n_ans[b]
    del model, W
    save_file({"hidden": hidden.contiguous()}, str(workdir / "hidden.safetensors"))
    save_file({"logits": dense}, str(workdir / "dense.safetensors"))
    del dense
    return {"batch": batch, "seq_tokens": [len(p.student_ids) for p in pairs], "answer_tokens": sum(n_ans),
            "vocab_size": V, "hidden_size": H,
            "dense_file_bytes": (workdir / "dense.safetensors").stat().st_size,
            "hidden_file_bytes": (workdir / "hidden.safetensors").stat().st_size}


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
    _write_spec(pairs, workdir)
    return {"batch": batch, "seq_tokens": [len(p.student_ids) for p in pairs],
            "answer_tokens": sum(len(p.reply_ids) for p in pairs),
            "dense_file_bytes": (workdir / "dense.safetensors").stat().st_size,
            "hidden_file_bytes": (workdir / "hidden.safetensors").stat().st_size}


def ratios(step: dict) -> dict:
    """ours vs dense at the same gradient-checkpointing setting (where both ran)."""
    out = {}
    for suffix in ("", "_ckpt"):
        d, o = step.get("dense" + suffix), step.get("ours" + suffix)
        key = "_with_checkpointing" if suffix else ""
        if d and o and "error" in d and "error" not in o:  # the baseline did not fit: a lower bound
            out["peak_mem_ratio" + key + "_lower_bound"] = d["mem_limit_mb"] / o["peak_rss_mb"]
        if d and o and "error" not in d and "error" not in o:
            out["peak_mem_ratio" + key] = d["peak_rss_mb"] / o["peak_rss_mb"]
            out["tokens_per_s_ratio" + key] = o["tokens_per_s"] / d["tokens_per_s"]
            out["peak_mem_delta_ratio" + key] = ((d["peak_rss_mb"] - d["rss_before_step_mb"])
                                                 / max(o["peak_rss_mb"] - o["rss_before_step_mb"], 1e-9))
    return out


# ----------------------------------------------------------------------------- main


def step_lines(title: str, step: dict, rat: dict) -> list[str]:
    lines = ["", f"| {title} | peak RSS MB | RSS before step MB | tokens/s | stage peaks MB (teacher load / forward / loss / backward / optimizer) |",
             "| --- | ---: | ---: | ---: | --- |"]
    names = {"dense": "dense baseline", "ours": "ours (hidden, chunked)", "dense_ckpt": "dense + grad. checkpointing",
             "ours_ckpt": "ours + grad. checkpointing"}
    for mode, label in names.items():
        r = step.get(mode)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {label} | {r['error']} | | | |")
            continue
        st = " / ".join(f"{r['stage_peak_rss_mb'].get(k, 0):,.0f}" for k in ("teacher_load", "forward", "loss",
                                                                            "backward", "optimizer"))
        lines.append(f"| {label} | {r['peak_rss_mb']:,.0f} | {r['rss_before_step_mb']:,.0f} | {r['tokens_per_s']} | {st} |")
    for key, label in (("", "without"), ("_with_checkpointing", "with")):
        if "peak_mem_ratio" + key in rat:
            lines.append(f"| ratio, {label} checkpointing | {rat['peak_mem_ratio' + key]:.2f}× lower | | "
                         f"{rat['tokens_per_s_ratio' + key]:.2f}× faster | |")
    return lines


def table(res: dict) -> str:
    lines = ["| store | bytes/token | vs dense | loss rel err T=2 | grad cos T=2 | loss rel err T=1 | grad cos T=1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
             f"| dense fp32 | {res['dense_bytes_per_token']:,} | 1× | 0 | 1 | 0 | 1 |"]
    for r in res["all_stores"]:
        lines.append(f"| {r['store']} | {r['bytes_per_token']:,} | {res['dense_bytes_per_token'] / r['bytes_per_token']:.0f}× "
                     f"| {r['loss_rel_error_T2']:.2e} | {r['grad_cosine_T2']:.6f} | {r['loss_rel_error_T1']:.2e} "
                     f"| {r['grad_cosine_T1']:.6f} |")
    if res.get("step"):
        lines += step_lines("Qwen2.5-0.5B shape, batch 4 × ≈1024 tokens", res["step"], res["ratios"])
    if res["embedded"].get("step"):
        lines += step_lines("embedded SmolLM2-135M, batch 4 × ≈1024 tokens", res["embedded"]["step"], res["embedded"])
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6, help="GSM8K pairs for the fidelity comparison")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=1, help="timed training steps per mode, after a short warm-up")
    ap.add_argument("--shapes", default="qwen2.5-0.5b,embedded")
    ap.add_argument("--mem-limit-gb", type=float, default=17.0,
                    help="address-space limit of each step process (the machine is shared; 0: none)")
    ap.add_argument("--qwen-modes", default="dense_ckpt,ours_ckpt",
                    help="modes for the Qwen shape; the dense baseline without checkpointing needs ~24 GB "
                    "(weights 2 + activations ~7 + five B×S×V fp32 tensors of 2.5 GB), more than this machine has")
    ap.add_argument("--embedded-modes", default="dense,ours,dense_ckpt,ours_ckpt")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distill_memory.json"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    t0 = time.time()
    load_start = os.getloadavg()
    shapes = set(filter(None, args.shapes.split(",")))
    lm = load_model("embedded", device="cpu")
    tok = lm.tokenizer
    fid = fidelity(lm, args.pairs)
    emb_step: dict = {}
    qwen_step: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "qwen2.5-0.5b" in shapes:
            workdir = Path(tmp) / "qwen"
            workdir.mkdir()
            qwen_step["batch"] = prepare_qwen_step(tok, args.batch, args.seq, workdir)
            for mode in filter(None, args.qwen_modes.split(",")):
                qwen_step[mode] = run_step_subprocess(mode, workdir, args.steps, "qwen2.5-0.5b", args.mem_limit_gb)
            for f in workdir.glob("*.safetensors"):
                f.unlink()
        if "embedded" in shapes:
            workdir = Path(tmp) / "embedded"
            workdir.mkdir()
            emb_step["batch"] = prepare_step(lm, args.batch, args.seq, workdir)
            del lm
            for mode in filter(None, args.embedded_modes.split(",")):
                emb_step[mode] = run_step_subprocess(mode, workdir, args.steps, "embedded", args.mem_limit_gb)
            for f in workdir.glob("*.safetensors"):
                f.unlink()
    rows = list(fid["rows"].values())
    hidden = fid["rows"]["hidden"]
    emb = {"model": "embedded (SmolLM2-135M-Instruct)", "step": emb_step, **ratios(emb_step)}
    qr = ratios(qwen_step)
    # headline: ours vs dense at the same checkpointing setting, on the Qwen shape; without
    # checkpointing where both ran, else with it (the dense baseline does not fit without it)
    head_key = "" if "peak_mem_ratio" in qr else "_with_checkpointing"
    res = {
        "model": "Qwen2.5-0.5B shape (random weights), step at batch 4 × ≈1024 tokens",
        "device": "cpu",
        "store": "hidden",
        "bytes_per_token": hidden["bytes_per_token"],
        "dense_bytes_per_token": fid["dense_bytes_per_token"],
        "bytes_ratio": fid["dense_bytes_per_token"] / hidden["bytes_per_token"],
        "loss_rel_error": hidden["loss_rel_error_T2"],
        "grad_cosine": hidden["grad_cosine_T2"],
        "peak_mem_ratio": qr.get("peak_mem_ratio" + head_key),
        "tokens_per_s_ratio": qr.get("tokens_per_s_ratio" + head_key),
        "headline_gradient_checkpointing": head_key != "",
        "ratios": qr,
        "step": qwen_step,
        "embedded": emb,
        "topk_sweep": [r for r in rows if r["store"].startswith("topk")],
        "all_stores": rows,
        "fidelity": {**{k: v for k, v in fid.items() if k != "rows"},
                     "note": "fidelity of the stores is measured on the embedded model (bytes per token: its vocab)"},
        "targets": {"bytes_ratio": 150, "loss_rel_error": 1e-3, "grad_cosine": 0.999, "peak_mem_ratio": 4,
                    "tokens_per_s_ratio": 1.5},
        "seconds": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg(),
                    "allocator": {"MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_")},
                    "mem_limit_gb": args.mem_limit_gb},
    }
    tg = res["targets"]
    res["missed_targets"] = [k for k, ok in {
        "bytes_ratio": res["bytes_ratio"] >= tg["bytes_ratio"],
        "loss_rel_error": res["loss_rel_error"] <= tg["loss_rel_error"],
        "grad_cosine": res["grad_cosine"] >= tg["grad_cosine"],
        "peak_mem_ratio": (res["peak_mem_ratio"] or 0) >= tg["peak_mem_ratio"],
        "tokens_per_s_ratio": (res["tokens_per_s_ratio"] or 0) >= tg["tokens_per_s_ratio"]}.items() if not ok]
    res["provenance"] = provenance()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(f"\nmissed targets: {res['missed_targets'] or 'none'}   ({res['seconds']} s)   -> {args.out}")


if __name__ == "__main__":
    main()
