"""ssb.generation (factory, hf, llamacpp, vllm): batching, seeding, finish reasons, backend request building."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from ssb.config import GenerationConfig
from ssb.generation.engine import Completion, GenerationError, Sampling, finish, stop_token_ids
from ssb.generation.factory import make_generator
from ssb.generation.hf import HFGenerator, warp_logits
from ssb.generation.llamacpp import physical_cores, sample_numpy
from ssb.generation.vllm import vllm_completions, vllm_requests
from ssb.models import LoadedModel
from ssb.prompts import ChatTemplateError

SYSTEM = {"role": "system", "content": "Solve the problem. Put the answer in \\boxed{}."}
CONVS = [
    [SYSTEM, {"role": "user", "content": "What is 2 + 3?"}],
    [SYSTEM, {"role": "user", "content": "A farmer has 12 cows and buys 5 more cows at the market. How many now?"}],
    [SYSTEM, {"role": "user", "content": "Compute 7 * 6."}],
]


def ids(out):
    return [[c.token_ids for c in cs] for cs in out]


def test_batched_greedy_matches_unbatched(tiny_model):
    s = Sampling(max_new_tokens=10)
    batched = HFGenerator(tiny_model, batch_size=8).generate(CONVS, s, progress=False)
    single = HFGenerator(tiny_model, batch_size=1).generate(CONVS, s, progress=False)
    assert ids(batched) == ids(single)
    c = batched[1][0]
    assert isinstance(c, Completion) and c.prompt_tokens > 20
    assert c.completion_tokens == len(c.token_ids) <= 10


def test_sampling_is_seeded_per_sequence(tiny_model):
    gen = HFGenerator(tiny_model, batch_size=8)
    s = Sampling(n=3, temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=8, seed=7)
    a = gen.generate(CONVS, s, progress=False)
    b = gen.generate(CONVS, s, progress=False)
    assert ids(a) == ids(b)
    assert len({tuple(t) for t in ids(a)[0]}) > 1  # the n samples differ
    other = gen.generate(CONVS, Sampling(n=3, temperature=1.0, top_k=50, max_new_tokens=8, seed=8), progress=False)
    assert ids(other) != ids(a)
    # a sequence's sample does not depend on its batch neighbours (resume-safe)
    seeds = [11, 22, 33]
    full = gen.generate(CONVS, s, progress=False, seeds=seeds)
    alone = HFGenerator(tiny_model, batch_size=2).generate(CONVS[1:2], s, progress=False, seeds=seeds[1:2])
    assert ids(alone)[0] == ids(full)[1]


def test_finish_reason_length_stop_and_context(tiny_model):
    gen = HFGenerator(tiny_model, batch_size=4)
    out = gen.generate(CONVS[:1], Sampling(max_new_tokens=5), progress=False)
    c = out[0][0]
    # the random tiny model emits no end-of-turn token in 5 greedy steps: cut by the budget
    assert not set(c.token_ids) & set(gen.stops)
    assert c.finish_reason == "length" and c.completion_tokens == len(c.token_ids) == 5
    # make its first greedy token a stop token: the reply ends there and says so
    first = c.token_ids[0]
    gen.stops = sorted(set(gen.stops) | {first})
    out = gen.generate(CONVS[:1], Sampling(max_new_tokens=5), progress=False)
    assert out[0][0].finish_reason == "stop" and out[0][0].token_ids == [first]
    assert out[0][0].completion_tokens == 1 and out[0][0].text == ""
    gen.stops = stop_token_ids(tiny_model.tokenizer, tiny_model.model)
    # a context that leaves room for 3 tokens truncates and flags the reply
    gen.ctx = c.prompt_tokens + 3
    out = gen.generate(CONVS[:1], Sampling(max_new_tokens=50), progress=False)
    assert out[0][0].completion_tokens <= 3
    gen.ctx = c.prompt_tokens
    out = gen.generate(CONVS[:1], Sampling(max_new_tokens=50), progress=False)
    assert out[0][0].finish_reason == "length" and out[0][0].token_ids == []


def test_finish_cuts_at_stop_token(embedded_tokenizer):
    tok = embedded_tokenizer
    eos = tok.eos_token_id
    hello = tok.encode("Hello there")
    c = finish(tok, 9, hello + [eos, eos, eos], {eos})
    assert c.finish_reason == "stop" and c.text == "Hello there"
    assert c.token_ids == hello + [eos] and c.completion_tokens == len(hello) + 1 and c.prompt_tokens == 9
    c = finish(tok, 9, hello, {eos})
    assert c.finish_reason == "length" and c.text == "Hello there"
    assert eos in stop_token_ids(tok)


def test_missing_chat_template_is_a_clear_error(tiny_model):
    tok = copy.deepcopy(tiny_model.tokenizer)
    tok.chat_template = None
    lm = LoadedModel(tiny_model.model, tok, "tiny", "", None, 0.0, False)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        HFGenerator(lm).generate(CONVS[:1], Sampling(max_new_tokens=2), progress=False)


def test_peft_model_generates_like_base(tiny_model):
    from peft import LoraConfig, get_peft_model

    base = HFGenerator(tiny_model, 4).generate(CONVS[:2], Sampling(max_new_tokens=6), progress=False)
    model = get_peft_model(copy.deepcopy(tiny_model.model), LoraConfig(r=4, target_modules=["q_proj"]))
    lm = LoadedModel(model, tiny_model.tokenizer, "tiny+lora", "", None, 0.0, False)
    lora = make_generator(GenerationConfig(batch_size=4), lm).generate(CONVS[:2], Sampling(max_new_tokens=6), progress=False)
    assert ids(lora) == ids(base)  # LoRA B starts at zero


def test_warping_and_numpy_sampling():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    w = warp_logits(logits, 1.0, 2, 1.0)
    assert torch.isinf(w[0, 0]) and torch.isinf(w[0, 3]) and not torch.isinf(w[0, 1])
    w = warp_logits(logits, 1.0, 0, 0.5)  # top token alone holds > 50% of the mass
    assert (~torch.isinf(w)).sum() == 1
    rng = np.random.default_rng(0)
    x = np.array([1.0, 3.0, 2.0, 0.5], dtype=np.float32)
    assert sample_numpy(x, Sampling(), rng) == 1
    assert sample_numpy(x, Sampling(temperature=1.0, top_k=1), rng) == 1
    draws = {sample_numpy(x, Sampling(temperature=1.0, top_k=2), rng) for _ in range(50)}
    assert draws == {1, 2}


def test_vllm_request_building_without_vllm():
    s = Sampling(n=4, temperature=0.8, top_k=0, top_p=0.9, max_new_tokens=128, seed=1)
    reqs, kws = vllm_requests([[1, 2, 3], [4, 5]], s, seeds=[10, 20], stops=[2])
    assert reqs == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5]}]
    assert kws[0] == dict(n=4, temperature=0.8, top_p=0.9, top_k=-1, max_tokens=128, seed=10,
                          stop_token_ids=[2], skip_special_tokens=True)
    assert kws[1]["seed"] == 20
    _, kws = vllm_requests([[1]], Sampling(top_k=50), seeds=None, stops=[2])
    assert kws[0]["temperature"] == 0.0 and kws[0]["top_k"] == -1 and kws[0]["n"] == 1


def test_vllm_completions_parsing(embedded_tokenizer):
    class Out:
        def __init__(self, token_ids, finish_reason):
            self.token_ids, self.finish_reason = token_ids, finish_reason

    eos = embedded_tokenizer.eos_token_id
    hi = embedded_tokenizer.encode("Hi")
    cs = vllm_completions(embedded_tokenizer, 5, [Out(hi + [eos], "stop"), Out(hi, "length")], {eos})
    assert [c.finish_reason for c in cs] == ["stop", "length"] and cs[0].text == "Hi"
    assert cs[0].completion_tokens == len(hi) + 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_missing_is_a_clear_error(tiny_model):
    with pytest.raises(GenerationError, match="vLLM is not installed"):
        make_generator(GenerationConfig(backend="vllm"), tiny_model)


def test_llamacpp_needs_a_gguf(tiny_model):
    with pytest.raises(GenerationError, match="GGUF|llama-cpp-python"):
        make_generator(GenerationConfig(backend="llamacpp"), tiny_model)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_llamacpp_matches_hf_start_and_is_seeded(embedded_model):
    conv = CONVS[:2]
    gen = make_generator(GenerationConfig(backend="llamacpp", batch_size=4), embedded_model)
    greedy = gen.generate(conv, Sampling(max_new_tokens=8), progress=False)
    ref = HFGenerator(embedded_model, 4).generate(conv, Sampling(max_new_tokens=8), progress=False)
    for a, b in zip(greedy, ref):  # Q4_1 on llama.cpp vs dequantized fp32: same start
        assert a[0].token_ids[:4] == b[0].token_ids[:4]
    s = Sampling(n=3, temperature=0.8, top_k=50, max_new_tokens=8, seed=3)
    assert ids(gen.generate(conv, s, progress=False)) == ids(gen.generate(conv, s, progress=False))
    # siblings share the prompt's KV (seq_cp across slots): greedy siblings equal the lone sequence
    shared = gen.generate(conv, Sampling(n=3, max_new_tokens=8), progress=False)
    assert all(c.token_ids == cs[0].token_ids for cs in shared for c in cs)
    assert [cs[0].token_ids[:4] for cs in shared] == [cs[0].token_ids[:4] for cs in greedy]


def test_llamacpp_threads_default_to_physical_cores():
    import os

    n = physical_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    siblings = {open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read().strip()
                for c in os.sched_getaffinity(0)}
    assert n == len(siblings)
