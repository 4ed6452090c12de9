"""The ``hf`` generation backend (the reference): the transformers model decoding token by
token with the KV cache, and its sampling math. Built by :func:`factory.make_generator`.

Continuous batching: up to ``batch_size`` sequences (longest prompts first) step together; a
row that stops goes idle and, once a quarter of the rows are free, one copy of the cache drops
the idle rows and the columns nobody attends to and appends waiting sequences (``kv_cache.py``,
whose cache layer writes each step in place instead of concatenating). CPU and GPU; works
with a ``PeftModel``. With ``generation.prefix_cache`` (default) the token prefix that every
prompt of a call shares (system prompt + worked examples) is encoded once; joining rows copy
it, encode only their distinct prompt suffixes (the n samples of a prompt share one) and
row-expand that cache to their n samples. Rows are laid out ``prefix | padding | own tokens``
with the attention mask zero on the padding and explicit position ids, so every token sits at
its own position whatever the padding.

Sampling is seeded per sequence (:func:`engine.sequence_seeds`), so a sequence's sample does
not depend on which other sequences share its batch.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from ..models import LoadedModel
from .engine import (
    Completion,
    GenerationError,
    Progress,
    Sampling,
    finish,
    model_context_length,
    render_all,
    sequence_seeds,
    shared_prefix_len,
    stop_token_ids,
)

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


def sample_tokens(logits: torch.Tensor, sampling: Sampling, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of ``[rows, vocab]`` logits. With top-k and no top-p only the k
    candidates are softmaxed and searched, in vocabulary order: the same inverse-CDF draw as
    over the whole masked vocabulary (its other entries add exact zeros) at a fraction of the
    cost. (A tie at the k-th logit keeps exactly k here, all tied candidates in warp_logits.)"""
    k = sampling.top_k
    if not k or k >= logits.shape[-1] or sampling.top_p < 1.0:
        return sample_rows(warp_logits(logits, sampling.temperature, k, sampling.top_p), uniforms)
    vals, ids = torch.topk(logits.float() / sampling.temperature, k, dim=-1)
    ids, order = ids.sort(dim=-1)
    return ids.gather(-1, sample_rows(vals.gather(-1, order), uniforms).unsqueeze(-1)).squeeze(-1)


# ----------------------------------------------------------------------------- hf backend


@dataclass
class _Running:
    """The rows being decoded together: a cache laid out ``[shared prefix | padding | own
    tokens]`` per row (the mask zero on the padding), the token each row feeds next and its
    position, and per row its job, seeded RNG, tokens so far, token budget and whether it is
    still generating (a finished row idles until the batch is next rebuilt)."""

    PER_ROW = ("jobs", "rngs", "outs", "budgets", "live")

    cache: Any
    mask: torch.Tensor  # [rows, cached columns]
    next_ids: torch.Tensor  # [rows]
    next_pos: torch.Tensor  # [rows]
    jobs: list
    rngs: list
    outs: list
    budgets: list
    live: list
    joinable: bool = True  # False for a model whose cache is not plain full attention: no rows join

    def __len__(self) -> int:
        return len(self.jobs)

    @property
    def n_live(self) -> int:
        return sum(self.live)

    def live_rows(self) -> list[int]:
        return [b for b, ok in enumerate(self.live) if ok]

    def take_lists(self, rows: list[int]) -> None:
        for name in self.PER_ROW:
            old = getattr(self, name)
            setattr(self, name, [old[b] for b in rows])

    def keep_live(self) -> None:
        """Drop the idle rows (one copy of the cache)."""
        rows = self.live_rows()
        sel = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(sel)
        self.mask, self.next_ids, self.next_pos = self.mask[sel], self.next_ids[sel], self.next_pos[sel]
        self.take_lists(rows)


