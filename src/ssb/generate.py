"""The generation engine: chat conversations in, ``n`` sampled completions each out.

One small interface for rollouts, the hinted teacher, evaluation and GRPO, with one factory
(:func:`make_generator`, or :func:`load_generator` for a run's base model); the records
(:class:`~ssb.generation.Sampling`, :class:`~ssb.generation.Completion`) and the helpers all
backends share live in ``generation.py``::

    gen = make_generator(cfg.generation, loaded, cfg.model)
    outs = gen.generate(conversations, Sampling(n=4, temperature=0.8, top_k=50, seed=0))
    outs[i][j]  # the j-th Completion of conversation i

Backends (``generation.backend``):

* ``hf``: the transformers model decoding length-sorted batches token by token with a
  ``DynamicCache``; CPU and GPU; works with a ``PeftModel``. The reference backend. A row
  that has stopped leaves the batch (``batch_select_indices`` on the cache), so the finished
  rows stop computing while a long reply goes on. With ``generation.prefix_cache``
  (default) the token prefix that every prompt of a call shares (system prompt + worked
  examples) is encoded once; each batch copies it, encodes only the distinct prompt
  suffixes (the n samples of a prompt share one) and row-expands that cache to its n
  samples. Rows are laid out ``prefix | padding | suffix`` with the attention mask zero on
  the padding, so positions stay exact per row.
* ``llamacpp`` (``engine_llamacpp.py``): llama-cpp-python on the model's GGUF file, many
  sequences decoded together in one shared KV cache (llama.cpp's batch API); CPU. The shared
  prefix is decoded once and copied to every sequence slot (``llama_memory_seq_cp``).
* ``vllm`` (``engine_vllm.py``): ``LLM.generate`` with ``SamplingParams(n=...)``, prefix
  caching and LoRA; GPU.

Prompts are always rendered by *our* tokenizer's chat template
(:func:`prompts.render_prompt_ids`) and every backend is fed token ids, so all three
see the same prompt and stop on the same end-of-turn tokens (:func:`generation.stop_token_ids`,
built on :func:`prompts.end_of_turn_ids`, which training's alignment uses too).

Sampling is seeded per sequence (``seeds`` per conversation, default derived from
``Sampling.seed`` and the conversation index), so a sequence's sample does not depend
on which other sequences share its batch: a resumed stage reproduces the same output.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from .config import GenerationConfig, ModelConfig
from .engine_llamacpp import LlamaCppGenerator
from .engine_vllm import VLLMGenerator
from .generation import (
    Completion,
    GenerationError,
    Generator,
    Progress,
    Sampling,
    finish,
    model_context_length,
    render_all,
    sequence_seeds,
    shared_prefix_len,
    stop_token_ids,
)
from .models import LoadedModel, load_model
from .rundir import Run

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- sampling math (hf backend)


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


# ----------------------------------------------------------------------------- hf backend


class HFGenerator:
    """Batched decoding with the KV cache: sequences sorted by prompt length, ``batch_size`` at
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
        bar = Progress(len(jobs), progress, self.backend)
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
        from transformers import DynamicCache  # lazy: ~1.4 s, as in models.py
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
        cache = self._prompt_cache(prompts, ids, mask, shared[1], n_pre) if shared is not None else None
        new = self._decode(ids, mask, cache, max_new, seeds, sampling)
        stops = set(self.stops)
        return [finish(self.tok, len(p), row, stops) for p, row in zip(prompts, new)]

    def _decode(self, ids, mask, cache, max_new: int, seeds: list[int], sampling: Sampling) -> list[list[int]]:
        """Token-by-token decoding with the KV cache (``cache``: every row's prompt but its last
        token, or None), one seeded sample per row and step; a row that emits a stop token
        leaves the batch (its cache rows are dropped), so a few long replies no longer keep
        the finished rows computing. Per-row RNGs: a row's sample is the same whatever it
        shares the batch with, and the same as a batch that keeps every row to the end."""
        from transformers import DynamicCache  # lazy: ~1.4 s, as in models.py

        if cache is None:
            cache = DynamicCache(config=self.model.config)
        gens = None if sampling.greedy else [torch.Generator().manual_seed(s) for s in seeds]
        stops = set(self.stops)
        out: list[list[int]] = [[] for _ in range(ids.shape[0])]
        rows = list(range(ids.shape[0]))  # the original row of each batch row
        pos = (mask.cumsum(-1) - 1).clamp_(min=0)
        past = cache.get_seq_length()
        step_ids, step_pos, last = ids[:, past:], pos[:, past:], pos[:, -1:]
        for _ in range(max_new):
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                                past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
            if gens is None:
                tok = logits.argmax(-1)
            else:
                u = torch.cat([torch.rand(1, generator=gens[r]) for r in rows])
                tok = sample_rows(warp_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p), u)
            keep = []
            for b, t in enumerate(tok.tolist()):
                out[rows[b]].append(t)
                if t not in stops:
                    keep.append(b)
            if not keep:
                break
            if len(keep) < len(rows):
                sel = torch.tensor(keep, dtype=torch.long, device=ids.device)
                cache.batch_select_indices(sel)
                tok, mask, last = tok[sel], mask[sel], last[sel]
                rows = [rows[b] for b in keep]
            last = last + 1
            step_ids, step_pos = tok.unsqueeze(-1), last
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
        return out

    def _prompt_cache(self, prompts, ids, mask, prefix_cache, n_pre: int):
        """The KV cache of every row's prompt but its last token (``_decode`` encodes that
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
        return LlamaCppGenerator(gen_cfg, loaded)
    if gen_cfg.backend == "vllm":
        return VLLMGenerator(gen_cfg, loaded, model_cfg, adapter)
    raise GenerationError(f"unknown generation.backend {gen_cfg.backend!r} (hf, llamacpp, vllm)")


def load_generator(run: Run, loaded: LoadedModel | None = None) -> tuple[Generator, LoadedModel]:
    """The run's base model and a generator over it (vLLM gets the HF copy on CPU: only its
    tokenizer and stop tokens are used there)."""
    if loaded is None:
        device = "cpu" if run.cfg.generation.backend == "vllm" else None
        loaded = load_model(run.cfg.model, device=device)
    return make_generator(run.cfg.generation, loaded, run.cfg.model), loaded
