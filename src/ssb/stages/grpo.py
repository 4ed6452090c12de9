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
* the budget (``cfg.grpo.budget``, default ``flops``): training stops once GRPO has spent as
  many FLOPs as SSB's stages (those the stage table says SSB pays for: rollout, curate,
  teacher, logits, distill), both priced by ``report/ledger.py``'s rule, a unit that rewards neither
  implementation. ``tokens`` stops once GRPO has generated as many completion tokens as SSB's
  rollouts + hinted teacher (manifest ``rollout.generated_tokens`` + ``teacher.teacher_tokens``);
  ``seconds`` once it has trained as long as SSB's stages took (wall-clock rewards whichever
  implementation is faster, not the method: TRL generates one small group at a time); without
  SSB's counts any budget falls back to ``grpo.max_steps`` / ``grpo.epochs``. FLOPs, every token
  kind and seconds are recorded whichever budget is used, and how a step's time splits between
  generation (TRL's ``_generate_and_score_completions``: sampling, rewards) and training;
* resumes count: SSB's stages report ``seconds_total`` over every invocation
  (:meth:`Run.stage_seconds`), and a resumed GRPO continues its clock and token count from
  its last checkpoint (its log's last kept line);
* ``grpo.curve_points`` > 0 saves the adapter at that many evenly spaced points of the budget
  into ``grpo_points/p<i>/`` with ``grpo_points/points.json`` (step, FLOPs, tokens, seconds):
  the points of ``ssb compare``'s compute-accuracy curve.

Outputs: ``grpo/`` (PEFT adapter + tokenizer), ``grpo_log.jsonl`` (one line per optimizer
step: reward, completion length, loss, kl, grad norm, lr, cumulative generated tokens)
and the manifest entry (generated tokens, budget, steps, wall-clock, why it stopped).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

from ..data.load import load_problems
from ..data.problem import Problem
from ..errors import SSBError
from ..generation.engine import stop_token_ids
from ..grading.grade import grade
from ..prompts import student_messages
from ..rundir import distributed
from ..rundir.jsonl import JsonlWriter, read_jsonl
from ..rundir.run import Run
from .grpo_budget import Budget, CurvePoints, Spend, grpo_budget, params_or_none, progress_bar
from .grpo_rollout import ssb_rollout_func

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
    """The problems SSB drew rollouts from (``rollouts.jsonl``), else ``load_problems(cfg.data)``; with
    ``grpo.problems: mixed`` only those curation kept (``selections.jsonl``)."""
    recs = read_jsonl(run.file("rollouts.jsonl"))
    if run.cfg.grpo.problems == "mixed":
        if not run.file("selections.jsonl").is_file():
            raise GRPOError(f"grpo.problems=mixed trains on curation's problems, and {run.file('selections.jsonl')} "
                            f"does not exist: run `ssb curate --run {run.path}` first")
        kept = {str(r["id"]) for r in read_jsonl(run.file("selections.jsonl"))}
        return [Problem.from_dict(r["problem"]) for r in recs if str(r["id"]) in kept]
    if recs:
        return [Problem.from_dict(r["problem"]) for r in recs]
    return load_problems(run.cfg.data)


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




def _callbacks(reward: CorrectnessReward, spend: Spend, budget: Budget, num_generations: int, log_path: Path,
               t0: float, points_dir: Path, max_steps: int, timer: dict):
    from transformers import TrainerCallback  # lazy: ~1.4 s, only when training

    class BudgetAndLog(TrainerCallback):
        """Stops training once the budget is spent; saves the curve points; one log line per step."""

        def __init__(self):
            self.writer = JsonlWriter(log_path) if distributed.is_main() else None  # distributed hook
            self.stopped_by_budget = False
            self.resumed_tokens = self.tokens = reward.generated_tokens
            self.curve = CurvePoints(points_dir, budget)
            self.points = self.curve.points
            self.fraction: float | None = None  # of the budget spent so far (the progress bar reads it)

        def on_step_end(self, args, state, control, model=None, **kw):
            # distributed hook: tokens of every process (TRL's input-token count is already global);
            # the main process's clock, so all stop together
            (new,) = distributed.all_sum(reward.generated_tokens - self.resumed_tokens)
            self.tokens = self.resumed_tokens + new
            spend.update(int(state.num_input_tokens_seen), self.tokens, num_generations)
            seconds = distributed.broadcast(time.time() - t0)
            frac = self.fraction = budget.fraction(spend, seconds, state.global_step, max_steps)
            if budget.points and frac is not None:
                self.curve.save_due(model, state.global_step, frac, spend, seconds)
            if frac is not None and budget.unit != "steps" and frac >= 1:  # steps: max_steps stops it
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
            rec["trained_tokens"] = spend.counts.get("trained_tokens")
            rec["flops"] = spend.flops
            rec["seconds"] = round(time.time() - t0, 2)
            rec["generation_seconds"] = round(timer["generation"], 2)
            if self.writer is not None:
                self.writer.write(rec)

        def on_train_end(self, args, state, control, **kw):
            if self.writer is not None:
                self.writer.close()

    return BudgetAndLog()


def timed_trainer(base):
    """``base`` (TRL's GRPOTrainer) that adds the seconds spent generating and scoring completions
    to ``self.ssb_timer["generation"]`` (the rest of a step is training)."""

    class Timed(base):
        ssb_timer: dict = {"generation": 0.0}  # replaced per trainer by run_grpo

        def _generate_and_score_completions(self, *a, **kw):
            t = time.time()
            try:
                return super()._generate_and_score_completions(*a, **kw)
            finally:
                self.ssb_timer["generation"] += time.time() - t

    return Timed


# ----------------------------------------------------------------------------- resume


def spent_before(log_path: Path) -> tuple[int, float, float]:
    """The generated tokens, training seconds and generation seconds that the log (cut back to the
    checkpoint a run resumes from, ``training.resume_point``) records: a resumed run goes on from them."""
    recs = read_jsonl(log_path)
    if not recs:
        return 0, 0.0, 0.0
    return (int(recs[-1]["generated_tokens"]), float(recs[-1].get("seconds", 0.0)),
            float(recs[-1].get("generation_seconds", 0.0)))


# ----------------------------------------------------------------------------- entry point


def grpo_args(run: Run, num_generations: int, device, dtype, max_steps: int):
    """TRL ``GRPOConfig`` from the run config (CPU-safe: no vLLM, bf16 only when the model is)."""
    import torch  # lazy: the budget and reward code (and its tests) load without torch or trl
    from trl import GRPOConfig as TRLGRPOConfig

    from ..training import report_to

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
        report_to=report_to(cfg.tracking),
        run_name=f"{cfg.name}/grpo",  # the trackers' name for it (W&B's run)
        seed=g.seed,
        bf16=dtype == torch.bfloat16,
        fp16=False,
        use_cpu=device.type == "cpu",
        use_vllm=False,
        activation_checkpointing=g.gradient_checkpointing,  # transformers 5's name (the old one warns)
        max_grad_norm=g.max_grad_norm,
        log_completions=False,
        disable_tqdm=False,
        # TRL renders the conversational prompts itself: encode their contents as text, exactly
        # as prompts.render_prompt_ids does for rollouts and eval
        chat_template_kwargs={"sanitize_control_tokens": True},
    )


def _make_trainer(base, loaded, reward, args, problems, cfg, cb):
    from ..models import lora_config  # lazy: torch

    return timed_trainer(base)(
        model=loaded.model,
        reward_funcs=[reward],
        args=args,
        train_dataset=build_dataset(problems, cfg.prompt),
        processing_class=loaded.tokenizer,
        peft_config=lora_config(cfg.lora),
        callbacks=[cb],
        rollout_func=ssb_rollout_func(cfg, loaded.tokenizer, loaded.name) if cfg.grpo.generator == "ssb" else None,
    )


def run_grpo(run: Run) -> dict:
    """Train the GRPO baseline; returns the manifest stats."""
    from trl import GRPOTrainer  # lazy: see grpo_args

    from ..models import load_model  # lazy: torch, loaded only when training starts (as trl is)
    from ..training import known_warnings_filtered, point_trackers, resume_point, save_adapter, show_progress

    cfg = run.cfg
    with run.stage_run("grpo") as info:
        problems = training_problems(run)
        if not problems:
            raise GRPOError("no training problems (rollouts.jsonl empty and cfg.data loads nothing)")
        num_generations = cfg.grpo.num_generations or cfg.rollout.k
        if num_generations < 2:
            raise GRPOError(f"GRPO needs num_generations >= 2 (group baseline), got {num_generations}")
        params = params_or_none(cfg)
        budget = grpo_budget(run, params)
        max_steps = cfg.grpo.max_steps if cfg.grpo.max_steps else -1
        log_path = run.file("grpo_log.jsonl")
        # distributed hook: the main process alone tidies checkpoints and the log, all resume from its answer
        resume = distributed.broadcast(resume_point(run.file("grpo_checkpoints"), log_path)
                                       if distributed.is_main() else None)
        tokens_so_far, seconds_so_far, gen_so_far = spent_before(log_path)

        loaded = load_model(cfg.model)
        # stop at end-of-turn exactly like generation/engine.py does for rollouts and eval
        loaded.model.generation_config.eos_token_id = stop_token_ids(loaded.tokenizer, loaded.model)
        param = next(loaded.model.parameters())
        args = grpo_args(run, num_generations, param.device, param.dtype, max_steps)
        reward = CorrectnessReward(tokens_so_far)
        t0 = time.time() - seconds_so_far  # a resumed run's clock goes on from its checkpoint
        spend = Spend(cfg, params)
        timer = {"generation": gen_so_far}
        cb = _callbacks(reward, spend, budget, num_generations, log_path, t0, run.file("grpo_points"), max_steps, timer)
        with warnings.catch_warnings(), known_warnings_filtered():
            # rollout_func is marked experimental: we pin the TRL version it works with
            warnings.filterwarnings("ignore", message="You are using 'rollout_func'")
            trainer = _make_trainer(GRPOTrainer, loaded, reward, args, problems, cfg, cb)
        trainer.ssb_timer = timer
        show_progress(trainer, progress_bar(budget, lambda: cb.fraction))
        point_trackers(trainer, run, "grpo")
        with known_warnings_filtered():
            result = trainer.train(resume_from_checkpoint=resume)
        out = run.file("grpo")
        save_adapter(trainer.model, loaded.tokenizer, out)
        stopped = budget.stop_reason(cb.stopped_by_budget, trainer.state.global_step, max_steps)
        info.update(
            problems=len(problems),
            num_generations=num_generations,
            steps=trainer.state.global_step,
            completions=reward.completions,
            **{**spend.counts, "generated_tokens": cb.tokens},
            flops=spend.flops,
            **budget.manifest(),
            stopped_by=stopped,
            train_seconds=round(time.time() - t0, 2),
            generation_seconds=round(timer["generation"], 2),
            curve_points=len(cb.points),
            train_loss=float(result.training_loss) if result.training_loss is not None else None,
            resumed_from=resume,
            adapter=str(out),
        )
        log.info("GRPO: %d steps, %d generated tokens (budget %s %s), stopped by %s",
                 info["steps"], info["generated_tokens"], budget.amount, budget.unit, stopped)
    return info