class HFGenerator:
    """Continuous batching with the KV cache: up to ``batch_size`` sequences decode together
    (the longest prompts first, n > 1 by repeating the prompt); a row that stops goes idle
    and, once a quarter of the rows are free, waiting sequences take the idle rows' places. ``prefix_cache``: the prefix
    shared by all prompts is encoded once and the prompt the n samples share once (see the
    module docstring); without it every row encodes its whole prompt."""

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
        stops = set(self.stops)

        def done(job: tuple[int, int], gen_ids: list[int]) -> None:
            c = finish(self.tok, len(prompts[job[0]]), gen_ids, stops)
            out[job[0]][job[1]] = c
            bar.update(1, c.completion_tokens)

        queue: deque[tuple[tuple[int, int], int]] = deque()
        for job in jobs:
            n_prompt = len(prompts[job[0]])
            budget = sampling.max_new_tokens if self.ctx is None else min(sampling.max_new_tokens, self.ctx - n_prompt)
            if budget <= 0:  # the prompt alone fills the context: nothing can be generated
                log.warning("prompt of %d tokens leaves no room in the %s-token context", n_prompt, self.ctx)
                done(job, [])
            else:
                queue.append((job, budget))
        try:
            self._run(queue, prompts, seq_seeds, sampling, shared, done)
        finally:
            bar.close()
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ shared prefix

    @torch.no_grad()
    def _shared_prefix(self, prompts: list[list[int]]) -> tuple[tuple[int, ...], Any] | None:
        """``(prefix ids, cache of them, batch 1)`` for the longest prefix all prompts share,
        leaving every prompt at least one token of its own (the step that yields the first
        logits). None when there is none, or the model's cache is not plain full attention
        (sliding-window or recurrent layers would see the padding differently)."""
        first = prompts[0]
        n = shared_prefix_len(prompts)
        if n < 1:
            return None
        key = tuple(first[:n])
        if self._prefix is not None and self._prefix[0] == key:
            return self._prefix
        from .kv_cache import spare_room_cache  # lazy: imports transformers

        cache = spare_room_cache(self.model)
        if cache is None:
            log.info("prefix cache off: the model has non-full-attention cache layers")
            self.prefix_cache = False
            return None
        self.model(input_ids=torch.tensor([key], device=self.device), past_key_values=cache,
                   use_cache=True, logits_to_keep=1)
        self._prefix = (key, cache)
        return self._prefix

    # ------------------------------------------------------------------ the decode loop

    @torch.no_grad()
    def _run(self, queue, prompts, seq_seeds, sampling: Sampling, shared, done) -> None:
        """Decode every queued ``(job, budget)``: admit up to ``batch_size`` rows and step them
        together. A finished row stays in the batch, idle, until a quarter of the rows (or all
        that still wait) can join: one copy of the cache then drops the idle rows and the
        columns nobody attends to and appends the new rows (dropping rows one step at a time
        would copy the whole cache nearly every step). ``done(job, tokens)`` per sequence."""
        n_pre = len(shared[0]) if shared is not None else 0
        refill = max(1, self.batch_size // 4)
        run: _Running | None = None
        while queue or run:
            free = self.batch_size - (run.n_live if run else 0)
            if queue and (not run or (run.joinable and free >= min(refill, len(queue)))):
                take = [queue.popleft() for _ in range(min(free, len(queue)))]
                new = self._admit(take, prompts, seq_seeds, sampling, shared)
                run = new if not run else self._merge(run, new, n_pre)
            elif run and len(run) - run.n_live >= max(1, len(run) // 4):
                run.keep_live()  # nothing (more) can join: drop the idle rows
            run = self._step(run, sampling, done)

    def _admit(self, take, prompts, seq_seeds, sampling: Sampling, shared) -> _Running:
        """Rows for ``take``: the KV cache of every prompt but its last token (the first step
        feeds that one), laid out ``[shared prefix | padding | own suffix]``: the prefix
        copied, the distinct suffixes encoded once each and their rows repeated for the
        samples that share them. Without a shared prefix, plain left padding."""
        rows = [prompts[job[0]] for job, _ in take]
        n_pre = len(shared[0]) if shared is not None else 0
        width = max(len(p) for p in rows)
        if width < 2:
            raise GenerationError("a prompt of fewer than 2 tokens: nothing to condition on")
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, p in enumerate(rows):
            ids[r, :n_pre] = torch.tensor(p[:n_pre], dtype=torch.long)
            ids[r, width - len(p) + n_pre:] = torch.tensor(p[n_pre:], dtype=torch.long)
            mask[r, :n_pre] = 1
            mask[r, width - len(p) + n_pre:] = 1
        index: dict[tuple[int, ...], int] = {}  # distinct prompt -> its number
        uniq_rows: list[int] = []  # first row of each distinct prompt
        uniq_of_row: list[int] = []
        for r, p in enumerate(rows):
            if tuple(p) not in index:
                index[tuple(p)] = len(uniq_rows)
                uniq_rows.append(r)
            uniq_of_row.append(index[tuple(p)])
        dev = self.device
        ids, mask = ids.to(dev), mask.to(dev)
        n_u = len(uniq_rows)
        from .kv_cache import SpareRoomLayer, plain_cache, spare_room_cache  # lazy: imports transformers

        if shared is not None:  # the prefix's keys/values, one (expanded, not copied) row per distinct prompt
            cache = spare_room_cache(self.model, [(lay.keys.expand(n_u, -1, -1, -1), lay.values.expand(n_u, -1, -1, -1))
                                                  for lay in shared[1].layers])
        else:  # a model with sliding-window / recurrent layers gets its own cache: its rows never join a batch
            cache = spare_room_cache(self.model) or plain_cache(self.model)
        joinable = isinstance(cache.layers[0], SpareRoomLayer)
        if width - 1 > n_pre:
            sel = torch.tensor(uniq_rows, dtype=torch.long, device=dev)
            u_mask = mask[sel, : width - 1]
            pos = (u_mask.cumsum(-1) - 1).clamp_(min=0)
            self.model(input_ids=ids[sel, n_pre : width - 1], attention_mask=u_mask, position_ids=pos[:, n_pre:],
                       past_key_values=cache, use_cache=True, logits_to_keep=1)
        if n_u != len(rows) or width - 1 == n_pre:  # rows of their distinct prompt (and real tensors, not views)
            cache.batch_select_indices(torch.tensor(uniq_of_row, dtype=torch.long, device=dev))
        gens = None if sampling.greedy else [torch.Generator().manual_seed(seq_seeds[job[0]][job[1]]) for job, _ in take]
        return _Running(cache=cache, mask=mask[:, : width - 1], next_ids=ids[:, -1],
                        next_pos=torch.tensor([len(p) - 1 for p in rows], dtype=torch.long, device=dev),
                        jobs=[job for job, _ in take], rngs=gens or [None] * len(take),
                        outs=[[] for _ in take], budgets=[b for _, b in take], live=[True] * len(take),
                        joinable=joinable)

    @staticmethod
    def _merge(run: _Running, new: _Running, n_pre: int) -> _Running:
        """``run``'s live rows and ``new``'s in one batch (``kv_cache.merge``)."""
        from .kv_cache import merge  # lazy: imports transformers

        live = run.live_rows()
        rows = None if len(live) == len(run) else torch.tensor(live, dtype=torch.long, device=run.mask.device)
        run.mask = merge(run.cache, run.mask, rows, new.cache, new.mask, n_pre)
        if rows is not None:
            run.next_ids, run.next_pos = run.next_ids[rows], run.next_pos[rows]
            run.take_lists(live)
        run.next_ids = torch.cat([run.next_ids, new.next_ids])
        run.next_pos = torch.cat([run.next_pos, new.next_pos])
        for name in _Running.PER_ROW:
            getattr(run, name).extend(getattr(new, name))
        return run

    def _step(self, run: _Running, sampling: Sampling, done) -> _Running | None:
        """One token for every row; a live row that emits a stop token or spends its budget is
        handed to ``done`` and goes idle (None once no row is live). Per-row RNGs, drawn only
        for live rows: a row's sample is the same whatever it shares the batch with."""
        mask = torch.cat([run.mask, run.mask.new_ones((len(run), 1))], dim=-1)
        logits = self.model(input_ids=run.next_ids[:, None], attention_mask=mask, position_ids=run.next_pos[:, None],
                            past_key_values=run.cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        run.mask = mask
        if sampling.greedy:
            tok = logits.argmax(-1)
        else:
            u = torch.cat([torch.rand(1, generator=g) if ok else torch.zeros(1) for g, ok in zip(run.rngs, run.live)])
            tok = sample_tokens(logits, sampling, u)
        stops = set(self.stops)
        for b, t in enumerate(tok.tolist()):
            if not run.live[b]:
                continue
            run.outs[b].append(t)
            if t in stops or len(run.outs[b]) >= run.budgets[b]:
                done(run.jobs[b], run.outs[b])
                run.live[b] = False
        run.next_ids, run.next_pos = tok, run.next_pos + 1
        return run if run.n_live else None
