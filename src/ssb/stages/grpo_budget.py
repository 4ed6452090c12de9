"""GRPO's budget: what SSB spent (FLOPs, generated tokens or seconds) and what GRPO has spent so far.

``flops`` (the default) prices both sides with ``report/ledger.py``'s rule; ``tokens`` counts
generated completion tokens; ``seconds`` wall-clock (every invocation of each stage). See
``stages/grpo.py``. ``grpo.budget`` is read once, by :func:`grpo_budget`, which builds the one
:class:`Budget` that the stop rule, the curve points, the progress bar and the manifest read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..report.ledger import flops, ledger, model_params
from ..rundir.run import Run
from ..rundir.table import stage_names

log = logging.getLogger(__name__)


def token_budget(run: Run, params: dict | None = None) -> tuple[int | None, str]:
    """Completion tokens SSB generated (rollouts + hinted teacher) and where that came from."""
    rollout = run.stage("rollout").get("generated_tokens")
    teacher = run.stage("teacher").get("teacher_tokens")
    if rollout is None and teacher is None:
        return None, "no token counts in the manifest (rollout/teacher not run): max_steps/epochs"
    return int(rollout or 0) + int(teacher or 0), "manifest: rollout.generated_tokens + teacher.teacher_tokens"


def seconds_budget(run: Run, params: dict | None = None) -> tuple[float | None, str]:
    """Wall-clock SSB spent on its stages (those the stage table marks
    ``counts_toward_ssb_cost``), every invocation of each counted."""
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
    """FLOPs SSB spent on the stages it pays for (``report/ledger.py``), and where that came from."""
    arms = ledger(run, params, all_arms=True)["arms"]
    last = max((int(a.split("@")[1]) for a in arms if a.startswith("ssb@")), default=1)
    ssb = arms.get("ssb" if last == 1 else f"ssb@{last}")
    if not ssb or not ssb["flops"]:
        return None, "no SSB compute in the run (SSB stages not run): max_steps/epochs"
    return float(ssb["flops"]), "ledger: FLOPs of " + " + ".join(ssb["stages"])


def point_fractions(run: Run, params: dict | None, n_points: int, budget_flops: float | None) -> list[float]:
    """Where GRPO saves its adapter, as fractions of its budget: ``n_points`` evenly spaced, and with a
    FLOPs budget (``budget_flops``, None otherwise) over several rounds each earlier round's share, so
    every round meets GRPO at its own compute (``ssb@<r>`` of ``report/ledger.py``)."""
    out = {round(i / n_points, 6) for i in range(1, n_points + 1)} if n_points else set()
    if budget_flops:
        arms = ledger(run, params, all_arms=True)["arms"]
        for a in [a for a in arms if a == "ssb" or a.startswith("ssb@")]:
            if 0 < arms[a]["flops"] < budget_flops:
                out.add(round(arms[a]["flops"] / budget_flops, 6))
    return sorted(out)


AMOUNTS = {"flops": flops_budget, "tokens": token_budget, "seconds": seconds_budget}  # SSB's spend, by unit
STOPPED_BY = {"flops": "FLOPs budget", "tokens": "token budget", "seconds": "time budget"}


@dataclass(frozen=True)
class Budget:
    """GRPO's budget, built once per run by :func:`grpo_budget` and passed down. ``asked`` is
    ``grpo.budget``; ``amount`` what SSB spent in that unit (None when it could not be read, or the
    unit is ``steps``/``none``), ``source`` where that came from; ``points`` the fractions of the
    budget where curve adapters are saved."""

    asked: str
    amount: float | None = None
    source: str = ""
    points: tuple[float, ...] = ()

    @property
    def unit(self) -> str:
        """The unit GRPO is held to: ``asked`` when its amount could be read, else ``steps``
        (``grpo.max_steps`` / ``grpo.epochs``). The stop rule, the curve points and the progress bar
        all read :meth:`fraction` in this unit."""
        return self.asked if self.asked in AMOUNTS and self.amount else "steps"

    def fraction(self, spend: "Spend", seconds: float, step: int, max_steps: int) -> float | None:
        """The share of the budget spent so far, in :attr:`unit`."""
        spent = {"flops": spend.flops, "tokens": spend.counts.get("generated_tokens", 0), "seconds": seconds}
        if self.unit in spent:
            return spent[self.unit] / self.amount
        return step / max_steps if max_steps > 0 else None

    def stopped_by(self) -> str:
        """What the stop rule is called in the manifest when this budget stopped training."""
        return STOPPED_BY.get(self.unit, "budget")

    def manifest(self) -> dict:
        """The manifest's ``budget_<unit>`` fields (the asked unit's amount, None for the others) and ``budget_source``."""
        return {f"budget_{u}": self.amount if u == self.asked else None for u in AMOUNTS} | {
            "budget_source": self.source}


def grpo_budget(run: Run, params: dict | None) -> Budget:
    """The run's :class:`Budget`: the one place ``grpo.budget`` is read."""
    asked = run.cfg.grpo.budget
    amount, source = AMOUNTS[asked](run, params) if asked in AMOUNTS else (None, f"budget={asked}")
    points = point_fractions(run, params, run.cfg.grpo.curve_points, amount if asked == "flops" else None)
    return Budget(asked, amount, source, tuple(points))


class Spend:
    """What GRPO has spent so far: token kinds (``ledger.KINDS``) and FLOPs (:meth:`Budget.fraction`
    reads it as a share of the budget)."""

    def __init__(self, cfg, params: dict | None):
        self.cfg, self.params = cfg, params
        self.counts: dict[str, int] = {}
        self.flops = 0.0

    def update(self, trained: int, generated: int, num_generations: int) -> None:
        prompt = max(trained - generated, 0)  # TRL counts each completion's prompt and the completion itself
        self.counts = {"prefill_tokens": prompt // num_generations, "generated_tokens": generated,
                       "forward_tokens": trained if self.cfg.grpo.beta else 0, "trained_tokens": trained}
        if self.params:
            self.flops = flops(self.counts, self.params, self.cfg.grpo.gradient_checkpointing)
