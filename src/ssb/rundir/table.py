"""The stage table: every stage of ``ssb run``, in order, with its facts in one place.

Each stage is a module of ``ssb.stages`` whose entry function takes a ``Run`` (the run
directory, ``rundir/run.py``): ``module.entry(run)``, or for an eval stage
``module.entry(run, label, adapter=...)``. The CLI (``ssb NAME --run DIR`` and its help), the
orchestrator (``pipeline.py``: order, ``--force``, main-process-only, the draw loop), GRPO's
seconds budget, the report and the tests read the facts here instead of keeping lists of their
own. The run directory's layout is here too: what each output holds (``Stage.about``), the files
no stage owns (:data:`RUN_FILES`), and the tree README.md shows (:func:`run_tree`, printed by
``python -m ssb.rundir.table``). Nothing here imports more than the standard library, so anything
may read the table (``ssb --help`` included) without loading pydantic or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One stage of ``ssb run``.

    ``outputs`` are the run-relative files and directories the stage writes: ``ssb run
    --force NAME`` removes exactly these before rerunning it (no path is owned by two stages).
    ``main_process_only``: under ``accelerate launch`` the main process runs it while the others
    wait (every other stage shards its problems or trains with DDP; ``rundir/distributed.py``).
    ``about``: what each output holds, one line per entry of ``outputs`` (README.md's run-directory
    tree, :func:`run_tree`; descriptive only, ``--force`` reads ``outputs``).
    ``cost_of``: the arms whose compute includes this stage (``report/ledger.py``; SSB's, ``"ssb"``, is
    what GRPO's seconds and FLOPs budgets and the report's compute table sum: ``counts_toward_ssb_cost``);
    ``trains``: the stage makes an arm's model (an arm exists in a run once it has).
    ``drawn``: with ``data.draw_chunk`` the drawn stages
    run together, chunk by chunk, until ``teacher.max_pairs`` pairs exist. ``needs_pairs``:
    skipped, with the reason, when curation wrote no verified pair. ``generates``: loads a
    generation backend (multi-process vLLM is refused before any work). ``enabled_by``: a boolean
    config field (``grpo.enabled``) or property (``rounds.enabled``: ``rounds.n > 1``) that turns the
    stage off; ``off_when``: the setting that does, as the report shows it (default
    ``<enabled_by>: false``; a property's names the fields it reads). Eval stages have a ``label``
    (``eval/<label>``) and the run's ``adapter`` directory they evaluate (None: the base model).
    """

    name: str
    module: str  # the module that runs it, e.g. "ssb.stages.rollout"
    entry: str  # its entry function
    help: str  # one line: `ssb --help`, `ssb NAME --help`
    outputs: tuple[str, ...]
    about: tuple[str, ...] = ()  # one line per output
    main_process_only: bool = False
    cost_of: tuple[str, ...] = ()
    trains: bool = False
    drawn: bool = False
    needs_pairs: bool = False
    generates: bool = False
    enabled_by: str | None = None
    off_when: str | None = None  # default: "<enabled_by>: false"
    label: str | None = None  # eval stages
    adapter: str | None = None  # eval stages

    def __post_init__(self) -> None:
        if len(self.about) != len(self.outputs):
            raise ValueError(f"stage {self.name}: {len(self.outputs)} outputs but "
                             f"{len(self.about)} lines of about")

    @property
    def counts_toward_ssb_cost(self) -> bool:
        return "ssb" in self.cost_of

    @property
    def off_setting(self) -> str | None:
        """The config setting that turns the stage off (``grpo.enabled: false``, ``rounds.n: 1``)."""
        if self.enabled_by is None:
            return None
        return self.off_when or f"{self.enabled_by}: false"

    @property
    def is_eval(self) -> bool:
        return self.label is not None

    def enabled(self, cfg: Any) -> bool:
        """Whether ``cfg`` (a ``RunConfig``) turns this stage on (``enabled_by``)."""
        if self.enabled_by is None:
            return True
        value = cfg
        for part in self.enabled_by.split("."):
            value = getattr(value, part)
        return bool(value)


def _eval(label: str, adapter: str | None, what: str, **kw: Any) -> Stage:
    """An eval stage: its outputs are ``eval/<label>``; the pinned held-out problem set
    ``eval/holdout.problems.jsonl`` is shared by every label, so no stage owns it (``--force``
    keeps it: :data:`RUN_FILES`)."""
    return Stage(f"eval_{label}", "ssb.stages.evaluate", "run_eval",
                 help=f"evaluate {what} on eval.benches into eval/{label}", outputs=(f"eval/{label}",),
                 about=("<bench>.jsonl (one record per problem), summary.json",), generates=True, label=label,
                 adapter=adapter, **kw)


