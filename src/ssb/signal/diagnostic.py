"""What the teacher signal carries: per reply token, the teacher against the student's starting model.

The student starts as the base model on the bare question; the teacher is the same model with the
hint. Per pair and reply (solution) token this module measures

* ``base_logprob``: log q(y) of the solution token under the base model and the bare student prompt
  (one forward over ``[student prompt ‖ solution]``), at T = 1 (the model's own probability);
* ``teacher_logprob``: log p(y) under the hinted teacher, from the teacher store, at T = 1. A
  ``hidden`` store gives it exactly. A ``topk`` store holds the k largest logits and the
  log-sum-exp at the distillation temperature T only, so the T = 1 normaliser is bounded
  (:func:`topk_lse_bound`: the tail's T = 1 mass at most ``exp(z_k (1 - 1/T))`` times its mass at T
  for T >= 1, Hölder's bound for T < 1): a top-k token's log-prob is a lower bound (exact when T = 1),
  and a solution token in the tail bucket, whose logit is not stored, takes the k-th logit, its
  ceiling (``in_tail`` counts them);
* ``hint_gain`` = ``teacher_logprob - base_logprob``: what the hint adds to that token;
* ``kl``: KL(p_T ‖ q_T) at ``distill.temperature``, and ``teacher_entropy`` H(p_T), over the outcomes
  the loss compares (the vocabulary, or a topk store's k ids and its tail bucket);
* each loss's per-token value and the squared norm of its gradient with respect to the student's
  logits at step 0 (student = base): for the paper's loss, T²·KL(p_T ‖ q_T), in closed form
  T·(q_T - p_T) (:func:`forward_kl_logit_grad`), for any other ``distill`` loss setting by autograd
  over :func:`losses.token_terms` (:func:`loss_and_grad_sq`).

Aggregates (:func:`summarize`): the share of each loss and of its gradient norm² on the tokens the
base already predicts (q(y) > 0.9: ``confident_share_of_loss``, ``confident_share_of_grad``) against
the rest, the hint gain's distribution, and the tokens it is largest on, in context. The driver
(:func:`diagnose`, ``ssb signal --run DIR``) reads a run's ``pairs.jsonl`` and ``teacher/`` and writes
``signal.json`` (:func:`write_signal`); docs/method.md, "What the teacher signal carries".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..rundir.jsonl import atomic_write_json, read_jsonl
from .alignment import AlignmentError, answer_slice, prompt_and_reply_ids
from .lm_head import answer_hidden_states, logit_transform
from .losses import (
    TeacherSignal,
    auto_chunk_size,
    hint_gain_weights,
    model_logits,
    teacher_log_probs,
    token_terms,
)
from .store import TeacherStore

CONFIDENT = 0.9  # the base "already predicts" a solution token it gives more than this probability
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
GAIN_ABOVE, GAIN_BELOW = 0.5, -0.1
# the paper's loss (forward KL, T²-scaled, uniform tokens) at the run's temperature
PAPER = {"divergence": "forward_kl", "jsd_beta": 0.5, "kd_weight": 1.0, "ce_weight": 0.0, "reverse_kl_weight": 0.0,
         "token_weighting": "uniform"}
LOSS_KEYS = (*PAPER, "token_weight_max", "temperature")  # a variant may change the temperature too


# ----------------------------------------------------------------------------- per token (pure)


def solution_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log-softmax of ``logits`` ``[n, V]`` (T = 1) at each row's ``targets`` ``[n]``."""
    return F.log_softmax(logits.float(), dim=-1).gather(-1, targets.long()[:, None])[:, 0]


