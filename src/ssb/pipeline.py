"""`ssb run CONFIG`: every stage in order into one run directory.

Stages already marked done in ``manifest.json`` are skipped; a partial stage resumes
from its own append-only outputs. Ctrl-C leaves the run resumable: rerun the same
command to go on. ``--force STAGE`` removes exactly the files the stage's module declares
in its ``OUTPUTS`` constant (an eval stage: ``eval/<label>``) and reruns it.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
from dataclasses import dataclass
from typing import Callable

from .config import RunConfig
from .errors import SSBError
from .rundir import Run

log = logging.getLogger("ssb")


class PipelineError(SSBError, ValueError):
    """A bad ``ssb run`` request (e.g. an unknown stage name)."""


# curate.py will declare its own OUTPUTS; until then, what it is known to write
CURATE_OUTPUTS = ("pairs.jsonl", "curate_rejects.jsonl")


@dataclass
class Stage:
    """One stage: ``module.func(run)``, or an eval of ``adapter`` into ``eval/<label>``.

    The files a stage writes (removed by ``--force``) are the module-level ``OUTPUTS``
    tuple its module declares, read when needed (:meth:`outputs`); an eval stage owns
    ``eval/<label>``."""

    name: str
    module: str
    func: str = ""
    enabled: Callable[[RunConfig], bool] = lambda cfg: True
    label: str | None = None  # eval stages
    adapter: str | None = None  # eval stages: the run's adapter directory (None: the base model)

    def run(self, run: Run):
        if self.label is not None:
            from .evaluate import run_eval

            return run_eval(run, self.label, adapter=run.file(self.adapter) if self.adapter else None)
        return getattr(importlib.import_module(f"ssb.{self.module}"), self.func)(run)

    def outputs(self) -> tuple[str, ...]:
        """Run-relative paths this stage writes; ``--force`` removes exactly these."""
        mod = importlib.import_module(f"ssb.{self.module}")
        if self.label is not None:
            return tuple(mod.outputs(self.label))
        if self.name == "curate":
            return tuple(getattr(mod, "OUTPUTS", CURATE_OUTPUTS))
        return tuple(mod.OUTPUTS)


STAGES: list[Stage] = [
    Stage("eval_base", "evaluate", label="base"),
    Stage("rollout", "rollout", "run_rollout"),
    Stage("curate", "curate", "run_curate"),
    Stage("logits", "teacher_logits", "run_logits"),
    Stage("distill", "distill", "run_distill"),
    Stage("eval_ssb", "evaluate", label="ssb", adapter="student"),
    Stage("grpo", "grpo", "run_grpo", lambda c: c.grpo.enabled),
    Stage("eval_grpo", "evaluate", label="grpo", adapter="grpo", enabled=lambda c: c.grpo.enabled),
    Stage("report", "report", "write_report"),
]
STAGE_NAMES = [s.name for s in STAGES]
NEEDS_PAIRS = ("logits", "distill", "eval_ssb")


def remove_outputs(run: Run, stage: Stage) -> list[str]:
    """Delete what ``stage`` declares it writes (files or directories); returns what was removed."""
    removed = []
    for out in stage.outputs():
        p = run.file(out)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(out)
    return removed


def _has_pairs(run: Run) -> bool:
    p = run.file("pairs.jsonl")
    return p.exists() and p.stat().st_size > 0


def run_pipeline(cfg: RunConfig, only: list[str] | None = None, skip: list[str] | None = None,
                 force: list[str] | None = None) -> Run:
    for name in (only or []) + (skip or []) + (force or []):
        if name not in STAGE_NAMES:
            raise PipelineError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
    run = Run.create(cfg)
    log.info("run directory: %s", run.path)
    t_all = time.time()
    for stage in STAGES:
        if only and stage.name not in only:
            continue
        if stage.name in (skip or []) or not stage.enabled(cfg):
            log.info("[%s] skipped", stage.name)
            continue
        if stage.name in (force or []):
            removed = remove_outputs(run, stage)
            log.info("[%s] --force: removed %s", stage.name, ", ".join(removed) or "nothing (no outputs yet)")
            run.set_stage(stage.name, status="pending")
        # the report is cheap and reflects everything: always rewrite it
        if stage.name in NEEDS_PAIRS and not _has_pairs(run):
            log.warning("[%s] skipped: curation wrote no verified pairs, so there is nothing to distill "
                        "(see the curate funnel in manifest.json; try more problems, a larger K, or "
                        "curate.teacher_retries)", stage.name)
            run.set_stage(stage.name, status="skipped", reason="no verified pairs")
            continue
        if run.stage_done(stage.name) and stage.name != "report":
            log.info("[%s] already done, skipping", stage.name)
            continue
        log.info("[%s] starting", stage.name)
        t0 = time.time()
        result = stage.run(run)
        if not run.stage_done(stage.name):  # entry points that do not keep their own manifest entry
            run.set_stage(stage.name, status="done", seconds=round(time.time() - t0, 2),
                          **(result if isinstance(result, dict) else {}))
        log.info("[%s] done in %.1fs", stage.name, time.time() - t0)
    run.update_manifest(total_seconds_last_invocation=round(time.time() - t_all, 1))
    log.info("all stages done in %.1fs; see %s", time.time() - t_all, run.file("report.md"))
    return run