# the cross-entropy baselines' (sft, rft) outputs: distill's four, named after the stage
_BASELINE_ABOUT = ("the baseline's adapter + model card", "its training log",
                   "its checkpoints, with distill.save_steps", "an adapter per epoch, with distill.save_every_epoch")


STAGES: tuple[Stage, ...] = (
    _eval("base", None, "the base model"),
    Stage("rollout", "ssb.stages.rollout", "run_rollout",
          help="stage 1: K sampled answers per training problem, graded",
          outputs=("rollouts.jsonl",), about=("K graded completions per training problem",),
          cost_of=("ssb", "sft", "rft", "sdft"), drawn=True, generates=True),
    Stage("curate", "ssb.stages.curate", "run_curate",
          help="stage 2: pick a correct and the most common wrong trace per problem",
          outputs=("selections.jsonl",), about=("the correct and the most common wrong rollout per kept problem",),
          main_process_only=True, cost_of=("ssb", "sft", "sdft"), drawn=True),
    # main_process_only: drop it once teacher.py shards its problems (recipe in rundir/distributed.py)
    Stage("teacher", "ssb.stages.teacher", "run_teacher",
          help="stage 3: the hinted teacher's solution per problem, vetted by the quality gates",
          outputs=("pairs.jsonl", "teacher_rejects.jsonl"),
          about=("one verified teacher solution per problem, with both prompts",
                 "problems no reply passed, each rejected reply with its gate and reason"),
          main_process_only=True, cost_of=("ssb", "sft"),
          drawn=True, generates=True),
    Stage("logits", "ssb.stages.logits", "run_logits",
          help="stage 4: teacher signal over the solution tokens (hidden-state or top-k store)",
          outputs=("teacher",), about=("the teacher signal: safetensors shards + index.json",),
          main_process_only=True, cost_of=("ssb",), needs_pairs=True),
    Stage("distill", "ssb.stages.distill", "run_distill",
          help="stage 5: LoRA student matches the teacher's distributions (KL at temperature T)",
          outputs=("student", "train_log.jsonl", "checkpoints", "student_epochs"),
          about=("the SSB student: LoRA adapter (PEFT) + model card (README.md)",
                 "its training log, one line per logging step",
                 "Trainer checkpoints with distill.save_steps (a rerun resumes)",
                 "an adapter per epoch, epoch-<k>/ + points.json, with distill.save_every_epoch"),
          cost_of=("ssb",), trains=True, needs_pairs=True),
    _eval("ssb", "student", "the SSB student (student/)", needs_pairs=True),
    # its compute is the ledger's ssb@<r> arms (ledger.round_arms): each round a run directory of its own
    Stage("rounds", "ssb.stages.rounds", "run_rounds",
          help="rounds 2..rounds.n: the last round's student, merged, is the next round's model (rollout to distill)",
          outputs=("rounds",), about=("r<r>/ for rounds 2..rounds.n (a run directory each), validation/, rounds.json",),
          main_process_only=True, needs_pairs=True, generates=True, enabled_by="rounds.enabled",
          off_when="rounds.n: 1"),
    Stage("sft", "ssb.stages.sft", "run_sft",
          help="baseline: cross-entropy on the teacher's verified solutions under the student prompt",
          outputs=("sft", "sft_log.jsonl", "sft_checkpoints", "sft_epochs"), about=_BASELINE_ABOUT,
          cost_of=("sft",), trains=True,
          needs_pairs=True, enabled_by="baselines.sft"),
    _eval("sft", "sft", "the SFT baseline (sft/)", needs_pairs=True, enabled_by="baselines.sft"),
    Stage("rft", "ssb.stages.sft", "run_rft",
          help="baseline: cross-entropy on the model's own verified correct rollouts (no teacher)",
          outputs=("rft", "rft_log.jsonl", "rft_checkpoints", "rft_epochs"), about=_BASELINE_ABOUT,
          cost_of=("rft",), trains=True,
          enabled_by="baselines.rft"),
    _eval("rft", "rft", "the RFT baseline (rft/)", enabled_by="baselines.rft"),
    Stage("grpo", "ssb.stages.grpo", "run_grpo",
          help="baseline: GRPO (TRL) on the same problems with a correctness reward",
          outputs=("grpo", "grpo_log.jsonl", "grpo_checkpoints", "grpo_points"),
          about=("the GRPO baseline's adapter + model card", "its training log: reward, tokens, FLOPs per step",
                 "its checkpoints, with grpo.save_steps",
                 "adapters at grpo.curve_points points of its budget, p<i>/ + points.json"),
          cost_of=("grpo",), trains=True,
          enabled_by="grpo.enabled"),
    _eval("grpo", "grpo", "the GRPO baseline (grpo/)", enabled_by="grpo.enabled"),
    # its hints are SSB's (selections.jsonl): it pays for the rollouts and curation too (cost_of above)
    Stage("sdft", "ssb.stages.sdft", "run_sdft",
          help="baseline: on-policy self-distillation (TRL's SDFT), the frozen model shown SSB's hint as teacher",
          outputs=("sdft", "sdft_log.jsonl", "sdft_checkpoints", "sdft_points"),
          about=("the SDFT baseline's adapter + model card",
                 "its training log: distillation loss, tokens, FLOPs per step",
                 "its checkpoints, with sdft.save_steps",
                 "adapters at sdft.curve_points points of its budget, p<i>/ + points.json"),
          cost_of=("sdft",), trains=True, needs_pairs=True, enabled_by="sdft.enabled"),
    _eval("sdft", "sdft", "the SDFT baseline (sdft/)", needs_pairs=True, enabled_by="sdft.enabled"),
    Stage("report", "ssb.stages.report", "write_report",
          help="report.md + plots for a run",
          outputs=("report.md", "plots"),
          about=("funnel, gates, training curves, compute, accuracy table with intervals", "the report's PNG plots"),
          main_process_only=True),
)


