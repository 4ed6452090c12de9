"""``ssb eval``: what its arguments name, turned into :func:`ssb.stages.evaluate.evaluate` calls.

``--model`` is a run directory (base + every adapter of the run, then a paired table), an
adapter directory (inside a run or standalone, its base from ``--base``, the run or the
adapter's own config), or a model id/path. ``--bench``/``--data``/``--n``/... override the
config's ``eval`` section.

Kept apart from ``cli.py``, which imports no stage module at the top so that ``ssb --help``
stays fast; ``cli.cmd_eval`` imports this module when ``ssb eval`` runs.
"""

from __future__ import annotations

import difflib
import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .config import EvalConfig, ModelConfig, RunConfig, load_config
from .data.heldout import HOLDOUT_ALIASES, EvalError, bench_name, training_questions
from .report.paired import load_results, load_summaries, paired_table, print_tables
from .rundir.run import Run
from .rundir.table import STAGES
from .stages.evaluate import evaluate

log = logging.getLogger(__name__)

LOCAL_ROOT = RunConfig.model_fields["runs_dir"].default  # "runs": a model under it is a run's, never a Hub id


def _eval_cfg_from_args(base: EvalConfig, args) -> EvalConfig:
    upd: dict[str, Any] = {}
    if getattr(args, "data", None):
        upd["benches"] = []  # --data replaces --bench
    elif getattr(args, "bench", None):  # None: the config's eval.benches
        upd["benches"] = [b.strip() for b in args.bench.split(",") if b.strip()]
    for field in ("limit", "n", "temperature", "max_new_tokens"):
        if getattr(args, field, None) is not None:
            upd[field] = getattr(args, field)
    if upd.get("n", base.n) > 1 and "temperature" not in upd and base.temperature <= 0:
        upd["temperature"] = 0.7  # sampled pass@k needs a temperature; say so in the summary
        log.warning("--n > 1 without --temperature: sampling at T=0.7")
    return base.model_copy(update=upd)


def looks_local(name: str) -> bool:
    """Whether a model name can only be a local path: it starts with ``.``, ``~`` or ``/``, holds a
    backslash, ends in ``.gguf``, has more than one ``/``, or its first part is a local directory or
    ``runs`` (the runs directory of every shipped config: ``runs/nope``). A Hub id is ``org/name``."""
    if name.startswith((".", "~", "/")) or "\\" in name or name.endswith(".gguf"):
        return True
    parts = name.split("/")
    return len(parts) > 2 or (len(parts) == 2 and (parts[0] == LOCAL_ROOT or Path(parts[0]).is_dir()))


def check_local(flag: str, name: str) -> None:
    """Refuse a ``--model`` / ``--base`` that names a local path that is not there, before anything
    is written or downloaded, naming the path and its closest neighbours."""
    path = Path(name).expanduser()
    if not looks_local(name) or path.exists():
        return
    parent = path.parent if path.parent.is_dir() else None
    near = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=3) if parent else []
    hint = f"; did you mean {', '.join(str(parent / n) for n in near)}?" if near else ""
    raise EvalError(f"{flag} {name}: no such local file or directory: {path.resolve()}{hint} (a run directory "
                    "holds config.yaml, an adapter directory adapter_config.json; a Hugging Face id is org/name)")


def _model_source(model: str, base: str | None) -> tuple[ModelConfig | None, Path | None, Run | None]:
    """``(model config, adapter dir, run)`` for ``--model``: a run dir, an adapter dir
    (inside a run or standalone), or a model id/path (a missing local path: :func:`check_local`)."""
    check_local("--model", model)
    if base:
        check_local("--base", base)
    path = Path(model)
    if (path / "config.yaml").exists() and (path / "manifest.json").exists():
        return None, None, Run.open(path)
    if (path / "adapter_config.json").exists():
        run = Run.open(path.parent) if (path.parent / "config.yaml").exists() else None
        if base:
            return ModelConfig(name_or_path=base), path, None
        if run is not None:
            return run.cfg.model, path, run
        meta = json.loads((path / "adapter_config.json").read_text())
        if not meta.get("base_model_name_or_path"):
            raise EvalError(f"{path}: adapter does not name its base model; pass --base")
        return ModelConfig(name_or_path=meta["base_model_name_or_path"]), path, None
    return ModelConfig(name_or_path=model), None, None


def evaluate_cli(args) -> dict:
    """``ssb eval``: evaluate a model, an adapter, or every model of a run; print the tables."""
    model_cfg, adapter, run = _model_source(args.model, getattr(args, "base", None))
    cfg = run.cfg if run is not None else (load_config(args.config) if getattr(args, "config", None) else RunConfig())
    eval_cfg = _eval_cfg_from_args(cfg.eval, args)
    gen_cfg = cfg.generation
    if getattr(args, "backend", None):
        gen_cfg = gen_cfg.model_copy(update={"backend": args.backend})
    exclude = training_questions(run) if run is not None and any(
        b in HOLDOUT_ALIASES for b in eval_cfg.benches) else set()

    jobs: list[tuple[str, ModelConfig, Path | None, Path]] = []
    evals = [(s.label, s.adapter) for s in STAGES if s.is_eval]  # the run's eval stages (the stage table)
    if model_cfg is None:  # a whole run: base + each adapter it has
        for label, sub in evals:
            if sub is None or (run.file(sub) / "adapter_config.json").exists():
                jobs.append((label, run.cfg.model, run.file(sub) if sub else None, run.file(f"eval/{label}")))
    else:
        label = adapter.name if adapter is not None else Path(model_cfg.name_or_path).name
        if run is not None and adapter is not None:
            label = {sub: lab for lab, sub in evals if sub}.get(adapter.name, adapter.name)
        out = Path(args.out) if getattr(args, "out", None) else (
            run.file(f"eval/{label}") if run is not None else Path("eval") / bench_name(label))
        jobs.append((label, model_cfg, adapter, out))

    # summaries are keyed by output directory (the paired table pairs directories); each
    # carries the model's label (run/adapter label or model name), which the tables show
    summaries = {}
    # writing into a run's eval/: own its directory (rundir/lock.py); --out elsewhere only reads the run
    owns = run is not None and any(Path(o).resolve().is_relative_to(run.path.resolve()) for *_, o in jobs)
    with run.locked() if owns else nullcontext():
        for label, mcfg, adp, out in jobs:
            summaries[Path(out).name] = evaluate(mcfg, adp, eval_cfg.benches, cfg.prompt, gen_cfg, eval_cfg, out,
                                                 data_file=getattr(args, "data", None), exclude=exclude,
                                                 label=label)
    # the tables show this invocation's evaluations, and when it wrote into a run's eval/ the run's
    # other models too (the same run, the same held-out problems); never whatever else sits beside --out
    out_dirs = {Path(o).parent for *_, o in jobs}
    pairs = []
    if len(out_dirs) == 1:  # every label lives side by side: compare them on shared problems
        eval_dir = out_dirs.pop()
        shown = None if owns and eval_dir.resolve() == run.file("eval").resolve() else set(summaries)
        summaries = {**load_summaries(eval_dir, shown), **summaries}
        pairs = paired_table(load_results(eval_dir, shown), seed=eval_cfg.seed)
    print_tables(summaries, pairs)
    return {"summaries": summaries, "paired": pairs}
