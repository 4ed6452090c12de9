"""`ssb run CONFIG`: every stage in order into one run directory.

Stages already marked done in ``manifest.json`` are skipped; a partial stage resumes
from its own append-only outputs. Ctrl-C leaves the run resumable: rerun the same
command to go on. ``--force STAGE`` removes exactly the files the stage's module declares
in its ``OUTPUTS`` constant (an eval stage: ``eval/<label>``) and reruns it.

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
from .curate import run_curate
from .data import load_problems
from .errors import SSBError
from .evaluate import run_eval
from .rundir import Run

log = logging.getLogger("ssb")


class PipelineError(SSBError, ValueError):
    """A bad ``ssb run`` request (e.g. an unknown stage name)."""


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
            return run_eval(run, self.label, adapter=run.file(self.adapter) if self.adapter else None)
        return getattr(importlib.import_module(f"ssb.{self.module}"), self.func)(run)

    def outputs(self) -> tuple[str, ...]:
        """Run-relative paths this stage writes; ``--force`` removes exactly these."""
        mod = importlib.import_module(f"ssb.{self.module}")
        if self.label is not None:
            return tuple(mod.outputs(self.label))
        return tuple(mod.OUTPUTS)


STAGES: list[Stage] = [
    Stage("eval_base", "evaluate", label="base"),
    Stage("rollout", "rollout", "run_rollout"),
    Stage("curate", "curate", "run_curate"),
    Stage("teacher", "teacher", "run_teacher"),
    Stage("logits", "teacher_logits", "run_logits"),
    Stage("distill", "distill", "run_distill"),
    Stage("eval_ssb", "evaluate", label="ssb", adapter="student"),
    Stage("grpo", "grpo", "run_grpo", lambda c: c.grpo.enabled),
    Stage("eval_grpo", "evaluate", label="grpo", adapter="grpo", enabled=lambda c: c.grpo.enabled),
    Stage("report", "report", "write_report"),
]
STAGE_NAMES = [s.name for s in STAGES]
# What SSB spends to train its student (GRPO's seconds budget and the report's compute table).
SSB_STAGES = ("rollout", "curate", "teacher", "logits", "distill")
NEEDS_PAIRS = ("logits", "distill", "eval_ssb")
# distributed hook: stages run by the main process alone under `accelerate launch` (the others
# wait); every other stage shards its problems (rollout, eval_*) or trains with DDP (distill,
# grpo). Drop "teacher" from here once teacher.py shards its problems (recipe in distributed.py).
MAIN_ONLY = ("curate", "teacher", "logits", "report")


DRAWN_STAGES = ("rollout", "curate", "teacher")


def draw_until_pairs(run: Run) -> dict:
    """``data.draw_chunk``: rollout, curate and teacher on a growing prefix of the training
    problems, a chunk at a time, until ``teacher.max_pairs`` pairs exist or the problems run
    out (rolling out all 7,473 GSM8K problems for 256 pairs wastes most of the compute).
    Each stage resumes as usual, so a killed draw goes on where it stopped."""
    # lazy: these import torch; the pipeline stays importable without it (cli, report and grpo
    # import it, and every other stage is imported by name when it runs)
    from .generate import load_generator
    from .rollout import run_rollout
    from .teacher import run_teacher

    cfg = run.cfg
    problems = load_problems(cfg.data)
    chunk, cap = max(1, cfg.data.draw_chunk or len(problems)), cfg.teacher.max_pairs
    generator, loaded, end, pairs = None, None, 0, 0
    while end < len(problems) and (cap is None or pairs < cap):
        end = min(len(problems), end + chunk)
        if generator is None:
            generator, loaded = load_generator(run)
        log.info("[draw] problems 1-%d of %d", end, len(problems))
        run_rollout(run, loaded=loaded, generator=generator, problems=problems[:end])
        run_curate(run)
        pairs = run_teacher(run, loaded=loaded, generator=generator)["pairs_written"]
    # each chunk re-enters the stages: their seconds_total is what they cost over all chunks
    info = {"problems_drawn": end, "problems_available": len(problems), "draw_chunk": chunk, "pairs": pairs}
    run.update_manifest(draw=info)
    return info


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
        if cfg.data.draw_chunk:
            raise PipelineError("data.draw_chunk is not supported under accelerate launch yet: roll out "
                                "with one process, or set data.limit and leave data.draw_chunk unset")
        run.update_manifest(distributed=distributed.info())
    log.info("run directory: %s", run.path)
    t_all = time.time()
    drawn = False
    for stage in STAGES:
        if cfg.data.draw_chunk and stage.name in DRAWN_STAGES:  # the three run together, chunk by chunk
            if stage.name in (force or []):
                remove_outputs(run, stage)
                run.set_stage(stage.name, status="pending")
            finished = run.manifest().get("draw") and all(run.stage_done(s) for s in DRAWN_STAGES)
            if not drawn and not finished and (not only or stage.name in only):
                log.info("[%s] drawing problems in chunks of %d until %s pairs", "+".join(DRAWN_STAGES),
                         cfg.data.draw_chunk, cfg.teacher.max_pairs)
                draw_until_pairs(run)
            drawn = True
            continue
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
        removed = remove_outputs(run, stage)
        log.info("[%s] --force: removed %s", stage.name, ", ".join(removed) or "nothing (no outputs yet)")
        run.set_stage(stage.name, status="pending")
    # the report is cheap and reflects everything: always rewrite it
    if stage.name in NEEDS_PAIRS and not _has_pairs(run):
        log.warning("[%s] skipped: curation wrote no verified pairs, so there is nothing to distill "
                    "(see the curate funnel in manifest.json; try more problems, a larger K, or "
                    "teacher.retries, or teacher.solution=rollout)", stage.name)
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