def topk_lse_bound(topk_logits: torch.Tensor, lse: torch.Tensor, temperature: float, vocab_size: int) -> torch.Tensor:
    """An upper bound of the T = 1 log-normaliser ``log Σ_v exp(z_v)`` from a top-k store (``topk_logits``
    ``[n, k]``, ``lse`` = logsumexp(z / T) ``[n]``): the top-k's own plus the most the tail can hold.
    Every tail logit is at most the k-th, ``z_k``; with tail mass R = Σ_tail exp(z/T), the tail's T = 1
    mass is at most ``n_tail · exp(z_k)``, and at most ``exp(z_k (1 - 1/T)) · R`` for T >= 1 or
    ``n_tail^(1-T) · R^T`` (Hölder) for T < 1. R comes from 1 - Σ_topk p_T, so its rounding (k · the stored
    logits' epsilon) is added to it. Exact at T = 1 (up to that rounding); the top-k's own when k covers V."""
    z = topk_logits.double()
    T, k = float(temperature), z.shape[-1]
    top = torch.logsumexp(z, dim=-1)
    n_tail = vocab_size - k
    if n_tail <= 0:
        return top.to(torch.float32)
    z_k = z.min(dim=-1).values
    lse = lse.double()
    slack = k * torch.finfo(topk_logits.dtype if topk_logits.is_floating_point() else torch.float32).eps
    log_r = torch.log((1 - torch.exp(z / T - lse[:, None]).sum(-1)).clamp_min(0) + slack) + lse  # log R, from above
    bound = z_k + math.log(n_tail)
    other = log_r + z_k * (1 - 1 / T) if T >= 1 else (1 - T) * math.log(n_tail) + T * log_r
    return torch.logaddexp(top, torch.minimum(bound, other)).to(torch.float32)


def teacher_solution_logprobs(teacher: TeacherSignal, targets: torch.Tensor, weight, bias, transform=None,
                              vocab_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(y) of the teacher at T = 1 ``[n]``, ``in_tail`` ``[n]`` bool) for solution tokens ``targets``.
    Dense and hidden signals: exact, ``in_tail`` all false. Top-k: see :func:`topk_lse_bound`."""
    targets = targets.long()
    if teacher.kind in ("dense", "hidden"):
        z = teacher.logits.float() if teacher.kind == "dense" else model_logits(teacher.hidden, weight, bias, transform)
        return solution_logprobs(z, targets), torch.zeros_like(targets, dtype=torch.bool)
    ids, z = teacher.topk_ids.long(), teacher.topk_logits.float()
    vocab = int(vocab_size or weight.shape[0])
    norm = topk_lse_bound(z, teacher.lse, teacher.temperature or 1.0, vocab)
    hit = ids == targets[:, None]
    in_tail = ~hit.any(-1)
    z_y = torch.where(in_tail, z.min(-1).values, (z * hit).sum(-1))
    return z_y - norm, in_tail


def forward_kl_logit_grad(z: torch.Tensor, teacher: TeacherSignal, weight, bias, temperature: float,
                          transform=None) -> torch.Tensor:
    """The gradient of T²·KL(p_T ‖ q_T) with respect to the student's logits ``z`` ``[n, V]``, in closed
    form: T·(q_T - p_T). With a top-k teacher p_T is its top-k probabilities and, on every other id,
    the tail bucket's mass shared in proportion to the student's: p_tail · q_T(v) / q_T(tail)."""
    T = temperature
    log_q = F.log_softmax(z.float() / T, dim=-1)
    q = log_q.exp()
    if teacher.kind in ("dense", "hidden"):
        log_p, _, _ = teacher_log_probs(z.float(), teacher, weight, bias, T, transform)
        return T * (q - log_p.exp())
    log_p, log_qb, ids = teacher_log_probs(z.float(), teacher, weight, bias, T, transform)
    p = log_p.exp()
    share = (p[:, -1] / log_qb[:, -1].exp().clamp_min(1e-30))[:, None] * q  # tail mass in proportion to q
    target = share.scatter(-1, ids, p[:, :-1])
    return T * (q - target)


def token_stats(z: torch.Tensor, teacher: TeacherSignal, targets: torch.Tensor, weight, bias, temperature: float,
                transform=None) -> dict[str, torch.Tensor]:
    """Per answer position (``[n]`` each) of the base's logits ``z`` ``[n, V]`` (student = base, step 0):
    ``base_logprob``, ``teacher_logprob``, ``in_tail``, ``hint_gain``, ``kl`` (KL(p_T ‖ q_T), not scaled),
    ``teacher_entropy`` (H(p_T)), ``paper_loss`` (T²·KL) and ``paper_grad_sq`` (‖T·(q_T - p_T)‖²)."""
    T = temperature
    z = z.float()
    base = solution_logprobs(z, targets)
    teach, in_tail = teacher_solution_logprobs(teacher, targets, weight, bias, transform, z.shape[-1])
    log_p, log_q, _ = teacher_log_probs(z, teacher, weight, bias, T, transform)
    p = log_p.exp()
    kl = (p * (log_p - log_q)).sum(-1)
    entropy = -(p * log_p).sum(-1)
    grad = forward_kl_logit_grad(z, teacher, weight, bias, T, transform)
    return {"base_logprob": base, "teacher_logprob": teach, "in_tail": in_tail, "hint_gain": teach - base,
            "kl": kl, "teacher_entropy": entropy, "paper_loss": kl * T * T, "paper_grad_sq": grad.pow(2).sum(-1)}


def loss_and_grad_sq(z: torch.Tensor, teacher: TeacherSignal, targets: torch.Tensor, weight, bias, loss,
                     temperature: float, transform=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(each position's loss ``[n]``, the squared norm of its gradient with respect to the student's
    logits ``[n]``) for the loss settings ``loss`` (a ``DistillConfig``, or anything with its
    ``divergence``, ``jsd_beta``, ``kd_weight``, ``ce_weight`` and ``reverse_kl_weight``), unweighted:
    a token weight w multiplies the loss by w and the norm² by w². By autograd over
    :func:`losses.token_terms`, the loss's own per-position terms (rows do not interact)."""
    with torch.enable_grad():
        zz = z.detach().float().requires_grad_(True)
        rows = token_terms(zz, teacher, targets, weight, bias, temperature, bool(loss.kd_weight),
                           bool(loss.ce_weight), bool(loss.reverse_kl_weight), transform, loss.divergence,
                           loss.jsd_beta)
        per = loss.kd_weight * rows["kd"] + loss.ce_weight * rows["ce"] + loss.reverse_kl_weight * rows["reverse_kl"]
        (g,) = torch.autograd.grad(per.sum(), zz)
    return per.detach(), g.pow(2).sum(-1)


