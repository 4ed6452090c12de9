"""Shared-prefix generation (``generation.prefix_cache``): the prefix every prompt shares
and the prompt the n samples share are encoded once, and the outputs do not change."""

from __future__ import annotations

from ssb.config import GenerationConfig, PromptConfig, WorkedExample
from ssb.generation.engine import Sampling
from ssb.generation.factory import make_generator
from ssb.generation.hf import HFGenerator
from ssb.prompts import render_prompt_ids, student_messages

PROMPT = PromptConfig(
    system="You are a careful math tutor. Work it out step by step, then give the final answer as \\boxed{ANSWER}.",
    examples=[WorkedExample(question="State the final answer to the following arithmetic problem: 27 + 15 =",
                            solution="27 + 15 = 42.\n\nThe answer is \\boxed{42}.")],
)
# suffixes of different lengths, so rows carry padding between the prefix and their suffix
QUESTIONS = [
    "State the final answer to the following arithmetic problem: 3 + 45 =",
    "State the final answer to the following arithmetic problem: 61 - 38 =",
    "A farmer has 12 cows and buys 5 more cows at the market. How many cows does he have now?",
    "What is 7 + 8?",
    "State the final answer to the following arithmetic problem: 90 + 9 =",
]
CONVS = [student_messages(PROMPT, q) for q in QUESTIONS]


def ids(out):
    return [[c.token_ids for c in cs] for cs in out]


def test_greedy_outputs_identical_with_and_without_prefix_reuse(embedded_model):
    s = Sampling(n=2, max_new_tokens=16)
    plain = HFGenerator(embedded_model, batch_size=4, prefix_cache=False).generate(CONVS, s, progress=False)
    gen = HFGenerator(embedded_model, batch_size=4, prefix_cache=True)
    shared = gen.generate(CONVS, s, progress=False)
    assert ids(shared) == ids(plain)
    assert [[c.text for c in cs] for cs in shared] == [[c.text for c in cs] for cs in plain]
    assert all(c.completion_tokens > 0 for cs in shared for c in cs)
    # the prefix really was shared: system prompt + worked example + the last question's opening
    prompts = [render_prompt_ids(embedded_model.tokenizer, c) for c in CONVS]
    assert gen._prefix is not None
    n = len(gen._prefix[0])
    assert all(p[:n] == list(gen._prefix[0]) for p in prompts)
    assert len({p[n] for p in prompts}) > 1  # no longer common prefix exists
    assert n > 40


def test_prefix_reuse_keeps_per_sequence_seeded_sampling(tiny_model):
    s = Sampling(n=3, temperature=1.0, top_k=50, max_new_tokens=8, seed=5)
    gen = make_generator(GenerationConfig(batch_size=4), tiny_model)  # prefix_cache is the default
    assert gen.prefix_cache
    a = gen.generate(CONVS, s, progress=False)
    assert ids(a) == ids(gen.generate(CONVS, s, progress=False))
    assert len({tuple(t) for t in ids(a)[0]}) > 1  # siblings share the prompt's cache, not their samples
    # a sequence's sample does not depend on what shares its batch or its prefix
    seeds = [101, 202, 303, 404, 505]
    full = gen.generate(CONVS, s, progress=False, seeds=seeds)
    alone = HFGenerator(tiny_model, batch_size=2).generate(CONVS[2:3], s, progress=False, seeds=seeds[2:3])
    assert ids(alone)[0] == ids(full)[2]


def test_prefix_cache_switch_reaches_the_generator(tiny_model):
    assert GenerationConfig().prefix_cache is True
    gen = make_generator(GenerationConfig(prefix_cache=False), tiny_model)
    gen.generate(CONVS[:2], Sampling(max_new_tokens=2), progress=False)
    assert gen.prefix_cache is False and gen._prefix is None
