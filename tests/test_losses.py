"""The chunked distillation loss equals the plain dense definition (values and gradients)."""

import pytest
import torch

from ssb.signal.lm_head import answer_hidden_states
from ssb.signal.losses import TeacherSignal, auto_chunk_size, distill_loss, reference_loss
from ssb.stages.logits import encode

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


def test_default_chunk_follows_the_vocabulary(setup, monkeypatch):
    """No chunk_size: rows per chunk = 2^25 / vocab, so a large vocabulary gets short chunks."""
    assert (auto_chunk_size(49_152), auto_chunk_size(151_936), auto_chunk_size(10**8)) == (682, 220, 16)
    W, h_s, h_t, _ = setup
    ref, g_ref = _grad(lambda h: reference_loss(h @ W.t(), h_t @ W.t(), temperature=2.0), h_s)
    monkeypatch.setattr("ssb.signal.losses.CHUNK_LOGITS", 20 * V)  # 20 rows per chunk: 2 chunks of the 37 rows
    assert auto_chunk_size(V) == 20
    out, g = _grad(lambda h: distill_loss(h, W, None, TeacherSignal("hidden", hidden=h_t)).loss, h_s)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


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


# ----------------------------------------------------------------------------- scaled / soft-capped heads

SMALL = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=128, initializer_range=0.5,
             pad_token_id=0, bos_token_id=1, eos_token_id=2)
SCALED_FAMILIES = {  # family -> (config class, model class, the post-head setting, expected LogitTransform)
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"final_logit_softcapping": 2.0}, dict(softcap=2.0)),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"final_logit_softcapping": 2.0}, dict(softcap=2.0)),
    "vaultgemma": ("VaultGemmaConfig", "VaultGemmaForCausalLM", {"final_logit_softcapping": 2.0}, dict(softcap=2.0)),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 8.0}, dict(scale=1 / 8.0)),
    "granitemoe": ("GraniteMoeConfig", "GraniteMoeForCausalLM", {"logits_scaling": 8.0, "num_local_experts": 2,
                                                                 "num_experts_per_tok": 1}, dict(scale=1 / 8.0)),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 4.0}, dict(scale=4.0)),
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", {"logit_scale": 4.0}, dict(scale=4.0)),
    "hyperclovax": ("HyperCLOVAXConfig", "HyperCLOVAXForCausalLM", {"logits_scaling": 4.0}, dict(scale=4.0)),
}


def _tiny(family):
    import transformers

    cfg_cls, model_cls, extra, _ = SCALED_FAMILIES[family]
    torch.manual_seed(0)
    cfg = getattr(transformers, cfg_cls)(**SMALL, **extra)
    return getattr(transformers, model_cls)(cfg).eval()


def _pair():
    from ssb.signal.alignment import AlignedPair

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 256, (14,), generator=g).tolist()
    return AlignedPair(ids[:9], ids[:5], ids[9:])


@pytest.mark.parametrize("family", list(SCALED_FAMILIES))
def test_scaled_heads_recompute_the_models_own_logits(family):
    """Hidden and top-k stores and the loss recompute logits from the head input; for every
    scaled/soft-capped family of the installed transformers they equal the model's forward logits."""
    from ssb.signal.lm_head import LogitTransform, logit_transform
    from ssb.signal.losses import model_logits
    from ssb.stages.logits import check_head, teacher_hidden

    model = _tiny(family)
    tf = logit_transform(model)
    assert tf == LogitTransform(**SCALED_FAMILIES[family][3])
    pair = _pair()
    assert check_head(model, pair, pad_id=0) < 1e-4
    # the model's logits at the answer positions, from its own forward
    with torch.no_grad():
        full = model(input_ids=torch.tensor([pair.teacher_ids])).logits[0].float()
    own = full[len(pair.teacher_prompt_ids) - 1: len(pair.teacher_ids) - 1]
    (h,) = teacher_hidden(model, [pair], 0)
    head = model.get_output_embeddings()
    torch.testing.assert_close(model_logits(h, head.weight, head.bias, tf), own, rtol=1e-4, atol=1e-4)
    raw = model_logits(h, head.weight, head.bias)  # the plain head (what ssb used to store) is wrong here
    assert (raw - own).abs().max() > 0.05
    # top-k store: the model's own top-k and log-sum-exp
    enc = encode(h, "topk", torch.float32, head, 5, 2.0, transform=tf)
    torch.testing.assert_close(enc["topk_logits"], own.topk(5).values, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(enc["lse"], torch.logsumexp(own / 2.0, -1), rtol=1e-4, atol=1e-4)
    # the chunked loss (student logits and teacher logits from hidden states) = the dense loss on own logits
    h_s = (h + 0.3 * torch.randn_like(h)).detach()
    with torch.no_grad():
        z_s = model_logits(h_s, head.weight, head.bias, tf)
    zs = z_s.clone().requires_grad_(True)
    ref = reference_loss(zs, own, temperature=2.0, reverse_kl_weight=0.5)
    ref.backward()
    g_ref = torch.autograd.grad(model_logits(hh := h_s.clone().requires_grad_(True), head.weight.detach(), None, tf),
                                hh, zs.grad)[0]
    out, g = _grad(lambda x: distill_loss(x, head.weight.detach(), None, TeacherSignal("hidden", hidden=h),
                                          temperature=2.0, reverse_kl_weight=0.5, chunk_size=3,
                                          logit_transform=tf).loss, h_s)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-5)