# ----------------------------------------------------------------------------- aggregates (pure)


def confident_shares(loss: torch.Tensor, grad_sq: torch.Tensor, confident: torch.Tensor) -> dict[str, float]:
    """The share of the summed ``loss`` and gradient norm² on the ``confident`` positions, and the
    mean of each on them and on the rest."""
    loss, grad_sq, c = loss.double(), grad_sq.double(), confident.bool()

    def share(x):
        total = float(x.sum())
        return float(x[c].sum()) / total if total > 0 else None

    def mean(x, m):
        return float(x[m].mean()) if bool(m.any()) else None

    return {"confident_share_of_grad": share(grad_sq), "confident_share_of_loss": share(loss),
            "loss_per_token": float(loss.mean()), "grad_sq_per_token_confident": mean(grad_sq, c),
            "grad_sq_per_token_rest": mean(grad_sq, ~c)}


def gain_summary(gain: torch.Tensor) -> dict[str, float]:
    """Mean, quantiles (:data:`QUANTILES`) and the shares above 0.5 and below -0.1 of the hint gain."""
    g = gain.double()
    qs = torch.quantile(g, torch.tensor(QUANTILES, dtype=torch.float64))
    out = {"mean": float(g.mean())}
    out.update({f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, qs)})
    out.update({f"share_above_{GAIN_ABOVE}": float((g > GAIN_ABOVE).double().mean()),
                f"share_below_{GAIN_BELOW}": float((g < GAIN_BELOW).double().mean())})
    return out


def loss_variant(base: dict, **changes) -> SimpleNamespace:
    """The loss settings of :data:`LOSS_KEYS` from ``base`` (a ``DistillConfig`` dump) with ``changes``."""
    d = {k: base.get(k, PAPER.get(k, 4.0)) for k in LOSS_KEYS}
    d.update(changes)
    return SimpleNamespace(**d)


