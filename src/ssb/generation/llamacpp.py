"""The llama.cpp generation backend (``generation.backend: llamacpp``): llama-cpp-python
on the model's own GGUF file, many sequences decoded together in one shared KV cache
(llama.cpp's batch API), CPU. Prompts are token ids rendered by our tokenizer's chat
template, so it sees exactly what the hf backend sees. Optional extra: ``ssb[llamacpp]``.

Prefix reuse (``generation.prefix_cache``) goes through llama.cpp's own KV-cache API: the
token prefix every prompt of a call shares is decoded once into a sequence of its own and
copied into a slot (``llama_memory_seq_cp``) before that slot decodes only the rest of its
prompt; the n samples of one prompt copy the whole prompt's cache from their leader.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path

import numpy as np

from ..config import GenerationConfig
from ..models import LoadedModel
from .engine import (
    Completion,
    GenerationError,
    Progress,
    Sampling,
    finish,
    render_all,
    sequence_seeds,
    shared_prefix_len,
    stop_token_ids,
)

log = logging.getLogger(__name__)


def _gguf_path(gen_cfg: GenerationConfig, loaded: LoadedModel) -> str:
    if gen_cfg.gguf_path:
        return gen_cfg.gguf_path
    if loaded.gguf_file:
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
        import llama_cpp  # optional extra ssb[llamacpp]: imported when the backend is chosen
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


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (hyperthread siblings counted once,
    from /sys); half the logical CPUs where the topology cannot be read."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 2))
    cores = set()
    for c in cpus:
        try:
            sib = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            return max(1, len(cpus) // 2)
        cores.add(sib)
    return max(1, len(cores))


class _LlamaCppEngine:
    """Owns the llama.cpp model and a context with ``parallel`` sequence slots."""

    def __init__(self, path: str, parallel: int, n_ctx_seq: int, n_threads: int | None = None,
                 prefix_cache: bool = True):
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
        self.prefix_cache = prefix_cache
        self.prefix_seq = self.parallel  # one more sequence than slots: it holds the shared prefix
        self.max_ctx_seq = n_ctx_seq
        # One thread per physical core we may run on (llama.cpp's worker threads spin-wait, so
        # oversubscribing, e.g. one per hyperthread on a busy machine, costs 10x or more).
        env = os.environ.get("SSB_LLAMACPP_THREADS")
        self.n_threads = n_threads or (int(env) if env else physical_cores())
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
        cp.n_ctx = ctx_seq * (self.parallel + 1)
        cp.n_seq_max = self.parallel + 1
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
        from the leader's logits. With ``prefix_cache`` the prefix all prompts share is
        decoded once into ``prefix_seq`` and each leader starts from a copy of it."""
        if not items:
            return
        L = self.L
        longest = max(len(p) for _, p, _ in items)
        ctx_seq = min(ctx_limit, longest + sampling.max_new_tokens + 1)
        self._ensure_ctx(-(-ctx_seq // 256) * 256)
        mem = L.llama_get_memory(self.ctx)
        L.llama_memory_clear(mem, True)
        n_pre = self._decode_prefix([p for _, p, _ in items], ctx_limit) if self.prefix_cache else 0
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
                    if n + len(prompt) - n_pre > self.n_batch:
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
                    if n_pre:  # the shared prefix's KV, copied before this decode runs
                        L.llama_memory_seq_cp(mem, self.prefix_seq, mine[0], -1, -1)
                    for p in range(n_pre, len(prompt)):
                        add(prompt[p], p, mine[0], mine if p == len(prompt) - 1 else None)
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

    def _decode_prefix(self, prompts: list[list[int]], ctx_limit: int) -> int:
        """Decode the longest prefix all ``prompts`` share (each keeps at least one token of
        its own) into ``prefix_seq``; its length, 0 when there is none to share."""
        first = prompts[0]
        n = shared_prefix_len(prompts, min(ctx_limit - 1, self.n_batch))
        if n < 1:
            return 0
        L = self.L
        batch = L.llama_batch_init(n, 0, 1)
        try:
            for i in range(n):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = first[i], i, 1
                batch.seq_id[i][0] = self.prefix_seq
                batch.logits[i] = i == n - 1  # llama.cpp wants at least one output per batch
            batch.n_tokens = n
            rc = L.llama_decode(self.ctx, batch)
            if rc != 0:
                raise GenerationError(f"llama_decode of the {n}-token shared prefix failed with code {rc}")
        finally:
            L.llama_batch_free(batch)
        return n


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
            parallel=parallel or min(64, max(1, gen_cfg.batch_size)),
            n_ctx_seq=gen_cfg.n_ctx,
            n_threads=n_threads,
            prefix_cache=gen_cfg.prefix_cache,
        )
        self.ctx = min(gen_cfg.n_ctx, self.engine.n_ctx_train) if self.engine.n_ctx_train else gen_cfg.n_ctx

    def generate(self, conversations, sampling: Sampling, progress: bool | str = True,
                 seeds: list[int] | None = None) -> list[list[Completion]]:
        prompts = render_all(self.tok, conversations)
        seq_seeds = sequence_seeds(sampling, len(prompts), seeds)
        jobs = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)]
        out: list[list[Completion | None]] = [[None] * sampling.n for _ in prompts]
        bar = Progress(len(jobs), progress, self.backend)
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