def stage_names(**where: Any) -> tuple[str, ...]:
    """Names of the stages, in order, whose fields equal ``where``:
    ``stage_names(counts_toward_ssb_cost=True)``; every stage without arguments."""
    return tuple(s.name for s in STAGES if all(getattr(s, k) == v for k, v in where.items()))


def get_stage(name: str) -> Stage:
    """The stage called ``name``; ``KeyError`` naming the stages otherwise."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(stage_names())}")


# What a run directory holds that no stage owns (``--force`` never removes these): run-relative path,
# what it holds.
RUN_FILES: tuple[tuple[str, str], ...] = (
    ("config.yaml", "the resolved config, exactly what ran"),
    ("manifest.json", "per stage: status, counts, timings, library versions, model fingerprint"),
    (".lock", "while a command owns the run directory: its pid, host, command"),
    ("tensorboard", "with tracking.report_to: tensorboard, event files per training stage"),
    ("eval/holdout.problems.jsonl",
     "the pinned held-out problems every model is scored on (+ .config.json, .info.json)"),
    ("eval/compare.json", "paired differences between the evaluated models (written by report)"),
    ("signal.json", "what the teacher signal carries per reply token (written by ssb signal)"),
)


def _pattern(stage: Stage) -> tuple[str, ...]:
    """The stage's outputs with its label (an eval stage) or name as a placeholder: ``eval/<label>``,
    ``<name>_log.jsonl``."""
    key, placeholder = (stage.label, "<label>") if stage.is_eval else (stage.name, "<name>")
    return tuple(out.replace(key, placeholder, 1) for out in stage.outputs)


def run_tree(root: str = "runs/default") -> str:
    """The run directory as README.md shows it: :data:`RUN_FILES`, then each stage's outputs in
    order, each line ``path  stage: about`` (a path without a suffix is a directory and ends in
    ``/``). Stages of one module whose outputs differ only by their name or label and say the same
    ``about`` (the eval stages; sft and rft) share lines (``eval/<label>/``) where the first of them
    stands."""
    groups: dict[tuple, list[Stage]] = {}
    for s in STAGES:
        groups.setdefault((s.module, _pattern(s), s.about), []).append(s)
    rows = list(RUN_FILES)
    for (_, outputs, about), members in groups.items():
        names = ", ".join(m.name for m in members)
        shown = outputs if len(members) > 1 else members[0].outputs
        rows += [(out, f"{names}: {line}") for out, line in zip(shown, about)]
    paths = [p if "." in p.rpartition("/")[2] else p + "/" for p, _ in rows]
    width = max(map(len, paths)) + 2
    lines = [f"  {p:<{width}}{about}" for p, (_, about) in zip(paths, rows)]
    return "\n".join([root.rstrip("/") + "/", *lines]) + "\n"


if __name__ == "__main__":
    print(run_tree(), end="")
