"""The vLLM generation backend (``generation.backend: vllm``, GPU): ``LLM.generate`` with
``SamplingParams(n=...)``, prefix caching and LoRA adapters. Importable without vLLM
installed; choosing it without vLLM is a clear error. Optional extra: ``ssb[vllm]``.

A prompt that does not fit ``generation.n_ctx`` (vLLM's ``max_model_len``, which vLLM
would refuse with an error) is answered with empty ``length`` completions and a warning,
and ``max_tokens`` never asks for more than the room a prompt leaves, like the hf backend.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import GenerationConfig, ModelConfig
from ..models import LoadedModel
from .engine import Completion, FinishReason, GenerationError, Sampling, derive_seed, render_all, stop_token_ids

log = logging.getLogger(__name__)


def vllm_sampling_kwargs(sampling: Sampling, seed: int, stops: list[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one conversation (testable without vLLM)."""
    kw: dict[str, Any] = dict(
        n=sampling.n,
        temperature=float(sampling.temperature),
        top_p=float(sampling.top_p) if not sampling.greedy else 1.0,
        top_k=int(sampling.top_k) if sampling.top_k and not sampling.greedy else -1,
        max_tokens=int(sampling.max_new_tokens),
        seed=int(seed) % (2**31),
        stop_token_ids=list(stops),
        skip_special_tokens=True,
    )
    return kw


def vllm_requests(prompts: list[list[int]], sampling: Sampling, seeds: list[int] | None,
                  stops: list[int], max_model_len: int | None = None
                  ) -> tuple[list[dict | None], list[dict[str, Any] | None]]:
    """(prompt dicts with token ids, SamplingParams kwargs) per conversation; one seed per
    conversation so each request is reproducible on its own.

    With ``max_model_len`` (vLLM refuses a prompt that does not fit), ``max_tokens`` is cut to
    the room the prompt leaves, and a prompt that leaves no room gets ``None`` for both: the
    caller answers it with empty ``length`` completions, as the hf backend does."""
    if seeds is None:
        seeds = [derive_seed(sampling.seed, i) for i in range(len(prompts))]
    reqs: list[dict | None] = []
    kws: list[dict[str, Any] | None] = []
    for p, s in zip(prompts, seeds):
        kw = vllm_sampling_kwargs(sampling, s, stops)
        room = None if max_model_len is None else max_model_len - len(p)
        if room is not None and room <= 0:
            reqs.append(None)
            kws.append(None)
            continue
        if room is not None:
            kw["max_tokens"] = min(kw["max_tokens"], room)
        reqs.append({"prompt_token_ids": list(p)})
        kws.append(kw)
    return reqs, kws


def vllm_completions(tokenizer, prompt_len: int, outputs, stops: set[int]) -> list[Completion]:
    """Completions from one vLLM ``RequestOutput.outputs`` list."""
    comps = []
    for o in outputs:
        ids = list(o.token_ids)
        reason: FinishReason = "stop" if (o.finish_reason == "stop" or (ids and ids[-1] in stops)) else "length"
        text = tokenizer.decode([t for t in ids if t not in stops], skip_special_tokens=True)
        comps.append(Completion(text, ids, reason, prompt_len, len(ids)))
    return comps


def vllm_outputs(tokenizer, prompts: list[list[int]], n: int, reqs: list[dict | None], outputs: list,
                 stops: set[int]) -> list[list[Completion]]:
    """Completions per conversation from the ``RequestOutput.outputs`` of the requests that were
    sent (those not ``None`` in ``reqs``, in order); a prompt that was not sent gets ``n`` empty
    ``length`` completions."""
    sent = iter(outputs)
    return [[Completion("", [], "length", len(p), 0) for _ in range(n)] if r is None
            else vllm_completions(tokenizer, len(p), next(sent), stops) for p, r in zip(prompts, reqs)]


