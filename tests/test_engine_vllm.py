"""The vLLM backend's request building (CPU, vLLM not installed) and the paper config's
context budget: an over-long prompt is answered as a 'length' completion, never sent."""

from __future__ import annotations

from pathlib import Path

from ssb.generation.engine import Sampling
from ssb.generation.vllm import vllm_outputs, vllm_requests

ROOT = Path(__file__).resolve().parents[1]


class _Out:
    def __init__(self, ids, reason):
        self.token_ids, self.finish_reason = ids, reason


def test_over_long_prompts_are_not_sent_and_max_tokens_fits_the_context(embedded_tokenizer):
    s = Sampling(n=2, temperature=0.8, max_new_tokens=100)
    prompts = [[5] * 10, [5] * 950, [5] * 1000, [5] * 1200]
    reqs, kws = vllm_requests(prompts, s, seeds=[1, 2, 3, 4], stops=[2], max_model_len=1000)
    assert reqs[0] == {"prompt_token_ids": [5] * 10} and kws[0]["max_tokens"] == 100
    assert kws[1]["max_tokens"] == 50  # only the room the prompt leaves
    assert reqs[2] is None and kws[2] is None and reqs[3] is None and kws[3] is None
    # without a context limit nothing changes
    reqs, kws = vllm_requests(prompts, s, seeds=[1, 2, 3, 4], stops=[2])
    assert all(r is not None for r in reqs) and all(k["max_tokens"] == 100 for k in kws)

    # the prompts that were sent get vLLM's outputs, the others empty 'length' completions
    reqs, _ = vllm_requests(prompts, s, seeds=[1, 2, 3, 4], stops=[2], max_model_len=1000)
    eos = embedded_tokenizer.eos_token_id
    hi = embedded_tokenizer.encode("Hi")
    sent = [[_Out(hi + [eos], "stop"), _Out(hi, "length")], [_Out(hi, "length"), _Out(hi, "length")]]
    out = vllm_outputs(embedded_tokenizer, prompts, 2, reqs, sent, {eos})
    assert [len(o) for o in out] == [2, 2, 2, 2]
    assert out[0][0].finish_reason == "stop" and out[0][0].text == "Hi" and out[1][1].prompt_tokens == 950
    for c in out[2] + out[3]:
        assert c.finish_reason == "length" and c.text == "" and c.completion_tokens == 0
    assert out[3][0].prompt_tokens == 1200


def test_paper_config_context_holds_the_hinted_teacher_prompt(embedded_tokenizer):
    """Two full rollouts (max_new_tokens each) in the hinted prompt, plus the teacher's own
    max_new_tokens, fit generation.n_ctx and distill.max_length (measured with the embedded
    tokenizer, a stand-in for Qwen's) and the model's 32k context."""
    from ssb.config import load_config
    from ssb.prompts import render_prompt_ids, teacher_messages

    cfg = load_config(ROOT / "configs" / "paper-qwen2.5-3b.yaml")
    n = cfg.generation.max_new_tokens
    tok = embedded_tokenizer
    trace = tok.decode([tok.encode(" seven")[0]] * n)  # a rollout of max_new_tokens tokens
    question = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips " * 4
    msgs = teacher_messages(cfg.prompt, question, correct=trace, wrong=trace, wrong_answer="72",
                            mode=cfg.teacher.hint, template=cfg.teacher.template,
                            examples=cfg.teacher.examples)
    prompt = len(render_prompt_ids(tok, msgs))
    assert prompt > 2 * n  # the measurement really holds two full traces
    assert prompt + n <= cfg.generation.n_ctx <= 32768
    assert prompt + n <= cfg.distill.max_length
