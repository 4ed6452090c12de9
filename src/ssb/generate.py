"""The generation engine: chat conversations in, ``n`` sampled completions each out.

One small interface for rollouts, the hinted teacher, evaluation and GRPO::

    gen = make_generator(cfg.generation, loaded, cfg.model)
    outs = gen.generate(conversations, Sampling(n=4, temperature=0.8, top_k=50, seed=0))
    outs[i][j]  # the j-th Completion of conversation i

Backends (``generation.backend``):

* ``hf``: transformers ``generate`` over length-sorted, left-padded batches with the
  KV cache; CPU and GPU; works with a ``PeftModel``. The reference backend.
* ``llamacpp`` (``engine_llamacpp.py``): llama-cpp-python on the model's GGUF file, many
  sequences decoded together in one shared KV cache (llama.cpp's batch API); CPU.
* ``vllm`` (``engine_vllm.py``): ``LLM.generate`` with ``SamplingParams(n=...)``, prefix
  caching and LoRA; GPU.

Prompts are always rendered by *our* tokenizer's chat template
(:func:`prompts.render_prompt_ids`) and every backend is fed token ids, so all three
see the same prompt and stop on the same end-of-turn tokens.

Sampling is seeded per sequence (``seeds`` per conversation, default derived from
``Sampling.seed`` and the conversation index), so a sequence's sample does not depend
on which other sequences share its batch: a resumed stage reproduces the same output.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from .errors import SSBError
from .config import GenerationConfig, ModelConfig
from .models import LoadedModel
from .prompts import render_prompt_ids

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]


class GenerationError(SSBError, RuntimeError):
    pass


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Sampling:
    """How to sample. ``temperature == 0`` means greedy; ``top_k == 0`` disables top-k."""

    n: int = 1
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"Sampling.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"Sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"Sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"Sampling.max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    text: str  # decoded reply, without the end-of-turn token
    token_ids: list[int]  # generated ids, ending with the stop token when finish_reason == "stop"
    finish_reason: FinishReason  # "stop": end-of-turn/EOS; "length": max_new_tokens or context hit
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Generator(Protocol):
    backend: str

    def generate(
        self,
        conversations: list[list[dict]],
        sampling: Sampling,
        progress: bool | str = True,
        seeds: list[int] | None = None,
    ) -> list[list[Completion]]: ...


# ----------------------------------------------------------------------------- shared helpers


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (e.g. base seed + problem id)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sequence_seeds(sampling: Sampling, n_conv: int, seeds: list[int] | None) -> list[list[int]]:
    """Seed of every sequence: [conversation][sample]."""
    if seeds is None:
        seeds = [derive_seed(sampling.seed, i) for i in range(n_conv)]
    elif len(seeds) != n_conv:
        raise ValueError(f"got {len(seeds)} seeds for {n_conv} conversations")
    return [[derive_seed(s, j) for j in range(sampling.n)] for s in seeds]


_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """End-of-turn/EOS ids: the tokenizer's EOS, the model's generation-config EOS, and the
    usual chat end-of-turn markers when the vocabulary has them as special tokens."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    vocab = tokenizer.get_vocab()
    for tok in _END_OF_TURN:
        if tok in vocab and tok in special:
            ids.add(int(vocab[tok]))
    return sorted(ids)


def model_context_length(model) -> int | None:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def render_all(tokenizer, conversations: list[list[dict]]) -> list[list[int]]:
    return [render_prompt_ids(tokenizer, conv) for conv in conversations]


def finish(tokenizer, prompt_len: int, gen_ids: list[int], stops: set[int]) -> Completion:
    """Cut ``gen_ids`` after the first stop token (drop padding) and build the Completion."""
    for i, t in enumerate(gen_ids):
        if t in stops:
            ids = list(gen_ids[: i + 1])
            text = tokenizer.decode(ids[:-1], skip_special_tokens=True)
            return Completion(text, ids, "stop", prompt_len, len(ids))
    ids = list(gen_ids)
    return Completion(tokenizer.decode(ids, skip_special_tokens=True), ids, "length", prompt_len, len(ids))


