"""The generation engine: chat conversations in, ``n`` sampled completions each out.

One small interface for rollouts, the hinted teacher, evaluation and GRPO, with one factory
(:func:`make_generator`, or :func:`load_generator` for a run's base model); the records
(:class:`~ssb.generation.engine.Sampling`, :class:`~ssb.generation.engine.Completion`) and
the helpers all backends share live in ``engine.py``::

    gen = make_generator(cfg.generation, loaded, cfg.model)
    outs = gen.generate(conversations, Sampling(n=4, temperature=0.8, top_k=50, seed=0))
    outs[i][j]  # the j-th Completion of conversation i

Backends (``generation.backend``), one module each, imported when chosen:

* ``hf`` (``hf.py``): the transformers model decoding token by token with the KV cache,
  continuous batching and a shared-prefix cache; CPU and GPU; works with a ``PeftModel``.
  The reference backend.
* ``llamacpp`` (``llamacpp.py``): llama-cpp-python on the model's GGUF file, many
  sequences decoded together in one shared KV cache (llama.cpp's batch API); CPU. The shared
  prefix is decoded once and copied to every sequence slot (``llama_memory_seq_cp``).
* ``vllm`` (``vllm.py``): ``LLM.generate`` with ``SamplingParams(n=...)``, prefix
  caching and LoRA; GPU.

Prompts are always rendered by *our* tokenizer's chat template
(:func:`prompts.render_prompt_ids`) and every backend is fed token ids, so all three
see the same prompt and stop on the same end-of-turn tokens (:func:`engine.stop_token_ids`,
built on :func:`prompts.end_of_turn_ids`, which training's alignment uses too).

Sampling is seeded per sequence (``seeds`` per conversation, default derived from
``Sampling.seed`` and the conversation index), so a sequence's sample does not depend
on which other sequences share its batch: a resumed stage reproduces the same output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import GenerationError, Generator

if TYPE_CHECKING:
    from ..config import GenerationConfig, ModelConfig
    from ..models import LoadedModel
    from ..rundir.run import Run


def make_generator(gen_cfg: GenerationConfig, loaded: LoadedModel, model_cfg: ModelConfig | None = None,
                   adapter: str | None = None) -> Generator:
    """The generator for ``gen_cfg.backend`` over the loaded model (its tokenizer renders prompts)."""
    if gen_cfg.backend == "hf":
        from .hf import HFGenerator  # lazy: torch, only for this backend

        return HFGenerator(loaded, gen_cfg.batch_size, gen_cfg.prefix_cache)
    if gen_cfg.backend == "llamacpp":
        from .llamacpp import LlamaCppGenerator  # lazy: numpy (+ llama-cpp-python when it starts)

        return LlamaCppGenerator(gen_cfg, loaded)
    if gen_cfg.backend == "vllm":
        from .vllm import VLLMGenerator  # lazy: see llamacpp

        return VLLMGenerator(gen_cfg, loaded, model_cfg, adapter)
    raise GenerationError(f"unknown generation.backend {gen_cfg.backend!r} (hf, llamacpp, vllm)")


def load_generator(run: Run, loaded: LoadedModel | None = None) -> tuple[Generator, LoadedModel]:
    """The run's base model and a generator over it (vLLM gets the HF copy on CPU: only its
    tokenizer and stop tokens are used there)."""
    if loaded is None:
        from ..models import load_model  # lazy: torch, when a model is loaded

        device = "cpu" if run.cfg.generation.backend == "vllm" else None
        loaded = load_model(run.cfg.model, device=device)
    return make_generator(run.cfg.generation, loaded, run.cfg.model), loaded
