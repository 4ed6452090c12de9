"""The budget of a baseline held to SSB's compute (GRPO, SDFT): what SSB spent (FLOPs, generated
tokens or seconds) and what the baseline has spent so far.

``flops`` (the default) prices both sides with ``report/ledger.py``'s rule; ``tokens`` counts
generated completion tokens; ``seconds`` wall-clock (every invocation of each stage). See
``stages/grpo.py``. A section's ``budget`` (``grpo.budget``, ``sdft.budget``) is read once, by
:func:`stage_budget`, which builds the one :class:`Budget` that the stop rule, the curve points, the
progress bar and the manifest read. An arm that also pays for stages before its own (the stage
table's ``cost_of``: SDFT pays the rollouts its hints come from) starts with what those spent
(:attr:`Budget.before`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..report.ledger import flops, ledger, model_params, pays
from ..rundir.run import Run
from ..rundir.table import STAGES, stage_names

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


def point_fractions(run: Run, params: dict | None, n_points: int, budget_flops: float | None,
                    start: float = 0.0) -> list[float]:
    """Where the baseline saves its adapter, as fractions of its budget: ``n_points`` evenly spaced
    over the part of it left after ``start`` (what the arm's earlier stages spent, a fraction), and
    with a FLOPs budget (``budget_flops``, None otherwise) over several rounds each earlier round's
    share past ``start``, so every round meets the baseline at its own compute (``ssb@<r>`` of
    ``report/ledger.py``)."""
    start = min(max(start, 0.0), 1.0)
    out = {round(start + (1 - start) * i / n_points, 6) for i in range(1, n_points + 1)} if n_points else set()
    if budget_flops:
        arms = ledger(run, params, all_arms=True)["arms"]
        for a in [a for a in arms if a == "ssb" or a.startswith("ssb@")]:
            if start * budget_flops < arms[a]["flops"] < budget_flops:
                out.add(round(arms[a]["flops"] / budget_flops, 6))
    return sorted(out)


def earlier_stages_spent(run: Run, params: dict | None, arm: str, unit: str) -> float:
    """What the stages before ``arm``'s own that it pays for (the stage table's ``cost_of``; SDFT: rollout,
    curate) spent, in ``unit``: FLOPs and generated tokens from the ledger, seconds from the manifest."""
    others = [s.name for s in STAGES if arm in pays(run, s) and s.name != arm]
    if not others or unit not in AMOUNTS or (unit == "flops" and not params):
        return 0.0
    if unit == "seconds":
        return float(sum(run.stage_seconds(s) or 0 for s in others))
    stages = ledger(run, params, all_arms=True)["stages"] if params else {}
    if unit == "tokens" and not stages:  # no parameter count: the manifest's rollout tokens
        return float(run.stage("rollout").get("generated_tokens") or 0) if "rollout" in others else 0.0
    key = "flops" if unit == "flops" else "generated_tokens"
    return float(sum(stages[s][key] for s in others if s in stages))


AMOUNTS = {"flops": flops_budget, "tokens": token_budget, "seconds": seconds_budget}  # SSB's spend, by unit
STOPPED_BY = {"flops": "FLOPs budget", "tokens": "token budget", "seconds": "time budget"}


@dataclass(frozen=True)
class Budget:
    """A baseline's budget, built once per run by :func:`stage_budget` and passed down. ``asked`` is
    ``grpo.budget`` (``sdft.budget``); ``amount`` what SSB spent in that unit (None when it could not be
    read, or the unit is ``steps``/``none``), ``source`` where that came from; ``points`` the fractions of
    the budget where curve adapters are saved; ``before`` what the arm's stages before its own spent, in
    the asked unit (0 for GRPO, which pays for itself alone)."""

    asked: str
    amount: float | None = None
    source: str = ""
    points: tuple[float, ...] = ()
    before: float = 0.0

    @property
    def unit(self) -> str:
        """The unit GRPO is held to: ``asked`` when its amount could be read, else ``steps``
        (``grpo.max_steps`` / ``grpo.epochs``). The stop rule, the curve points and the progress bar
        all read :meth:`fraction` in this unit."""
        return self.asked if self.asked in AMOUNTS and self.amount else "steps"

    def fraction(self, spend: "Spend", seconds: float, step: int, max_steps: int) -> float | None:
        """The share of the budget the arm spent so far (its earlier stages' :attr:`before` included),
        in :attr:`unit`."""
        spent = {"flops": spend.flops, "tokens": spend.counts.get("generated_tokens", 0), "seconds": seconds}
        if self.unit in spent:
            return (self.before + spent[self.unit]) / self.amount
        return step / max_steps if max_steps > 0 else None

    def stop_reason(self, by_budget: bool, step: int, max_steps: int) -> str:
        """What ended training: this budget (:meth:`stopped_by`), ``max_steps``, or the epochs."""
        if by_budget:
            return self.stopped_by()
        return "max_steps" if max_steps > 0 and step >= max_steps else "epochs"

    def stopped_by(self) -> str:
        """What the stop rule is called in the manifest when this budget stopped training."""
        return STOPPED_BY.get(self.unit, "budget")

    def manifest(self) -> dict:
        """The manifest's ``budget_<unit>`` fields (the asked unit's amount, None for the others) and ``budget_source``."""
        return {f"budget_{u}": self.amount if u == self.asked else None for u in AMOUNTS} | {
            "budget_source": self.source}


def stage_budget(run: Run, params: dict | None, section, arm: str) -> Budget:
    """The run's :class:`Budget` for ``arm`` (``grpo``, ``sdft``): the one place its section's ``budget``
    is read."""
    asked = section.budget
    amount, source = AMOUNTS[asked](run, params) if asked in AMOUNTS else (None, f"budget={asked}")
    before = earlier_stages_spent(run, params, arm, asked) if amount else 0.0
    if before:
        source += f"; {before:.4g} of it spent by {arm}'s earlier stages"
    points = point_fractions(run, params, section.curve_points, amount if asked == "flops" else None,
                             before / amount if amount else 0.0)
    return Budget(asked, amount, source, tuple(points), before)


def grpo_budget(run: Run, params: dict | None) -> Budget:
    """GRPO's :class:`Budget` (``grpo.budget``)."""
    return stage_budget(run, params, run.cfg.grpo, "grpo")


