"""data.draw_chunk: rollout -> curate -> teacher a chunk at a time until teacher.max_pairs."""

from __future__ import annotations

from ssb.config import RunConfig
from ssb.data.load import load_problems
from ssb.pipeline import draw_until_pairs, run_pipeline
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run

TASK = {"name": "chain_sum", "options": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}


def _cfg(tmp_path, name, **teacher) -> RunConfig:
    return RunConfig.model_validate({
        "name": name, "runs_dir": str(tmp_path),
        "data": {"source": "reasoning_gym", "limit": 24, "seed": 5, "tasks": [TASK], "draw_chunk": 6},
        "prompt": {"examples": [{"question": "State the final answer to the following arithmetic problem: 2 + 5 =",
                                 "solution": "2 + 5 = 7.\n\nThe answer is \\boxed{7}."}]},
        "generation": {"batch_size": 24, "max_new_tokens": 32},
        "rollout": {"k": 4, "temperature": 1.0, "seed": 0},
        "teacher": {"solution": "rollout", **teacher},
    })


def test_draw_stops_at_max_pairs_and_resumes(tmp_path, embedded_model):
    cfg = _cfg(tmp_path, "draw", max_pairs=2)
    run = Run.create(cfg)
    info = draw_until_pairs(run)
    order = [p.id for p in load_problems(cfg.data)]
    ids = [r["id"] for r in read_jsonl(run.file("rollouts.jsonl"))]
    assert ids == order[: info["problems_drawn"]]  # a prefix of the problems, chunk by chunk
    assert info["problems_drawn"] % 6 == 0 or info["problems_drawn"] == 24
    pairs = read_jsonl(run.file("pairs.jsonl"))
    assert len(pairs) == info["pairs"] <= 2
    if info["problems_drawn"] < 24:
        assert len(pairs) == 2  # it stopped because it had enough
    assert run.manifest()["draw"] == info
    assert all(run.stage_done(s) for s in ("rollout", "curate", "teacher"))
    # the pipeline sees the draw as done and does not roll out more
    run_pipeline(cfg, only=["rollout", "curate", "teacher"])
    assert len(read_jsonl(run.file("rollouts.jsonl"))) == info["problems_drawn"]


def test_without_a_cap_everything_is_drawn(tmp_path, embedded_model):
    cfg = _cfg(tmp_path, "all", max_pairs=None)
    cfg.data.limit = 12
    info = draw_until_pairs(Run.create(cfg))
    assert info["problems_drawn"] == 12 and info["problems_available"] == 12
