"""The config sections of what trains a model, and how training is tracked: the LoRA adapter every arm
shares, SSB's distillation, the fine-tuning baselines (SFT, RFT), GRPO, SDFT, and the trackers.
:class:`config.RunConfig` holds one of each; the sections of what runs before training (data, prompt,
generation, rollout, curation, teacher, teacher signal), evaluation, rounds and tuning are in
``config.py``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .config_fields import Section


# Trainer settings that distill and grpo each have: their own values, one description.
MaxGradNorm = Annotated[float, Field(ge=0, description="gradients are clipped to this norm (0: no clipping)")]
GradientCheckpointing = Annotated[bool, Field(description="recompute activations in the backward pass: less "
                                              "memory, more time")]
SaveSteps = Annotated[int | None, Field(ge=1, description="a checkpoint every this many optimizer steps, which a rerun "
                                        "resumes from; None: no checkpoints")]


class LoRAConfig(Section):
    """The LoRA adapter of every trained model (SSB's student and each baseline): one adapter for all."""

    r: int = Field(32, ge=1, description="rank of the low-rank update")
    alpha: int = Field(32, gt=0, description="scale: the update is multiplied by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="the base model's linear layers that get an adapter",
    )


class DistillConfig(Section):
    """SSB's student training (the LoRA adapter itself: ``lora``)."""

    epochs: float = Field(3, gt=0, description="passes over the pairs (a fraction stops mid-way)")
    batch_size: int = Field(4, ge=1, description="pairs per device step")
    grad_accum: int = Field(1, ge=1, description="device steps per optimizer step")
    lr: float = Field(2e-4, gt=0, description="peak learning rate of the student's adapter (the sft/rft "
                      "baselines' too)")
    lr_scheduler: str = Field("linear", description="a transformers scheduler: linear, cosine, constant, ...")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the optimizer steps that warm the lr up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's weight decay")
    max_grad_norm: MaxGradNorm = 1.0
    temperature: float = Field(2.0, gt=0, description="T of the teacher and student distributions the KL compares "
                               "(the loss is scaled by T²)")
    kd_weight: float = Field(1.0, ge=0, description="weight of the divergence term (distill.divergence; the "
                             "paper's forward KL(teacher || student) by default)")
    ce_weight: float = Field(0.0, ge=0, description="weight of cross-entropy on the teacher's reply tokens")
    reverse_kl_weight: float = Field(0.0, ge=0, description="weight of a reverse KL(student || teacher) added "
                                     "beside the divergence term (not with divergence=reverse_kl: that is kd_weight's)")
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl", description="the term kd_weight weighs, T²-scaled, between the teacher's (p) and the student's "
        "(q) distributions at temperature: forward_kl KL(p || q) (the paper); reverse_kl KL(q || p) (mode-seeking); "
        "jsd the generalized Jensen-Shannon divergence of TRL's generalized_jsd_loss at jsd_beta. With a topk store "
        "each compares the top-k ids plus one tail bucket")
    jsd_beta: float = Field(0.5, ge=0, le=1, description="divergence=jsd: beta of beta·KL(p || m) + (1-beta)·KL(q || m), "
                            "m = beta·p + (1-beta)·q (TRL's convention: 0 is the forward KL, 1 the reverse KL)")
    token_weighting: Literal["uniform", "hint_gain"] = Field(
        "uniform", description="uniform: every answer token weighs 1 (the paper); hint_gain: each token's loss "
        "terms weighted by min(softplus(g), token_weight_max), normalised to mean 1 over each device batch, g = "
        "log p_teacher - log p_base of the solution token at T=1 (what the hint adds there): tokens the base "
        "already predicts weigh less, softplus keeps every weight positive and the mean of 1 the loss's scale. "
        "p_base comes from one forward of the frozen base over the student sequences when distill starts "
        "(counted as distill's forward_tokens); the teacher signal is unchanged")
    token_weight_max: float = Field(4.0, gt=0, description="token_weighting=hint_gain: cap of softplus(g) before the "
                                    "normalisation, so that a few tokens (the answer's digits can gain 10 nats) do "
                                    "not carry a batch")
    max_length: int = Field(8192, ge=1, description="longest teacher or student sequence in tokens (longer: left out)")
    chunk_size: int | None = Field(None, ge=1, description="answer positions per chunk of the vocabulary projection; "
                                   "None: 2^25 / vocab (682 rows at 49k, 220 at 152k: ~128 MiB per logits tensor)")
    gradient_checkpointing: GradientCheckpointing = False
    save_every_epoch: bool = Field(False, description="also save the adapter after each epoch into "
                                   "<adapter>_epochs/epoch-<k> (ssb compare's curves; the sft/rft baselines too)")
    logging_steps: int = Field(1, ge=1, description="optimizer steps per train_log.jsonl line")
    save_steps: SaveSteps = None
    seed: int = Field(0, description="seeds the student's training (adapter init, data order; the sft/rft baselines "
                      "too); unset: the top-level seed")

    @model_validator(mode="after")
    def _one_reading_of_the_loss(self) -> DistillConfig:
        """Refuse loss settings that contradict each other rather than silently ignore one."""
        if self.divergence != "forward_kl" and not self.kd_weight:
            raise ValueError(f"distill.divergence={self.divergence} is the term distill.kd_weight weighs, and "
                             "kd_weight is 0: set kd_weight > 0 or leave divergence at forward_kl")
        if self.divergence == "reverse_kl" and self.reverse_kl_weight:
            raise ValueError("distill.divergence=reverse_kl already makes kd_weight's term the reverse KL; "
                             "set distill.reverse_kl_weight=0 (or divergence=forward_kl to add a reverse KL)")
        return self


