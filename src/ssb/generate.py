"""The generation engine: chat conversations in, ``n`` sampled completions each out.

One small interface for rollouts, the hinted teacher, evaluation and GRPO::

    gen = make_generator(cfg.generation, loaded, cfg.model)
    outs = gen.generate(conversations, Sampling(n=4, temperature=0.8, top_k=50, seed=0))
    outs[i][j]  # the j-th Completion of conversation i

Backends (``generation.backend``):

* ``hf``: transformers ``generate`` over length-sorted, left-padded batches with the
  KV cache; CPU and GPU; works with a ``PeftModel``. The reference backend.
* ``llamacpp``: llama-cpp-python on the model's GGUF file, many sequences decoded
  together in one shared KV cache (llama.cpp's batch API); CPU.
* ``vllm``: ``LLM.generate`` with ``SamplingParams(n=...)``, prefix caching and LoRA; GPU.

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
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch

from .config import GenerationConfig, ModelConfig
from .models import LoadedModel
from .prompts import render_prompt_ids

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]


class GenerationError(RuntimeError):
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


# ----------------------------------------------------------------------------- llama.cpp backend


def _gguf_path(gen_cfg: GenerationConfig, loaded: LoadedModel) -> str:
    if gen_cfg.gguf_path:
        return gen_cfg.gguf_path
    if loaded.gguf_file:
        from pathlib import Path

        p = Path(loaded.source) / loaded.gguf_file
        if p.exists():
            return str(p)
    raise GenerationError(
        "generation.backend=llamacpp needs a GGUF file: the model was not loaded from a local GGUF; "
        "set generation.gguf_path (or use backend=hf)"
    )


def _llamacpp_unsupported_model(loaded: LoadedModel) -> str | None:
    if hasattr(loaded.model, "peft_config"):
        return "the model carries a PEFT adapter, which the GGUF file does not contain; use backend=hf"
    return None


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise GenerationError(
            "generation.backend=llamacpp but llama-cpp-python is not installed: "
            "`pip install ssb[llamacpp]` (or use backend=hf)"
        ) from exc
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # silence llama.cpp's load chatter
    return llama_cpp


def sample_numpy(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """One token from ``[vocab]`` logits: greedy, or temperature + top-k + top-p sampling."""
    if sampling.greedy:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / sampling.temperature
    if sampling.top_k and sampling.top_k < x.shape[0]:
        cand = np.argpartition(-x, sampling.top_k - 1)[: sampling.top_k]
    else:
        cand = np.arange(x.shape[0])
    order = cand[np.argsort(-x[cand], kind="stable")]
    p = np.exp(x[order] - x[order[0]])
    p /= p.sum()
    if sampling.top_p < 1.0:
        keep = (np.cumsum(p) - p) < sampling.top_p
        order, p = order[keep], p[keep] / p[keep].sum()
    cdf = np.cumsum(p)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return int(order[min(i, len(order) - 1)])


class _LlamaCppEngine:
    """Owns the llama.cpp model and a context with ``parallel`` sequence slots."""

    def __init__(self, path: str, parallel: int, n_ctx_seq: int, n_threads: int | None = None):
        import os

        self.L = L = _import_llama_cpp()
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        if not self.model:
            raise GenerationError(f"llama.cpp could not load {path}")
        self.path = path
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self.model))
        self.parallel = max(1, parallel)
        self.max_ctx_seq = n_ctx_seq
        # llama.cpp's own default: one thread per physical core (half the logical CPUs). Its
        # worker threads spin-wait, so oversubscribing a busy machine costs 10x or more.
        env = os.environ.get("SSB_LLAMACPP_THREADS")
        self.n_threads = n_threads or (int(env) if env else max(1, (os.cpu_count() or 2) // 2))
        self.ctx = None
        self.ctx_seq = 0
        self.n_batch = 1024

    def _ensure_ctx(self, ctx_seq: int) -> None:
        if self.ctx is not None and self.ctx_seq >= ctx_seq:
            return
        L = self.L
        if self.ctx is not None:
            L.llama_free(self.ctx)
        cp = L.llama_context_default_params()
        cp.n_ctx = ctx_seq * self.parallel
        cp.n_seq_max = self.parallel
        cp.n_batch = cp.n_ubatch = self.n_batch
        cp.n_threads = cp.n_threads_batch = self.n_threads
        cp.kv_unified = False  # one KV stream per sequence: attention only over its own cells
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise GenerationError(f"llama.cpp could not create a context of {cp.n_ctx} tokens")
        self.ctx_seq = ctx_seq

    def __del__(self):
        try:
            if self.ctx is not None:
                self.L.llama_free(self.ctx)
            if self.model:
                self.L.llama_model_free(self.model)
        except Exception:
            pass

    def run(self, items, sampling: Sampling, stops: set[int], ctx_limit: int, on_done) -> None:
        """Generate for every ``(key, prompt_ids, seed)``; ``on_done(key, gen_ids)`` per sequence.

        Consecutive items with the same prompt (the n samples of one conversation) share
        one prefill: the prompt is decoded in a leader slot and its KV copied to the
        sibling slots (``llama_memory_seq_cp``), each sibling sampling its own first token
        from the leader's logits."""
        from collections import deque

        if not items:
            return
        L = self.L
        longest = max(len(p) for _, p, _ in items)
        ctx_seq = min(ctx_limit, longest + sampling.max_new_tokens + 1)
        self._ensure_ctx(-(-ctx_seq // 256) * 256)
        mem = L.llama_get_memory(self.ctx)
        L.llama_memory_clear(mem, True)
        queue: deque[list] = deque()
        for item in items:  # group siblings (same prompt, adjacent)
            if queue and queue[-1][0][1] == item[1]:
                queue[-1].append(item)
            else:
                queue.append([item])
        batch = L.llama_batch_init(self.n_batch, 0, 1)
        slots: list[dict | None] = [None] * self.parallel
        try:
            while queue or any(slots):
                n = 0
                outputs: list[tuple[int, list[int]]] = []  # (batch row, slots sampling from it)

                def add(tok: int, pos: int, seq: int, want: list[int] | None) -> None:
                    nonlocal n
                    batch.token[n], batch.pos[n], batch.n_seq_id[n] = tok, pos, 1
                    batch.seq_id[n][0] = seq
                    batch.logits[n] = want is not None
                    if want is not None:
                        outputs.append((n, want))
                    n += 1

                for s, st in enumerate(slots):  # running sequences: their last sampled token
                    if st is not None:
                        add(st["gen"][-1], st["pos"], s, [s])
                        st["pos"] += 1
                free = [s for s in range(self.parallel) if slots[s] is None]
                copies: list[tuple[int, int]] = []
                while free and queue:  # free slots take waiting prompts that fit
                    group = queue[0]
                    prompt = group[0][1]
                    if len(prompt) + 1 > ctx_limit:  # no room for even one new token
                        queue.popleft()
                        for key, _, _ in group:
                            on_done(key, [])
                        continue
                    if n + len(prompt) > self.n_batch:
                        if n == 0:
                            raise GenerationError(f"prompt of {len(prompt)} tokens exceeds the llama.cpp batch")
                        break
                    take, rest = group[: len(free)], group[len(free):]
                    if rest:
                        queue[0] = rest
                    else:
                        queue.popleft()
                    mine = [free.pop(0) for _ in take]
                    for s in mine:
                        L.llama_memory_seq_rm(mem, s, -1, -1)
                    for p, tok in enumerate(prompt):
                        add(tok, p, mine[0], mine if p == len(prompt) - 1 else None)
                    copies += [(mine[0], s) for s in mine[1:]]
                    for s, (key, _, seed) in zip(mine, take):
                        slots[s] = {"key": key, "pos": len(prompt), "gen": [], "rng": np.random.default_rng(seed),
                                    "limit": min(sampling.max_new_tokens, ctx_seq - len(prompt))}
                if n == 0:
                    continue
                batch.n_tokens = n
                rc = L.llama_decode(self.ctx, batch)
                if rc != 0:
                    raise GenerationError(f"llama_decode failed with code {rc}")
                for src, dst in copies:  # siblings get the shared prompt's KV
                    L.llama_memory_seq_cp(mem, src, dst, -1, -1)
                for row, group_slots in outputs:
                    logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, row), shape=(self.n_vocab,))
                    for s in group_slots:
                        st = slots[s]
                        tok = sample_numpy(logits, sampling, st["rng"])
                        st["gen"].append(tok)
                        if tok in stops or len(st["gen"]) >= st["limit"]:
                            on_done(st["key"], st["gen"])
                            slots[s] = None
        finally:
            L.llama_batch_free(batch)


