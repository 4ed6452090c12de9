"""``grpo.generator: ssb`` (and ``sdft.generator: ssb``): the completions sampled by ssb's own engine
instead of TRL's.

TRL's GRPOTrainer (without vLLM) samples each step's completions with ``model.generate`` over
the step's prompts, each prompt repeated once per completion. Its ``rollout_func`` hook hands the
step's prompts to a function of ours instead: this one samples them with ssb's hf engine
(``generation/hf.py``: continuous batching, the prompt a group shares encoded once) from the
policy as it is at that step, and returns the ids TRL trains on. Everything else (rewards,
advantages, loss, the reference model) stays TRL's.

What is the same as TRL's own sampling: the prompt ids (``prompts.render_prompt_ids``, which TRL's
``sanitize_control_tokens`` rendering equals), temperature, top-k, top-p and
``max_completion_length``, completions that end with (and include) the end-of-turn token. What
differs: the random draws (seeded per step and prompt: ``grpo.seed``, the step, the prompt's
position), and no sampling log-probs are returned (TRL uses them only for vLLM's importance
sampling correction). A new generator is made per step, so no cached prefix outlives the
weights it was computed with.
"""

from __future__ import annotations

from ..generation.engine import Sampling, derive_seed
from ..prompts import render_prompt_ids


def group_prompts(prompts: list) -> list[tuple[object, int]]:
    """Consecutive equal prompts as ``(prompt, count)``: TRL repeats each prompt once per completion."""
    groups: list[list] = []
    for p in prompts:
        if groups and groups[-1][0] == p:
            groups[-1][1] += 1
        else:
            groups.append([p, 1])
    return [(p, n) for p, n in groups]


def ssb_rollout_func(cfg, tokenizer, model_name: str, section=None, name: str = "grpo"):
    """A TRL ``rollout_func`` sampling with ``generation.hf.HFGenerator`` from the trainer's model.
    ``section``: the config section with the sampling settings (``temperature``,
    ``max_completion_length``, ``seed``; default ``cfg.grpo``); ``name`` goes into the seeds."""
    from ..generation.hf import HFGenerator  # lazy: torch
    from ..models import LoadedModel

    g = section if section is not None else cfg.grpo

    def rollout(prompts: list, trainer) -> dict:
        model = trainer.model
        was_training = model.training
        model.eval()  # no dropout, KV cache on, while sampling
        try:
            gen = HFGenerator(LoadedModel(model, tokenizer, model_name, model_name, None, 0.0, False),
                              batch_size=cfg.generation.batch_size)
            groups = group_prompts(prompts)
            step = trainer.state.global_step
            by_group: dict[int, list[list[int]]] = {}
            for n in sorted({n for _, n in groups}):  # one call per group size (one size in practice)
                convs = [(i, p) for i, (p, m) in enumerate(groups) if m == n]
                sampling = Sampling(n=n, temperature=g.temperature, top_k=cfg.rollout.top_k, top_p=cfg.rollout.top_p,
                                    max_new_tokens=g.max_completion_length or cfg.generation.max_new_tokens)
                seeds = [derive_seed(g.seed, name, step, i) for i, _ in convs]
                comps = gen.generate([p for _, p in convs], sampling, progress=False, seeds=seeds)
                for (i, _), cs in zip(convs, comps):
                    by_group[i] = [c.token_ids for c in cs]
            prompt_ids, completion_ids = [], []
            for i, (p, n) in enumerate(groups):
                ids = render_prompt_ids(tokenizer, p)
                prompt_ids += [ids] * n
                completion_ids += by_group[i]
            return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}
        finally:
            if was_training:
                model.train()

    return rollout
