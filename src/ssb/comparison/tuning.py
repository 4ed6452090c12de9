"""``ssb compare --tune``: one search for every trainable arm, scored on a validation draw, before the
replicates train (the ``tune`` config section).

* **Search space**: each arm's learning rate (:data:`LR_KEYS`; an ``ssb:...`` ablation: ``distill.lr``)
  at ``tune.lr_factors`` times its configured value (the default ``0.316, 1, 3.16``: 10x around it). Every
  arm gets the same trials.
* **A trial** trains one arm at one learning rate on replicate 0's problems, in ``tune/<arm>-lr<lr>/``: a
  run directory that takes replicate 0's rollouts, curation, pairs and teacher signal as they are (an
  ablation: its own replicate-0 upstream; nothing regenerated) and runs the arm's training stage only.
  GRPO's and SDFT's trials also take SSB's distillation record, so they stop at the budget their replicates
  run with (SSB's FLOPs: the learning rate does not change them).
* **Score**: greedy pass@1 with the training prompt on the validation draw (``tune.validation``, else
  ``eval.holdout`` at another seed, ``tune.validation_n`` problems), which excludes every replicate's
  training problems; the held-out problems then exclude the validation problems. Held-out problems are
  never looked at.
* **Choice** (:func:`choose`): the highest validation accuracy; a tie goes to the configured value,
  then to the smaller learning rate. When the choice is an end of the grid (``tune.extend_edge``), one more
  trial one grid step beyond it, and the choice is made again over all trials (once: the only
  difference in trial counts between arms).
* The chosen values train every replicate (``Compare.tuned``); every trial and the choice are in
  ``tune/tuning.json`` and in the results' ``tuning``. Replicate 0 takes the chosen trial itself when
  its config is the trial's but for where it lives and the other arms (:meth:`Tuner.reuse_chosen`; not
  with curves, which change the config): ``tuning_protocol.replicate_0``.
* **SSB's best loss** (:func:`best_variant`): with ``ssb:`` ablations among the arms (loss variants such
  as ``ssb:distill.temperature=1``), the SSB arm whose chosen trial scored highest on validation is
  ``ssb_best`` in the results, reported against the other arms on the held-out problems. A tie keeps the
  paper's loss (``ssb``). Every variant got the same trials as every other arm, so SSB as a family had
  more trials than SFT or GRPO: the results say how many.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import load_config
from ..config_fields import values
from ..data.load import load_problems
from ..data.problem import normalize_question, question_keys
from ..rundir.jsonl import atomic_write_json, read_jsonl
from ..rundir.run import Run
from ..stages.rounds import VALIDATION_SEED_STEP
from .defaults import ADAPTERS, BUDGETED, LR_KEYS, TRAINED_BY
from .spec import ablation_overrides

log = logging.getLogger("ssb")

RULE = ("the highest validation accuracy; a tie goes to the configured value, then the smaller learning rate; "
        "an end of the grid chosen: one more trial one grid step beyond it, then the choice over all trials")


def kind(arm: str) -> str:
    """The arm whose stage and learning rate an arm uses (an ``ssb:...`` ablation: ``ssb``)."""
    return "ssb" if arm.startswith("ssb:") else arm


def tunable(arms: list[str]) -> list[str]:
    """The trainable arms of ``arms`` in tuning order (SSB's first: GRPO's budget reads its distillation)."""
    return [a for a in TRAINED_BY if a in arms] + [a for a in arms if a.startswith("ssb:")]


def configured_lr(cfg, arm: str) -> float:
    """The learning rate ``arm`` trains at untuned (sft / rft: their own when set, else ``distill.lr``)."""
    section, field = LR_KEYS[kind(arm)].split(".")
    return getattr(getattr(cfg, section), field) or cfg.distill.lr


def fmt(lr: float) -> str:
    return f"{lr:.3g}"


def choose(trials: list[dict], configured: float) -> dict:
    """The chosen trial (:data:`RULE`): ``trials`` carry ``lr`` and ``validation_accuracy``."""
    return max(trials, key=lambda t: (t["validation_accuracy"], fmt(t["lr"]) == fmt(configured), -t["lr"]))


def extension(grid: list[float], chosen: float) -> float | None:
    """The one extra learning rate when ``chosen`` is an end of the sorted ``grid``: one grid step beyond it."""
    if len(grid) < 2 or fmt(chosen) not in (fmt(grid[0]), fmt(grid[-1])):
        return None
    if fmt(chosen) == fmt(grid[0]):
        return float(fmt(grid[0] * grid[0] / grid[1]))
    return float(fmt(grid[-1] * grid[-1] / grid[-2]))


BEST_RULE = ("ssb_best: of ssb (the paper's loss) and its ssb: ablations, the arm whose chosen trial has the "
             "highest validation accuracy; a tie keeps ssb, then the earlier arm")


def best_variant(tuning: dict) -> dict | None:
    """SSB's best loss on validation (:data:`BEST_RULE`) from ``tuning`` (``tune/tuning.json``'s per-arm
    entries), or None without ``ssb`` and at least one ``ssb:`` ablation among them. ``candidates``: each
    SSB arm's chosen learning rate and validation accuracy; ``paper``: the ``ssb`` arm's."""
    cands = {a: t["chosen"] for a, t in tuning.items() if a == "ssb" or a.startswith("ssb:")}
    if "ssb" not in cands or len(cands) < 2:
        return None
    best = max(cands, key=lambda a: (cands[a]["validation_accuracy"], a == "ssb"))
    pick = {"lr": cands[best]["lr"], "validation_accuracy": cands[best]["validation_accuracy"]}
    return {"arm": best, "overrides": [] if best == "ssb" else ablation_overrides(best, None), **pick,
            "paper": {"lr": cands["ssb"]["lr"], "validation_accuracy": cands["ssb"]["validation_accuracy"]},
            "candidates": {a: {"lr": c["lr"], "validation_accuracy": c["validation_accuracy"],
                               "trials": len(tuning[a]["trials"])} for a, c in cands.items()},
            "rule": BEST_RULE}


def validation_source(cfg):
    """The validation draw's data config: ``tune.validation``, else ``eval.holdout`` at another seed."""
    src = cfg.tune.validation
    if src is None:
        src = cfg.eval.holdout.model_copy(update={"seed": cfg.eval.holdout.seed + VALIDATION_SEED_STEP})
    return src.model_copy(update={"limit": cfg.tune.validation_n, "draw_chunk": None})


