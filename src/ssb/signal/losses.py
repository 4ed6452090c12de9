"""Distillation losses over answer positions, chunked, from a compact teacher signal.

All tensors here are *per answer position* (``N`` rows = the reply tokens of a batch,
flattened): the student's post-norm hidden states ``[N, H]`` and the teacher signal

* ``dense``  teacher logits ``[N, V]`` (tests and the benchmark's reference),
* ``hidden`` the teacher's post-norm hidden states ``[N, H]``: its logits are the
  frozen LM head applied to them, recomputed here chunk by chunk (exact),
* ``topk``   top-k ids and logits ``[N, k]`` plus the full-vocabulary
  log-sum-exp of ``logits / T`` ``[N]``: the teacher's remaining mass is one exact
  tail bucket, compared with the student's mass outside the teacher's top-k.

Loss = kd_weight · T² · D(p_T, q_T) + ce_weight · CE(reply) + reverse_kl_weight · T² · KL(q_T ‖ p_T),
summed over answer positions and divided by ``normalizer`` (default: the number of
answer positions), i.e. normalised per answer token. ``D`` is ``divergence``: the forward
KL(p_T ‖ q_T) (the paper, the default), the reverse KL(q_T ‖ p_T), or the generalized
Jensen-Shannon divergence of TRL's ``generalized_jsd_loss`` (GKD, arXiv 2306.13649 eq. 1):
β·KL(p ‖ m) + (1−β)·KL(q ‖ m) with m = β·p + (1−β)·q, β = ``jsd_beta``; β = 0 is the forward
and β = 1 the reverse KL, as TRL special-cases them. ``token_weights`` (``[N]``, constant)
multiply each answer position's terms (:func:`hint_gain_weights`); without them and with the
forward KL the loss is computed exactly as before the variants existed (bit for bit).
With a top-k teacher every divergence compares the same k + 1 outcomes: the teacher's top-k
and one tail bucket, against the student's probabilities of those ids and its mass outside them.

The logits are always the head's output followed by the model's post-head transform
(``logit_transform``: a callable on ``[rows, V]`` float32 logits, e.g. the
:class:`ssb.lm_head.LogitTransform` that :func:`ssb.lm_head.logit_transform` reads from a model's
config), for the student and for the teacher recomputed from its hidden state
(:func:`model_logits`). This module never sees a model: getting hidden states, head weights and
the transform out of one is ``signal/lm_head.py``'s job.

Memory: :class:`_ChunkedDistill` projects ``chunk_size`` positions at a time (default: as many
as make a 128 MiB ``[rows, V]`` tensor, :func:`auto_chunk_size`) onto the vocabulary, computes
the chunk's loss and its gradient with respect to the hidden states right away (local
autograd) and keeps only that ``[N, H]`` gradient for the backward pass, so no ``N × V``
tensor (teacher or student) outlives a chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_NEG = -1e30  # finite "minus infinity" for masking (keeps logsumexp gradients finite)
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")  # distill.divergence: the term kd_weight weighs


Transform = Callable[[torch.Tensor], torch.Tensor]  # the model's post-head logit transform


def model_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 transform: Transform | None = None) -> torch.Tensor:
    """The model's float32 logits from its head input ``h``: head, then the model's transform.
    The loss computes the teacher's logits from its hidden states with this, and stage 4's
    top-k store and head check call it so that they hold exactly the logits the loss sees."""
    z = _head(h, weight, bias)
    return transform(z) if transform is not None else z


@dataclass
class TeacherSignal:
    kind: str  # dense | hidden | topk
    logits: torch.Tensor | None = None  # dense [N, V]
    hidden: torch.Tensor | None = None  # hidden [N, H]
    topk_ids: torch.Tensor | None = None  # topk [N, k] int
    topk_logits: torch.Tensor | None = None  # topk [N, k]
    lse: torch.Tensor | None = None  # topk [N]: logsumexp(logits / temperature) over the full vocabulary
    temperature: float | None = None  # topk: the temperature lse was computed at

    def __post_init__(self):
        need = {"dense": ["logits"], "hidden": ["hidden"], "topk": ["topk_ids", "topk_logits", "lse"]}
        if self.kind not in need:
            raise ValueError(f"unknown teacher signal kind {self.kind!r}")
        missing = [f for f in need[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"{self.kind} teacher signal needs {missing}")

    def __len__(self) -> int:
        return len({"dense": self.logits, "hidden": self.hidden, "topk": self.lse}[self.kind])

    def rows(self, sl: slice) -> "TeacherSignal":
        def cut(t):
            return None if t is None else t[sl]

        return TeacherSignal(self.kind, cut(self.logits), cut(self.hidden), cut(self.topk_ids),
                             cut(self.topk_logits), cut(self.lse), self.temperature)


@dataclass
class LossParts:
    loss: torch.Tensor  # weighted total, differentiable
    kd: torch.Tensor  # T²·KL(p‖q) per answer token (detached)
    ce: torch.Tensor
    reverse_kl: torch.Tensor
    n_tokens: int


# ----------------------------------------------------------------------------- one chunk


def _head(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Logits in float32, computed in the head's own dtype (exactly as the model does)."""
    return F.linear(h.to(weight.dtype), weight, bias).float()