def test_unknown_post_processing_is_refused(monkeypatch):
    """A family whose scaling ssb does not know (simulated by forgetting Granite's) is refused
    with a clear error instead of storing wrong logits."""
    import ssb.signal.lm_head
    from ssb.signal.store import TeacherStoreError
    from ssb.stages.logits import check_head

    model = _tiny("granite")
    monkeypatch.setattr(ssb.signal.lm_head, "_DIVIDE_BY_LOGITS_SCALING", ())
    with pytest.raises(TeacherStoreError, match="'granite'.*cannot recompute"):
        check_head(model, _pair(), pad_id=0)


def test_prescaled_hidden_states_need_no_transform(tiny_model):
    """MiniCPM3-style ``logits_scaling`` (applied before the head) and plain Llama: identity."""
    from ssb.signal.lm_head import LogitTransform, logit_transform

    assert logit_transform(tiny_model.model) == LogitTransform() and LogitTransform().identity
    cfg = type("Cfg", (), {"model_type": "minicpm3", "logits_scaling": 256.0})()
    assert logit_transform(type("M", (), {"config": cfg})()).identity


# ----------------------------------------------------------------------------- loss variants (issue 37)


def _paper_loss_as_before(h_s, W, h_t, targets, T, chunk, kd, ce, rkl):
    """The paper's chunked loss as the code computed it before the variants (the same operations in the
    same order): the default settings must still give exactly this, bit for bit."""
    import torch.nn.functional as F

    parts = torch.zeros(3, dtype=torch.float64)
    for s in range(0, h_s.shape[0], chunk):
        z = F.linear(h_s[s: s + chunk], W, None).float()
        log_q = F.log_softmax(z / T, dim=-1)
        log_p = F.log_softmax(F.linear(h_t[s: s + chunk], W, None).float() / T, dim=-1)
        terms = [(log_p.exp() * (log_p - log_q)).sum() * T * T,
                 F.cross_entropy(z, targets[s: s + chunk], reduction="sum") if ce else z.new_zeros(()),
                 (log_q.exp() * (log_q - log_p)).sum() * T * T if rkl else z.new_zeros(())]
        parts += torch.stack([t.double() for t in terms]) / h_s.shape[0]
    return (kd * parts[0] + ce * parts[1] + rkl * parts[2]).to(torch.float32)


@pytest.mark.parametrize("weights", [(1.0, 0.0, 0.0), (1.0, 0.5, 0.3)], ids=["paper", "kd+ce+rkl"])
def test_default_distill_config_gives_the_paper_loss_bit_for_bit(setup, weights):
    from ssb.config_train import DistillConfig

    W, h_s, h_t, targets = setup
    dc = DistillConfig(kd_weight=weights[0], ce_weight=weights[1], reverse_kl_weight=weights[2])
    assert (dc.divergence, dc.token_weighting) == ("forward_kl", "uniform")
    out = distill_loss(h_s, W, None, TeacherSignal("hidden", hidden=h_t), targets, temperature=dc.temperature,
                       kd_weight=dc.kd_weight, ce_weight=dc.ce_weight, reverse_kl_weight=dc.reverse_kl_weight,
                       chunk_size=8, divergence=dc.divergence, jsd_beta=dc.jsd_beta, token_weights=None)
    assert torch.equal(out.loss, _paper_loss_as_before(h_s, W, h_t, targets, dc.temperature, 8, *weights))


VARIANTS = [{"divergence": "reverse_kl"}, {"divergence": "jsd", "jsd_beta": 0.5},
            {"divergence": "jsd", "jsd_beta": 0.1}, {"divergence": "jsd", "jsd_beta": 0.0},
            {"divergence": "jsd", "jsd_beta": 1.0},
            {"divergence": "jsd", "jsd_beta": 0.3, "ce_weight": 0.2, "reverse_kl_weight": 0.4}, {"weighted": True},
            {"divergence": "jsd", "jsd_beta": 0.7, "weighted": True}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()))
