"""The on-policy self-distillation baseline: SDFT through TRL's ``SDFTTrainer``, with SSB's hint as the
teacher's privileged context.

    ssb sdft --run runs/NAME        (sdft.enabled: true)

SDFT (Shenfeld et al. 2026, "Self-Distillation Enables Continual Learning") asks the question SSB asks
from the other side: the student samples its own answers to the bare question (on-policy), and learns
the distributions the same model has over those answers when it is shown privileged context. SSB
distils over one solution the hinted teacher wrote (off-policy). So that the comparison is about that
difference, everything else is SSB's:

* the problems: those SSB's teacher is shown (``selections.jsonl``: a problem with a correct and a
  wrong rollout; with ``curate.keep: any_wrong`` also those whose rollouts are all wrong);
* the privileged context: SSB's hint for the problem, exactly as ``teacher.hint`` renders it
  (:meth:`stages.teacher.Candidate.hint`: by default a verified correct rollout of the run, or the
  answer, or a correct and the most common wrong rollout), in SSB's hinted teacher prompt
  (``teacher.template``, ``teacher.examples``): the teacher's conversation is exactly
  :func:`prompts.teacher_messages`, the one SSB's teacher and teacher signal read. TRL's
  ``teacher_prompt_template`` (``{prompt}`` + ``{privileged_context}``) is not used: the column
  ``privileged_context`` holds the whole hinted user message, which already places the question
  where ``teacher.template`` puts it (:func:`hinted_teacher`);
* problems without a verified correct rollout follow SSB: skipped by default (``curate.keep:
  both``), since the privileged context is meant to be the model's own verified work; with
  ``curate.keep: any_wrong`` kept with the gold answer (``teacher.answer_hint``'s wording) where the
  rollout would be, as SSB's teacher shows it. Problems whose K rollouts are all correct are not
  SSB's either (GRPO, beta 0, gets no gradient from them either: a zero-variance group);
* the teacher: the frozen starting model (TRL's ``teacher_model_kind: base``: the adapter disabled);
* the prompt: ``prompts.student_messages`` (system + worked examples + question) through the chat
  template with ``sanitize_control_tokens`` (the ids of ``prompts.render_prompt_ids``);
* the adapter: the ``lora`` section;
* the budget (``sdft.budget``, ``grpo_budget.py``): FLOPs by default. The ``sdft`` arm pays for the
  rollouts and curation its hints come from (the stage table's ``cost_of``) and for this stage:
  the student's sampling (each prompt prefilled once per group + the generated tokens), the frozen
  teacher's forward over hinted prompt + answer of every sample, and the student's forward and
  backward over prompt + answer of every sample (``report/ledger.py``'s rule); training stops once
  that reaches SSB's FLOPs. ``sdft.curve_points`` saves adapters along the part of the budget left
  after the rollouts (``sdft_points/``).

``sdft.generator: ssb`` samples with ssb's hf engine: ``SDFTTrainer`` has no ``rollout_func`` (GRPO's
hook), so :func:`ssb_trainer` replaces its ``_generate`` with ``grpo_rollout.ssb_rollout_func``.

Outputs: ``sdft/`` (adapter + tokenizer), ``sdft_log.jsonl`` (``training.JsonlLogCallback``: TRL's
log per optimizer step plus the token counts, ``flops``, ``seconds``, ``generation_seconds``),
``sdft_checkpoints/`` with ``sdft.save_steps`` (a rerun resumes, its counts and clock from the log),
``sdft_points/``, and the manifest entry.
"""

from __future__ import annotations

import logging
import time
import warnings

from ..errors import SSBError
from ..generation.engine import stop_token_ids
from ..prompts import check_teacher_template
from ..report.ledger import KINDS
from ..rundir import distributed
from ..rundir.jsonl import read_jsonl
from ..rundir.run import Run
from .grpo_budget import Budget, CurvePoints, Spend, params_or_none, progress_bar, stage_budget
from .grpo_rollout import ssb_rollout_func

log = logging.getLogger(__name__)


class SDFTError(SSBError, RuntimeError):
    pass


# ----------------------------------------------------------------------------- problems and prompts


