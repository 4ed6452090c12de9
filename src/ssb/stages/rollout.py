"""Stage 1: K sampled answers per training problem, graded.

    ssb rollout --run runs/NAME

For every problem of ``cfg.data`` the model answers the bare question
(:func:`prompts.student_messages`) ``cfg.rollout.k`` times; each answer is graded by
:func:`grading.grade`. One line per problem goes to ``rollouts.jsonl``::

    id, problem, completions, extracted, grades, formats, finish_reasons,
    completion_tokens, prompt_tokens, seed

Problems are processed in chunks and each line is flushed as soon as its chunk is
done, so a killed run loses at most one chunk and a rerun skips the ids already
written. Sampling is seeded per problem (``rollout.seed`` + problem id), so a resumed
run draws the same samples as an uninterrupted one (exactly on the hf backend).
Under ``accelerate launch`` each process rolls out its share of the problems into its own
shard file, merged into ``rollouts.jsonl`` in problem order (``rundir/distributed.py``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any

from tqdm.auto import tqdm

from ..data.load import load_problems
from ..generation.engine import Generator, Sampling, derive_seed
from ..generation.factory import load_generator
from ..grading.grade import grade
from ..models import LoadedModel
from ..prompts import student_messages
from ..report.funnel import rollout_counts
from ..rundir import distributed
from ..rundir.jsonl import JsonlWriter, read_jsonl
from ..rundir.run import Run

log = logging.getLogger(__name__)

OUTPUT = "rollouts.jsonl"  # `ssb run --force rollout` removes it (the stage table's outputs)


# ----------------------------------------------------------------------------- chunks


def chunk_size(run: Run, k: int) -> int:
    """Problems per chunk: about two decoding batches' worth of sequences."""
    return max(1, math.ceil(2 * run.cfg.generation.batch_size / max(1, k)))


# ----------------------------------------------------------------------------- gold answers


_NUMBER_WITH_UNITS = re.compile(r"\s*[-+]?\$?(\d[\d,]*(\.\d+)?|\.\d+)\s*%?\s*([A-Za-z]+\.?\s*)*")
_WORD = re.compile(r"[A-Za-z]{3,}")


def gold_parses(problem, timeout: float = 5.0) -> bool:
    """Whether the gold answer is something the grader can compare as math: a number
    (units allowed), a reasoning-gym entry (its own scorer), or an expression math-verify
    parses that is not plain words (math-verify reads "blue" as b*l*u*e; such golds are
    only ever matched as text)."""
    md = problem.metadata or {}
    if md.get("source") == "reasoning_gym":
        return True
    gold = str(problem.answer).strip()
    if _NUMBER_WITH_UNITS.fullmatch(gold):
        return True
    if not gold or _WORD.search(re.sub(r"\\[A-Za-z]+", " ", gold)):
        return False
    box: list = []

    def parse():
        from math_verify import parse as mv_parse  # lazy: heavy (sympy), only for a gold answer to check

        logging.getLogger("math_verify.parser").setLevel(logging.ERROR)  # "timeout disabled" notice
        box.append(bool(mv_parse("\\boxed{" + gold + "}", parsing_timeout=None)))

    t = threading.Thread(target=parse, daemon=True)
    t.start()
    t.join(timeout)
    return bool(box and box[0])


# ----------------------------------------------------------------------------- the stage


def rollout_record(problem, completions, grades, seed: int) -> dict[str, Any]:
    return {
        "id": problem.id,
        "problem": problem.to_dict(),
        "completions": [c.text for c in completions],
        "extracted": [g.extracted for g in grades],
        "grades": [g.outcome.value for g in grades],
        "formats": [g.fmt for g in grades],
        "finish_reasons": [c.finish_reason for c in completions],
        "completion_tokens": [c.completion_tokens for c in completions],
        "prompt_tokens": completions[0].prompt_tokens if completions else 0,
        "seed": seed,
    }


def run_rollout(run: Run, loaded: LoadedModel | None = None, generator: Generator | None = None,
                problems: list | None = None) -> dict:
    """Roll out every problem of ``run.cfg.data`` (or of ``problems``, a prefix of them when
    drawing in chunks) not yet in ``rollouts.jsonl``; return stats."""
    cfg = run.cfg
    out_path = run.file(OUTPUT)
    with run.stage_run("rollout") as info:
        if problems is None:
            problems = load_problems(cfg.data)
        seen: set[str] = set()
        dupes = [p.id for p in problems if p.id in seen or seen.add(p.id)]
        if dupes:
            raise ValueError(f"duplicate problem ids in {cfg.data.source}: {dupes[:5]}")
        # distributed hook: done = canonical + shard files; todo = this process's share (one process: all)
        done = distributed.done_ids(out_path)
        todo = [p for p in distributed.shard(problems) if p.id not in done]
        log.info("rollout: %d problems, %d already written, %d to do here", len(problems),
                 len(done & {p.id for p in problems}), len(todo))
        bad_gold = [p.id for p in problems if not gold_parses(p)]
        if bad_gold:
            log.warning("%d problem(s) have a gold answer that does not parse as math (graded by text): %s",
                        len(bad_gold), ", ".join(bad_gold[:10]))
        sampling = Sampling(
            n=cfg.rollout.k, temperature=cfg.rollout.temperature, top_k=cfg.rollout.top_k,
            top_p=cfg.rollout.top_p, max_new_tokens=cfg.generation.max_new_tokens, seed=cfg.rollout.seed,
        )
        new_tokens, gen_seconds = 0, 0.0
        if todo:
            if generator is None:
                generator, loaded = load_generator(run, loaded)
            size = chunk_size(run, sampling.n)
            bar = _bar(len(todo))
            with JsonlWriter(distributed.shard_path(out_path)) as writer:  # distributed hook
                for start in range(0, len(todo), size):
                    chunk = todo[start : start + size]
                    seeds = [derive_seed(cfg.rollout.seed, p.id) for p in chunk]
                    convs = [student_messages(cfg.prompt, p.question) for p in chunk]
                    t0 = time.time()
                    outs = generator.generate(convs, sampling, progress=False, seeds=seeds)
                    gen_seconds += time.time() - t0
                    for p, seed, comps in zip(chunk, seeds, outs):
                        grades = [grade(p, c.text) for c in comps]
                        writer.write(rollout_record(p, comps, grades, seed))
                        new_tokens += sum(c.completion_tokens for c in comps)
                    if bar is not None:
                        bar.update(len(chunk))
                        bar.set_postfix(tok_s=f"{new_tokens / max(gen_seconds, 1e-9):.0f}", refresh=False)
            if bar is not None:
                bar.close()
        # distributed hook: the main process merges the shards in problem order; counts over processes
        distributed.merge(out_path, order=[p.id for p in problems])
        n_todo, new_tokens = distributed.all_sum(len(todo), new_tokens)
        stats = rollout_counts(read_jsonl(out_path))
        stats.update(
            bad_gold=len(bad_gold), bad_gold_ids=bad_gold[:50],
            new_problems=n_todo, new_tokens=new_tokens,
            tokens_per_s=round(new_tokens / gen_seconds, 1) if gen_seconds > 0 else None,
            backend=cfg.generation.backend, k=cfg.rollout.k,
        )
        info.update(stats)
    return stats


def _bar(total: int):
    return tqdm(total=total, desc="rollout", unit="problem", dynamic_ncols=True)
