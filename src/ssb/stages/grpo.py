"""The RLVR baseline: GRPO through TRL's ``GRPOTrainer`` on SSB's own training problems.

    ssb grpo --run runs/NAME

What is held equal to SSB, so the comparison is about the method:

* the problems: those SSB drew rollouts from (``rollouts.jsonl``), else ``cfg.data``;
* the prompt: ``prompts.student_messages`` as a conversational prompt, which TRL renders
  with ``sanitize_control_tokens=True`` (``chat_template_kwargs``) so that the ids are those
  of ``prompts.render_prompt_ids``: a question's control-token text stays text;
* the adapter: the ``lora`` section, the one the SSB student gets (:func:`models.lora_config`);
* the group size: ``num_generations = cfg.grpo.num_generations or cfg.rollout.k``;
* the reward: 1.0 when ``grading.grade`` says correct, else 0.0 — nothing else;
* the budget (``cfg.grpo.budget = "tokens"``): training stops once GRPO has generated as
  many completion tokens as SSB's rollouts + hinted teacher did (manifest stages
  ``rollout.generated_tokens`` + ``teacher.teacher_tokens``); without those counts it
  falls back to ``grpo.max_steps`` / ``grpo.epochs``. ``budget = "seconds"`` instead stops
  once GRPO has trained as long as SSB's stages took (those the stage table marks
  ``counts_toward_ssb_cost``: rollout, curate, teacher, logits, distill); note that
  wall-clock rewards whichever implementation is faster, not the method (TRL generates one
  group at a time). Tokens and seconds are recorded whichever budget is used.
* resumes count: SSB's stages report ``seconds_total`` over every invocation
  (:meth:`Run.stage_seconds`), and a resumed GRPO continues its clock and token count from
  its last checkpoint (its log's last kept line).

Outputs: ``grpo/`` (PEFT adapter + tokenizer), ``grpo_log.jsonl`` (one line per optimizer
step: reward, completion length, loss, kl, grad norm, lr, cumulative generated tokens)
and the manifest entry (generated tokens, budget, steps, wall-clock, why it stopped).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .. import distributed
from ..data.load import load_problems
from ..data.problem import Problem
from ..errors import SSBError
from ..generation.engine import stop_token_ids
from ..grading.grade import grade
from ..jsonl import JsonlWriter, read_jsonl
from ..prompts import student_messages
from ..rundir import Run
from . import stage_names

log = logging.getLogger(__name__)

LOG_FIELDS = {  # grpo_log.jsonl name <- TRL log key
    "loss": "loss",
    "reward": "reward",
    "reward_std": "reward_std",
    "completion_length": "completions/mean_length",
    "clipped_ratio": "completions/clipped_ratio",
    "kl": "kl",
    "entropy": "entropy",
    "grad_norm": "grad_norm",
    "lr": "learning_rate",
    "frac_reward_zero_std": "frac_reward_zero_std",
}


class GRPOError(SSBError, RuntimeError):
    pass


# ----------------------------------------------------------------------------- problems and budget


def training_problems(run: Run) -> list:
    """The problems SSB drew rollouts from (``rollouts.jsonl``), else ``load_problems(cfg.data)``."""
    recs = read_jsonl(run.file("rollouts.jsonl"))
    if recs:
        return [Problem.from_dict(r["problem"]) for r in recs]
    return load_problems(run.cfg.data)


def token_budget(run: Run) -> tuple[int | None, str]:
    """Completion tokens SSB generated (rollouts + hinted teacher) and where that came from."""
    if run.cfg.grpo.budget != "tokens":
        return None, f"budget={run.cfg.grpo.budget}"
    rollout = run.stage("rollout").get("generated_tokens")
    teacher = run.stage("teacher").get("teacher_tokens")
    if rollout is None and teacher is None:
        return None, "no token counts in the manifest (rollout/teacher not run): max_steps/epochs"
    return int(rollout or 0) + int(teacher or 0), "manifest: rollout.generated_tokens + teacher.teacher_tokens"


def build_dataset(problems: list, prompt_cfg):
    """A ``datasets.Dataset`` with conversational ``prompt`` and the problem as JSON."""
    from datasets import Dataset  # lazy: heavy (pyarrow), like trl and torch below only when training

    rows = [{"prompt": student_messages(prompt_cfg, p.question), "problem_json": json.dumps(p.to_dict())}
            for p in problems]
    return Dataset.from_list(rows)


# ----------------------------------------------------------------------------- reward and callbacks


class CorrectnessReward:
    """TRL reward function: 1.0 if ``grading.grade`` marks the completion correct, else 0.0.
    Also counts the completion tokens GRPO generated (for the token budget)."""

    def __init__(self, generated_tokens: int = 0):
        self.generated_tokens = generated_tokens
        self.completions = 0
        self.__name__ = "correctness"
        self._cache: dict[str, object] = {}

    def _problem(self, problem_json: str):
        if problem_json not in self._cache:
            self._cache[problem_json] = Problem.from_dict(json.loads(problem_json))
        return self._cache[problem_json]

    def __call__(self, prompts, completions, problem_json, completion_ids=None, **_):
        if completion_ids is not None:
            self.generated_tokens += sum(len(ids) for ids in completion_ids)
        self.completions += len(completions)
        rewards = []
        for comp, pj in zip(completions, problem_json):
            text = comp[-1]["content"] if isinstance(comp, list) else str(comp)
            rewards.append(1.0 if grade(self._problem(pj), text).correct else 0.0)
        return rewards




def seconds_budget(run: Run) -> tuple[float | None, str]:
    """Wall-clock SSB spent on its stages (those the stage table marks
    ``counts_toward_ssb_cost``), every invocation of each counted."""
    if run.cfg.grpo.budget != "seconds":
        return None, f"budget={run.cfg.grpo.budget}"
    ssb_stages = stage_names(counts_toward_ssb_cost=True)
    secs = [run.stage_seconds(s) for s in ssb_stages]
    if not any(secs):
        return None, "no stage timings in the manifest (SSB stages not run): max_steps/epochs"
    return float(sum(x or 0 for x in secs)), "manifest: seconds_total of " + " + ".join(ssb_stages)


def _callbacks(reward: CorrectnessReward, budget: int | None, log_path: Path, t0: float,
               budget_seconds: float | None = None):
    from transformers import TrainerCallback  # lazy: ~1.4 s, only when training

    class BudgetAndLog(TrainerCallback):
        """Stops training once the token budget is spent; writes one log line per step."""

        def __init__(self):
            self.writer = JsonlWriter(log_path) if distributed.is_main() else None  # distributed hook
            self.stopped_by_budget = False
            self.resumed_tokens = self.tokens = reward.generated_tokens

        def on_step_end(self, args, state, control, **kw):
            over_time = budget_seconds is not None and time.time() - t0 >= budget_seconds
            # distributed hook: tokens of every process; the main process's clock, so all stop together
            (new,) = distributed.all_sum(reward.generated_tokens - self.resumed_tokens)
            self.tokens = self.resumed_tokens + new
            over_time = distributed.broadcast(over_time)
            if over_time or (budget is not None and self.tokens >= budget):
                self.stopped_by_budget = True
                control.should_training_stop = True
                control.should_save = True
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "train_runtime" in logs or not any(k in logs for k in ("loss", "reward")):
                return
            rec = {"step": state.global_step}
            for name, key in LOG_FIELDS.items():
                if logs.get(key) is not None:
                    rec[name] = float(logs[key])
            rec["generated_tokens"] = self.tokens
            rec["seconds"] = round(time.time() - t0, 2)
            if self.writer is not None:
                self.writer.write(rec)

        def on_train_end(self, args, state, control, **kw):
            if self.writer is not None:
                self.writer.close()

    return BudgetAndLog()


# ----------------------------------------------------------------------------- resume


def _resume_point(ckpt_dir: Path, log_path: Path) -> tuple[str | None, int, float]:
    """Last checkpoint (or None), the generated tokens and training seconds logged up to it;
    log lines after the checkpoint are dropped so the log matches the resumed state."""
    from transformers.trainer_utils import get_last_checkpoint  # lazy: ~1.4 s, only when training

    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    recs = read_jsonl(log_path)
    if last is None:
        if log_path.exists() and distributed.is_main():  # distributed hook: one writer
            log_path.unlink()
        return None, 0, 0.0
    step = int(Path(last).name.split("-")[-1])
    keep = [r for r in recs if r.get("step", 0) <= step]
    if distributed.is_main():  # distributed hook: one writer
        log_path.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    if not keep:
        return last, 0, 0.0
    return last, int(keep[-1]["generated_tokens"]), float(keep[-1].get("seconds", 0.0))


# ----------------------------------------------------------------------------- entry point


def grpo_args(run: Run, num_generations: int, device, dtype, max_steps: int):
    """TRL ``GRPOConfig`` from the run config (CPU-safe: no vLLM, bf16 only when the model is)."""
    import torch  # lazy: the budget and reward code (and its tests) load without torch or trl
    from trl import GRPOConfig as TRLGRPOConfig

    cfg = run.cfg
    g = cfg.grpo
    if g.batch_size % num_generations:
        raise GRPOError(f"grpo.batch_size ({g.batch_size}) must be a multiple of num_generations "
                        f"({num_generations}): each step holds whole groups of completions")
    return TRLGRPOConfig(
        output_dir=str(run.file("grpo_checkpoints")),
        per_device_train_batch_size=g.batch_size,
        gradient_accumulation_steps=g.grad_accum,
        num_generations=num_generations,
        max_completion_length=g.max_completion_length or cfg.generation.max_new_tokens,
        temperature=g.temperature,
        top_k=cfg.rollout.top_k,
        top_p=cfg.rollout.top_p,
        beta=g.beta,
        learning_rate=g.lr,
        lr_scheduler_type=g.lr_scheduler,
        num_train_epochs=g.epochs,
        max_steps=max_steps,
        logging_steps=1,
        save_strategy="steps" if g.save_steps else "no",
        save_steps=g.save_steps or 500,
        report_to="none",
        seed=g.seed,
        bf16=dtype == torch.bfloat16,
        fp16=False,
        use_cpu=device.type == "cpu",
        use_vllm=False,
        gradient_checkpointing=g.gradient_checkpointing,
        max_grad_norm=g.max_grad_norm,
        log_completions=False,
        disable_tqdm=False,
        # TRL renders the conversational prompts itself: encode their contents as text, exactly
        # as prompts.render_prompt_ids does for rollouts and eval
        chat_template_kwargs={"sanitize_control_tokens": True},
    )


def run_grpo(run: Run) -> dict:
    """Train the GRPO baseline; returns the manifest stats."""
    from trl import GRPOTrainer  # lazy: see grpo_args

    from ..models import load_model, lora_config  # lazy: torch, loaded only when training starts (as trl is)

    cfg = run.cfg
    with run.stage_run("grpo") as info:
        problems = training_problems(run)
        if not problems:
            raise GRPOError("no training problems (rollouts.jsonl empty and cfg.data loads nothing)")
        num_generations = cfg.grpo.num_generations or cfg.rollout.k
        if num_generations < 2:
            raise GRPOError(f"GRPO needs num_generations >= 2 (group baseline), got {num_generations}")
        budget, budget_source = token_budget(run)
        budget_seconds, seconds_source = seconds_budget(run)
        if cfg.grpo.budget == "seconds":
            budget_source = seconds_source
        max_steps = cfg.grpo.max_steps if cfg.grpo.max_steps else -1
        log_path = run.file("grpo_log.jsonl")
        with distributed.main_process_first():  # distributed hook: others read the log once it is trimmed
            resume, tokens_so_far, seconds_so_far = _resume_point(run.file("grpo_checkpoints"), log_path)

        loaded = load_model(cfg.model)
        # stop at end-of-turn exactly like generation/engine.py does for rollouts and eval
        loaded.model.generation_config.eos_token_id = stop_token_ids(loaded.tokenizer, loaded.model)
        param = next(loaded.model.parameters())
        args = grpo_args(run, num_generations, param.device, param.dtype, max_steps)
        reward = CorrectnessReward(tokens_so_far)
        t0 = time.time() - seconds_so_far  # a resumed run's clock goes on from its checkpoint
        cb = _callbacks(reward, budget, log_path, t0, budget_seconds)
        trainer = GRPOTrainer(
            model=loaded.model,
            reward_funcs=[reward],
            args=args,
            train_dataset=build_dataset(problems, cfg.prompt),
            processing_class=loaded.tokenizer,
            peft_config=lora_config(cfg.lora),
            callbacks=[cb],
        )
        result = trainer.train(resume_from_checkpoint=resume)
        out = run.file("grpo")
        if distributed.is_main():  # distributed hook: the main process saves, the others wait for it
            trainer.model.save_pretrained(str(out))
            loaded.tokenizer.save_pretrained(str(out))
        distributed.barrier()
        stopped = ({"tokens": "token budget", "seconds": "time budget"}.get(cfg.grpo.budget, "budget")
                   if cb.stopped_by_budget else
                   "max_steps" if max_steps > 0 and trainer.state.global_step >= max_steps else "epochs")
        info.update(
            problems=len(problems),
            num_generations=num_generations,
            steps=trainer.state.global_step,
            completions=reward.completions,
            generated_tokens=cb.tokens,
            budget_tokens=budget,
            budget_seconds=budget_seconds,
            budget_source=budget_source,
            stopped_by=stopped,
            train_seconds=round(time.time() - t0, 2),
            train_loss=float(result.training_loss) if result.training_loss is not None else None,
            resumed_from=resume,
            adapter=str(out),
        )
        log.info("GRPO: %d steps, %d generated tokens (budget %s), stopped by %s",
                 info["steps"], info["generated_tokens"], budget, stopped)
    return info