def hinted_problems(run: Run) -> list[dict]:
    """One row per problem SSB's teacher is shown (``selections.jsonl``, with its ``rollouts.jsonl``
    line): ``id``, ``prompt`` (the student's conversation) and ``privileged_context`` (the hinted user
    message of SSB's teacher for it, :meth:`stages.teacher.Candidate.hinted`)."""
    from .teacher import Candidate  # lazy: torch

    path = run.file("selections.jsonl")
    if not path.is_file():
        raise SDFTError(f"{path} not found: run `ssb curate --run {run.path}` first (SDFT's hints are SSB's)")
    tc = run.cfg.teacher
    if tc.template:
        check_teacher_template(tc.template, tc.hint)
    rows = {r["id"]: r for r in read_jsonl(run.file("rollouts.jsonl"))}
    out = []
    for sel in read_jsonl(path):
        if sel["id"] in rows:
            c = Candidate(rows[sel["id"]], sel, run.cfg)
            out.append({"id": c.id, "prompt": c.student, "privileged_context": c.hinted(c.hint()[0])[-1]["content"]})
    return out


def hinted_teacher(base, examples: bool):
    """TRL's ``DemonstrationTeacherContextBuilder`` (``base``) whose teacher conversation is SSB's
    (:func:`prompts.teacher_messages`): the student's earlier turns (only the system prompt without
    ``teacher.examples``), then the ``privileged_context`` as the user message."""

    class HintedTeacher(base):
        def _compose_teacher_prompt(self, prompt, privileged_context):
            turns = list(prompt[:-1]) if examples else list(prompt[:1])
            return [*turns, {"role": "user", "content": self._stringify_privileged_context(privileged_context)}]

    return HintedTeacher


# ----------------------------------------------------------------------------- what a step spends


class Tally:
    """The token kinds (``ledger.KINDS``) this process's generation batches held since it started:
    student prompts (prefilled once per group of ``num_generations``), sampled tokens, the teacher's
    forward (hinted prompt + answer per sample) and the student's trained tokens (prompt + answer per
    sample). Padding is not counted: it is the implementation's, not the method's."""

    def __init__(self):
        self.prompt = self.generated = self.teacher = self.completions = 0

    def add(self, batch: dict) -> None:
        prompt, answer = int(batch["prompt_mask"].sum()), int(batch["completion_mask"].sum())
        self.prompt += prompt
        self.generated += answer
        self.teacher += int(batch["teacher_attention_mask"].sum())
        self.completions += int(batch["completion_mask"].shape[0])

    def counts(self, num_generations: int) -> dict[str, int]:
        """This invocation's counts summed over every process (a distributed collective)."""
        prompt, generated, teacher, comps = distributed.all_sum(self.prompt, self.generated, self.teacher,
                                                                self.completions)
        return {"prefill_tokens": round(prompt / num_generations), "generated_tokens": int(generated),
                "forward_tokens": int(teacher), "trained_tokens": int(prompt + generated),
                "completions": int(comps)}


def ssb_trainer(base, rollout, tally: Tally, timer: dict, extra):
    """``base`` (TRL's ``SDFTTrainer``) that counts what each generation batch spends (``tally``),
    times the sampling (``timer["generation"]``), samples with ``rollout`` (``grpo_rollout``'s
    function; None: TRL's ``generate``) and adds ``extra()`` (counts, FLOPs, seconds) to each training
    log line (the JSONL log and the trackers)."""

    class SSBSDFTTrainer(base):
        def sample_rollouts(self, inputs):
            self._ssb_prompts = [ex["prompt"] for ex in inputs]  # the conversations ssb's engine samples from
            return super().sample_rollouts(inputs)

        def _generate(self, prompt_ids):
            t = time.time()
            try:
                if rollout is None:
                    return super()._generate(prompt_ids)
                out = rollout(self._ssb_prompts, self)
                return out["prompt_ids"], out["completion_ids"]
            finally:
                timer["generation"] += time.time() - t

        def _prepare_training_batch(self, inputs):
            batch = super()._prepare_training_batch(inputs)
            if self.model.training:
                tally.add(batch)
            return batch

        def log(self, logs, start_time=None):
            super().log({**logs, **extra()} if "loss" in logs else logs, start_time)

    return SSBSDFTTrainer


