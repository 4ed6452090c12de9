"""What one run can and cannot show, and the replicated result of its config when the checkout has one.

A run is one replicate: one draw of training problems, one seed per stage. Its intervals and p-values
carry the sampling error of the held-out problems only, not how far another draw of training problems
or another seed moves each model, so one run cannot rank methods; ``ssb compare`` can (every arm on
shared rollouts, replicated, pooled). :func:`one_run_lines` says so in ``report.md`` and in each model
card, with the ``ssb compare`` command of the run's own config (``manifest.json``'s ``config_file``
and ``overrides``, which ``ssb run`` records; the run's ``config.yaml`` where they are unknown) and,
when a source checkout holds a committed comparison of that config file (``bench/results/tasks.json``:
each task's ``config``, ``results`` file and pooled differences), those differences, read from the file.

Standard library only: ``ssb compare --help`` reads :func:`recorded_cost` without loading pydantic.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ..rundir.table import STAGES

if TYPE_CHECKING:  # the run directory imports the config (pydantic)
    from ..rundir.run import Run

TASKS_FILE = Path("bench") / "results" / "tasks.json"
DEFAULT_CONFIG = "configs/default.yaml"
DIFFERENCES = (("ssb_base", "SSB − base"), ("ssb_grpo", "SSB − GRPO"), ("ssb_sft", "SSB − SFT"),
               ("ssb_rft", "SSB − RFT"))


def compare_arms() -> str:
    """``ssb compare``'s default arms: the base model and the arm of every stage that trains one
    (the stage table; ``tests/test_report.py`` holds it equal to ``comparison/defaults.py``'s)."""
    return ",".join(["base", *(s.cost_of[0] for s in STAGES if s.trains)])


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it, else as it is."""
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def compare_command(run: Run) -> str:
    """``ssb compare`` of the run's config file and ``--set`` values (its ``config.yaml`` when unknown)."""
    m = run.manifest()
    if m.get("config_file"):
        config, sets = _shown(Path(m["config_file"])), m.get("overrides") or []
    else:
        config, sets = _shown(run.file("config.yaml").resolve()), []
    return f"ssb compare {shlex.quote(config)} --arms {compare_arms()}" + "".join(
        f" --set {shlex.quote(s)}" for s in sets)


def tasks_file(*starts: Path) -> Path | None:
    """``bench/results/tasks.json`` of the checkout that holds one of ``starts`` (or their parents)."""
    for start in starts:
        for d in (start, *start.parents):
            if (d / TASKS_FILE).is_file():
                return d / TASKS_FILE
    return None


def replicated(config_file: str | Path) -> dict | None:
    """The entry of ``bench/results/tasks.json`` whose ``config`` is ``config_file`` (and ``root``: the
    checkout), or None: no checkout, or no committed comparison of that file."""
    config = Path(config_file).resolve()
    found = tasks_file(config.parent, Path.cwd())
    if found is None:
        return None
    root = found.parents[2]
    for task in json.loads(found.read_text(encoding="utf-8")).get("tasks", []):
        if task.get("config") and (root / task["config"]).resolve() == config:
            return {**task, "root": root}
    return None


def _difference(d: dict) -> str:
    lo, hi = d["ci"]
    return f"{100 * d['value']:+.1f} pt [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def replicated_lines(task: dict, overrides: list[str]) -> list[str]:
    """The committed comparison of the run's config file, in a sentence, every figure read from it."""
    diffs = "; ".join(f"{name} {_difference(task[key])}" for key, name in DIFFERENCES if task.get(key))
    doc = "docs/compare.md" if task["results"].endswith("compare.json") else "docs/tasks.md"
    changed = (" This run also set " + ", ".join(f"`{o}`" for o in overrides) + ", so it is not exactly that "
               "config.") if overrides else ""
    return [f"The committed comparison of `{task['config']}` (`{task['results']}`: {len(task['replicates'])} "
            f"replicates, {task['n_problems']} held-out problems, pooled, 95% intervals): {diffs}. Where these and "
            f"this run's differences disagree, go by these ({doc}).{changed}", ""]


def one_run_lines(run: Run, heading: str = "###") -> list[str]:
    """What one run can show, the ``ssb compare`` command that shows more, and the committed
    comparison of the run's config file when there is one (Markdown lines)."""
    m = run.manifest()
    lines = [f"{heading} One run is one replicate", "",
             "These results are **one replicate**: one draw of training problems and one seed per stage. Their "
             "intervals and p-values carry the sampling error of the held-out problems only, not how far another "
             "draw of training problems or another seed moves each model, so one run cannot tell which method "
             "is better. Differences between methods need `ssb compare`, which trains every arm on shared "
             "rollouts over several replicates and pools them (hours on a CPU at the default config's size):",
             "", "```", compare_command(run), "```", ""]
    task = replicated(m["config_file"]) if m.get("config_file") else None
    return lines + (replicated_lines(task, m.get("overrides") or []) if task else [])


def recorded_cost(config: str = DEFAULT_CONFIG) -> str | None:
    """How long the committed comparison of ``config`` (a path of the checkout) took, as a phrase read
    from its results file (``timing``, ``provenance.machine``); None outside a checkout or without one."""
    task = replicated(Path(__file__).resolve().parents[3] / config)
    if task is None:
        return None
    doc = json.loads((task["root"] / task["results"]).read_text(encoding="utf-8"))
    seconds = (doc.get("timing") or {}).get("total_seconds")
    cpus = ((doc.get("provenance") or {}).get("machine") or {}).get("cpus")
    if not seconds:
        return None
    on = f" on {cpus} CPU cores" if cpus else ""
    return f"{task['results']}: the comparison of {config} took {seconds / 3600:.1f} h{on}"
