"""The compute ledger: tokens and FLOPs of every stage and every arm of a run.

Counts are read from what the stages wrote (``rollouts.jsonl``, ``pairs.jsonl`` +
``teacher_rejects.jsonl``, the manifest), so a resumed stage is counted once over all its
invocations. Four kinds of tokens, each priced per token with ``N`` the model's matmul
parameters (every weight a token is multiplied by: all but the input embedding; the LM
head counted once, tied or not) and ``N_lora`` the adapter's:

* ``prefill_tokens`` (prompt tokens encoded before generating): 2N each. A prompt is
  counted once for the samples drawn from it (the K rollouts of a problem, a GRPO group):
  ssb's engine and vLLM's prefix cache encode it once; TRL's plain ``generate`` encodes it
  per sample, which is an implementation's cost, not the method's;
* ``generated_tokens`` (sampled): 2N each;
* ``forward_tokens`` (forward only, no gradient: the teacher signal, the teacher stage's plausibility
  pass over student prompt + solution, GRPO's reference model, and with ``distill.token_weighting:
  hint_gain`` distill's pass of the frozen base over the student sequences): 2N;
* ``trained_tokens`` (forward + backward; every position of the sequence, prompt included,
  since the adapter's gradient flows through all of them): 4N + 6 N_lora each. The frozen
  base needs the activation gradients (2N) but not its weight gradients (the 2N full
  fine-tuning adds: 6N); the adapter's own matmuls cost 6 N_lora. Gradient checkpointing
  recomputes the forward: +2N.

Attention's context-dependent FLOPs (2 x layers x context x width per token) are left out:
at the contexts here (< 300 tokens) they are a few percent of 2N for SmolLM2-135M. Evaluation
is counted apart (``evaluation``): it measures a model, it does not make one.

Which stage an arm pays for is the stage table's ``cost_of`` (``rundir/table.py``): SSB pays
rollout, curate, teacher, logits and distill; SFT rollout, curate, teacher and its own
training; RFT rollout and its own training; GRPO only itself (with ``grpo.problems: mixed`` also the
rollouts and curation it takes its problems from: :func:`pays`); SDFT rollout and curate (its
privileged context is SSB's hint, a verified rollout) and its own stage, whose counts
(``stages/sdft.py``) are the student's sampling (``prefill_tokens``: each prompt once per group of
samples; ``generated_tokens``), the frozen teacher's forward over hinted prompt + answer of every
sample (``forward_tokens``) and the student's forward and backward over prompt + answer of every
sample (``trained_tokens``), so ``flops.sdft`` is priced like ``flops.ssb``. With rounds (``rounds.n`` > 1) the arm ``ssb@<r>`` is SSB after round r: every
round's stages up to r added up (:func:`round_arms`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..rundir.jsonl import read_jsonl
from ..rundir.run import Run, total_seconds
from ..rundir.table import STAGES

KINDS = ("prefill_tokens", "generated_tokens", "forward_tokens", "trained_tokens")
FLOP_RULE = ("FLOPs = 2N x (prefill + generated + forward tokens) + (4N + 6 N_lora) x trained tokens "
             "(+2N x trained with gradient checkpointing); N = matmul parameters (all but the input embedding), "
             "N_lora = adapter parameters; a prompt's prefill counted once for the samples drawn from it; "
             "attention's context term left out")


@lru_cache(maxsize=8)
def _params(directory: str, gguf: str | None, revision: str | None, trust: bool,
            targets: tuple[str, ...], r: int) -> dict[str, int]:
    import torch  # lazy: only the ledger's parameter count needs it
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..models import _gguf_cache_path

    cached = _gguf_cache_path(directory, gguf) if gguf else None
    if cached is not None and not (cached / "config.json").is_file():  # not converted on this machine yet:
        config = AutoConfig.from_pretrained(directory, gguf_file=gguf)  # the GGUF's metadata, no weights
    else:
        config = AutoConfig.from_pretrained(str(cached or directory), revision=revision, trust_remote_code=trust)
    with torch.device("meta"):  # shapes only: no memory, no weights read
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust)
    total = sum(p.numel() for p in model.parameters())  # a tied head is counted once
    emb = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    lora = sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in targets and m is not
               model.get_output_embeddings())
    return {"total": int(total), "matmul": int(total - emb + head), "lora": int(lora)}


def model_params(cfg) -> dict[str, int]:
    """``{"total", "matmul", "lora"}`` parameter counts of ``cfg``'s model (a ``RunConfig``) and its
    adapter, from the model's config on the meta device (no weights are loaded)."""
    from ..models import resolve_source  # lazy: imports torch

    directory, gguf = resolve_source(cfg.model)
    return _params(directory, gguf, cfg.model.revision, bool(cfg.model.trust_remote_code),
                   tuple(cfg.lora.target_modules), int(cfg.lora.r))


def flops(counts: dict[str, Any], params: dict[str, int], checkpointing: bool = False) -> float:
    """FLOPs of ``counts`` (token counts by kind) under :data:`FLOP_RULE`."""
    n, n_lora = params["matmul"], params["lora"]
    fwd = sum(int(counts.get(k) or 0) for k in ("prefill_tokens", "generated_tokens", "forward_tokens"))
    train = int(counts.get("trained_tokens") or 0)
    return float(2 * n * fwd + (4 * n + 6 * n_lora + (2 * n if checkpointing else 0)) * train)