class GRPOConfig(Section):
    """The GRPO baseline: same problems, prompt and LoRA adapter as SSB, a correctness reward, held to SSB's compute."""

    enabled: bool = Field(True, description="train the GRPO baseline (the grpo stage and its eval)")
    num_generations: int | None = Field(None, ge=2, description="completions per problem that form a group; "
                                        "None: rollout.k")
    lr: float = Field(2e-5, gt=0, description="peak learning rate of GRPO's adapter")
    problems: Literal["all", "mixed"] = Field("all", description="what GRPO trains on: all: every problem the run "
                                              "rolled out; mixed: only those curation kept (a correct and a wrong "
                                              "rollout), whose groups are likely to differ in reward, the field's "
                                              "remedy for zero-advantage groups; GRPO then also pays for the "
                                              "rollouts and curation in its FLOPs")
    lr_scheduler: str = Field("constant", description="a transformers scheduler; with a tokens or seconds budget "
                              "the stopping step is unknown, so a decaying one decays over epochs/max_steps instead")
    epochs: float = Field(1, gt=0, description="passes over the training problems: how long GRPO trains with "
                          "budget=none, a cap otherwise")
    batch_size: int = Field(8, ge=1, description="completions per device step (multiple of num_generations)")
    grad_accum: int = Field(1, ge=1, description="device steps per optimizer step")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps")
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
    temperature: float = Field(0.8, gt=0, description="sampling temperature of GRPO's completions")
    beta: float = Field(0.0, ge=0, description="weight of the KL to the base model (0: no reference model)")
    max_completion_length: int | None = Field(None, ge=1, description="longest completion in tokens; None: "
                                              "generation.max_new_tokens")
    max_grad_norm: MaxGradNorm = 1.0
    gradient_checkpointing: GradientCheckpointing = False
    save_steps: SaveSteps = None
    seed: int = Field(0, description="seeds GRPO's training and sampling; unset: the top-level seed")


