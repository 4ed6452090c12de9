"""The Python API: what ``ssb run`` and ``ssb compare`` do, as functions (``docs/api.md``).

    import ssb

    cfg = ssb.load_config("configs/default.yaml", ["data.limit=32"])
    run = ssb.run(cfg, only=["rollout", "curate", "teacher"])
    print(len(run.pairs()), run.manifest()["stages"]["teacher"]["status"])
    ssb.Run.open(run.path).evaluations()   # {label: eval/<label>/summary.json}

``ssb/__init__.py`` exposes these names lazily (``import ssb`` loads neither pydantic nor torch).
"""

from __future__ import annotations

from pathlib import Path

from .comparison import defaults
from .config import RunConfig, load_config, override_config
from .rundir.run import Run

__all__ = ["Run", "compare", "load_config", "run"]


def run(config: RunConfig | str | Path, only: list[str] | None = None, skip: list[str] | None = None,
        force: list[str] | None = None, overrides: list[str] | None = None, name: str | None = None) -> Run:
    """Run the pipeline (``ssb run``) and return the :class:`Run`. ``config``: a ``RunConfig`` or a
    YAML path; ``overrides``: ``section.field=value`` strings (``--set``); ``only`` / ``skip`` /
    ``force``: stage names as for ``ssb run``; ``name``: the run's name (``--name``). Stages already
    done are skipped, and an interrupted run resumes, as on the command line."""
    from .pipeline import run_pipeline  # lazy: the orchestrator imports the stage table and data loading

    if isinstance(config, RunConfig):
        cfg = override_config(config, overrides) if overrides else config  # a ConfigError, seeds as in a file
    else:
        cfg = load_config(config, overrides)
    if name:
        cfg = cfg.model_copy(update={"name": name})
    source = {} if isinstance(config, RunConfig) else {
        "config_file": config, "overrides": list(overrides or []) + ([f"name={name}"] if name else [])}
    return run_pipeline(cfg, only=only, skip=skip, force=force, **source)


def compare(config: str | Path, arms: str | list[str] = defaults.ARMS, replicates: int = defaults.REPLICATES,
            n: int = defaults.N, seed: int = defaults.SEED, out: str | Path | None = None,
            overrides: list[str] | None = None, tune: bool = False, **options) -> dict:
    """``ssb compare``: the arms on shared rollouts (``arms.Compare(...).run()``); returns the document
    it writes to ``results.json``. ``options`` are ``arms.Compare``'s others: ``grpo_points``, ``curves``,
    ``k_max`` (0: no K-sensitivity pass), ``k_values``. Every default is the command's
    (``comparison/defaults.py``: 3 replicates, 400 held-out problems, ``k_max=10, k_values=(2, 10)``, ...).
    ``base`` is always an arm. ``tune``: ``--tune`` (``tune.enabled``: every trainable arm's learning rate
    searched on a validation draw first). Hours on a CPU with the default config (``docs/compare.md``)."""
    from .comparison.arms import Compare  # lazy: it imports the orchestrator
    from .comparison.spec import parse_arms

    spec = arms if isinstance(arms, str) else ",".join(arms)
    return Compare(str(config), parse_arms(spec), replicates, n, seed, Path(out) if out else None,
                   list(overrides or []) + (["tune.enabled=true"] if tune else []), **options).run()