class VLLMGenerator:
    """vLLM on GPU: prompt token ids in, ``SamplingParams(n=...)`` per conversation,
    automatic prefix caching (the K samples and shared system prompts reuse the prefill),
    a PEFT adapter served through ``LoRARequest``."""

    backend = "vllm"

    def __init__(self, gen_cfg: GenerationConfig, loaded: LoadedModel, model_cfg: ModelConfig | None,
                 adapter: str | None = None):
        try:
            import vllm  # noqa: F401 - optional extra ssb[vllm]: imported when the backend is chosen
        except ImportError as exc:
            raise GenerationError(
                "generation.backend=vllm but vLLM is not installed: `pip install ssb[vllm]` on a CUDA "
                "machine (or use backend=hf)"
            ) from exc
        from vllm import LLM

        self.tok = loaded.tokenizer
        self.stops = stop_token_ids(self.tok, loaded.model)
        self.max_model_len = gen_cfg.n_ctx
        model_path = loaded.source if not loaded.gguf_file else f"{loaded.source}/{loaded.gguf_file}"
        self.adapter = adapter or _save_adapter_if_peft(loaded.model)
        kw: dict[str, Any] = dict(
            model=model_path,
            enable_prefix_caching=True,
            gpu_memory_utilization=gen_cfg.vllm_gpu_memory_utilization,
            tensor_parallel_size=gen_cfg.vllm_tensor_parallel_size,
            max_model_len=gen_cfg.n_ctx,
            enable_lora=self.adapter is not None,
            seed=0,
        )
        if loaded.gguf_file:  # vLLM reads GGUF weights but wants the HF tokenizer beside them
            kw["tokenizer"] = getattr(self.tok, "name_or_path", None) or loaded.source
        if model_cfg is not None:
            kw["trust_remote_code"] = model_cfg.trust_remote_code
            if model_cfg.dtype != "auto":
                kw["dtype"] = model_cfg.dtype
            if model_cfg.revision and not loaded.gguf_file:
                kw["revision"] = model_cfg.revision
        if self.adapter is not None:
            kw["max_lora_rank"] = _adapter_rank(self.adapter)
        self.llm = LLM(**kw)

    def generate(self, conversations, sampling: Sampling, progress: bool | str = True,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams  # optional (see __init__)

        prompts = render_all(self.tok, conversations)
        reqs, kws = vllm_requests(prompts, sampling, seeds, self.stops, self.max_model_len)
        too_long = [i for i, r in enumerate(reqs) if r is None]
        if too_long:
            log.warning("%d prompt(s) of up to %d tokens leave no room in the %d-token context "
                        "(generation.n_ctx): answered as empty 'length' completions",
                        len(too_long), max(len(prompts[i]) for i in too_long), self.max_model_len)
        keep = [i for i, r in enumerate(reqs) if r is not None]
        params = [SamplingParams(**kws[i]) for i in keep]
        lora = None
        if self.adapter is not None:
            from vllm.lora.request import LoRARequest  # optional (see __init__)

            lora = LoRARequest("adapter", 1, self.adapter)
        t0 = time.time()
        sent = [reqs[i] for i in keep]
        res = self.llm.generate(sent, params, use_tqdm=bool(progress), lora_request=lora) if keep else []
        out = vllm_outputs(self.tok, prompts, sampling.n, reqs, [r.outputs for r in res], set(self.stops))
        toks = sum(c.completion_tokens for cs in out for c in cs)
        if progress:
            log.info("vllm: %d tokens in %.1fs (%.0f tok/s)", toks, time.time() - t0, toks / max(time.time() - t0, 1e-9))
        return out


def _save_adapter_if_peft(model) -> str | None:
    if not hasattr(model, "peft_config"):
        return None
    path = tempfile.mkdtemp(prefix="ssb-vllm-adapter-")
    model.save_pretrained(path)
    return path


def _adapter_rank(path: str) -> int:
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    r = int(cfg.get("r", 16))
    return max(8, 2 ** math.ceil(math.log2(r)))
