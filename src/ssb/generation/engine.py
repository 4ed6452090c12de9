"""Generation records and the helpers every backend shares: what a sampling request is
(:class:`Sampling`), what comes back (:class:`Completion`), the :class:`Generator` protocol,
per-sequence seeds, stop tokens (the end-of-turn list lives in :mod:`prompts`, shared with
:mod:`signal.alignment`), cutting a reply at its stop token (:func:`finish`) and the progress bar. No
torch here (the hf backend's sampling math lives in ``hf.py``), so the modules that only
need these records (the evaluate, curate and grpo stages) import them without loading torch.

The factory (``factory.py``) and the backends (``hf.py``, ``llamacpp.py``, ``vllm.py``)
import from here and nothing here imports them, so the import graph has no cycle.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tqdm.auto import tqdm

from ..errors import SSBError
from ..prompts import end_of_turn_ids, render_prompt_ids

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






def stop_token_ids(tokenizer, model=None) -> list[int]:
    """End-of-turn/EOS ids: the tokenizer's EOS, the model's generation-config EOS, and the
    usual chat end-of-turn markers when the vocabulary has them as special tokens."""
    ids = end_of_turn_ids(tokenizer)
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
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


class Progress:
    """tqdm over sequences with generated tokens/s in the postfix (silent when disabled)."""

    def __init__(self, total: int, progress: bool | str, backend: str):
        self.bar = None
        self.tokens = 0
        self.t0 = time.time()
        if progress:
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