def summarize(stats: dict[str, torch.Tensor], losses: dict[str, tuple], confident: float = CONFIDENT) -> dict:
    """``signal.json``'s aggregates from every token's :func:`token_stats` (``stats``, concatenated) and
    each named loss's ``(settings, loss [n], grad_sq [n])`` (unweighted; a ``hint_gain`` weighting is
    applied here, normalised to mean 1 over all the tokens)."""
    conf = stats["base_logprob"].exp() > confident
    out = {"tokens": int(conf.numel()), "confident_threshold": confident,
           "confident_share_of_tokens": float(conf.double().mean()),
           "teacher_tokens_in_tail": int(stats["in_tail"].sum()),
           "means": {k: float(v.double().mean()) for k, v in (
               ("base_prob", stats["base_logprob"].exp()), ("teacher_prob", stats["teacher_logprob"].exp()),
               ("kl", stats["kl"]), ("teacher_entropy", stats["teacher_entropy"]))},
           "hint_gain": gain_summary(stats["hint_gain"]), "losses": {}}
    for name, (settings, loss, grad_sq) in losses.items():
        if settings.token_weighting == "hint_gain":
            w = hint_gain_weights(stats["hint_gain"], settings.token_weight_max).double()
            loss, grad_sq = loss.double() * w, grad_sq.double() * w * w
        out["losses"][name] = {"settings": dict(vars(settings)), **confident_shares(loss, grad_sq, conf)}
    return out


# ----------------------------------------------------------------------------- forward passes


