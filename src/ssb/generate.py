"""The generation engine: chat conversations in, ``n`` sampled completions each out.

One small interface for rollouts, the hinted teacher, evaluation and GRPO::

    gen = make_generator(cfg.generation, loaded, cfg.model)
    outs = gen.generate(conversations, Sampling(n=4, temperature=0.8, top_k=50, seed=0))
    outs[i][j]  # the j-th Completion of conversation i

Backends (``generation.backend``):

* ``hf``: transformers ``generate`` over length-sorted batches with the KV cache; CPU and
  GPU; works with a ``PeftModel``. The reference backend. With ``generation.prefix_cache``
  (default) the token prefix that every prompt of a call shares (system prompt + worked
  examples) is encoded once into a ``DynamicCache``; each batch copies it, encodes only the
  distinct prompt suffixes (the n samples of a prompt share one), row-expands that cache to
  its n samples and hands it to ``generate``. Rows are laid out ``prefix | padding | suffix``
  with the attention mask zero on the padding, so positions stay exact per row.
* ``llamacpp`` (``engine_llamacpp.py``): llama-cpp-python on the model's GGUF file, many
  sequences decoded together in one shared KV cache (llama.cpp's batch API); CPU. The shared
  prefix is decoded once and copied to every sequence slot (``llama_memory_seq_cp``).
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

import copy
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


def shared_prefix_len(prompts: list[list[int]], limit: int | None = None) -> int:
    """Length of the longest token prefix every prompt shares, leaving each at least one
    token of its own (and at most ``limit``)."""
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    if limit is not None:
        n = min(n, limit)
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


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
    """Batched transformers ``generate``: sequences sorted by prompt length, ``batch_size`` at
    a time, n > 1 by repeating the prompt. ``prefix_cache``: encode the prefix shared by all
    prompts once and the shared prompt of the n samples once (see the module docstring);
    without it, rows are left-padded and every row encodes its whole prompt."""

    backend = "hf"

    def __init__(self, loaded: LoadedModel, batch_size: int = 32, prefix_cache: bool = True):
        self.model = loaded.model
        self.tok = loaded.tokenizer
        self.batch_size = max(1, int(batch_size))
        self.prefix_cache = bool(prefix_cache)
        self.stops = stop_token_ids(self.tok, self.model)
        if not self.stops:
            raise GenerationError("tokenizer has no EOS / end-of-turn token; cannot tell when a reply ends")
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.stops[0]
        self.ctx = model_context_length(self.model)
        self._prefix: tuple[tuple[int, ...], Any] | None = None  # last shared prefix and its cache

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
        shared = self._shared_prefix(prompts) if self.prefix_cache and prompts else None
        bar = _Progress(len(jobs), progress, self.backend)
        try:
            for b in range(0, len(jobs), self.batch_size):
                batch = jobs[b : b + self.batch_size]
                comps = self._generate_batch([prompts[i] for i, _ in batch],
                                             [seq_seeds[i][j] for i, j in batch], sampling, shared)
                for (i, j), c in zip(batch, comps):
                    out[i][j] = c
                bar.update(len(batch), sum(c.completion_tokens for c in comps))
        finally:
            bar.close()
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ shared prefix

    @torch.no_grad()
    def _shared_prefix(self, prompts: list[list[int]]) -> tuple[tuple[int, ...], Any] | None:
        """``(prefix ids, DynamicCache of them, batch 1)`` for the longest prefix all prompts
        share, leaving every prompt at least one token of its own (the step that yields the
        first logits). None when there is none, or the model's cache is not plain full
        attention (sliding-window or recurrent layers would see the padding differently)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        first = prompts[0]
        n = shared_prefix_len(prompts)
        if n < 1:
            return None
        key = tuple(first[:n])
        if self._prefix is not None and self._prefix[0] == key:
            return self._prefix
        cache = DynamicCache(config=self.model.config)
        if not all(type(layer) is DynamicLayer for layer in cache.layers):
            log.info("prefix cache off: the model has non-full-attention cache layers")
            self.prefix_cache = False
            return None
        self.model(input_ids=torch.tensor([key], device=self.device), past_key_values=cache,
                   use_cache=True, logits_to_keep=1)
        self._prefix = (key, cache)
        return self._prefix

    @staticmethod
    def _rows_of(cache, index: list[int]):
        """A new cache whose row r is row ``index[r]`` of ``cache`` (``cache`` stays as it is)."""
        c = copy.deepcopy(cache)
        c.batch_select_indices(torch.tensor(index, dtype=torch.long, device=c.layers[0].keys.device))
        return c

    # ------------------------------------------------------------------ one batch

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], seeds: list[int], sampling: Sampling,
                        shared: tuple[tuple[int, ...], Any] | None = None) -> list[Completion]:
        from transformers import GenerationConfig as HFGenConfig
        from transformers import LogitsProcessorList

        width = max(len(p) for p in prompts)
        max_new = sampling.max_new_tokens
        if self.ctx is not None:
            max_new = min(max_new, self.ctx - width)
        if max_new <= 0:  # the prompt alone fills the context: nothing can be generated
            log.warning("prompt of %d tokens leaves no room in the %s-token context", width, self.ctx)
            return [Completion("", [], "length", len(p), 0) for p in prompts]
        # Rows: [shared prefix | padding | own suffix] (no prefix: plain left padding). The
        # mask is zero on the padding and position ids come from its cumsum, so every
        # token sits at its own position whatever the padding.
        n_pre = len(shared[0]) if shared is not None else 0
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, :n_pre] = torch.tensor(p[:n_pre], dtype=torch.long)
            ids[r, width - len(p) + n_pre:] = torch.tensor(p[n_pre:], dtype=torch.long)
            mask[r, :n_pre] = 1
            mask[r, width - len(p) + n_pre:] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        kwargs: dict[str, Any] = {}
        if shared is not None:
            kwargs["past_key_values"] = self._prompt_cache(prompts, ids, mask, shared[1], n_pre)
        # An explicit config: the model's own defaults (sampling, repetition penalty) never leak in.
        gcfg = HFGenConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=list(self.stops),
                           pad_token_id=self.pad_id, use_cache=True)
        procs = LogitsProcessorList([] if sampling.greedy else [_SeededSampler(seeds, sampling)])
        res = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=gcfg,
                                  logits_processor=procs, **kwargs)
        new = res[:, width:].tolist()
        stops = set(self.stops)
        return [finish(self.tok, len(p), row, stops) for p, row in zip(prompts, new)]

    def _prompt_cache(self, prompts, ids, mask, prefix_cache, n_pre: int):
        """The KV cache of every row's prompt but its last token (``generate`` encodes that
        one and samples from it): the shared prefix copied, then the distinct suffixes
        encoded once each and their rows repeated for the samples that share them."""
        index: dict[tuple[int, ...], int] = {}  # distinct prompt -> its number
        uniq_rows: list[int] = []  # first row of each distinct prompt
        uniq_of_row: list[int] = []
        for r, p in enumerate(prompts):
            if tuple(p) not in index:
                index[tuple(p)] = len(uniq_rows)
                uniq_rows.append(r)
            uniq_of_row.append(index[tuple(p)])
        width = ids.shape[1]
        if width - 1 == n_pre:  # every prompt is the prefix + one token
            return self._rows_of(prefix_cache, [0] * len(prompts))
        cache = self._rows_of(prefix_cache, [0] * len(uniq_rows))
        sel = torch.tensor(uniq_rows, dtype=torch.long, device=ids.device)
        u_mask = mask[sel, : width - 1]
        pos = (u_mask.cumsum(-1) - 1).clamp_(min=0)
        self.model(input_ids=ids[sel, n_pre : width - 1], attention_mask=u_mask,
                   position_ids=pos[:, n_pre:], past_key_values=cache, use_cache=True, logits_to_keep=1)
        if len(uniq_rows) != len(prompts):
            cache.batch_select_indices(torch.tensor(uniq_of_row, dtype=torch.long, device=ids.device))
        return cache


# ----------------------------------------------------------------------------- factory


def make_generator(gen_cfg: GenerationConfig, loaded: LoadedModel, model_cfg: ModelConfig | None = None,
                   adapter: str | None = None) -> Generator:
    """The generator for ``gen_cfg.backend`` over the loaded model (its tokenizer renders prompts)."""
    if gen_cfg.backend == "hf":
        return HFGenerator(loaded, gen_cfg.batch_size, gen_cfg.prefix_cache)
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
