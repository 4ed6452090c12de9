"""The chunked distillation loss equals the plain dense definition (values and gradients)."""

import pytest
import torch

from ssb.losses import TeacherSignal, answer_hidden_states, distill_loss, reference_loss
from ssb.teacher_logits import encode

N, H, V = 37, 16, 50


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(V, H, generator=g) * 0.5
    h_s = torch.randn(N, H, generator=g)
    h_t = h_s + 0.7 * torch.randn(N, H, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    return W, h_s, h_t, targets


def _grad(fn, h_s):
    h = h_s.clone().requires_grad_(True)
    loss = fn(h)
    loss.backward()
    return loss.detach(), h.grad


class _Head(torch.nn.Module):
    def __init__(self, W):
        super().__init__()
        self.weight = torch.nn.Parameter(W)
        self.bias = None


@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("weights", [(1, 0, 0), (1, 0.5, 0), (0, 1, 0), (1, 0, 0.3)], ids=["kd", "kd+ce", "ce", "kd+rkl"])
def test_hidden_and_dense_match_reference(setup, T, weights):
    W, h_s, h_t, targets = setup
    kd, ce, rkl = weights
    ref, g_ref = _grad(lambda h: reference_loss(h @ W.t(), h_t @ W.t(), targets, temperature=T, kd_weight=kd,
                                                ce_weight=ce, reverse_kl_weight=rkl), h_s)
    for teacher in (TeacherSignal("dense", logits=h_t @ W.t()), TeacherSignal("hidden", hidden=h_t)):
        out, g = _grad(lambda h: distill_loss(h, W, None, teacher, targets, temperature=T, kd_weight=kd, ce_weight=ce,
                                              reverse_kl_weight=rkl, chunk_size=8).loss, h_s)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_topk_at_full_vocab_equals_dense(setup, T):
    W, h_s, h_t, targets = setup
    signal = TeacherSignal("topk", temperature=T, **encode(h_t, "topk", torch.float32, _Head(W), V, T, chunk=10))
    ref, g_ref = _grad(lambda h: reference_loss(h @ W.t(), h_t @ W.t(), temperature=T, reverse_kl_weight=0.5), h_s)
    out, g = _grad(lambda h: distill_loss(h, W, None, signal, temperature=T, reverse_kl_weight=0.5,
                                          chunk_size=8).loss, h_s)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    assert torch.isfinite(g).all()


def test_topk_tail_bucket_is_a_lower_bound_and_tightens_with_k(setup):
    W, h_s, h_t, _ = setup
    dense = float(reference_loss(h_s @ W.t(), h_t @ W.t(), temperature=1.0))
    losses = []
    for k in (5, 20, 45):
        sig = TeacherSignal("topk", temperature=1.0, **encode(h_t, "topk", torch.float32, _Head(W), k, 1.0))
        losses.append(float(distill_loss(h_s, W, None, sig, temperature=1.0).loss))
    assert all(0 <= x <= dense + 1e-6 for x in losses)  # bucketing can only lose information (data processing)
    assert losses[0] <= losses[1] <= losses[2] + 1e-6


def test_parts_normaliser_and_head_gradient(setup):
    W, h_s, h_t, targets = setup
    out = distill_loss(h_s, W, None, TeacherSignal("hidden", hidden=h_t), targets, ce_weight=1.0, normalizer=2 * N)
    ref = reference_loss(h_s @ W.t(), h_t @ W.t(), targets, ce_weight=1.0) / 2
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.kd + out.ce, ref, rtol=1e-5, atol=1e-6)
    # a trainable head gets the same gradient as plain autograd
    Wa, Wb = W.clone().requires_grad_(True), W.clone().requires_grad_(True)
    reference_loss(h_s @ Wa.t(), h_t @ W.t(), temperature=2.0).backward()
    distill_loss(h_s, Wb, None, TeacherSignal("hidden", hidden=h_t), temperature=2.0, chunk_size=5).loss.backward()
    torch.testing.assert_close(Wb.grad, Wa.grad, rtol=1e-4, atol=1e-6)


def test_student_hidden_states_at_answer_positions(tiny_model):
    model = tiny_model.model
    ids = torch.randint(0, 1000, (2, 9))
    attn = torch.ones_like(ids)
    attn[1, 7:] = 0
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, 3:8] = True
    mask[1, 2:6] = True
    h = answer_hidden_states(model, ids, attn, mask)
    assert h.shape == (9, model.config.hidden_size)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits
    torch.testing.assert_close(model.lm_head(h), logits[mask], rtol=1e-4, atol=1e-5)