def _batches(model, items: list[dict], pad_id: int, batch_size: int) -> Iterator[tuple[list[dict], torch.Tensor]]:
    """``(batch, hidden states at its answer positions)`` of ``items`` (``input_ids``: student prompt ‖
    reply, ``prompt_len``), length-sorted batches, one no-grad forward of ``model`` each."""
    dev = next(model.parameters()).device
    order = sorted(items, key=lambda it: len(it["input_ids"]))
    for b in range(0, len(order), batch_size):
        batch = order[b: b + batch_size]
        width = max(len(it["input_ids"]) for it in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        answer = torch.zeros_like(ids, dtype=torch.bool)
        for i, it in enumerate(batch):
            n = len(it["input_ids"])
            ids[i, :n] = torch.tensor(it["input_ids"])
            attn[i, :n] = 1
            answer[i, answer_slice(it["prompt_len"], n - it["prompt_len"])] = True
        with torch.no_grad():
            yield batch, answer_hidden_states(model, ids.to(dev), attn.to(dev), answer.to(dev))


def _chunks(model, store: TeacherStore, batch: list[dict], h: torch.Tensor):
    """``(z, teacher, targets, (head weight, bias, transform))`` of a batch, chunk by chunk of answer
    positions: the base's logits, the teacher rows (a hidden store's as dense logits, computed once) and
    the reply tokens."""
    head = model.get_output_embeddings()
    w, b = head.weight.detach(), None if getattr(head, "bias", None) is None else head.bias.detach()
    tf = logit_transform(model)
    teacher = store.signal([store.get(it["id"]) for it in batch])
    targets = torch.cat([torch.tensor(it["input_ids"][it["prompt_len"]:]) for it in batch]).to(h.device)
    step = auto_chunk_size(w.shape[0])
    for s in range(0, h.shape[0], step):
        sl = slice(s, s + step)
        rows = teacher.rows(sl)
        with torch.no_grad():
            z = model_logits(h[sl], w, b, tf)
            if rows.kind == "hidden":
                rows = TeacherSignal("dense", logits=model_logits(rows.hidden.to(h.device), w, b, tf))
            else:
                rows = TeacherSignal("topk", topk_ids=rows.topk_ids.to(h.device),
                                     topk_logits=rows.topk_logits.to(h.device), lse=rows.lse.to(h.device),
                                     temperature=rows.temperature)
        yield z, rows, targets[sl], (w, b, tf)


def hint_gains(model, store: TeacherStore, items: list[dict], pad_id: int, batch_size: int = 8) -> dict[str, list]:
    """Each item's per-reply-token hint gain (``distill.token_weighting: hint_gain``), by id: one forward
    of ``model`` (the frozen base) over the student sequences and the teacher's log-prob from ``store``."""
    out: dict[str, list] = {}
    for batch, h in _batches(model, items, pad_id, batch_size):
        gains = []
        for z, rows, targets, (w, b, tf) in _chunks(model, store, batch, h):
            teach, _ = teacher_solution_logprobs(rows, targets, w, b, tf, w.shape[0])
            gains.append((teach - solution_logprobs(z, targets)).float().cpu())
        for it, g in zip(batch, torch.cat(gains).split([len(it["input_ids"]) - it["prompt_len"] for it in batch])):
            out[it["id"]] = g.tolist()
    return out


# ----------------------------------------------------------------------------- the run


def _items(pairs: list[dict], store: TeacherStore, tokenizer) -> tuple[list[dict], list[dict]]:
    items, skipped = [], []
    for rec in pairs:
        pid = str(rec["id"])
        if pid not in store.examples:
            skipped.append({"id": pid, "reason": "not in the teacher store"})
            continue
        try:
            prompt, reply = prompt_and_reply_ids(tokenizer, rec["student_messages"], rec["solution"])
        except AlignmentError as exc:
            skipped.append({"id": pid, "reason": str(exc)})
            continue
        if reply != store.reply_ids(pid):
            skipped.append({"id": pid, "reason": "reply tokens differ from the teacher store's"})
            continue
        items.append({"id": pid, "input_ids": prompt + reply, "prompt_len": len(prompt)})
    return items, skipped


def _in_context(tokenizer, item: dict, pos: int, width: int = 4) -> str:
    reply = item["input_ids"][item["prompt_len"]:]
    return (tokenizer.decode(reply[max(0, pos - width): pos]) + "[[" + tokenizer.decode(reply[pos: pos + 1]) + "]]"
            + tokenizer.decode(reply[pos + 1: pos + 1 + width]))


def diagnose(run, variants: dict[str, dict] | None = None, limit: int | None = None, batch_size: int = 8,
             top: int = 10, loaded=None) -> dict:
    """The diagnostic of a run with pairs and a teacher store: per token :func:`token_stats` of the base
    model against the store, aggregated by :func:`summarize` for the paper's loss (``paper``), the run's
    own ``distill`` loss (``run``) and each of ``variants`` (name -> ``distill`` field changes, e.g.
    ``{"jsd": {"divergence": "jsd"}}``), and the ``top`` tokens of largest hint gain in context.
    ``limit``: the first pairs only. ``loaded``: a ``models.LoadedModel`` of the run's model."""
    from ..models import load_model  # lazy: loading a model is the driver's only

    cfg = run.cfg
    store = TeacherStore(run.file("teacher"))
    lm = loaded if loaded is not None else load_model(cfg.model)
    store.check_model(lm.model, lm.tokenizer, lm.name)
    pairs = read_jsonl(run.file("pairs.jsonl"))[:limit]
    items, skipped = _items(pairs, store, lm.tokenizer)
    T = cfg.distill.temperature
    run_loss = cfg.distill.model_dump()
    settings = {"paper": loss_variant(run_loss, **PAPER), "run": loss_variant(run_loss)}
    for name, changes in (variants or {}).items():
        try:  # a variant's settings are checked as a config's
            settings[name] = loss_variant(type(cfg.distill).model_validate({**run_loss, **changes}).model_dump())
        except ValueError as exc:
            raise ConfigError(f"signal variant {name!r} ({changes}): {exc}") from None
        if store.kind == "topk" and settings[name].temperature != T:
            raise ConfigError(f"signal variant {name!r}: distill.temperature={settings[name].temperature:g}, but "
                              f"{run.path}'s topk store holds its tail bucket at T={T:g}; diagnose another temperature "
                              "on a run with logits.store: hidden")
    stats: dict[str, list] = {}
    per_loss: dict[str, tuple[list, list]] = {name: ([], []) for name in settings}
    where: list[tuple[int, int]] = []  # (item index, position) of each token, in the order of stats
    index = {it["id"]: i for i, it in enumerate(items)}
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for batch, h in _batches(lm.model, items, pad, batch_size):
        where += [(index[it["id"]], p) for it in batch for p in range(len(it["input_ids"]) - it["prompt_len"])]
        for z, rows, targets, (w, b, tf) in _chunks(lm.model, store, batch, h):
            for k, v in token_stats(z, rows, targets, w, b, T, tf).items():
                stats.setdefault(k, []).append(v.cpu())
            for name, s in settings.items():
                loss, g2 = loss_and_grad_sq(z, rows, targets, w, b, s, s.temperature, tf)
                per_loss[name][0].append(loss.cpu())
                per_loss[name][1].append(g2.cpu())
    if not where:
        raise AlignmentError(f"{run.path}: no pair to diagnose ({len(skipped)} skipped)")
    cat = {k: torch.cat(v) for k, v in stats.items()}
    out = {"run": str(run.path), "pairs": len(items), "skipped": skipped[:50], "store": store.kind,
           "temperature": T,
           "teacher_logprob": "exact" if store.kind == "hidden" else
           "topk: top-k tokens at the T=1 normaliser's upper bound (a lower bound), tail tokens at the k-th logit",
           **summarize(cat, {n: (settings[n], torch.cat(a), torch.cat(b)) for n, (a, b) in per_loss.items()})}
    out["confident_share_of_grad"] = out["losses"]["paper"]["confident_share_of_grad"]
    out["confident_share_of_loss"] = out["losses"]["paper"]["confident_share_of_loss"]
    best = torch.topk(cat["hint_gain"], min(top, len(where))).indices.tolist()
    out["top_hint_gain"] = [{"id": items[where[i][0]]["id"], "position": where[i][1],
                             "context": _in_context(lm.tokenizer, items[where[i][0]], where[i][1]),
                             **{k: round(float(cat[k][i]), 4) for k in ("hint_gain", "base_logprob", "teacher_logprob")}}
                            for i in best]
    return out


def parse_variant(items: list[str]) -> dict:
    """``distill`` field changes from ``KEY=VALUE`` strings (``divergence=jsd``, ``distill.jsd_beta=0.2``),
    values read as YAML (``ssb signal --variant``)."""
    import yaml  # lazy: only the CLI's variants need it

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--variant {item!r} must look like field=value (a distill field)")
        out[key.strip().removeprefix("distill.")] = yaml.safe_load(value) if value else ""
    return out


def summary_lines(out: dict) -> list[str]:
    """``ssb signal``'s text: the headline numbers of a :func:`diagnose` result."""
    g = out["hint_gain"]
    lines = [(f"{out['run']}: {out['pairs']} pairs, {out['tokens']} reply tokens, store {out['store']}, "
              f"T={out['temperature']:g}"),
             (f"base already confident (q > {out['confident_threshold']:g}) on "
              f"{out['confident_share_of_tokens']:.1%} of the tokens"),
             (f"hint gain (log p_teacher - log p_base): mean {g['mean']:+.3f}, median {g['q50']:+.3f}, "
              f"> {GAIN_ABOVE} on {g[f'share_above_{GAIN_ABOVE}']:.1%}, < {GAIN_BELOW} on "
              f"{g[f'share_below_{GAIN_BELOW}']:.1%}")]
    for name, v in out["losses"].items():
        shares = [f"{v[k]:.1%}" if v[k] is not None else "n/a" for k in
                  ("confident_share_of_loss", "confident_share_of_grad")]
        lines.append(f"loss {name}: {shares[0]} of the loss and {shares[1]} of the gradient norm² on the confident "
                     f"tokens ({v['loss_per_token']:.4f} per token)")
    lines.append("largest hint gains:")
    lines += [f"  {t['hint_gain']:+.2f}  {t['id']}: {t['context']!r}" for t in out["top_hint_gain"]]
    return lines


def write_signal(run, **kwargs) -> tuple[object, dict]:
    """:func:`diagnose` ``run`` and write the result to ``signal.json`` in its directory."""
    out = diagnose(run, **kwargs)
    path = run.file("signal.json")
    atomic_write_json(path, out)
    return path, out
