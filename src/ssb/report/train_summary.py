"""What a training stage's log says, per stretch of training: per epoch (distill, sft, rft) or per
quarter of its budget (GRPO), the mean loss (distill: also its KL part ``kd`` and its CE part ``ce``),
the mean gradient norm, and the share of logged steps whose gradient was clipped (the norm a
Trainer logs is the one before clipping: above ``max_grad_norm``, the step was scaled down). For
GRPO also the mean share of groups whose completions all got the same reward
(``frac_reward_zero_std``: zero advantage, no gradient from them) and the share of steps whose
gradient norm was 0 (steps that moved nothing, though their FLOPs count against its budget).

Read from the stage's JSONL log (one line per logging step: ``distill.logging_steps``,
``grpo.logging_steps``), so a flat accuracy curve can be read against what the training did.
"""

from __future__ import annotations

import math
from statistics import mean

from ..rundir.jsonl import read_jsonl
from ..rundir.run import Run

LOGS = {"distill": "train_log.jsonl", "sft": "sft_log.jsonl", "rft": "rft_log.jsonl", "grpo": "grpo_log.jsonl",
        "sdft": "sdft_log.jsonl"}
BUDGETED = ("grpo", "sdft")  # summarised per quarter of their budget
BUDGET_SPENT = {"budget_flops": "flops", "budget_tokens": "generated_tokens", "budget_seconds": "seconds"}


def _mean(recs: list[dict], key: str) -> float | None:
    xs = [float(r[key]) for r in recs if r.get(key) is not None]
    return mean(xs) if xs else None


def _budget_fraction(run: Run, stage: str, recs: list[dict]) -> list[float]:
    """Each logged step's share of the budget of ``stage`` (grpo, sdft): FLOPs, generated tokens or seconds
    against the manifest's budget in that unit, else steps against the last step."""
    entry = run.stage(stage)
    for budget, spent in BUDGET_SPENT.items():
        if entry.get(budget) and all(r.get(spent) is not None for r in recs):
            return [float(r[spent]) / float(entry[budget]) for r in recs]
    last = max(int(r["step"]) for r in recs)
    return [int(r["step"]) / last for r in recs]


def summarize(run: Run, stage: str) -> list[dict] | None:
    """One row per epoch (``epoch``: 1, 2, ...) or, for ``grpo`` and ``sdft``, per budget quarter (``quarter``: 1..4),
    None without a log. Each row: ``steps`` (logged), ``loss``, ``grad_norm``, ``clipped_share``, and
    ``kd``, ``ce`` (distill), ``zero_std_share``, ``zero_grad_share``, ``reward`` (grpo) or ``distillation_loss``,
    ``completion_length`` (sdft)."""
    recs = [r for r in read_jsonl(run.file(LOGS[stage])) if r.get("loss") is not None]
    if not recs:
        return None
    if stage in BUDGETED:
        unit, max_norm = "quarter", getattr(run.cfg, stage).max_grad_norm
        keys = [min(4, max(1, math.ceil(4 * f - 1e-9))) for f in _budget_fraction(run, stage, recs)]
    else:
        unit, max_norm = "epoch", run.cfg.distill.max_grad_norm
        keys = [max(1, math.ceil(float(r.get("epoch") or 0) - 1e-9)) for r in recs]
    rows = []
    for k in sorted(set(keys)):
        group = [r for r, g in zip(recs, keys) if g == k]
        norms = [float(r["grad_norm"]) for r in group if r.get("grad_norm") is not None]
        row = {unit: k, "steps": len(group), "loss": _mean(group, "loss"), "grad_norm": _mean(group, "grad_norm"),
               "clipped_share": (sum(n > max_norm for n in norms) / len(norms)) if norms and max_norm else None}
        if stage == "distill":
            row.update(kd=_mean(group, "kd"), ce=_mean(group, "ce"))
        if stage == "grpo":
            row.update(zero_std_share=_mean(group, "frac_reward_zero_std"), reward=_mean(group, "reward"),
                       zero_grad_share=sum(n == 0 for n in norms) / len(norms) if norms else None)
        if stage == "sdft":
            row.update(distillation_loss=_mean(group, "self_distillation/distillation_loss"),
                       completion_length=_mean(group, "completions/mean_length"))
        rows.append(row)
    return rows
