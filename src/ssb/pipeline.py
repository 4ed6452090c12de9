"""`ssb run CONFIG`: every stage in order into one run directory.

Stages already marked done in ``manifest.json`` are skipped; a partial stage resumes
from its own append-only outputs. Ctrl-C leaves the run resumable: rerun the same
command to go on.

Under ``accelerate launch`` every process runs this loop: the main process decides what
each stage does (and alone writes the manifest and the report), every process follows;
generation stages shard their problems, training stages use DDP, and the stages in
``MAIN_ONLY`` run on the main process while the others wait (``distributed.py``).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
from dataclasses import dataclass
from typing import Callable

from . import distributed
from .config import RunConfig
from .rundir import Run

log = logging.getLogger("ssb")


@dataclass
class Stage:
    name: str
    run: Callable[[Run], object]
    outputs: tuple[str, ...]  # files/dirs removed by --force
    enabled: Callable[[RunConfig], bool] = lambda cfg: True


def _eval(label: str, adapter: str | None):
    def go(run: Run):
        from .evaluate import run_eval

        path = run.file(adapter) if adapter else None
        return run_eval(run, label, adapter=path)

    return go


def _lazy(module: str, func: str):
    """A stage entry point imported only when the stage runs (keeps `ssb run` start-up light)."""
    def go(run: Run):
        return getattr(importlib.import_module(f"ssb.{module}"), func)(run)

    return go


STAGES: list[Stage] = [
    Stage("eval_base", _eval("base", None), ("eval/base",)),
    Stage("rollout", _lazy("rollout", "run_rollout"), ("rollouts.jsonl",)),
    Stage("curate", _lazy("curate", "run_curate"), ("pairs.jsonl",)),
    Stage("logits", _lazy("teacher_logits", "run_logits"), ("teacher",)),
    Stage("distill", _lazy("distill", "run_distill"), ("student", "train_log.jsonl", "checkpoints")),
    Stage("eval_ssb", _eval("ssb", "student"), ("eval/ssb",)),
    Stage("grpo", _lazy("grpo", "run_grpo"), ("grpo", "grpo_log.jsonl", "grpo_checkpoints"), lambda c: c.grpo.enabled),
    Stage("eval_grpo", _eval("grpo", "grpo"), ("eval/grpo",), lambda c: c.grpo.enabled),
    Stage("report", _lazy("report", "write_report"), ()),
]
STAGE_NAMES = [s.name for s in STAGES]
NEEDS_PAIRS = ("logits", "distill", "eval_ssb")
# distributed hook: stages run by the main process alone under `accelerate launch` (the others
# wait); every other stage shards its problems (rollout, eval_*) or trains with DDP (distill,
# grpo). Drop "teacher" from here once teacher.py shards its problems (recipe in distributed.py).
MAIN_ONLY = ("curate", "teacher", "logits", "report")


def _has_pairs(run: Run) -> bool:
    p = run.file("pairs.jsonl")
    return p.exists() and p.stat().st_size > 0


def run_pipeline(cfg: RunConfig, only: list[str] | None = None, skip: list[str] | None = None,
                 force: list[str] | None = None) -> Run:
    for name in (only or []) + (skip or []) + (force or []):
        if name not in STAGE_NAMES:
            raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
    # distributed hook: refuse FSDP / multi-process vLLM before any work; the main process
    # creates the run directory
    planned = {s for s in STAGE_NAMES if (not only or s in only) and s not in (skip or [])}
    if "distill" in planned:
        distributed.check_supported("distillation")
    if planned & {"eval_base", "rollout", "curate", "teacher", "eval_ssb", "eval_grpo"}:
        distributed.check_generation(cfg.generation.backend)
    with distributed.main_process_first():
        run = Run.create(cfg)
    if distributed.is_distributed():
        run.update_manifest(distributed=distributed.info())
    log.info("run directory: %s", run.path)
    t_all = time.time()
    for stage in STAGES:
        # distributed hook: the main process decides (and does --force's deletions); every
        # process follows, except that MAIN_ONLY stages run on the main process alone
        go = distributed.broadcast(_should_run(run, stage, cfg, only, skip, force) if distributed.is_main() else None)
        if go and (distributed.is_main() or stage.name not in MAIN_ONLY):
            _run_stage(run, stage)
    run.update_manifest(total_seconds_last_invocation=round(time.time() - t_all, 1))
    log.info("all stages done in %.1fs; see %s", time.time() - t_all, run.file("report.md"))
    return run


# ----------------------------------------------------------------------------- one stage


def _should_run(run: Run, stage: Stage, cfg: RunConfig, only, skip, force) -> bool:
    """Whether ``stage`` runs now (--only/--skip/enabled, --force resets, pairs, done);
    evaluated by the main process only under ``accelerate launch``."""
    if only and stage.name not in only:
        return False
    if stage.name in (skip or []) or not stage.enabled(cfg):
        log.info("[%s] skipped", stage.name)
        return False
    if stage.name in (force or []):
        for out in stage.outputs:
            p = run.file(out)
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        run.set_stage(stage.name, status="pending")
    # the report is cheap and reflects everything: always rewrite it
    if stage.name in NEEDS_PAIRS and not _has_pairs(run):
        log.warning("[%s] skipped: curation wrote no verified pairs, so there is nothing to distill "
                    "(see the curate funnel in manifest.json; try more problems, a larger K, or "
                    "curate.teacher_retries)", stage.name)
        run.set_stage(stage.name, status="skipped", reason="no verified pairs")
        return False
    if run.stage_done(stage.name) and stage.name != "report":
        log.info("[%s] already done, skipping", stage.name)
        return False
    return True


def _run_stage(run: Run, stage: Stage) -> None:
    log.info("[%s] starting", stage.name)
    t0 = time.time()
    result = stage.run(run)
    if not run.stage_done(stage.name):  # entry points that do not keep their own manifest entry
        run.set_stage(stage.name, status="done", seconds=round(time.time() - t0, 2),
                      **(result if isinstance(result, dict) else {}))
    log.info("[%s] done in %.1fs", stage.name, time.time() - t0)
