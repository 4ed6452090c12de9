"""GRPO's budget: what SSB spent (FLOPs, generated tokens or seconds) and what GRPO has spent so far.

``flops`` (the default) prices both sides with ``ledger.py``'s rule; ``tokens`` counts generated
completion tokens; ``seconds`` wall-clock (every invocation of each stage). See ``stages/grpo.py``.
"""

from __future__ import annotations

import logging

from ..ledger import flops, ledger, model_params
from ..rundir import Run
from . import stage_names

log = logging.getLogger(__name__)


def token_budget(run: Run) -> tuple[int | None, str]:
    """Completion tokens SSB generated (rollouts + hinted teacher) and where that came from."""
    if run.cfg.grpo.budget != "tokens":
        return None, f"budget={run.cfg.grpo.budget}"
    rollout = run.stage("rollout").get("generated_tokens")
    teacher = run.stage("teacher").get("teacher_tokens")
    if rollout is None and teacher is None:
        return None, "no token counts in the manifest (rollout/teacher not run): max_steps/epochs"
    return int(rollout or 0) + int(teacher or 0), "manifest: rollout.generated_tokens + teacher.teacher_tokens"


def seconds_budget(run: Run) -> tuple[float | None, str]:
    """Wall-clock SSB spent on its stages (those the stage table marks
    ``counts_toward_ssb_cost``), every invocation of each counted."""
    if run.cfg.grpo.budget != "seconds":
        return None, f"budget={run.cfg.grpo.budget}"
    ssb_stages = stage_names(counts_toward_ssb_cost=True)
    secs = [run.stage_seconds(s) for s in ssb_stages]
    if not any(secs):
        return None, "no stage timings in the manifest (SSB stages not run): max_steps/epochs"
    return float(sum(x or 0 for x in secs)), "manifest: seconds_total of " + " + ".join(ssb_stages)


def params_or_none(cfg) -> dict | None:
    """The ledger's parameter counts, or None (and a warning) when the model's config cannot be read."""
    try:
        return model_params(cfg)
    except (OSError, ValueError) as exc:
        log.warning("GRPO: cannot count the model's parameters (%s): no FLOPs recorded", exc)
        return None


def flops_budget(run: Run, params: dict | None) -> tuple[float | None, str]:
    """FLOPs SSB spent on the stages it pays for (``ledger.py``), and where that came from."""
    if run.cfg.grpo.budget != "flops":
        return None, f"budget={run.cfg.grpo.budget}"
    arms = ledger(run, params, all_arms=True)["arms"]
    last = max((int(a.split("@")[1]) for a in arms if a.startswith("ssb@")), default=1)
    ssb = arms.get("ssb" if last == 1 else f"ssb@{last}")
    if not ssb or not ssb["flops"]:
        return None, "no SSB compute in the run (SSB stages not run): max_steps/epochs"
    return float(ssb["flops"]), "ledger: FLOPs of " + " + ".join(ssb["stages"])


def point_fractions(run: Run, params: dict | None, n_points: int, budget_flops: float | None) -> list[float]:
    """Where GRPO saves its adapter, as fractions of its budget: ``n_points`` evenly spaced, and with a
    FLOPs budget over several rounds (``flops_budget``) each earlier round's share, so every round
    meets GRPO at its own compute (``ssb@<r>`` of ``ledger.py``)."""
    out = {round(i / n_points, 6) for i in range(1, n_points + 1)} if n_points else set()
    if run.cfg.grpo.budget == "flops" and budget_flops:
        arms = ledger(run, params, all_arms=True)["arms"]
        for a in [a for a in arms if a == "ssb" or a.startswith("ssb@")]:
            if 0 < arms[a]["flops"] < budget_flops:
                out.add(round(arms[a]["flops"] / budget_flops, 6))
    return sorted(out)


class Spend:
    """What GRPO has spent so far: token kinds (``ledger.KINDS``), FLOPs, seconds; and the share of
    its budget that is (``fraction``: FLOPs, tokens, seconds or steps, whichever the budget is)."""

    def __init__(self, cfg, params: dict | None, budgets: dict):
        self.cfg, self.params, self.budgets = cfg, params, budgets
        self.counts: dict[str, int] = {}
        self.flops = 0.0

    def update(self, trained: int, generated: int, num_generations: int) -> None:
        prompt = max(trained - generated, 0)  # TRL counts each completion's prompt and the completion itself
        self.counts = {"prefill_tokens": prompt // num_generations, "generated_tokens": generated,
                       "forward_tokens": trained if self.cfg.grpo.beta else 0, "trained_tokens": trained}
        if self.params:
            self.flops = flops(self.counts, self.params, self.cfg.grpo.gradient_checkpointing)

    def in_force(self) -> str:
        """The unit GRPO is held to: ``grpo.budget`` when its budget could be computed, else ``steps``
        (``max_steps``). The stop rule and the curve points both read :meth:`fraction` in this unit."""
        kind = self.cfg.grpo.budget
        return kind if kind in ("flops", "tokens", "seconds") and self.budgets.get(kind) else "steps"

    def fraction(self, seconds: float, step: int, max_steps: int) -> float | None:
        """The share of the budget in force (:meth:`in_force`) spent so far."""
        b, kind = self.budgets, self.in_force()
        if kind == "flops":
            return self.flops / b["flops"]
        if kind == "tokens":
            return self.counts.get("generated_tokens", 0) / b["tokens"]
        if kind == "seconds":
            return seconds / b["seconds"]
        return step / max_steps if max_steps > 0 else None
