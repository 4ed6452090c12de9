"""`ssb compare CONFIG`: SSB against what a user would do instead, on the same problems, per unit of compute.

    ssb compare configs/default.yaml --arms base,ssb,sft,rft,grpo,sdft --replicates 3 [--n 400] [--tune]

Everything goes to ``<runs_dir>/<name>-compare/`` (``--dir``), and a rerun resumes it:

* ``r<i>/``: replicate i, a run directory of the config (replicate 0: as committed; i > 0: a
  training draw of its own, ``data.seed + i x DATA_SEED_STRIDE``, and every sampling / training seed + i). Its stages make every arm that shares
  its rollouts: rollout (once), curate, teacher, logits, distill (``ssb``), ``sft`` and ``rft``
  (``stages/sft.py``), ``grpo`` (budget ``grpo.budget``, FLOPs by default: SSB's) and ``sdft``
  (``stages/sdft.py``, budget ``sdft.budget``). Nothing is generated twice. Adapters are also saved after
  each epoch (``distill.save_every_epoch``) and at ``--grpo-points`` points of GRPO's and SDFT's budgets
  (``grpo.curve_points``, ``sdft.curve_points``).
* ``tune/`` (``--tune``): every trainable arm's learning-rate trials on replicate 0, scored on a
  validation draw (:mod:`comparison.tuning`); the chosen values train every replicate.
* ``ssb@<k>``: SSB after k bootstrapping rounds (``rounds.n``, ``stages/rounds.py``; every round runs, the
  stop rule off, its validation accuracies recorded in ``r<i>/rounds/rounds.json``); with ``grpo`` each
  round also meets GRPO at its own compute: GRPO's FLOPs budget is all rounds' and ``grpo@<k>`` is its
  adapter saved where round k's compute ends (the arm ``grpo``: where the last round's ends).
* ``r<i>-<arm>/`` for a teacher ablation ``ssb:<hint>`` (``ssb:answer``, ``ssb:correct``,
  ``ssb:contrastive``, ``ssb:none``) or ``ssb:<key>=<value>`` (any override, e.g.
  ``ssb:teacher.solution=rollout``): the replicate's rollouts copied, the SSB stages rerun.
* ``r<i>-ssb-half/``: SSB on the first half of its pairs (the curve's low-compute point; its FLOPs
  are half of the upstream stages' plus its own distillation).
* ``k<K>/`` (``--k-max``, replicate 0): one rollout pass at K_max; curation yield at every K from
  2 to K_max by keeping each problem's first K rollouts (no new generation); SSB trained at each
  ``--k-values`` K from those subsamples.
* ``eval/<label>/``: every model, greedy pass@1 with the training prompt, on the same ``--n``
  held-out problems (``--seed``, deduplicated against every replicate's training problems).
* ``results.json``, ``results.md``, ``plots/``: :mod:`comparison.results` (pooled accuracies and
  intervals, paired differences against base and SSB, the compute ledger of every arm
  (:mod:`report.ledger`), the compute-accuracy curves, the compute to reach base + N points, K
  sensitivity, output quality).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..config import load_config
from ..data.heldout import training_questions
from ..data.load import load_problems
from ..data.problem import question_keys
from ..pipeline import run_pipeline
from ..report.funnel import rollout_counts
from ..report.ledger import ledger, model_params
from ..report.train_summary import summarize
from ..rundir.jsonl import atomic_write_json, atomic_write_text, read_jsonl
from ..rundir.run import Run
from ..rundir.table import STAGES
from . import results as arms_results
from .defaults import ADAPTERS, BUDGETED, CURVES, GRPO_POINTS, K_MAX, K_VALUES, TRAINED_BY
from .spec import (SSB_STAGES, STAGE_FILES, UPSTREAM, CompareError, ablation_overrides, copy_stages,
                   replicate_overrides, reused_stages)

log = logging.getLogger("ssb")

class Compare:
    """One ``ssb compare`` invocation: its settings, directories and what it has made so far."""

    def __init__(self, config: str, arms: list[str], replicates: int, n: int, seed: int, out: Path | None,
                 overrides: list[str], grpo_points: int = GRPO_POINTS, k_max: int = K_MAX,
                 k_values: tuple[int, ...] = K_VALUES, curves: bool = CURVES):
        self.config, self.arms, self.R, self.curves = config, arms, range(replicates), curves
        self.n, self.seed, self.overrides = n, seed, overrides
        self.grpo_points, self.k_max, self.k_values = grpo_points, k_max, k_values
        self.base_cfg = load_config(config, overrides)
        if self.base_cfg.eval.holdout is None:
            raise CompareError(f"{config}: eval.holdout is not set; ssb compare needs held-out problems")
        self.dir = Path(out) if out else Path(self.base_cfg.runs_dir) / f"{self.base_cfg.name}-compare"
        self.records: dict[str, list[dict]] = {}
        self.exclude: set[str] = set()
        self.rounds = max([int(a[4:]) for a in arms if a.startswith("ssb@")], default=1)
        self.tuning: dict | None = None  # ``--tune``'s trials and choices (comparison/tuning.py)
        self.tuned: list[str] = []  # the chosen values of ssb, sft, rft and grpo: every run's
        self.chosen: dict[str, list[str]] = {}  # per tuned arm

    # ------------------------------------------------------------------ runs

    def cfg(self, name: str, extra: list[str]):
        """A run of this comparison: the config, ``--set``, the tuned values, then ``extra``."""
        return load_config(self.config, self.overrides + [f"runs_dir={self.dir}", f"name={name}"] + self.tuned + extra)

    def replicate_extra(self, r: int) -> list[str]:
        return replicate_overrides(self.base_cfg, r)

    def arm_extra(self, arm: str) -> list[str]:
        """The overrides that make a run train ``arm`` (an ablation: its own overrides)."""
        if arm.startswith("ssb:"):
            return ablation_overrides(arm, self.base_cfg.teacher.template)
        return {"sft": ["baselines.sft=true"], "rft": ["baselines.rft=true"], "grpo": ["grpo.enabled=true"],
                "sdft": ["sdft.enabled=true"]}.get(arm, [])

    @staticmethod
    def dir_name(arm: str) -> str:
        return arm.replace(":", "-").replace("=", "-").replace(".", "_").replace("+", "-")

    def main_run(self, r: int, upstream_only: bool = False) -> Run:
        """Replicate ``r``'s run directory and every arm it trains (``upstream_only``: rollout to logits,
        what ``--tune``'s trials take before the learning rates are chosen)."""
        stages = list(UPSTREAM) if upstream_only else ["rollout", *SSB_STAGES, "rounds", "sft", "rft", "grpo", "sdft",
                                                       "report"]
        return run_pipeline(self.main_cfg(r), only=stages)

    def main_cfg(self, r: int):
        """Replicate ``r``'s config: every requested arm's stage on, curves as asked, the tuned values."""
        want = set(self.arms)
        extra = self.replicate_extra(r) + [
            f"baselines.sft={'sft' in want}", f"baselines.rft={'rft' in want}", f"grpo.enabled={'grpo' in want}",
            f"sdft.enabled={'sdft' in want}", f"distill.save_every_epoch={self.curves}",
            f"grpo.curve_points={self.grpo_points if self.curves else 0}",
            f"sdft.curve_points={self.grpo_points if self.curves else 0}"]
        if self.rounds > 1:  # every round runs: the stop rule's validation accuracies are recorded, not acted on
            extra += [f"rounds.n={self.rounds}", "rounds.stop_drop=1"]
        return self.cfg(f"r{r}", extra)

    @staticmethod
    def run_stages(cfg, only: list[str]) -> Run:
        """``only`` of the pipeline's stages in ``cfg``'s run directory (the one door to the orchestrator)."""
        return run_pipeline(cfg, only=only)

    def take_upstream(self, src: Run, dst: Run, stages: tuple[str, ...] = UPSTREAM) -> None:
        """``dst`` starts from ``src``'s ``stages`` (their files and manifest entries; distill: the entry only)."""
        copy_stages(src, dst, stages, tuple(f for s in stages for f in STAGE_FILES.get(s, ())))

    @staticmethod
    def take_trained(src: Run, dst: Run, stage: str) -> None:
        """``dst`` takes ``src``'s finished training ``stage``: its outputs and manifest entry (``copied_from``)."""
        copy_stages(src, dst, (stage,), next(s.outputs for s in STAGES if s.name == stage))

    def ablation_run(self, r: int, arm: str, main: Run, upstream_only: bool = False) -> Run:
        """The ablation ``arm`` on replicate ``r``: what it does not change taken from ``main``
        (:func:`reused_stages`), the rest of SSB's stages rerun (``upstream_only``: up to the teacher signal)."""
        changed = self.arm_extra(arm)
        cfg = self.ablation_cfg(r, arm)
        run = Run.create(cfg)
        reused = reused_stages(changed, self.base_cfg.logits.store)
        self.take_upstream(main, run, reused)
        stages = [s for s in SSB_STAGES if s not in reused and (s in UPSTREAM or not upstream_only)]
        only = [*stages, *([] if upstream_only else ["report"])]
        return run_pipeline(cfg, only=only) if only else run  # upstream only, all of it taken: nothing to run

    def ablation_cfg(self, r: int, arm: str):
        """The ablation ``arm``'s config on replicate ``r`` (its chosen learning rate when tuned)."""
        return self.cfg(f"r{r}-{self.dir_name(arm)}", self.replicate_extra(r) + self.arm_extra(arm)
                        + self.chosen.get(arm, []))

    def tune(self) -> None:
        """``--tune``: every trainable arm's trials on replicate 0 (:mod:`comparison.tuning`; a rerun resumes
        them); the chosen values train every run, and the held-out draw excludes the validation problems."""
        from .tuning import Tuner

        tuner = Tuner(self)
        found = tuner.run()
        self.tuning = json.loads((tuner.dir / "tuning.json").read_text())
        self.chosen = {a: t["chosen"]["overrides"] for a, t in found.items()}
        self.tuned = [o for a in TRAINED_BY if a in self.chosen for o in self.chosen[a]]
        self.exclude |= tuner.validation_questions()
        self.tuning["protocol"]["replicate_0"] = tuner.reuse_chosen(found)

    def evaluate_replicate(self, r: int, main: Run, arm_runs: dict[str, dict[int, Run]],
                           halves: dict[int, Run | None], params: dict) -> None:
        """Every model replicate ``r`` trained (each arm's final adapter, its curve's points), evaluated now,
        then ``eval/r<r>.done.json`` (its labels): what :meth:`run` later aggregates finds them evaluated."""
        for arm, runs in arm_runs.items():
            key = arm if arm in ADAPTERS else "ssb"
            self.evaluate(f"r{r}-{arm.replace(':', '-')}", runs[r].file(ADAPTERS[key]))
            if arm in ADAPTERS:
                self.curve(arm, {r: runs[r]}, params, halves if arm == "ssb" else {})
        atomic_write_json(self.dir / "eval" / f"r{r}.done.json",
                          {"replicate": r, "labels": sorted(x for x in self.records if x.startswith(f"r{r}-"))})

    def half_run(self, r: int, main: Run) -> Run | None:
        """SSB's distillation on the first half of ``main``'s pairs (its teacher signal copied)."""
        pairs = read_jsonl(main.file("pairs.jsonl"))
        if len(pairs) < 2:
            return None
        cfg = self.cfg(f"r{r}-ssb-half", self.replicate_extra(r))
        run = Run.create(cfg)
        if not run.file("pairs.jsonl").exists():
            half = pairs[: len(pairs) // 2]
            atomic_write_text(run.file("pairs.jsonl"), "".join(json.dumps(p) + "\n" for p in half))
        copy_stages(main, run, UPSTREAM, ("rollouts.jsonl", "selections.jsonl", "teacher"))
        run_pipeline(cfg, only=["distill"])
        return run

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, label: str, adapter: Path | None, model=None) -> None:
        from ..stages.evaluate import evaluate  # lazy: torch

        where = self.dir / "eval" / label
        if label in self.records:
            return
        if adapter is not None and not (adapter / "adapter_config.json").exists():
            if (where / "summary.json").is_file() and (where / "holdout.jsonl").is_file():
                # evaluated in an earlier session whose adapters were not kept (bench/suite_rerun.py's packs)
                self.records[label] = read_jsonl(where / "holdout.jsonl")
            return
        timing = self.dir / "eval" / "seconds.json"  # each evaluation's first-measured wall-clock
        seconds = json.loads(timing.read_text()) if timing.is_file() else {}
        if label not in seconds and (where / "summary.json").is_file():  # evaluated before seconds.json existed
            seconds[label] = json.loads((where / "summary.json").read_text()).get("seconds")
        t0 = time.time()
        c = self.base_cfg
        holdout = c.eval.holdout.model_copy(update={"limit": self.n, "seed": self.seed})
        ecfg = c.eval.model_copy(update={"holdout": holdout, "benches": ["holdout"], "limit": None, "n": 1,
                                         "temperature": 0.0})
        evaluate(model or c.model, adapter, ["holdout"], c.prompt, c.generation, ecfg, where, exclude=self.exclude,
                 label=label, fix=f"delete {{path}} (ssb compare evaluates {label} again)")
        self.records[label] = read_jsonl(where / "holdout.jsonl")
        seconds.setdefault(label, round(time.time() - t0, 1))
        atomic_write_json(timing, seconds)

    # ------------------------------------------------------------------ K sensitivity

    def k_sensitivity(self) -> dict | None:
        if not self.k_max:
            return None
        kmax = self.k_max
        top = run_pipeline(self.cfg(f"k{kmax}", [f"rollout.k={kmax}"]), only=["rollout"])
        recs = read_jsonl(top.file("rollouts.jsonl"))
        no_ans = self.base_cfg.curate.no_answer_is_wrong
        keys = ("completions", "extracted", "grades", "formats", "finish_reasons", "completion_tokens")

        def first(k: int) -> list[dict]:
            return [{**r, **{x: r[x][:k] for x in keys if x in r}} for r in recs]

        yield_rows = []
        for k in range(2, kmax + 1):
            c = rollout_counts(first(k), no_ans)
            yield_rows.append({"k": k, "problems": c["problems"], "with_both": c["with_both"], "yield": c["yield"],
                               "rollout_accuracy": c["accuracy"], "generated_tokens": c["generated_tokens"]})
        trained = []
        for k in self.k_values:
            cfg = self.cfg(f"k{kmax}-sub{k}", [f"rollout.k={k}"])
            run = Run.create(cfg)
            if not run.file("rollouts.jsonl").exists():
                atomic_write_text(run.file("rollouts.jsonl"), "".join(json.dumps(r) + "\n" for r in first(k)))
                run.set_stage("rollout", status="done", subsampled_from=str(top.path), k=k)
            run = run_pipeline(cfg, only=[*SSB_STAGES, "report"])
            label = f"k{k}-ssb"
            self.evaluate(label, run.file("student"))
            trained.append({"k": k, "label": label, "pairs": len(read_jsonl(run.file("pairs.jsonl"))),
                            "run_dir": str(run.path)})
        return {"k_max": kmax, "replicate": 0, "yield": yield_rows, "trained": trained}

    # ------------------------------------------------------------------ the whole comparison

    def run(self) -> dict:
        t0 = time.time()
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.base_cfg.tune.enabled:
            self.tune()
        params = model_params(self.base_cfg)
        # Every replicate's training problems are known from its data draw before it trains (not with
        # data.draw_chunk, which draws until enough pairs): then the held-out draw, which avoids them all,
        # is made first and each replicate is evaluated as soon as it is trained (``eval/r<i>.done.json``):
        # a comparison stopped between replicates keeps whole replicates (bench/suite_rerun.py packs them).
        early = not any(self.main_cfg(r).data.draw_chunk for r in self.R)
        if early:
            for r in self.R:
                self.exclude |= question_keys(load_problems(self.main_cfg(r).data))
            self.evaluate("base", None)
        mains: dict[int, Run] = {}
        order = [a for a in TRAINED_BY if a in self.arms] + [a for a in self.arms if a.startswith("ssb:")]
        arm_runs: dict[str, dict[int, Run]] = {a: {} for a in order}
        halves: dict[int, Run | None] = {}
        for r in self.R:
            mains[r] = self.main_run(r)
            for arm in arm_runs:
                arm_runs[arm][r] = self.ablation_run(r, arm, mains[r]) if arm.startswith("ssb:") else mains[r]
            if "ssb" in self.arms and self.curves:
                halves[r] = self.half_run(r, mains[r])
            if early:
                self.evaluate_replicate(r, mains[r], arm_runs, halves, params)
        train = {r: training_questions(run) for r, run in mains.items()}
        for qs in train.values():
            if early and not qs <= self.exclude:
                raise CompareError(f"{self.dir}: a replicate trained on {len(qs - self.exclude)} problems outside its "
                                   "data draw, after the held-out draw was made without them; delete "
                                   f"{self.dir / 'eval'} and run again")
            self.exclude |= qs
        self.evaluate("base", None)
        adapters = ADAPTERS
        arms: dict[str, dict[str, Any]] = {"base": {"labels": ["base"]}}
        curves: dict[str, list[dict]] = {}
        for arm, runs in arm_runs.items():
            key = arm if arm in adapters else "ssb"
            labels, compute, training = [], [], []
            for r, run in runs.items():
                label = f"r{r}-{arm.replace(':', '-')}"
                self.evaluate(label, run.file(adapters[key]))
                if label in self.records:
                    labels.append(label)
                led = ledger(run, params)
                compute.append({**led["arms"].get(key, {}), "run_dir": str(run.path)})
                training.append(summarize(run, TRAINED_BY[key]))
            arms[arm] = {"labels": labels if len(labels) == len(runs) else [], "compute": compute,
                         "training": training, "run_dirs": [str(run.path) for run in runs.values()]}
            if arm in adapters:
                curves[arm] = self.curve(arm, runs, params, halves if arm == "ssb" else {})
        if self.rounds > 1:
            self.round_arms(mains, params, arms)
        k = self.k_sensitivity()
        from .tuning import best_variant  # lazy, as in tune()

        best = best_variant(self.tuning["tuning"]) if self.tuning is not None else None
        doc = arms_results.results(arms, self.records, "base", curves, best=best and best["arm"])
        doc["k_sensitivity"] = k
        if self.tuning is not None:
            doc["tuning"], doc["tuning_protocol"] = self.tuning["tuning"], self.tuning["protocol"]
        if "ssb_best" in doc:
            doc["ssb_best"]["choice"] = best
        if k and "r0-ssb" in self.records and self.base_cfg.rollout.k not in self.k_values:
            k["trained"].append({"k": self.base_cfg.rollout.k, "label": "r0-ssb", "run_dir": str(mains[0].path),
                                 "pairs": len(read_jsonl(mains[0].file("pairs.jsonl"))),
                                 "note": "replicate 0's own rollout pass (another sample than the K_max pass)"})
            k["trained"].sort(key=lambda t: t["k"])
        if k:
            for row in k["trained"]:
                if row["label"] in self.records:
                    vec = [bool(x["correct"][0]) for x in self.records[row["label"]]]
                    row["accuracy"] = sum(vec) / len(vec)
        doc.update(config=self.config, overrides=self.overrides, curves_measured=self.curves,
                   grpo_budget=self.base_cfg.grpo.budget, ssb_hint=self.base_cfg.teacher.hint,
                   arms_requested=self.arms, dir=str(self.dir),
                   flop_rule=ledger(mains[0], params)["rule"], params=params, replicates=self.replicates(mains),
                   training_shared_with_replicate_0={r: len(train[r] & train[0]) for r in train if r},
                   holdout={"n": self.n, "seed": self.seed, "deduplicated_against_training_of_all_replicates": True},
                   decoding="greedy pass@1, the training prompt (system + worked example)",
                   wall_seconds_this_invocation=round(time.time() - t0, 1))
        doc["timing"] = self.timing(mains, arm_runs, halves)
        doc["verdict"] = arms_results.verdict(doc)
        atomic_write_json(self.dir / "results.json", doc)
        atomic_write_text(self.dir / "results.md", arms_results.markdown(doc))
        self.plot(doc)
        return doc

    def round_arms(self, mains: dict[int, Run], params: dict, arms: dict[str, dict]) -> None:
        """``ssb@<k>`` (round k's student on its merged model) and ``grpo@<k>`` (GRPO's adapter where
        round k's compute ends: the point whose budget fraction is nearest round k's share)."""
        for k in range(2, self.rounds + 1):
            labels, compute = [], []
            for r, run in mains.items():
                d = run.file(f"rounds/r{k}")
                if (d / "config.yaml").is_file():  # the round's student on the round's merged model
                    self.evaluate(f"r{r}-ssb@{k}", d / "student", model=load_config(d / "config.yaml").model)
                labels += [f"r{r}-ssb@{k}"] if f"r{r}-ssb@{k}" in self.records else []
                compute.append({**ledger(run, params)["arms"].get(f"ssb@{k}", {}), "run_dir": str(d)})
            arms[f"ssb@{k}"] = {"labels": labels if len(labels) == len(mains) else [], "compute": compute}
        if "grpo" not in self.arms:
            return
        for k in range(1, self.rounds):
            labels, compute = [], []
            for r, run in mains.items():
                f, budget = run.file("grpo_points/points.json"), run.stage("grpo").get("budget_flops")
                key = "ssb" if k == 1 else f"ssb@{k}"
                share = ledger(run, params, all_arms=True)["arms"].get(key, {}).get("flops", 0) / (budget or 1)
                points = [p for p in (json.loads(f.read_text()) if f.is_file() else []) if "target" in p]
                if not budget or not points:  # GRPO not run, or not at a FLOPs budget: no matched points
                    continue
                p = min(points, key=lambda p: abs(p["target"] - share))
                self.evaluate(f"r{r}-grpo@{k}", run.file(f"grpo_points/{p['dir']}"))
                labels.append(f"r{r}-grpo@{k}")
                compute.append({**{x: p[x] for x in ("flops", "budget_fraction", "step")},
                                "round_share": round(share, 6), "run_dir": str(run.path)})
            arms[f"grpo@{k}"] = {"labels": labels if len(labels) == len(mains) else [], "compute": compute}

    def curve(self, arm: str, runs: dict[int, Run], params: dict, halves: dict[int, Run | None]) -> list[dict]:
        """Points along an arm's compute: epochs (ssb, sft, rft; the last is the final adapter), half
        of SSB's pairs, GRPO's budget points (the last is the final adapter)."""
        out_dir = ADAPTERS[arm]
        per_point: dict[str, dict] = {}
        for r, run in runs.items():
            led = ledger(run, params)
            total = led["arms"].get(arm, {}).get("flops", 0.0)
            own = led["stages"].get("distill" if arm == "ssb" else arm, {})
            upstream = total - own.get("flops", 0.0)
            points = []
            if self.curves and arm in BUDGETED:  # --no-curves: the final adapters only
                f = run.file(f"{arm}_points/points.json")
                last = run.stage(arm).get("steps")  # a point at the final step is the final adapter
                for p in [p for p in (json.loads(f.read_text()) if f.is_file() else []) if p["step"] != last]:
                    # a point's FLOPs are its stage's spend so far; the arm's final adds what it took from upstream
                    # (SDFT: the rollouts and curation its hints come from), and so does each point
                    points.append((f"p{p['point']}", run.file(f"{arm}_points/{p['dir']}"), upstream + p["flops"],
                                   {"budget_fraction": p["budget_fraction"], "step": p["step"]}))
            elif self.curves:
                f = run.file(f"{out_dir}_epochs/points.json")
                per_tok = (own.get("flops", 0.0) / own["trained_tokens"]) if own.get("trained_tokens") else 0.0
                eps = json.loads(f.read_text()) if f.is_file() else []
                for p in [p for p in eps if p["epoch"] < run.cfg.distill.epochs]:  # the last: the final adapter
                    points.append((f"e{p['epoch']}", run.file(f"{out_dir}_epochs/{p['dir']}"),
                                   upstream + per_tok * p["trained_tokens"], {"epoch": p["epoch"]}))
            points.append(("final", run.file(out_dir), total, {}))
            half = halves.get(r)
            if half is not None and half.stage_done("distill"):  # its adapter may be gone, its evaluation kept
                hl = ledger(half, params)["stages"].get("distill", {})
                points.append(("half_pairs", half.file("student"), upstream / 2 + hl.get("flops", 0.0),
                               {"pairs_fraction": 0.5}))
            for name, adapter, flops, extra in points:
                label = f"r{r}-{arm}-{name}" if name != "final" else f"r{r}-{arm}"
                self.evaluate(label, adapter)
                row = per_point.setdefault(name, {"point": name, **extra, "labels": [], "flops": []})
                row["labels"].append(label)
                row["flops"].append(flops)
        return [p for p in per_point.values() if len(p["labels"]) == len(runs)]

    def replicates(self, mains: dict[int, Run]) -> list[dict]:
        out = []
        for r, run in mains.items():
            c = run.cfg
            st = run.manifest().get("stages", {})
            out.append({"replicate": r, "run_dir": str(run.path),
                        "seed": {"data": c.data.seed, "rollout": c.rollout.seed, "curate": c.curate.seed,
                                 "teacher": c.teacher.seed, "distill": c.distill.seed, "grpo": c.grpo.seed,
                                 "sdft": c.sdft.seed},
                        "rollout_accuracy": st.get("rollout", {}).get("accuracy"),
                        "pairs": st.get("teacher", {}).get("pairs_written"),
                        "teacher_rejected_by_gate": st.get("teacher", {}).get("replies_rejected_by_gate"),
                        "pair_working": arms_results.pair_working(read_jsonl(run.file("pairs.jsonl")),
                                                                  read_jsonl(run.file("rollouts.jsonl")))
                        if run.file("pairs.jsonl").is_file() else None,
                        **{a: {k: st.get(a, {}).get(k) for k in
                                  ("steps", "completions", "stopped_by", "budget_flops", "flops", "train_seconds",
                                   "generation_seconds")} for a in BUDGETED},
                        "rounds": json.loads(f.read_text()) if (f := run.file("rounds/rounds.json")).is_file() else None,
                        "seconds_by_stage": {s: run.stage_seconds(s) for s in st}})
        return out

    def timing(self, mains: dict[int, Run], arm_runs: dict[str, dict[int, Run]], halves: dict) -> dict:
        """Where ``ssb compare``'s wall-clock went: each stage summed over every run directory (all
        invocations), every evaluation (first measured), per part."""
        runs = {str(r.path): r for r in [*mains.values(), *[x for rs in arm_runs.values() for x in rs.values()],
                                         *[h for h in halves.values() if h is not None]]}
        runs.update({str(p): Run.open(p) for p in sorted(self.dir.glob("k*")) if (p / "manifest.json").is_file()})
        by_stage: dict[str, float] = {}
        for run in runs.values():
            for name, entry in run.manifest().get("stages", {}).items():
                if "copied_from" not in entry:  # a stage taken from another run cost nothing here
                    by_stage[name] = by_stage.get(name, 0.0) + (run.stage_seconds(name) or 0.0)
        f = self.dir / "eval" / "seconds.json"
        evals = json.loads(f.read_text()) if f.is_file() else {}
        parts = {**{f"stage:{k}": round(v, 1) for k, v in by_stage.items()},
                 "evaluation": round(sum(v or 0 for v in evals.values()), 1)}
        if self.tuning is not None:  # --tune: each trial's own training and its validation evaluation
            trials = [t for a in self.tuning["tuning"].values() for t in a["trials"]]
            parts["tuning:training"] = round(sum(t["seconds"]["train"] or 0 for t in trials), 1)
            parts["tuning:validation"] = round(sum(t["seconds"]["validation"] or 0 for t in trials), 1)
        total = sum(parts.values())
        return {"total_seconds": round(total, 1), "by_part": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
                "evaluations": len(evals), "note": "wall-clock of this machine, every invocation summed; time "
                "shared with other processes on the same CPUs is included"}

    def plot(self, doc: dict) -> None:
        from ..report.plots import plot_compute_curves  # lazy: matplotlib

        plot_compute_curves(doc, self.dir / "plots" / "accuracy_vs_flops.png")