def divergence_rows(log_p: torch.Tensor, log_q: torch.Tensor, divergence: str = "forward_kl",
                    beta: float = 0.5) -> torch.Tensor:
    """Per row (summed over the last dim) divergence between teacher ``log_p`` and student ``log_q``
    (log-probabilities over the same outcomes): ``forward_kl`` KL(p ‖ q), ``reverse_kl`` KL(q ‖ p),
    ``jsd`` TRL's generalized JSD at ``beta`` (0: forward KL, 1: reverse KL). Not T²-scaled."""
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    if divergence != "jsd":
        raise ValueError(f"unknown divergence {divergence!r}; one of {DIVERGENCES}")
    log_m = torch.logsumexp(torch.stack([log_q + math.log1p(-beta), log_p + math.log(beta)]), dim=0)
    return beta * (log_p.exp() * (log_p - log_m)).sum(-1) + (1 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1)


def teacher_log_probs(z: torch.Tensor, teacher: TeacherSignal, weight, bias, temperature: float,
                      transform: Transform | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(teacher log-probs, student log-probs, top-k ids or None) at ``temperature`` over the outcomes
    the loss compares: the whole vocabulary (dense, hidden), or a top-k teacher's k ids plus its tail
    bucket as the last column (``[n, k + 1]``; a bucket without mass, when the k ids cover the
    vocabulary, at a finite minus infinity so that it adds exactly nothing)."""
    T = temperature
    log_q = F.log_softmax(z / T, dim=-1)
    if teacher.kind in ("dense", "hidden"):
        t = teacher.logits.float() if teacher.kind == "dense" else model_logits(
            teacher.hidden, weight.detach(), None if bias is None else bias.detach(), transform)
        return F.log_softmax(t / T, dim=-1), log_q, None
    ids = teacher.topk_ids.long()
    log_p_k = teacher.topk_logits.float() / T - teacher.lse.float()[:, None]
    log_q_k = log_q.gather(-1, ids)
    if ids.shape[-1] >= z.shape[-1]:
        log_p_tail = log_q_tail = torch.full_like(log_p_k[:, 0], _NEG)
    else:
        log_p_tail = (1.0 - log_p_k.exp().sum(-1)).clamp_min(1e-30).log()
        log_q_tail = torch.logsumexp(log_q.scatter(-1, ids, _NEG), dim=-1)
    return (torch.cat([log_p_k, log_p_tail[:, None]], -1), torch.cat([log_q_k, log_q_tail[:, None]], -1), ids)


def token_terms(z: torch.Tensor, teacher: TeacherSignal, targets: torch.Tensor | None, weight, bias,
                temperature: float, want_kd: bool = True, want_ce: bool = False, want_rkl: bool = False,
                transform: Transform | None = None, divergence: str = "forward_kl",
                beta: float = 0.5) -> dict[str, torch.Tensor]:
    """The loss terms of each answer position (``[n]`` each, unweighted): ``kd`` T²·D(p_T, q_T) of
    ``divergence``, ``ce`` the cross-entropy of the reply token, ``reverse_kl`` T²·KL(q_T ‖ p_T), from the
    student's float32 logits ``z`` (already transformed). Differentiable in ``z``; the variants' path
    of the loss and the diagnostic's (``signal/diagnostic.py``) per-token losses and gradients."""
    T = temperature
    zero = z.new_zeros(z.shape[0])
    out = {"kd": zero, "ce": zero, "reverse_kl": zero}
    if want_ce:
        out["ce"] = F.cross_entropy(z, targets, reduction="none")
    if want_kd or want_rkl:
        log_p, log_q, _ = teacher_log_probs(z, teacher, weight, bias, T, transform)
        if want_kd:
            out["kd"] = divergence_rows(log_p, log_q, divergence, beta) * T * T
        if want_rkl:
            out["reverse_kl"] = divergence_rows(log_p, log_q, "reverse_kl") * T * T
    return out


def _chunk_terms(z: torch.Tensor, teacher: TeacherSignal, targets: torch.Tensor | None, weight, bias,
                 temperature: float, want_kd: bool, want_ce: bool, want_rkl: bool,
                 transform: Transform | None = None, divergence: str = "forward_kl", beta: float = 0.5,
                 token_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Summed (not averaged) loss terms of one chunk from the student's float32 logits ``z``
    (already transformed); the teacher's hidden rows go through the same head and ``transform``.
    A divergence other than the forward KL, or token weights, go through :func:`token_terms`; the
    paper's loss keeps its own expressions below, so that it stays bit for bit what it was."""
    if divergence != "forward_kl" or token_weights is not None:
        rows = token_terms(z, teacher, targets, weight, bias, temperature, want_kd, want_ce, want_rkl, transform,
                           divergence, beta)
        w = token_weights
        return {k: (v * w.to(v.dtype)).sum() if w is not None else v.sum() for k, v in rows.items()}
    T = temperature
    zero = z.new_zeros(())
    out = {"kd": zero, "ce": zero, "reverse_kl": zero}
    if want_ce:
        out["ce"] = F.cross_entropy(z, targets, reduction="sum")
    if not (want_kd or want_rkl):
        return out
    log_q = F.log_softmax(z / T, dim=-1)
    if teacher.kind in ("dense", "hidden"):
        t = teacher.logits.float() if teacher.kind == "dense" else model_logits(
            teacher.hidden, weight.detach(), None if bias is None else bias.detach(), transform)
        log_p = F.log_softmax(t / T, dim=-1)
        if want_kd:
            out["kd"] = (log_p.exp() * (log_p - log_q)).sum() * T * T
        if want_rkl:
            out["reverse_kl"] = (log_q.exp() * (log_q - log_p)).sum() * T * T
        return out
    # top-k + tail bucket (its lse is at T: distill_loss checked the signal's temperature)
    ids = teacher.topk_ids.long()
    log_p_k = teacher.topk_logits.float() / T - teacher.lse.float()[:, None]
    p_k = log_p_k.exp()
    log_q_k = log_q.gather(-1, ids)
    if ids.shape[-1] >= z.shape[-1]:  # top-k covers the vocabulary: no tail bucket (its mass is rounding noise)
        p_tail = torch.zeros_like(log_p_k[:, 0])
        log_q_tail = torch.zeros_like(p_tail)
    else:
        p_tail = (1.0 - p_k.sum(-1)).clamp_min(0.0)
        log_q_tail = torch.logsumexp(log_q.scatter(-1, ids, _NEG), dim=-1)
    if want_kd:
        kl = (p_k * (log_p_k - log_q_k)).sum(-1)
        kl = kl + torch.xlogy(p_tail, p_tail) - p_tail * log_q_tail
        out["kd"] = kl.sum() * T * T
    if want_rkl:
        log_p_tail = p_tail.clamp_min(1e-30).log()
        q_k = log_q_k.exp()
        q_tail = log_q_tail.exp() if ids.shape[-1] < z.shape[-1] else torch.zeros_like(p_tail)
        rkl = (q_k * (log_q_k - log_p_k)).sum(-1) + q_tail * (log_q_tail - log_p_tail)
        out["reverse_kl"] = rkl.sum() * T * T
    return out


# ----------------------------------------------------------------------------- chunked, fused backward


class _ChunkedDistill(torch.autograd.Function):
    """Loss over all rows, chunk by chunk; gradients are computed in the forward pass and
    only they (``[N, H]``, plus the head's if it is trainable) are kept for backward.
    Returns (weighted loss, non-differentiable [kd, ce, reverse_kl] sums / normalizer)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, teacher, targets, opts):
        T, w_kd, w_ce, w_rkl, chunk, norm, tf, div, beta, tw = opts
        w = weight.detach()
        b = None if bias is None else bias.detach()
        grad_h = torch.zeros_like(hidden) if hidden.requires_grad else None
        grad_w = torch.zeros_like(w, dtype=torch.float32) if weight.requires_grad else None
        grad_b = torch.zeros_like(b, dtype=torch.float32) if bias is not None and bias.requires_grad else None
        parts = torch.zeros(3, dtype=torch.float64)
        need_grad = any(g is not None for g in (grad_h, grad_w, grad_b))
        for start in range(0, hidden.shape[0], chunk):
            sl = slice(start, start + chunk)
            h = hidden[sl].detach()
            with torch.set_grad_enabled(need_grad):
                z = _head(h, w, b).requires_grad_(need_grad)  # raw head output: gradients flow back from it
                tg = None if targets is None else targets[sl]
                terms = _chunk_terms(z if tf is None else tf(z), teacher.rows(sl), tg, w, b, T,
                                     w_kd != 0, w_ce != 0, w_rkl != 0, tf, div, beta,
                                     None if tw is None else tw[sl].to(z.device))
                loss = (w_kd * terms["kd"] + w_ce * terms["ce"] + w_rkl * terms["reverse_kl"]) / norm
                dz = torch.autograd.grad(loss, z)[0] if need_grad else None
            parts += torch.stack([terms[k].detach().double().cpu() for k in ("kd", "ce", "reverse_kl")]) / norm
            if not need_grad:
                continue
            dz = dz.to(w.dtype)
            if grad_h is not None:
                grad_h[sl] = (dz @ w).to(hidden.dtype)
            if grad_w is not None:
                grad_w += (dz.t() @ h.to(w.dtype)).float()
            if grad_b is not None:
                grad_b += dz.float().sum(0)
        ctx.has = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        total = (w_kd * parts[0] + w_ce * parts[1] + w_rkl * parts[2]).to(torch.float32).to(hidden.device)
        parts = parts.to(torch.float32)
        ctx.mark_non_differentiable(parts)
        return total, parts

    @staticmethod
    def backward(ctx, grad_total, _grad_parts):
        saved = iter(ctx.saved_tensors)
        grads = [(next(saved) * grad_total).to(dt) if has else None for has, dt in zip(ctx.has, ctx.dtypes)]
        return grads[0], grads[1], grads[2], None, None, None


CHUNK_LOGITS = 2**25  # logits per chunk: a [rows, vocab] float32 tensor of 128 MiB


def hint_gain_weights(gain: torch.Tensor, max_weight: float = 4.0) -> torch.Tensor:
    """``distill.token_weighting: hint_gain``: each answer position's weight from its hint gain
    ``g = log p_teacher − log p_base`` of the solution token (T = 1): ``min(softplus(g), max_weight)``,
    divided by its mean over the rows given (a batch), so the weights average 1 and the loss keeps
    the uniform loss's scale. softplus keeps every weight positive (a token the hint does not move
    weighs ln 2 before the division, one it makes less likely tends to 0) and grows like g where the
    hint helps; the cap keeps a few tokens (the answer's digits can gain 10 nats) from carrying the batch."""
    w = F.softplus(gain.float()).clamp(max=max_weight)
    return w / w.mean().clamp_min(1e-12)


def auto_chunk_size(vocab_size: int) -> int:
    """Answer positions per chunk so that one ``[rows, vocab]`` float32 tensor is 128 MiB: a
    chunk holds about ten such tensors at its peak (student and teacher logits, their
    log-softmaxes, the KL's terms, the gradient), so the peak no longer grows with the
    vocabulary: 682 rows at SmolLM2's 49,152, 220 at Qwen2.5's 151,936."""
    return max(16, CHUNK_LOGITS // max(int(vocab_size), 1))


def distill_loss(student_hidden: torch.Tensor, head_weight: torch.Tensor, head_bias: torch.Tensor | None,
                 teacher: TeacherSignal, targets: torch.Tensor | None = None, *, temperature: float = 2.0,
                 kd_weight: float = 1.0, ce_weight: float = 0.0, reverse_kl_weight: float = 0.0,
                 chunk_size: int | None = None, normalizer: float | torch.Tensor | None = None,
                 logit_transform: Transform | None = None, divergence: str = "forward_kl", jsd_beta: float = 0.5,
                 token_weights: torch.Tensor | None = None) -> LossParts:
    """Chunked distillation loss at answer positions (see the module docstring). ``logit_transform``
    is the model's post-head transform (:func:`ssb.lm_head.logit_transform`), applied to student
    and teacher. ``chunk_size``: answer positions per chunk; None: :func:`auto_chunk_size` of the
    vocabulary. A top-k ``teacher`` must carry the ``temperature`` its lse was computed at, equal
    to ``temperature`` (the stages check the store first: stages.logits.check_store_temperature).
    ``divergence`` / ``jsd_beta``: the term ``kd_weight`` weighs; ``token_weights`` ``[N]``: a constant
    weight per answer position on every term (None: uniform)."""
    n = student_hidden.shape[0]
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; one of {DIVERGENCES}")
    if not 0 <= jsd_beta <= 1:
        raise ValueError(f"jsd_beta must be in [0, 1], got {jsd_beta}")
    if token_weights is not None and tuple(token_weights.shape) != (n,):
        raise ValueError(f"token_weights has shape {tuple(token_weights.shape)}, expected ({n},)")
    if len(teacher) != n:
        raise ValueError(f"teacher signal has {len(teacher)} rows, student {n} answer positions")
    if not (kd_weight or ce_weight or reverse_kl_weight):
        raise ValueError("all loss weights are zero")
    if ce_weight and targets is None:
        raise ValueError("ce_weight > 0 needs the reply token ids (targets)")
    if teacher.kind == "topk" and teacher.temperature is not None and abs(teacher.temperature - temperature) > 1e-6:
        raise ValueError(f"top-k teacher signal's lse is at temperature {teacher.temperature}, the loss asks "
                         f"for {temperature}: its tail bucket would be wrong")
    norm = float(normalizer) if normalizer is not None else float(max(n, 1))
    chunk = int(chunk_size) if chunk_size else auto_chunk_size(head_weight.shape[0])
    opts = (float(temperature), float(kd_weight), float(ce_weight), float(reverse_kl_weight), chunk, norm,
            logit_transform, divergence, float(jsd_beta),
            None if token_weights is None else token_weights.detach().float())
    loss, parts = _ChunkedDistill.apply(student_hidden, head_weight, head_bias, teacher, targets, opts)
    return LossParts(loss, parts[0], parts[1], parts[2], n)


# ----------------------------------------------------------------------------- the unfused reference


def reference_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None = None,
                   *, temperature: float = 2.0, kd_weight: float = 1.0, ce_weight: float = 0.0,
                   reverse_kl_weight: float = 0.0, divergence: str = "forward_kl", jsd_beta: float = 0.5,
                   token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Plain autograd over full ``[N, V]`` tensors: the definition the chunked loss must match."""
    T = temperature
    log_q = F.log_softmax(student_logits.float() / T, -1)
    log_p = F.log_softmax(teacher_logits.float() / T, -1)
    if divergence != "forward_kl" or token_weights is not None:
        w = torch.ones(log_q.shape[0]) if token_weights is None else token_weights.float()
        rows = kd_weight * divergence_rows(log_p, log_q, divergence, jsd_beta) * T * T
        if reverse_kl_weight:
            rows = rows + reverse_kl_weight * divergence_rows(log_p, log_q, "reverse_kl") * T * T
        if ce_weight:
            rows = rows + ce_weight * F.cross_entropy(student_logits.float(), targets, reduction="none")
        return (rows * w).mean()
    loss = kd_weight * (log_p.exp() * (log_p - log_q)).sum(-1).mean() * T * T
    if reverse_kl_weight:
        loss = loss + reverse_kl_weight * (log_q.exp() * (log_q - log_p)).sum(-1).mean() * T * T
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(student_logits.float(), targets)
    return loss