class SDFTConfig(Section):
    """The on-policy self-distillation baseline (``stages/sdft.py``, TRL's ``SDFTTrainer``): the student
    samples its own answers to the bare question and learns the frozen starting model's distributions over
    them under SSB's hinted teacher prompt. Same problems as SSB's teacher (``selections.jsonl``), prompt and
    LoRA adapter; held to SSB's compute like GRPO."""

    enabled: bool = Field(False, description="train the SDFT baseline (the sdft stage and its eval)")
    num_generations: int | None = Field(None, ge=1, description="answers the student samples per problem and "
                                        "step; None: rollout.k")
    lr: float = Field(2e-4, gt=0, description="peak learning rate of SDFT's adapter (the code default is "
                      "distill.lr's)")
    lr_scheduler: str = Field("constant", description="a transformers scheduler; with a budget the stopping step "
                              "is unknown, so a decaying one decays over epochs/max_steps instead")
    epochs: float = Field(3, gt=0, description="passes over the problems: how long SDFT trains with budget=none, "
                          "a cap otherwise")
    batch_size: int = Field(8, ge=1, description="sampled answers per device step (a multiple of num_generations)")
    grad_accum: int = Field(1, ge=1, description="device steps per optimizer step")
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps")
    budget: Literal["flops", "tokens", "seconds", "steps", "none"] = Field(
        "flops",
        description="as grpo.budget, for the sdft arm (report/ledger.py: the rollouts and curation its hints come "
        "from plus its own sampling, teacher forwards and training): flops (the default) stops it once the arm "
        "spent as many FLOPs as SSB; tokens: as many generated tokens as SSB's rollouts+teacher; seconds: as long "
        "as SSB's stages ran; steps: sdft.max_steps; none: sdft.epochs",
    )
    curve_points: int = Field(0, ge=0, description="adapters saved at this many evenly spaced points of the "
                              "budget's part left after the rollouts (sdft_points/)")
    generator: Literal["trl", "ssb"] = Field("trl", description="who samples the student's answers: TRL's "
                                             "generate, or ssb's hf engine (SDFTTrainer has no rollout_func: "
                                             "stages/sdft.py replaces its _generate)")
    temperature: float = Field(0.8, gt=0, description="sampling temperature of the student's answers; TRL "
                               "also divides both models' logits by it in the loss")
    max_completion_length: int | None = Field(None, ge=1, description="longest sampled answer in tokens; None: "
                                              "generation.max_new_tokens")
    distillation_mode: Literal["topk_logits", "full_logits", "sampled_token"] = Field(
        "topk_logits", description="TRL's distillation_mode: the divergence over the student's top-k tokens "
        "(distillation_topk), the full vocabulary, or the sampled token only (reverse KL; needs "
        "distillation_alpha=1)")
    distillation_alpha: float = Field(0.5, ge=0, le=1, description="TRL's distillation_alpha: 0 forward "
                                      "KL(teacher || student), 1 reverse KL(student || teacher), between: the "
                                      "generalized Jensen-Shannon divergence")
    distillation_topk: int = Field(100, ge=1, description="TRL's distillation_topk: tokens of topk_logits")
    max_grad_norm: MaxGradNorm = 1.0
    gradient_checkpointing: GradientCheckpointing = False
    save_steps: SaveSteps = None
    seed: int = Field(0, description="seeds SDFT's training and sampling; unset: the top-level seed")

    @model_validator(mode="after")
    def _sampled_token_is_reverse_kl(self) -> SDFTConfig:
        if self.distillation_mode == "sampled_token" and self.distillation_alpha != 1:
            raise ValueError("sdft.distillation_mode=sampled_token is the reverse KL only: set "
                             "sdft.distillation_alpha=1")
        return self


class BaselinesConfig(Section):
    """Fine-tuning baselines trained beside SSB (``stages/sft.py``): same problems, prompt, LoRA and
    ``distill`` training settings; only the loss and the data differ."""

    sft: bool = Field(False, description="cross-entropy on the teacher's verified solutions (SSB's pairs, hard labels)")
    rft: bool = Field(False, description="cross-entropy on the model's own verified correct rollouts, no teacher "
                      "(rejection-sampling fine-tuning, one round)")
    rft_per_problem: int = Field(1, ge=1, description="distinct correct rollouts per problem that RFT trains on")
    sft_lr: float | None = Field(None, gt=0, description="peak learning rate of the sft baseline; None: distill.lr "
                                 "(ssb compare --tune sets it)")
    rft_lr: float | None = Field(None, gt=0, description="peak learning rate of the rft baseline; None: distill.lr "
                                 "(ssb compare --tune sets it)")


class TrackingConfig(Section):
    """Experiment trackers of every training stage (distill, sft, rft, grpo); the JSONL train logs are written always."""

    report_to: str = Field("none", description="transformers' report_to, comma-separated: none, tensorboard, wandb "
                           "(WANDB_MODE=offline: no account), mlflow, ...")
    logging_dir: str | None = Field(None, description="tensorboard: event files in <logging_dir>/<stage>; "
                                    "None: <run dir>/tensorboard")