class LlamaCppGenerator:
    """llama-cpp-python on the same GGUF file: up to ``parallel`` sequences share one KV
    cache and advance together, one ``llama_decode`` per step (continuous batching: a
    finished slot takes the next waiting sequence). Sampling in numpy, seeded per sequence."""

    backend = "llamacpp"

    def __init__(self, gen_cfg: GenerationConfig, loaded: LoadedModel, parallel: int | None = None,
                 n_threads: int | None = None):
        why = _llamacpp_unsupported_model(loaded)
        if why:
            raise GenerationError(why)
        self.tok = loaded.tokenizer
        self.stops = stop_token_ids(self.tok, loaded.model)
        self.engine = _LlamaCppEngine(
            _gguf_path(gen_cfg, loaded),
            parallel=parallel or min(16, max(1, gen_cfg.batch_size)),
            n_ctx_seq=gen_cfg.n_ctx,
            n_threads=n_threads,
        )
        self.ctx = min(gen_cfg.n_ctx, self.engine.n_ctx_train) if self.engine.n_ctx_train else gen_cfg.n_ctx

    def generate(self, conversations, sampling: Sampling, progress: bool | str = True,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        prompts = render_all(self.tok, conversations)
        seq_seeds = sequence_seeds(sampling, len(prompts), seeds)
        jobs = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)]
        out: list[list[Completion | None]] = [[None] * sampling.n for _ in prompts]
        bar = _Progress(len(jobs), progress, self.backend)
        stops = set(self.stops)

        def done(job, gen_ids):
            i, j = job
            c = finish(self.tok, len(prompts[i]), gen_ids, stops)
            out[i][j] = c
            bar.update(1, c.completion_tokens)

        try:
            self.engine.run(
                [(job, prompts[job[0]], seq_seeds[job[0]][job[1]]) for job in jobs],
                sampling, stops, self.ctx, done,
            )
        finally:
            bar.close()
        return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- vLLM backend


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
                  stops: list[int]) -> tuple[list[dict], list[dict[str, Any]]]:
    """(prompt dicts with token ids, SamplingParams kwargs) per conversation; one seed per
    conversation so each request is reproducible on its own."""
    if seeds is None:
        seeds = [derive_seed(sampling.seed, i) for i in range(len(prompts))]
    reqs = [{"prompt_token_ids": list(p)} for p in prompts]
    return reqs, [vllm_sampling_kwargs(sampling, s, stops) for s in seeds]