def _callback(tally: Tally, resumed: dict, spend: Spend, budget: Budget, num_generations: int, t0: float,
              curve: CurvePoints, max_steps: int):
    from transformers import TrainerCallback  # lazy: only when training

    class BudgetStop(TrainerCallback):
        """After each optimizer step: what the arm spent, the curve points it crossed, and the stop once
        the budget is spent."""

        def __init__(self):
            self.stopped_by_budget = False
            # of the budget spent so far, the earlier stages' and a resumed run's included (the progress bar reads it)
            self.fraction = budget.fraction(spend, time.time() - t0, 0, max_steps)
            self.completions = 0

        def on_step_end(self, args, state, control, model=None, **kw):
            now = tally.counts(num_generations)
            self.completions = now.pop("completions")
            spend.record({k: int(resumed.get(k) or 0) + now[k] for k in KINDS})
            seconds = distributed.broadcast(time.time() - t0)  # the main process's clock: all stop together
            frac = self.fraction = budget.fraction(spend, seconds, state.global_step, max_steps)
            if budget.points and frac is not None:
                curve.save_due(model, state.global_step, frac, spend, seconds)
            if frac is not None and budget.unit != "steps" and frac >= 1:
                self.stopped_by_budget = True
                control.should_training_stop = True
                control.should_save = True
            return control

    return BudgetStop()


# ----------------------------------------------------------------------------- entry point


def sdft_args(run: Run, num_generations: int, device, dtype, max_steps: int):
    """TRL's ``SDFTConfig`` from the run config (CPU-safe: no vLLM, bf16 only when the model is)."""
    import torch  # lazy: the problem and budget code loads without torch or trl

    from ..training import report_to

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental")  # the TRL version is pinned
        from trl.experimental.sdft import SDFTConfig as TRLSDFTConfig

    cfg = run.cfg
    s = cfg.sdft
    if s.batch_size % num_generations:
        raise SDFTError(f"sdft.batch_size ({s.batch_size}) must be a multiple of num_generations "
                        f"({num_generations}): each step holds whole groups of answers")
    return TRLSDFTConfig(
        output_dir=str(run.file("sdft_checkpoints")),
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        num_generations=num_generations,
        max_completion_length=s.max_completion_length or cfg.generation.max_new_tokens,
        max_prompt_length=None,  # TRL cuts prompts from the left at 512 tokens: a hinted prompt would lose its start
        temperature=s.temperature,
        top_k=cfg.rollout.top_k,
        top_p=cfg.rollout.top_p,
        learning_rate=s.lr,
        lr_scheduler_type=s.lr_scheduler,
        num_train_epochs=s.epochs,
        max_steps=max_steps,
        logging_steps=1,
        save_strategy="steps" if s.save_steps else "no",
        save_steps=s.save_steps or 500,
        report_to=report_to(cfg.tracking),
        run_name=f"{cfg.name}/sdft",
        seed=s.seed,
        bf16=dtype == torch.bfloat16,
        fp16=False,
        use_cpu=device.type == "cpu",
        use_vllm=False,
        activation_checkpointing=s.gradient_checkpointing,
        max_grad_norm=s.max_grad_norm,
        disable_tqdm=False,
        remove_unused_columns=False,
        chat_template_kwargs={"sanitize_control_tokens": True},  # contents as text, as prompts.render_prompt_ids
        teacher_model_kind="base",  # the frozen starting model: the adapter disabled
        distillation_mode=s.distillation_mode,
        distillation_alpha=s.distillation_alpha,
        distillation_topk=s.distillation_topk,
    )


def spent_before(log_path) -> dict:
    """The counts, seconds and generation seconds of the log's last line (cut back to the checkpoint a
    run resumes from, ``training.resume_point``): a resumed run goes on from them."""
    recs = read_jsonl(log_path)
    return dict(recs[-1]) if recs else {}