def test_variants_chunked_equal_their_reference(setup, variant):
    """Every divergence and the token weights, chunked (dense and hidden teachers): the plain reference's
    value and gradient."""
    from ssb.signal.losses import hint_gain_weights

    W, h_s, h_t, targets = setup
    v = dict(variant)
    tw = hint_gain_weights(torch.linspace(-3, 6, N)) if v.pop("weighted", False) else None
    ref, g_ref = _grad(lambda h: reference_loss(h @ W.t(), h_t @ W.t(), targets, temperature=2.0, token_weights=tw,
                                                **v), h_s)
    jsd_beta = v.pop("jsd_beta", 0.5)
    for teacher in (TeacherSignal("dense", logits=h_t @ W.t()), TeacherSignal("hidden", hidden=h_t)):
        out, g = _grad(lambda h, teacher=teacher: distill_loss(h, W, None, teacher, targets, temperature=2.0,
                                                               chunk_size=8, jsd_beta=jsd_beta, token_weights=tw,
                                                               **v).loss, h_s)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_is_trls_generalized_jsd_loss(T, beta):
    """distill.divergence=jsd at jsd_beta = TRL's GKDTrainer.generalized_jsd_loss at beta, same temperature,
    full vocabulary; ours is T²-scaled (as the paper's KL), TRL's is not. Values and gradients."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    g = torch.Generator().manual_seed(3)
    s_logits, t_logits = torch.randn(23, V, generator=g) * 2, torch.randn(23, V, generator=g) * 2
    zs = s_logits.clone().requires_grad_(True)
    trl = GKDTrainer.generalized_jsd_loss(zs[:, None, :], t_logits[:, None, :], beta=beta, temperature=T)
    trl.backward()
    za = s_logits.clone().requires_grad_(True)
    ours = reference_loss(za, t_logits, temperature=T, divergence="jsd", jsd_beta=beta) / (T * T)
    ours.backward()
    torch.testing.assert_close(ours, trl.float(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(za.grad, zs.grad, rtol=1e-4, atol=1e-7)
    # the chunked loss on a dense teacher (the student's logits through an identity head) agrees too
    eye = torch.eye(V)
    out = distill_loss(s_logits, eye, None, TeacherSignal("dense", logits=t_logits), temperature=T,
                       divergence="jsd", jsd_beta=beta, chunk_size=5).loss / (T * T)
    torch.testing.assert_close(out, trl.float().detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_topk_tail_bucket_composes_with_every_divergence(setup, divergence):
    """A top-k store compares k ids plus one tail bucket under every divergence: at k = V it is the dense loss;
    at k < V it is the divergence between the bucketed distributions (computed here by hand from the dense ones)."""
    import torch.nn.functional as F

    from ssb.signal.losses import divergence_rows, hint_gain_weights

    W, h_s, h_t, _ = setup
    T, beta = 2.0, 0.3
    tw = hint_gain_weights(torch.linspace(-1, 3, N))
    for weights in (None, tw):
        full = TeacherSignal("topk", temperature=T, **encode(h_t, "topk", torch.float32, _Head(W), V, T))
        ref, g_ref = _grad(lambda h, w=weights: reference_loss(h @ W.t(), h_t @ W.t(), temperature=T,
                                                               divergence=divergence, jsd_beta=beta,
                                                               token_weights=w), h_s)
        out, g = _grad(lambda h, w=weights, sig=full: distill_loss(h, W, None, sig, temperature=T, divergence=divergence,
                                                                   jsd_beta=beta, token_weights=w,
                                                                   chunk_size=8).loss, h_s)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    k = 6
    sig = TeacherSignal("topk", temperature=T, **encode(h_t, "topk", torch.float32, _Head(W), k, T))
    p, q = F.softmax(h_t @ W.t() / T, -1), F.softmax(h_s @ W.t() / T, -1)
    ids = sig.topk_ids.long()
    in_k = torch.zeros_like(p, dtype=torch.bool).scatter(-1, ids, True)

    def bucket(d):
        return torch.cat([d.gather(-1, ids), (d * ~in_k).sum(-1, keepdim=True)], -1)

    by_hand = divergence_rows(bucket(p).log(), bucket(q).log(), divergence, beta).mean() * T * T
    out, g = _grad(lambda h: distill_loss(h, W, None, sig, temperature=T, divergence=divergence, jsd_beta=beta,
                                          chunk_size=8).loss, h_s)
    torch.testing.assert_close(out, by_hand, rtol=1e-4, atol=1e-6)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_hint_gain_weights_are_positive_capped_and_average_one():
    from ssb.signal.losses import hint_gain_weights

    gain = torch.tensor([-8.0, -0.1, 0.0, 0.5, 2.0, 12.0])
    w = hint_gain_weights(gain, max_weight=4.0)
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    assert (w > 0).all() and bool((w[1:] >= w[:-1]).all())  # monotone in the gain
    assert float(w[-1] / w[2]) == pytest.approx(4.0 / torch.log(torch.tensor(2.0)).item(), rel=1e-5)  # the cap
    assert hint_gain_weights(gain, 4.0).shape == gain.shape


def test_contradictory_loss_settings_are_refused():
    from ssb.config import load_config
    from ssb.errors import ConfigError

    with pytest.raises(ConfigError, match="kd_weight is 0"):
        load_config(None, ["distill.divergence=jsd", "distill.kd_weight=0", "distill.ce_weight=1"])
    with pytest.raises(ConfigError, match="reverse_kl_weight=0"):
        load_config(None, ["distill.divergence=reverse_kl", "distill.reverse_kl_weight=0.5"])
    with pytest.raises(ConfigError, match="jsd_beta"):
        load_config(None, ["distill.jsd_beta=1.5"])
    cfg = load_config(None, ["distill.divergence=jsd", "distill.reverse_kl_weight=0.2",
                             "distill.token_weighting=hint_gain"])
    assert (cfg.distill.divergence, cfg.distill.token_weighting) == ("jsd", "hint_gain")