# ----------------------------------------------------------------------------- counts per stage


def stage_counts(run: Run, name: str) -> dict[str, int] | None:
    """Token counts of one stage of ``run`` (None: it has not run)."""
    entry = run.stage(name)
    if name == "rollout":
        recs = read_jsonl(run.file("rollouts.jsonl"))
        if not recs:
            return None
        return {"prefill_tokens": sum(int(r.get("prompt_tokens") or 0) for r in recs),
                "generated_tokens": sum(sum(r.get("completion_tokens") or []) for r in recs)}
    if name == "teacher":
        recs = read_jsonl(run.file("pairs.jsonl")) + read_jsonl(run.file("teacher_rejects.jsonl"))
        if not recs and not entry:
            return None
        return {"prefill_tokens": sum(int(r.get("teacher_prompt_tokens") or 0) for r in recs),
                "generated_tokens": sum(int(r.get("teacher_tokens") or 0) for r in recs),
                # the plausibility pass: the base model over student prompt + solution (measured whether
                # or not the plausible gate is on; a run from before it was recorded counts 0)
                "forward_tokens": sum(int(r.get("student_forward_tokens") or 0) for r in recs)}
    if entry.get("status") != "done":
        return None
    return {k: int(entry[k]) for k in KINDS if entry.get(k) is not None}


def _checkpointing(run: Run, name: str) -> bool:
    cfg = run.cfg
    if name in ("grpo", "sdft"):
        return bool(getattr(cfg, name).gradient_checkpointing)
    return bool(cfg.distill.gradient_checkpointing) if name in ("distill", "sft", "rft") else False


def round_arms(run: Run, params: dict[str, int], ssb: dict | None, all_arms: bool = False) -> dict[str, dict]:
    """``ssb@<r>``: SSB after round r (``rounds.n`` > 1, ``stages/rounds.py``), the compute of rounds 1 .. r
    added up (each later round's rollout, curate, teacher, logits and distill, in ``rounds/r<r>/``)."""
    out: dict[str, dict] = {}
    total = dict(ssb) if ssb else None
    for r in range(2, 1000):
        d = run.file(f"rounds/r{r}")
        if total is None or not (d / "config.yaml").is_file():
            break
        sub = ledger(Run.open(d), params, all_arms=True)["arms"].get("ssb")
        if not sub:
            break
        total = {**{k: total[k] + sub[k] for k in (*KINDS, "flops")}, "seconds": total["seconds"] + sub["seconds"],
                 "stages": total["stages"] + [f"rounds/r{r}"]}
        if all_arms or Run.open(d).stage_done("distill"):
            out[f"ssb@{r}"] = total
    return out


def pays(run: Run, st) -> tuple[str, ...]:
    """The arms whose compute includes stage ``st`` in ``run``: the stage table's ``cost_of``, and GRPO for the
    rollouts and curation when it trains on the problems curation kept (``grpo.problems: mixed``)."""
    mixed = st.name in ("rollout", "curate") and run.cfg.grpo.problems == "mixed"
    return st.cost_of + (("grpo",) if mixed else ())


def ledger(run: Run, params: dict[str, int] | None = None, all_arms: bool = False) -> dict:
    """The run's compute: per stage its token counts, FLOPs and wall-clock (all invocations);
    per arm the sum over the stages it pays for (the stage table's ``cost_of``), for the arms whose
    own training ran (``all_arms``: every arm with a stage that ran, e.g. what SSB has spent so far,
    GRPO's budget); evaluation apart. Written to the manifest (``compute``) by the report stage."""
    params = params or model_params(run.cfg)
    stages: dict[str, dict] = {}
    for st in STAGES:
        if st.is_eval:
            continue
        counts = stage_counts(run, st.name)
        if counts is None:
            continue
        stages[st.name] = {**{k: counts.get(k, 0) for k in KINDS},
                           "flops": flops(counts, params, _checkpointing(run, st.name)),
                           "seconds": total_seconds(run.stage(st.name))}
    arms: dict[str, dict] = {}
    for st in STAGES:
        for arm in pays(run, st):
            if st.name in stages:
                a = arms.setdefault(arm, {**dict.fromkeys(KINDS, 0), "flops": 0.0, "seconds": 0.0, "stages": []})
                for k in (*KINDS, "flops"):
                    a[k] += stages[st.name][k]
                a["seconds"] += stages[st.name]["seconds"] or 0.0
                a["stages"].append(st.name)
    # an arm whose own training never ran is not an arm of this run
    trained = {arm for st in STAGES for arm in st.cost_of if st.trains and st.name in stages}
    arms = {a: v for a, v in arms.items() if all_arms or a in trained}
    arms.update(round_arms(run, params, arms.get("ssb"), all_arms))
    evaluation = {}
    for st in STAGES:
        if st.is_eval:
            recs = [r for p in sorted(run.file(f"eval/{st.label}").glob("*.jsonl")) for r in read_jsonl(p)]
            if recs:
                counts = {"prefill_tokens": sum(int(r.get("prompt_tokens") or 0) for r in recs),
                          "generated_tokens": sum(sum(r.get("completion_tokens") or []) for r in recs)}
                evaluation[st.label] = {**counts, "flops": flops(counts, params)}
    return {"rule": FLOP_RULE, "params": params, "stages": stages, "arms": arms, "evaluation": evaluation}