def make_trainer(run: Run, loaded, rows: list[dict], args, tally: Tally, timer: dict, extra, callbacks: list):
    """The SDFT trainer over ``rows`` (:func:`hinted_problems`), SSB's teacher conversation in place."""
    from datasets import Dataset  # lazy: heavy (pyarrow)
    from trl.experimental.sdft import SDFTTrainer
    from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

    from ..models import lora_config
    from ..training import known_warnings_filtered

    cfg = run.cfg
    rollout = (ssb_rollout_func(cfg, loaded.tokenizer, loaded.name, cfg.sdft, "sdft")
               if cfg.sdft.generator == "ssb" else None)
    with known_warnings_filtered():
        trainer = ssb_trainer(SDFTTrainer, rollout, tally, timer, extra)(
            model=loaded.model, args=args, train_dataset=Dataset.from_list(rows), processing_class=loaded.tokenizer,
            peft_config=lora_config(cfg.lora), callbacks=callbacks)
    trainer.teacher_context_builder = hinted_teacher(DemonstrationTeacherContextBuilder, cfg.teacher.examples)(trainer)
    return trainer


def run_sdft(run: Run) -> dict:
    """Train the SDFT baseline; returns the manifest stats."""
    from ..models import load_model  # lazy: torch, loaded only when training starts (as trl is)
    from ..training import (JsonlLogCallback, known_warnings_filtered, point_trackers, resume_point, save_adapter,
                            show_progress)

    cfg = run.cfg
    with run.stage_run("sdft") as info:
        rows = hinted_problems(run)
        if not rows:
            raise SDFTError("no problem with a hint: curate selected none (see its funnel in manifest.json)")
        num_generations = cfg.sdft.num_generations or cfg.rollout.k
        params = params_or_none(cfg)
        budget = stage_budget(run, params, cfg.sdft, "sdft")
        max_steps = cfg.sdft.max_steps or -1
        log_path = run.file("sdft_log.jsonl")
        # distributed hook: the main process alone tidies checkpoints and the log, all resume from its answer
        resume = distributed.broadcast(resume_point(run.file("sdft_checkpoints"), log_path)
                                       if distributed.is_main() else None)
        before = spent_before(log_path)

        loaded = load_model(cfg.model)
        # stop at end-of-turn exactly like generation/engine.py does for rollouts and eval
        loaded.model.generation_config.eos_token_id = stop_token_ids(loaded.tokenizer, loaded.model)
        param = next(loaded.model.parameters())
        t0 = time.time() - float(before.get("seconds", 0.0))  # a resumed run's clock goes on from its checkpoint
        timer = {"generation": float(before.get("generation_seconds", 0.0))}
        tally, spend = Tally(), Spend(cfg, params, cfg.sdft)
        spend.record({k: int(before.get(k) or 0) for k in KINDS})
        curve = CurvePoints(run.file("sdft_points"), budget)
        cb = _callback(tally, before, spend, budget, num_generations, t0, curve, max_steps)

        def extra() -> dict:
            return {**spend.counts, "flops": spend.flops, "seconds": round(time.time() - t0, 2),
                    "generation_seconds": round(timer["generation"], 2)}

        args = sdft_args(run, num_generations, param.device, param.dtype, max_steps)
        trainer = make_trainer(run, loaded, rows, args, tally, timer, extra, [cb, JsonlLogCallback(log_path)])
        show_progress(trainer, progress_bar(budget, lambda: cb.fraction, "sdft", ("loss", "sdft/distillation_loss")))
        point_trackers(trainer, run, "sdft")
        with known_warnings_filtered():
            result = trainer.train(resume_from_checkpoint=resume)
        out = run.file("sdft")
        save_adapter(trainer.model, loaded.tokenizer, out)
        stopped = budget.stop_reason(cb.stopped_by_budget, trainer.state.global_step, max_steps)
        info.update(
            problems=len(rows),
            hint=cfg.teacher.hint,
            num_generations=num_generations,
            generator=cfg.sdft.generator,
            steps=trainer.state.global_step,
            completions=cb.completions,
            **spend.counts,
            flops=spend.flops,
            **budget.manifest(),
            budget_spent_before=budget.before,
            stopped_by=stopped,
            train_seconds=round(time.time() - t0, 2),
            generation_seconds=round(timer["generation"], 2),
            curve_points=len(curve.points),
            train_loss=float(result.training_loss) if result.training_loss is not None else None,
            resumed_from=resume,
            adapter=str(out),
        )
        log.info("SDFT: %d steps on %d problems, %.3g FLOPs (budget %s %s), stopped by %s",
                 info["steps"], len(rows), spend.flops, budget.amount, budget.unit, stopped)
    return info