class Tuner:
    """The search of one ``ssb compare`` (``compare``: its :class:`~ssb.comparison.arms.Compare`)."""

    def __init__(self, compare):
        self.c = compare
        self.cfg = compare.base_cfg
        self.dir = compare.dir / "tune"
        # every replicate's training problems: the validation draw avoids them all
        self.training = set().union(*[question_keys(load_problems(compare.cfg(f"r{r}", compare.replicate_extra(r)).data))
                                      for r in compare.R])
        self._upstream: dict[str, Run] = {}

    def trial_cfg(self, arm: str, lr: float):
        """The trial's config: replicate 0's, the arm's stage on, curves off, the learning rate set."""
        c = self.c
        extra = c.replicate_extra(0) + c.arm_extra(arm) + ["distill.save_every_epoch=false", "grpo.curve_points=0",
                                                           "sdft.curve_points=0",
                                                           f"{LR_KEYS[kind(arm)]}={fmt(lr)}"]
        name = f"{c.dir_name(arm)}-lr{fmt(lr)}"
        return load_config(c.config, c.overrides + [f"runs_dir={self.dir}", f"name={name}"] + extra), name

    def upstream(self, arm: str) -> Run:
        """Replicate 0's run a trial of ``arm`` takes its data from (an ablation: its own, upstream only)."""
        if arm not in self._upstream:
            main = self._upstream.get("ssb") or self.c.main_run(0, upstream_only=True)
            self._upstream["ssb"] = main
            self._upstream[arm] = self.c.ablation_run(0, arm, main, upstream_only=True) if arm.startswith("ssb:") \
                else main
        return self._upstream[arm]

    def trial(self, arm: str, lr: float, budget_from: Run | None) -> dict:
        cfg, name = self.trial_cfg(arm, lr)
        run = Run.create(cfg)
        self.c.take_upstream(self.upstream(arm), run)
        if kind(arm) in BUDGETED and budget_from is not None:  # SSB's distillation record: the FLOPs budget
            self.c.take_upstream(budget_from, run, stages=("distill",))
        self.c.run_stages(cfg, only=[TRAINED_BY[kind(arm)]])
        acc, n, eval_seconds = self.validate(name, run.file(ADAPTERS[kind(arm)]))
        train_seconds = run.stage_seconds(TRAINED_BY[kind(arm)]) or 0.0  # every invocation
        return {"overrides": [f"{LR_KEYS[kind(arm)]}={fmt(lr)}"], "lr": float(fmt(lr)), "validation_accuracy": acc,
                "validation_n": n, "run_dir": str(run.path),
                "seconds": {"train": round(train_seconds, 1), "validation": eval_seconds}}

    def validate(self, name: str, adapter) -> tuple[float, int, float | None]:
        from ..stages.evaluate import evaluate  # lazy: torch

        c = self.cfg
        ecfg = c.eval.model_copy(update={"holdout": validation_source(c), "benches": ["holdout"], "limit": None,
                                         "n": 1, "temperature": 0.0})
        where = self.dir / "validation" / name
        gone = adapter is not None and not (adapter / "adapter_config.json").is_file()
        if gone and (where / "summary.json").is_file():
            s = json.loads((where / "summary.json").read_text())  # scored in a session whose adapters were not kept
        else:
            s = evaluate(c.model, adapter, ["holdout"], c.prompt, c.generation, ecfg, where, exclude=self.training,
                         label=f"validation-{name}", fix="delete {path} (ssb compare --tune scores the trial again)")
        b = s["benches"]["holdout"]
        timing = self.dir / "validation" / "seconds.json"  # each trial's first-measured evaluation
        seconds = json.loads(timing.read_text()) if timing.is_file() else {}
        seconds.setdefault(name, s.get("seconds"))
        atomic_write_json(timing, seconds)
        return b["accuracy"], b["n_problems"], seconds[name]

    def validation_questions(self) -> set[str]:
        """The validation draw's questions (normalised): the held-out draw excludes them. Read from
        evaluate()'s cache of the draw, drawn again (the same draw: the same source, seed and exclusions)
        when the cache is gone, as when a finished search was restored without its trials."""
        from ..data.heldout import holdout_problems

        f = self.dir / "validation" / "holdout.problems.jsonl"
        if not f.is_file() and (self.dir / "tuning.json").is_file():
            holdout_problems(validation_source(self.cfg), self.training, f)
        return {normalize_question(r["question"]) for r in read_jsonl(f) if r.get("question")} if f.is_file() else set()

    def arm(self, arm: str, budget_from: Run | None) -> dict:
        configured = configured_lr(self.cfg, arm)
        grid = [float(fmt(configured * f)) for f in self.cfg.tune.lr_factors]
        trials = [self.trial(arm, lr, budget_from) for lr in grid]
        extra = extension(grid, choose(trials, configured)["lr"]) if self.cfg.tune.extend_edge else None
        if extra is not None:
            trials.append({**self.trial(arm, extra, budget_from), "edge_extension": True})
        best = choose(trials, configured)
        log.info("[tune] %s: %s -> %s (validation %.3f)", arm, ", ".join(
            f"{fmt(t['lr'])}: {t['validation_accuracy']:.3f}" for t in trials), fmt(best["lr"]),
            best["validation_accuracy"])
        return {"key": LR_KEYS[kind(arm)], "configured": configured, "grid": grid, "trials": trials,
                "chosen": {k: best[k] for k in ("overrides", "lr", "validation_accuracy")}}

    def run(self) -> dict:
        """Every trainable arm's trials and choice, into ``tune/tuning.json``. A search already recorded
        there with the same search space and validation draw is not redone: its arms keep their recorded
        trials and choices (their trial directories need not exist), and only arms it lacks are searched."""
        self.dir.mkdir(parents=True, exist_ok=True)
        recorded = load_dir(self.dir)
        same = ("search", "validation")  # a record of another search space or validation draw is not this search
        if recorded is not None and any(recorded["protocol"].get(k) != self.protocol()[k] for k in same):
            recorded = None
        if recorded is not None and all(a in recorded["tuning"] for a in tunable(self.c.arms)):
            return {a: recorded["tuning"][a] for a in tunable(self.c.arms)}
        out: dict[str, dict] = {}
        budget_from = None  # a run with SSB's distillation (any lr: the same FLOPs), GRPO's budget
        for arm in tunable(self.c.arms):
            if arm in BUDGETED and budget_from is None:
                budget_from = self._budget_run()
            out[arm] = recorded["tuning"][arm] if recorded and arm in recorded["tuning"] else self.arm(arm, budget_from)
            kept = Path(out.get("ssb", {}).get("trials", [{}])[0].get("run_dir", "")) / "config.yaml"
            if arm == "ssb" and kept.is_file():  # any trial's: the learning rate does not change SSB's FLOPs
                budget_from = Run.open(out["ssb"]["trials"][0]["run_dir"])
        base, n, _ = self.validate("base", None)  # the untrained model on the same draw: what a trial adds
        atomic_write_json(self.dir / "tuning.json", {"tuning": out, "protocol": {
            **self.protocol(), "base_validation_accuracy": base, "validation_n": n}})
        return out

    def reuse_chosen(self, found: dict) -> dict:
        """Replicate 0 takes each arm's chosen trial as its training of that arm (the stage's outputs and
        manifest entry, ``copied_from`` the trial) when the trial's config is the replicate's but for
        :func:`differences`' allowed fields: the trial *is* that training, same problems, pairs, seed and
        learning rate, so training it again would cost the time and give the same adapter. With curves
        (``distill.save_every_epoch``, ``*.curve_points``) or rounds the configs differ and replicate 0
        trains the arm itself. Returns per arm the run directory its replicate-0 training came from, or the
        fields that kept it from being reused."""
        out: dict[str, dict] = {}
        for arm, t in found.items():  # ``tuning.json``'s ``tuning``
            stage = TRAINED_BY[kind(arm)]
            trial = next(x for x in t["trials"] if fmt(x["lr"]) == fmt(t["chosen"]["lr"]))
            cfg = self.c.ablation_cfg(0, arm) if arm.startswith("ssb:") else self.c.main_cfg(0)
            dst = Run.create(cfg)
            if dst.stage_done(stage):  # done before: by this reuse, or trained (an earlier invocation)
                entry = dst.stage(stage)
                out[arm] = ({"from_trial": entry["copied_from"]} if "copied_from" in entry
                            else {"trained": True, "reason": "trained before this invocation"})
                continue
            if not (Path(trial["run_dir"]) / "config.yaml").is_file():
                out[arm] = {"trained": True, "reason": "the trial's run directory is not kept (a search restored "
                            "from its record)"}
                continue
            src = Run.open(trial["run_dir"])
            diff = differences(src.cfg, cfg, arm)
            kept = (src.file(ADAPTERS[kind(arm)]) / "adapter_config.json").is_file()
            if diff or not src.stage_done(stage) or not kept:
                out[arm] = {"trained": True, "reason": f"the trial's config differs in {', '.join(diff)}" if diff
                            else "the trial's training is not done" if not src.stage_done(stage)
                            else "the trial's adapter is not kept (restored from its pack)"}
                continue
            self.c.take_trained(src, dst, stage)
            log.info("[tune] %s: replicate 0 takes the chosen trial %s (same config, same training)", arm, src.path)
            out[arm] = {"from_trial": str(src.path)}
        return out

    def _budget_run(self) -> Run:
        """SSB's distillation on replicate 0 at its configured lr (not scored): GRPO's budget when ssb is no arm."""
        cfg, _ = self.trial_cfg("ssb", configured_lr(self.cfg, "ssb"))
        run = Run.create(cfg)
        self.c.take_upstream(self.upstream("ssb"), run)
        return self.c.run_stages(cfg, only=["distill"])

    def protocol(self) -> dict:
        src = validation_source(self.cfg)
        return {"search": {"learning_rate_factors": self.cfg.tune.lr_factors, "extend_edge": self.cfg.tune.extend_edge},
                "replicate": 0, "rule": RULE,
                "validation": {"source": src.source, "seed": src.seed, "n": src.limit,
                               "deduplicated_against": "every replicate's training problems; the held-out problems "
                               "are drawn excluding these"}}


# fields a trial and its replicate-0 run may differ in without changing the arm's training: where the run
# lives, which other arms the replicate trains, and their learning rates (the arm's own must be equal)
OTHER_ARMS = ("runs_dir", "name", "baselines.sft", "baselines.rft", "grpo.enabled", "sdft.enabled")


def differences(trial_cfg, run_cfg, arm: str) -> list[str]:
    """The config fields in which a trial of ``arm`` and a run differ, besides :data:`OTHER_ARMS` and the
    other arms' learning rates (empty: the run would train ``arm`` exactly as the trial did)."""
    ignore = set(OTHER_ARMS) | {k for a, k in LR_KEYS.items() if a != kind(arm)}
    a, b = ({path: v for path, v, _, _ in values(c)} for c in (trial_cfg, run_cfg))
    return sorted(k for k in a.keys() | b.keys() if k not in ignore and a.get(k) != b.get(k))


def load(compare) -> dict | None:
    """A finished search of this comparison (``tune/tuning.json``), or None."""
    return load_dir(compare.dir / "tune")


def load_dir(tune_dir: Path) -> dict | None:
    f = Path(tune_dir) / "tuning.json"
    return json.loads(f.read_text()) if f.is_file() else None
