"""The stage table: every stage of ``ssb run``, in order, with its facts in one place.

Each stage is a module of this package whose entry function takes a ``Run`` (the run
directory, ``rundir.py``): ``module.entry(run)``, or for an eval stage
``module.entry(run, label, adapter=...)``. The CLI (``ssb NAME --run DIR`` and its help), the
orchestrator (``pipeline.py``: order, ``--force``, main-process-only, the draw loop), GRPO's
seconds budget, the report and the tests read the facts here instead of keeping lists of their
own. Nothing here imports more than the standard library, so anything may read the table
(``ssb --help`` included) without loading pydantic or torch.
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
    wait (every other stage shards its problems or trains with DDP; ``distributed.py``).
    ``cost_of``: the arms whose compute includes this stage (``ledger.py``; SSB's, ``"ssb"``, is what
    GRPO's seconds and FLOPs budgets and the report's compute table sum: ``counts_toward_ssb_cost``);
    ``trains``: the stage makes an arm's model (an arm exists in a run once it has).
    ``drawn``: with ``data.draw_chunk`` the drawn stages
    run together, chunk by chunk, until ``teacher.max_pairs`` pairs exist. ``needs_pairs``:
    skipped, with the reason, when curation wrote no verified pair. ``generates``: loads a
    generation backend (multi-process vLLM is refused before any work). ``enabled_by``: a boolean
    config field (``grpo.enabled``) that turns the stage off. Eval stages have a ``label``
    (``eval/<label>``) and the run's ``adapter`` directory they evaluate (None: the base model).
    """

    name: str
    module: str  # the module that runs it, e.g. "ssb.stages.rollout"
    entry: str  # its entry function
    help: str  # one line: `ssb --help`, `ssb NAME --help`
    outputs: tuple[str, ...]
    main_process_only: bool = False
    cost_of: tuple[str, ...] = ()
    trains: bool = False
    drawn: bool = False
    needs_pairs: bool = False
    generates: bool = False
    enabled_by: str | None = None
    label: str | None = None  # eval stages
    adapter: str | None = None  # eval stages

    @property
    def counts_toward_ssb_cost(self) -> bool:
        return "ssb" in self.cost_of

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
    keeps it)."""
    return Stage(f"eval_{label}", "ssb.stages.evaluate", "run_eval",
                 help=f"evaluate {what} on eval.benches into eval/{label}", outputs=(f"eval/{label}",),
                 generates=True, label=label, adapter=adapter, **kw)


STAGES: tuple[Stage, ...] = (
    _eval("base", None, "the base model"),
    Stage("rollout", "ssb.stages.rollout", "run_rollout",
          help="stage 1: K sampled answers per training problem, graded",
          outputs=("rollouts.jsonl",), cost_of=("ssb", "sft", "rft"), drawn=True, generates=True),
    Stage("curate", "ssb.stages.curate", "run_curate",
          help="stage 2: pick a correct and the most common wrong trace per problem",
          outputs=("selections.jsonl",), main_process_only=True, cost_of=("ssb", "sft"), drawn=True),
    # main_process_only: drop it once teacher.py shards its problems (recipe in distributed.py)
    Stage("teacher", "ssb.stages.teacher", "run_teacher",
          help="stage 3: the hinted teacher's solution per problem, vetted by the quality gates",
          outputs=("pairs.jsonl", "teacher_rejects.jsonl"), main_process_only=True, cost_of=("ssb", "sft"),
          drawn=True, generates=True),
    Stage("logits", "ssb.stages.logits", "run_logits",
          help="stage 4: teacher signal over the solution tokens (hidden-state or top-k store)",
          outputs=("teacher",), main_process_only=True, cost_of=("ssb",), needs_pairs=True),
    Stage("distill", "ssb.stages.distill", "run_distill",
          help="stage 5: LoRA student matches the teacher's distributions (KL at temperature T)",
          outputs=("student", "train_log.jsonl", "checkpoints", "student_epochs"), cost_of=("ssb",), trains=True,
          needs_pairs=True),
    _eval("ssb", "student", "the SSB student (student/)", needs_pairs=True),
    # its compute is the ledger's ssb@<r> arms (ledger.round_arms): each round a run directory of its own
    Stage("rounds", "ssb.stages.rounds", "run_rounds",
          help="rounds 2..rounds.n: the last round's student, merged, is the next round's model (rollout to distill)",
          outputs=("rounds",), main_process_only=True, needs_pairs=True, generates=True, enabled_by="rounds.enabled"),
    Stage("sft", "ssb.stages.sft", "run_sft",
          help="baseline: cross-entropy on the teacher's verified solutions under the student prompt",
          outputs=("sft", "sft_log.jsonl", "sft_checkpoints", "sft_epochs"), cost_of=("sft",), trains=True,
          needs_pairs=True, enabled_by="baselines.sft"),
    _eval("sft", "sft", "the SFT baseline (sft/)", needs_pairs=True, enabled_by="baselines.sft"),
    Stage("rft", "ssb.stages.sft", "run_rft",
          help="baseline: cross-entropy on the model's own verified correct rollouts (no teacher)",
          outputs=("rft", "rft_log.jsonl", "rft_checkpoints", "rft_epochs"), cost_of=("rft",), trains=True,
          enabled_by="baselines.rft"),
    _eval("rft", "rft", "the RFT baseline (rft/)", enabled_by="baselines.rft"),
    Stage("grpo", "ssb.stages.grpo", "run_grpo",
          help="baseline: GRPO (TRL) on the same problems with a correctness reward",
          outputs=("grpo", "grpo_log.jsonl", "grpo_checkpoints", "grpo_points"), cost_of=("grpo",), trains=True,
          enabled_by="grpo.enabled"),
    _eval("grpo", "grpo", "the GRPO baseline (grpo/)", enabled_by="grpo.enabled"),
    Stage("report", "ssb.stages.report", "write_report",
          help="report.md + plots for a run",
          outputs=("report.md", "plots"), main_process_only=True),
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