def vllm_completions(tokenizer, prompt_len: int, outputs, stops: set[int]) -> list[Completion]:
    """Completions from one vLLM ``RequestOutput.outputs`` list."""
    comps = []
    for o in outputs:
        ids = list(o.token_ids)
        reason: FinishReason = "stop" if (o.finish_reason == "stop" or (ids and ids[-1] in stops)) else "length"
        text = tokenizer.decode([t for t in ids if t not in stops], skip_special_tokens=True)
        comps.append(Completion(text, ids, reason, prompt_len, len(ids)))
    return comps


class VLLMGenerator:
    """vLLM on GPU: prompt token ids in, ``SamplingParams(n=...)`` per conversation,
    automatic prefix caching (the K samples and shared system prompts reuse the prefill),
    a PEFT adapter served through ``LoRARequest``."""

    backend = "vllm"

    def __init__(self, gen_cfg: GenerationConfig, loaded: LoadedModel, model_cfg: ModelConfig | None,
                 adapter: str | None = None):
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise GenerationError(
                "generation.backend=vllm but vLLM is not installed: `pip install ssb[vllm]` on a CUDA "
                "machine (or use backend=hf)"
            ) from exc
        from vllm import LLM

        self.tok = loaded.tokenizer
        self.stops = stop_token_ids(self.tok, loaded.model)
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
        from vllm import SamplingParams

        prompts = render_all(self.tok, conversations)
        reqs, kws = vllm_requests(prompts, sampling, seeds, self.stops)
        params = [SamplingParams(**kw) for kw in kws]
        lora = None
        if self.adapter is not None:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, self.adapter)
        t0 = time.time()
        res = self.llm.generate(reqs, params, use_tqdm=bool(progress), lora_request=lora)
        stops = set(self.stops)
        out = [vllm_completions(self.tok, len(p), r.outputs, stops) for p, r in zip(prompts, res)]
        toks = sum(c.completion_tokens for cs in out for c in cs)
        if progress:
            log.info("vllm: %d tokens in %.1fs (%.0f tok/s)", toks, time.time() - t0, toks / max(time.time() - t0, 1e-9))
        return out


def _save_adapter_if_peft(model) -> str | None:
    if not hasattr(model, "peft_config"):
        return None
    import tempfile

    path = tempfile.mkdtemp(prefix="ssb-vllm-adapter-")
    model.save_pretrained(path)
    return path


def _adapter_rank(path: str) -> int:
    import json
    from pathlib import Path

    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    r = int(cfg.get("r", 16))
    return max(8, 2 ** math.ceil(math.log2(r)))


# ----------------------------------------------------------------------------- factory


def make_generator(gen_cfg: GenerationConfig, loaded: LoadedModel, model_cfg: ModelConfig | None = None,
                   adapter: str | None = None) -> Generator:
    """The generator for ``gen_cfg.backend`` over the loaded model (its tokenizer renders prompts)."""
    if gen_cfg.backend == "hf":
        return HFGenerator(loaded, gen_cfg.batch_size)
    if gen_cfg.backend == "llamacpp":
        return LlamaCppGenerator(gen_cfg, loaded)
    if gen_cfg.backend == "vllm":
        return VLLMGenerator(gen_cfg, loaded, model_cfg, adapter)
    raise GenerationError(f"unknown generation.backend {gen_cfg.backend!r} (hf, llamacpp, vllm)")


def completion_stats(comps: list[Completion]) -> dict[str, int]:
    return {
        "sequences": len(comps),
        "completion_tokens": sum(c.completion_tokens for c in comps),
        "truncated": sum(c.finish_reason == "length" for c in comps),
    }


__all__ = [
    "Completion", "Generator", "GenerationError", "HFGenerator", "LlamaCppGenerator", "Sampling",
    "VLLMGenerator", "derive_seed", "make_generator", "stop_token_ids", "vllm_requests",
    "vllm_sampling_kwargs", "completion_stats",
]
