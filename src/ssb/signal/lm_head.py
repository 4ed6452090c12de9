"""The model's LM head, as stage 4 and the student's loss need it: its input and its transform.

The loss (``signal/losses.py``) sees only hidden states, the head's weights and a post-head transform;
this module gets those from a model:

* :func:`capture_head_input` / :func:`answer_hidden_states`: the (post-norm) hidden states the
  LM head receives at the answer positions, from the model's own forward, without it
  materialising logits;
* :func:`logit_transform`: what the model does to its head's output. Some families post-process
  it (Gemma 2/3 soft-cap it with ``tanh``, Granite divides by ``logits_scaling``, Cohere
  multiplies by ``logit_scale``); the table below reads that from the model's config, and every
  logit ssb recomputes (student, and teacher from its hidden state) goes through it, so the
  recomputed logits are the model's own. stages.logits.check_head verifies this on a real
  sequence and refuses a model whose logits still differ.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogitTransform:
    """What a model does to its LM head's output: ``z * scale``, then (``softcap``)
    ``softcap * tanh(z / softcap)``. The identity for most models (then it returns ``z`` itself)."""

    scale: float = 1.0
    softcap: float | None = None

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and not self.softcap

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z

    def to_dict(self) -> dict:
        return {"scale": self.scale, "softcap": self.softcap}


# Families whose CausalLM forward scales the head's output (transformers 5.23 modeling code):
# Granite* ``logits / config.logits_scaling``; Cohere* ``logits * config.logit_scale``;
# HyperCLOVA X ``logits * config.logits_scaling``. (MiniCPM3 also has ``logits_scaling`` but
# divides the hidden states *before* the head, which the captured head input already includes.)
_DIVIDE_BY_LOGITS_SCALING = ("granite", "granitemoe", "granitemoeshared", "granitemoehybrid", "granite_swa",
                             "granitemoe_swa")
_TIMES_LOGIT_SCALE = ("cohere", "cohere2", "cohere2_moe", "cohere_compass")
_TIMES_LOGITS_SCALING = ("hyperclovax",)


def logit_transform(model) -> LogitTransform:
    """The post-head logit transform of ``model`` (a PreTrainedModel or a PEFT wrapper of one),
    from its config: ``final_logit_softcapping`` (Gemma 2/3, VaultGemma, ...) and the family
    scales above. Unknown post-processing is caught by stages.logits.check_head."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return LogitTransform()
    kind = getattr(cfg, "model_type", "") or ""
    scale = 1.0
    if kind in _DIVIDE_BY_LOGITS_SCALING and getattr(cfg, "logits_scaling", None):
        scale = 1.0 / float(cfg.logits_scaling)
    elif kind in _TIMES_LOGIT_SCALE and getattr(cfg, "logit_scale", None) is not None:
        scale = float(cfg.logit_scale)
    elif kind in _TIMES_LOGITS_SCALING and getattr(cfg, "logits_scaling", None) is not None:
        scale = float(cfg.logits_scaling)
    cap = getattr(cfg, "final_logit_softcapping", None)
    return LogitTransform(scale=scale, softcap=float(cap) if cap else None)


@contextmanager
def capture_head_input(model, skip_head: bool = True):
    """Capture the (post-norm) hidden states the LM head receives; with ``skip_head`` the head
    gets an empty slice instead, so the model never materialises logits.

    Used with ``model(..., logits_to_keep=answer_mask)`` (a boolean ``[B, S]`` mask): the
    model slices its hidden states to the answer positions before the head, so the captured
    tensor is ``[N, H]`` in row-major (batch, position) order. The call goes through the
    model's own ``forward`` (and any DDP/PEFT wrapper around it)."""
    head = model.get_output_embeddings()
    box: dict[str, torch.Tensor] = {}

    def hook(module, args):
        box["hidden"] = args[0]
        if skip_head:
            return (args[0][..., :0, :],)
        return None

    handle = head.register_forward_pre_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def answer_hidden_states(model, input_ids, attention_mask, answer_mask, head_owner=None) -> torch.Tensor:
    """Post-norm hidden states ``[N, H]`` at the positions selected by the boolean ``answer_mask``."""
    owner = head_owner if head_owner is not None else model
    with capture_head_input(owner) as box:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=answer_mask, use_cache=False)
    if "hidden" not in box:
        raise RuntimeError("the model's LM head was not called; cannot capture its input")
    h = box["hidden"]
    n = int(answer_mask.sum())
    if h.dim() != 2 or h.shape[0] != n:
        raise RuntimeError(f"captured hidden states {tuple(h.shape)} do not match {n} answer positions "
                           "(the model must support a boolean logits_to_keep mask)")
    return h