class _Progress:
    """tqdm over sequences with generated tokens/s in the postfix (silent when disabled)."""

    def __init__(self, total: int, progress: bool | str, backend: str):
        self.bar = None
        self.tokens = 0
        self.t0 = time.time()
        if progress:
            from tqdm.auto import tqdm

            desc = progress if isinstance(progress, str) else f"generate[{backend}]"
            self.bar = tqdm(total=total, desc=desc, unit="seq", dynamic_ncols=True)

    def update(self, seqs: int, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(seqs)
            dt = max(time.time() - self.t0, 1e-9)
            self.bar.set_postfix(tok_s=f"{self.tokens / dt:.0f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- sampling math


def warp_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, top-k and top-p applied to ``[rows, vocab]`` logits (float32 out)."""
    x = logits.float() / temperature
    if top_k and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = sorted_x.softmax(-1)
        # drop a token when the mass before it already reaches top_p (always keep the first)
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_x = sorted_x.masked_fill(drop, float("-inf"))
        x = torch.full_like(x, float("-inf")).scatter(-1, order, sorted_x)
    return x


def sample_rows(warped: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: one token per row from ``uniforms`` in [0, 1)."""
    probs = warped.softmax(-1)
    cdf = probs.cumsum(-1)
    u = uniforms.to(cdf.device, cdf.dtype).unsqueeze(-1) * cdf[..., -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return idx.clamp_(max=warped.shape[-1] - 1)


class _SeededSampler:
    """A transformers logits processor that samples each row with its own RNG and forces
    that token (greedy decoding then picks it): per-sequence reproducible sampling."""

    def __init__(self, seeds: list[int], sampling: Sampling):
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.s = sampling

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        warped = warp_logits(scores, self.s.temperature, self.s.top_k, self.s.top_p)
        u = torch.cat([torch.rand(1, generator=g) for g in self.gens])
        tok = sample_rows(warped, u)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, tok.unsqueeze(-1), 0.0)
        return out


# ----------------------------------------------------------------------------- hf backend


class HFGenerator:
    """Batched transformers ``generate``: sequences sorted by prompt length, left-padded,
    ``batch_size`` at a time, n > 1 by repeating the prompt."""

    backend = "hf"

    def __init__(self, loaded: LoadedModel, batch_size: int = 32):
        self.model = loaded.model
        self.tok = loaded.tokenizer
        self.batch_size = max(1, int(batch_size))
        self.stops = stop_token_ids(self.tok, self.model)
        if not self.stops:
            raise GenerationError("tokenizer has no EOS / end-of-turn token; cannot tell when a reply ends")
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.stops[0]
        self.ctx = model_context_length(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, conversations, sampling: Sampling, progress: bool | str = True,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        prompts = render_all(self.tok, conversations)
        seq_seeds = sequence_seeds(sampling, len(prompts), seeds)
        jobs = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)]
        jobs.sort(key=lambda ij: -len(prompts[ij[0]]))  # longest first: memory trouble shows early
        out: list[list[Completion | None]] = [[None] * sampling.n for _ in prompts]
        bar = _Progress(len(jobs), progress, self.backend)
        try:
            for b in range(0, len(jobs), self.batch_size):
                batch = jobs[b : b + self.batch_size]
                comps = self._generate_batch([prompts[i] for i, _ in batch],
                                             [seq_seeds[i][j] for i, j in batch], sampling)
                for (i, j), c in zip(batch, comps):
                    out[i][j] = c
                bar.update(len(batch), sum(c.completion_tokens for c in comps))
        finally:
            bar.close()
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], seeds: list[int], sampling: Sampling) -> list[Completion]:
        from transformers import GenerationConfig as HFGenConfig
        from transformers import LogitsProcessorList

        width = max(len(p) for p in prompts)
        max_new = sampling.max_new_tokens
        if self.ctx is not None:
            max_new = min(max_new, self.ctx - width)
        if max_new <= 0:  # the prompt alone fills the context: nothing can be generated
            log.warning("prompt of %d tokens leaves no room in the %s-token context", width, self.ctx)
            return [Completion("", [], "length", len(p), 0) for p in prompts]
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        # An explicit config: the model's own defaults (sampling, repetition penalty) never leak in.
        gcfg = HFGenConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=list(self.stops),
                           pad_token_id=self.pad_id, use_cache=True)
        procs = LogitsProcessorList([] if sampling.greedy else [_SeededSampler(seeds, sampling)])
        res = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  generation_config=gcfg, logits_processor=procs)
        new = res[:, width:].tolist()
        stops = set(self.stops)
        return [finish(self.tok, len(p), row, stops) for p, row in zip(prompts, new)]


# ----------------------------------------------------------------------------- factory


def make_generator(gen_cfg: GenerationConfig, loaded: LoadedModel, model_cfg: ModelConfig | None = None,
                   adapter: str | None = None) -> Generator:
    """The generator for ``gen_cfg.backend`` over the loaded model (its tokenizer renders prompts)."""
    if gen_cfg.backend == "hf":
        return HFGenerator(loaded, gen_cfg.batch_size)
    if gen_cfg.backend == "llamacpp":
        from .engine_llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(gen_cfg, loaded)
    if gen_cfg.backend == "vllm":
        from .engine_vllm import VLLMGenerator

        return VLLMGenerator(gen_cfg, loaded, model_cfg, adapter)
    raise GenerationError(f"unknown generation.backend {gen_cfg.backend!r} (hf, llamacpp, vllm)")


def completion_stats(comps: list[Completion]) -> dict[str, int]:
    return {
        "sequences": len(comps),
        "completion_tokens": sum(c.completion_tokens for c in comps),
        "truncated": sum(c.finish_reason == "length" for c in comps),
    }


__all__ = [
    "Completion", "Generator", "GenerationError", "HFGenerator", "Sampling",
    "derive_seed", "make_generator", "stop_token_ids", "completion_stats",
]