class Spend:
    """What a baseline's own stage has spent so far: token kinds (``ledger.KINDS``) and FLOPs
    (:meth:`Budget.fraction` reads it as a share of the budget). ``section``: its config section
    (``grpo`` by default), whose ``gradient_checkpointing`` prices the trained tokens."""

    def __init__(self, cfg, params: dict | None, section=None):
        self.cfg, self.params = cfg, params
        self.section = section if section is not None else cfg.grpo
        self.counts: dict[str, int] = {}
        self.flops = 0.0

    def record(self, counts: dict[str, int]) -> None:
        """The stage's token counts so far (every kind of ``ledger.KINDS``), and their FLOPs."""
        self.counts = dict(counts)
        if self.params:
            self.flops = flops(self.counts, self.params, self.section.gradient_checkpointing)

    def update(self, trained: int, generated: int, num_generations: int) -> None:
        """GRPO's counts from TRL's input-token count (``trained``) and its generated tokens."""
        prompt = max(trained - generated, 0)  # TRL counts each completion's prompt and the completion itself
        self.record({"prefill_tokens": prompt // num_generations, "generated_tokens": generated,
                     "forward_tokens": trained if self.cfg.grpo.beta else 0, "trained_tokens": trained})


class CurvePoints:
    """The curve points (``grpo.curve_points``, ``sdft.curve_points``): the adapter saved where the spend
    first crosses each fraction of :attr:`Budget.points`, into ``<points_dir>/p<i>/``, with a line each in
    ``<points_dir>/points.json`` (step, budget fraction and its target, FLOPs, token counts, seconds). A
    resumed run keeps the points it saved before."""

    def __init__(self, points_dir: Path, budget: Budget):
        self.dir, self.budget = Path(points_dir), budget
        f = self.dir / "points.json"
        self.points: list[dict] = json.loads(f.read_text()) if f.is_file() else []

    def save_due(self, model, step: int, frac: float, spend: Spend, seconds: float) -> None:
        """Save every point whose fraction ``frac`` reached (the main process writes, under a launch)."""
        from ..rundir import distributed  # lazy: the budget tests stay light

        due = sum(f <= frac + 1e-9 for f in self.budget.points)
        while len(self.points) < due:
            i = len(self.points) + 1
            if distributed.is_main() and model is not None:
                model.save_pretrained(str(self.dir / f"p{i}"))
            self.points.append({"point": i, "dir": f"p{i}", "step": step, "budget_fraction": round(frac, 4),
                                "target": self.budget.points[i - 1], "flops": spend.flops, **spend.counts,
                                "seconds": round(seconds, 2)})
            if distributed.is_main():
                self.dir.mkdir(parents=True, exist_ok=True)
                (self.dir / "points.json").write_text(json.dumps(self.points, indent=1) + "\n")


BAR_UNITS = {"flops": "FLOP", "tokens": "tok", "seconds": "s"}


def progress_bar(budget: Budget, fraction, name: str = "grpo", shown: tuple[str, ...] = ("reward", "loss", "kl")):
    """The stage's progress bar (``training.TrainProgress``): with a FLOPs, tokens or seconds
    budget its total is the budget in that unit and it advances by what was spent (``fraction()``:
    the share of the budget spent so far, or None), so it ends where the budget stops training;
    otherwise it counts steps."""
    from ..training import TrainProgress  # lazy: transformers

    kind = budget.unit
    if kind == "steps":
        return TrainProgress(name, shown)
    return TrainProgress(f"{name} ({kind} budget)", shown, total=budget.amount, unit=BAR_UNITS[kind],
                         measure=lambda state: (fraction() or 0.0) * budget.amount)
