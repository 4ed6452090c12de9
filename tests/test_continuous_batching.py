"""Continuous batching in the hf backend: rows that finish go idle and waiting sequences join
the running batch (its KV cache merged, padding after the shared prefix); no output changes."""

from __future__ import annotations

import torch
from test_prefix_cache import CONVS

from ssb.generation.engine import Sampling
from ssb.generation.hf import HFGenerator, sample_rows, sample_tokens, warp_logits


def ids(out):
    return [[c.token_ids for c in cs] for cs in out]


def spy_merges(gen: HFGenerator) -> list[int]:
    """Record how many rows each merge appends (the real merge runs)."""
    calls: list[int] = []
    real = gen._merge

    def merge(run, new, n_pre):
        calls.append(len(new))
        return real(run, new, n_pre)

    gen._merge = merge
    return calls


def test_joined_rows_decode_as_if_alone(embedded_model):
    sampled = Sampling(n=2, temperature=0.8, top_k=50, max_new_tokens=24, seed=3)
    for s in (Sampling(max_new_tokens=24), sampled):
        alone = HFGenerator(embedded_model, batch_size=1, prefix_cache=False).generate(CONVS, s, progress=False)
        for prefix in (True, False):
            gen = HFGenerator(embedded_model, batch_size=3, prefix_cache=prefix)
            merges = spy_merges(gen)
            out = gen.generate(CONVS, s, progress=False)
            assert merges, "no row joined a running batch"
            assert ids(out) == ids(alone), (s, prefix)
            lengths = {c.completion_tokens for cs in out for c in cs}
            assert len(lengths) > 1  # replies of different lengths: rows finished at different steps


def test_idle_rows_leave_when_nothing_can_join(embedded_model, monkeypatch):
    from ssb.generation.hf import _Running

    dropped: list[int] = []
    real = _Running.keep_live

    def keep_live(self):
        dropped.append(len(self) - self.n_live)
        real(self)

    monkeypatch.setattr(_Running, "keep_live", keep_live)
    s = Sampling(n=4, temperature=0.7, top_k=50, max_new_tokens=40, seed=1)
    out = HFGenerator(embedded_model, batch_size=8).generate(CONVS[:2], s, progress=False)
    assert dropped and all(d >= 2 for d in dropped)  # a quarter of the 8 rows idle before a copy
    alone = HFGenerator(embedded_model, batch_size=1).generate(CONVS[:2], s, progress=False)
    assert ids(out) == ids(alone)


def test_topk_sampling_fast_path_draws_the_same_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 4096, generator=g) * 3
    u = torch.rand(64, generator=g)
    s = Sampling(temperature=0.7, top_k=40)
    ref = sample_rows(warp_logits(logits, 0.7, 40, 1.0), u)
    assert torch.equal(sample_tokens(logits, s, u), ref)
    top = torch.topk(logits, 40, dim=-1).indices
    assert bool((top == ref[:, None]).any(-1).all())  # every draw is one of the row's top-k
    # top-p goes through the full-vocabulary path
    sp = Sampling(temperature=0.7, top_k=40, top_p=0.9)
    assert torch.equal(sample_tokens(logits, sp, u), sample_rows(warp_logits(logits, 0.7, 40, 0.9), u))


def test_sliding_window_model_keeps_static_batches(embedded_tokenizer):
    """A model whose cache is not plain full attention (Mistral with a sliding window): no
    prefix reuse, no rows joining a running batch, and the same outputs as one at a time."""
    from transformers import MistralConfig, MistralForCausalLM

    from ssb.models import LoadedModel

    torch.manual_seed(0)
    tok = embedded_tokenizer
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=16,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    lm = LoadedModel(MistralForCausalLM(cfg).eval(), tok, "tiny-mistral", "", None, 0.0, False)
    s = Sampling(n=2, temperature=1.0, top_k=50, max_new_tokens=6, seed=2)
    gen = HFGenerator(lm, batch_size=3)
    merges = spy_merges(gen)
    out = gen.generate(CONVS, s, progress=False)
    assert not merges and gen.prefix_cache is False
    alone = HFGenerator(lm, batch_size=1).generate(CONVS, s, progress=False)
    assert ids(out) == ids(alone)
