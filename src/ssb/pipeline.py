"""`ssb run CONFIG`: every stage in order into one run directory (the orchestrator; only the
CLI, ``ssb compare`` (``comparison/arms.py``) and the Python API (``api.py``) import it).

The stages and their facts (order, entry points, outputs, which run on the main process
alone, which are drawn in chunks, which need pairs) are the table in ``rundir/table.py``.
Stages already marked done in ``manifest.json`` are skipped; a partial stage resumes
from its own append-only outputs. Ctrl-C leaves the run resumable: rerun the same
command to go on. The run directory is locked for the whole run (``rundir/lock.py``): a second
``ssb run`` or stage command on it stops with the holder's name. ``--force STAGE`` removes
exactly the stage's ``outputs`` in the table (an eval stage: ``eval/<label>``) and reruns it.

Under ``accelerate launch`` every process runs this loop: the main process decides what
each stage does (and alone writes the manifest and the report), every process follows;
generation stages shard their problems, training stages use DDP, and the stages marked
``main_process_only`` run on the main process while the others wait (``rundir/distributed.py``).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
from pathlib import Path

from .config import RunConfig
from .data.load import load_problems
from .errors import SSBError
from .rundir import distributed
from .rundir.run import Run, locked
from .rundir.table import STAGES, Stage, stage_names
from .stages.curate import run_curate

log = logging.getLogger("ssb")


class PipelineError(SSBError, ValueError):
    """A bad ``ssb run`` request (e.g. an unknown stage name)."""


def call_stage(run: Run, stage: Stage):
    """Run one stage's entry point on ``run`` (an eval stage: into ``eval/<label>``, of the
    run's ``adapter`` directory or the base model) and return what it returns."""
    entry = getattr(importlib.import_module(stage.module), stage.entry)
    if stage.is_eval:
        return entry(run, stage.label, adapter=run.file(stage.adapter) if stage.adapter else None)
    return entry(run)


def draw_until_pairs(run: Run) -> dict:
    """``data.draw_chunk``: rollout, curate and teacher on a growing prefix of the training
    problems, a chunk at a time, until ``teacher.max_pairs`` pairs exist or the problems run
    out (rolling out all 7,473 GSM8K problems for 256 pairs wastes most of the compute).
    Each stage resumes as usual, so a killed draw goes on where it stopped."""
    # lazy: these import torch; the pipeline stays importable without it (the CLI imports it,
    # and every other stage is imported by name when it runs)
    from .generation.factory import load_generator
    from .stages.rollout import run_rollout
    from .stages.teacher import run_teacher

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
    """Delete the ``outputs`` the table declares for ``stage`` (files or directories); returns
    what was removed."""
    removed = []
    for out in stage.outputs:
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
                 force: list[str] | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | None = None) -> Run:
    """Every stage of the table into ``cfg``'s run directory (see the module); ``only``: these stages and
    no other (an empty list: none; None: every stage). ``config_file`` and
    ``overrides``: the YAML file and ``--set`` values ``cfg`` was read from, when it was; recorded in
    ``manifest.json`` (``config_file``, absolute, and ``overrides``) for the report's ``ssb compare`` command."""
    names = stage_names()
    for name in (only or []) + (skip or []) + (force or []):
        if name not in names:
            raise PipelineError(f"unknown stage {name!r}; stages are: {', '.join(names)}")
    # distributed hook: refuse FSDP / multi-process vLLM before any work; the main process
    # creates the run directory
    planned = [s for s in STAGES if (only is None or s.name in only) and s.name not in (skip or [])]
    if any(s.name == "distill" for s in planned):
        distributed.check_supported("distillation")
    if any(s.generates or s.drawn for s in planned):  # drawn: run with rollout + teacher under draw_chunk
        distributed.check_generation(cfg.generation.backend)
    # one process owns the run directory (rundir/lock.py; under a launch: the main process for all)
    with locked(cfg.run_dir):
        with distributed.main_process_first():
            run = Run.create(cfg)
            if config_file is not None:
                run.update_manifest(config_file=str(Path(config_file).resolve()), overrides=list(overrides or []))
        _run_stages(run, cfg, only, skip, force)
    return run


def _run_stages(run: Run, cfg: RunConfig, only, skip, force) -> None:
    """Every stage of the table in order into ``run`` (see :func:`run_pipeline`)."""
    if distributed.is_distributed():
        if cfg.data.draw_chunk:
            raise PipelineError("data.draw_chunk is not supported under accelerate launch yet: roll out "
                                "with one process, or set data.limit and leave data.draw_chunk unset")
        if cfg.rounds.n > 1:
            raise PipelineError("rounds (rounds.n > 1) are not supported under accelerate launch yet: run them "
                                "in one process")
        run.update_manifest(distributed=distributed.info())
    log.info("run directory: %s", run.path)
    t_all = time.time()
    drawn, drawn_stages = False, stage_names(drawn=True)
    for stage in STAGES:
        if cfg.data.draw_chunk and stage.drawn:  # the drawn stages run together, chunk by chunk
            if stage.name in (force or []):
                remove_outputs(run, stage)
                run.set_stage(stage.name, status="pending")
            finished = run.manifest().get("draw") and all(run.stage_done(s) for s in drawn_stages)
            if not drawn and not finished and (only is None or stage.name in only):
                log.info("[%s] drawing problems in chunks of %d until %s pairs", "+".join(drawn_stages),
                         cfg.data.draw_chunk, cfg.teacher.max_pairs)
                draw_until_pairs(run)
            drawn = True
            continue
        # distributed hook: the main process decides (and does --force's deletions); every
        # process follows, except that main_process_only stages run on the main process alone
        go = distributed.broadcast(_should_run(run, stage, cfg, only, skip, force) if distributed.is_main() else None)
        if go and (distributed.is_main() or not stage.main_process_only):
            _run_stage(run, stage)
    run.update_manifest(total_seconds_last_invocation=round(time.time() - t_all, 1))
    log.info("all stages done in %.1fs; see %s", time.time() - t_all, run.file("report.md"))


# ----------------------------------------------------------------------------- one stage


def _should_run(run: Run, stage: Stage, cfg: RunConfig, only, skip, force) -> bool:
    """Whether ``stage`` runs now (--only/--skip/enabled, --force resets, pairs, done);
    evaluated by the main process only under ``accelerate launch``."""
    if only is not None and stage.name not in only:
        return False
    if stage.name in (skip or []) or not stage.enabled(cfg):
        log.info("[%s] skipped", stage.name)
        return False
    trained = stage.name[len("eval_"):] if stage.name.startswith("eval_") else None
    if trained in (skip or []) and not run.stage_done(trained):
        log.info("[%s] skipped: %s was skipped and has not run", stage.name, trained)
        return False
    if stage.name in (force or []):
        removed = remove_outputs(run, stage)
        log.info("[%s] --force: removed %s", stage.name, ", ".join(removed) or "nothing (no outputs yet)")
        run.set_stage(stage.name, status="pending")
    # the report is cheap and reflects everything: always rewrite it
    if stage.needs_pairs and not _has_pairs(run):
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
    result = call_stage(run, stage)
    if not run.stage_done(stage.name):  # entry points that do not keep their own manifest entry
        run.set_stage(stage.name, status="done", seconds=round(time.time() - t0, 2),
                      **(result if isinstance(result, dict) else {}))
    log.info("[%s] done in %.1fs", stage.name, time.time() - t0)
