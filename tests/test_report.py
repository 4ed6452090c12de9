"""The report on a synthetic but realistic run directory (the files every stage writes),
and on a run where nothing has happened yet."""

from __future__ import annotations

import json
import math
import random

from ssb.config import RunConfig
from ssb.rundir.jsonl import JsonlWriter, atomic_write_json
from ssb.rundir.run import Run

TASK = {"name": "chain_sum", "options": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}}


def _config(tmp_path, name="synthetic") -> RunConfig:
    return RunConfig.model_validate({
        "name": name, "runs_dir": str(tmp_path),
        "data": {"source": "reasoning_gym", "limit": 40, "seed": 1, "tasks": [TASK]},
        "eval": {"benches": ["holdout"], "holdout": {"source": "reasoning_gym", "limit": 200, "seed": 9, "tasks": [TASK]}},
        "report": {"title": "synthetic run"},
    })


def _eval_records(rng, n, p_correct, mean_len):
    recs = []
    for i in range(n):
        ok = rng.random() < p_correct
        tokens = max(5, int(rng.gauss(mean_len, mean_len / 4)))
        finish = "length" if tokens > 2 * mean_len else "stop"
        recs.append({"id": f"rg-chain_sum-s9-{i}", "question": f"{i} + 1 =", "answer": str(i + 1),
                     "completions": [f"... \\boxed{{{i + 1 if ok else i}}}"], "extracted": [str(i + 1 if ok else i)],
                     "grades": ["correct" if ok else "wrong"], "correct": [ok], "formats": ["boxed"],
                     "completion_tokens": [tokens], "finish_reasons": [finish], "prompt_tokens": 80})
    return recs


def make_synthetic_run(tmp_path) -> Run:
    from ssb.stages.evaluate import summarize

    rng = random.Random(0)
    run = Run.create(_config(tmp_path))
    # rollouts.jsonl: 40 problems x K=4
    with JsonlWriter(run.file("rollouts.jsonl")) as w:
        for i in range(40):
            grades = [rng.choice(["correct", "wrong", "wrong", "no_answer"]) for _ in range(4)]
            prob = {"id": f"rg-chain_sum-s1-{i}", "question": f"{i} + 2 =", "answer": str(i + 2),
                    "solution": None, "metadata": {}}
            w.write({"id": prob["id"], "problem": prob, "completions": ["..."] * 4, "extracted": [None] * 4,
                     "grades": grades, "formats": ["boxed"] * 4, "finish_reasons": ["stop"] * 4,
                     "completion_tokens": [rng.randint(20, 90) for _ in range(4)]})
    with JsonlWriter(run.file("pairs.jsonl")) as w:
        for i in range(11):
            w.write({"id": f"rg-chain_sum-s1-{i}", "solution": "...", "answer": str(i + 2)})
    with JsonlWriter(run.file("train_log.jsonl")) as w:
        for s in range(1, 31):
            kd = 0.9 * math.exp(-s / 12) + 0.1 + rng.random() * 0.03
            w.write({"step": s, "epoch": s / 10, "time": 1e9 + s, "loss": kd, "kd": kd, "ce": 0.0,
                     "grad_norm": 1.5 * math.exp(-s / 20) + rng.random() * 0.2, "learning_rate": 2e-4 * (1 - s / 31),
                     "answer_tokens_per_example": 45 + rng.random() * 4})
    with JsonlWriter(run.file("grpo_log.jsonl")) as w:
        for s in range(1, 21):
            w.write({"step": s, "loss": rng.gauss(0, 0.01), "reward": min(1, 0.3 + s * 0.01 + rng.random() * 0.1),
                     "completion_length": 60 + rng.gauss(0, 5), "kl": 0.0, "generated_tokens": s * 1900, "lr": 2e-5})
    for label, p, mean_len in (("base", 0.40, 60), ("grpo", 0.43, 58), ("ssb", 0.47, 57)):
        recs = _eval_records(random.Random(label), 200, p, mean_len)
        if label == "grpo":  # a collapsing model: 10 of its wrong answers are no answer at all
            for r in [r for r in recs if not r["correct"][0]][:10]:
                r["grades"], r["extracted"] = ["no_answer"], [None]
        with JsonlWriter(run.file(f"eval/{label}/holdout.jsonl")) as w:
            for r in recs:
                w.write(r)
        atomic_write_json(run.file(f"eval/{label}/summary.json"),
                          {"label": label, "n": 1, "temperature": 0.0, "benches": {"holdout": summarize(recs)}})
        run.set_stage(f"eval_{label}", status="done", seconds=120.0)
    run.set_stage("rollout", status="done", seconds=300.5, problems=40, generated_tokens=31000)
    run.set_stage("curate", status="done", seconds=2.0, with_both=24, selected=24)
    run.set_stage("teacher", status="done", seconds=200.0, teacher_tried=14, teacher_verified=11, pairs_written=11,
                  teacher_tokens=7000, solution="generate", pairs_by_source={"generate": 11},
                  replies_rejected_by_gate={"verified": 5, "no_leak": 7, "shows_work": 2, "consistent": 1,
                                            "not_degenerate": 0, "plausible": 0},
                  student_logprob_mean=-0.8, student_logprob_min=-2.1)
    run.set_stage("logits", status="done", seconds=20.0)
    run.set_stage("distill", status="done", seconds=400.0, steps=30, examples=11)
    run.set_stage("grpo", status="done", seconds=900.0, steps=20, generated_tokens=38000, budget_tokens=38000,
                  stopped_by="token budget", budget_source="manifest")
    return run


def test_report_on_full_synthetic_run(tmp_path):
    from ssb.stages.report import write_report

    run = make_synthetic_run(tmp_path)
    path = write_report(run)
    text = path.read_text()
    for png in ("accuracy", "lengths", "funnel", "ssb_training", "grpo_training"):
        p = run.file(f"plots/{png}.png")
        assert p.exists() and p.stat().st_size > 5000, png
        assert f"plots/{png}.png" in text
    assert "synthetic run" in text
    assert "| holdout | ssb |" in text and "/200" in text and "0.50 pt" in text
    assert "ssb − base" in text and "grpo − base" in text and "ssb − grpo" in text
    assert "McNemar" in text
    assert "not run" not in text
    assert "token budget" in text and "38,000" in text
    assert "| no_leak | 7 |" in text and "pairs that passed every gate" not in text  # (that label is in the plot)
    assert "-0.800" in text
    assert "only wrong rollouts" not in text and "without a correct rollout" not in text  # curate.keep=both
    # collapse guard: grpo's no-answer rate (5%) exceeds base's (0%) by more than 2 points; ssb's does not
    assert "| grpo | holdout | 5.0% |" in text
    flags = [ln for ln in text.splitlines() if ln.startswith("⚠")]
    assert len(flags) == 1 and "**grpo**" in flags[0] and "+5.0 pt" in flags[0]
    compare = json.loads(run.file("eval/compare.json").read_text())
    assert {(r["a"], r["b"]) for r in compare} == {("grpo", "base"), ("ssb", "base"), ("ssb", "grpo")}


def test_report_when_nothing_ran(tmp_path):
    from ssb.stages.report import write_report

    run = Run.create(_config(tmp_path, "empty"))
    text = write_report(run).read_text()
    assert text.count("not run") >= 5
    assert not list(run.file("plots").glob("*.png"))


def test_report_shows_the_problems_kept_without_a_correct_rollout(tmp_path):
    from ssb.stages.report import write_report

    run = Run.create(RunConfig.model_validate({**_config(tmp_path, "unsolved").model_dump(),
                                               "curate": {"keep": "any_wrong"}}))
    with JsonlWriter(run.file("rollouts.jsonl")) as w:
        for i, grades in enumerate([["correct", "wrong"], ["wrong", "wrong"], ["wrong", "no_answer"]]):
            w.write({"id": f"p{i}", "grades": grades, "formats": ["boxed"] * 2})
    run.set_stage("curate", status="done", with_both=1, selected=3, kept_without_correct=2)
    run.set_stage("teacher", status="done", teacher_tried=3, pairs_written=2, solution="rollout",
                  pairs_by_source={"rollout": 1, "generate": 1}, tried_without_correct=2, pairs_without_correct=1)
    text = write_report(run).read_text()
    assert "1 problems had both a correct and a wrong rollout; 2 problems with only wrong rollouts kept too" in text
    assert "(rollout: 1, generate: 1); 1 of 2 problems without a correct rollout got a pair." in text
    assert "| kept_without_correct | 2 |" in text


def test_the_report_says_one_run_is_one_replicate_and_how_to_compare(tmp_path, monkeypatch):
    """report.md says one run is one replicate, gives the `ssb compare` command of the run's own config, adjusts
    its p-values for the comparisons made (Holm), and shows the committed comparison of the same config file,
    every figure read from bench/results/tasks.json."""
    from pathlib import Path

    from ssb.report.replicated import DIFFERENCES
    from ssb.report.stats import holm
    from ssb.stages.report import write_report

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    run = make_synthetic_run(tmp_path)
    # no config file recorded (a RunConfig of the API): the run's own config.yaml, and no committed comparison
    text = write_report(run).read_text()
    assert "**one replicate**" in text and f"ssb compare {run.file('config.yaml')} --arms base,ssb,sft,rft,grpo,sdft" in text
    assert "The committed comparison" not in text
    rows = json.loads(run.file("eval/compare.json").read_text())
    assert [r["p_holm"] for r in rows] == holm([r["p_value"] for r in rows])
    assert "| p | p Holm | test |" in text and "with 3 comparisons per benchmark" in text
    # `ssb run configs/default.yaml --set data.limit=40` recorded it: its command, and the committed comparison
    run.update_manifest(config_file=str(root / "configs" / "default.yaml"), overrides=["data.limit=40"])
    text = write_report(run).read_text()
    assert "ssb compare configs/default.yaml --arms base,ssb,sft,rft,grpo,sdft --set data.limit=40\n" in text
    task = next(t for t in json.loads((root / "bench/results/tasks.json").read_text())["tasks"]
                if t["config"] == "configs/default.yaml")
    line = next(x for x in text.splitlines() if x.startswith("The committed comparison of `configs/default.yaml`"))
    assert f"(`{task['results']}`: {len(task['replicates'])} replicates, {task['n_problems']} held-out" in line
    for key, name in DIFFERENCES:
        d = task[key]
        assert f"{name} {100 * d['value']:+.1f} pt [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]" in line, key
    assert "docs/compare.md" in line and "`data.limit=40`, so it is not exactly that config" in line


def test_the_ledgers_parameter_counts_need_no_converted_model(tmp_path, monkeypatch, embedded_model):
    """A run restored onto a machine that never loaded the model (no GGUF -> safetensors cache yet) still
    gets its ledger: the counts come from the GGUF's metadata, and equal those of the converted model."""
    from ssb.config import load_config
    from ssb.models import _gguf_cache_path, resolve_source
    from ssb.report.ledger import _params, model_params

    cfg = load_config("configs/smoke.yaml")
    directory, gguf = resolve_source(cfg.model)
    assert gguf, "the embedded model is a GGUF"
    converted = model_params(cfg)  # embedded_model loaded it: the cache holds the converted model
    assert (_gguf_cache_path(directory, gguf) / "config.json").is_file()
    _params.cache_clear()
    monkeypatch.setenv("SSB_CACHE_DIR", str(tmp_path))
    assert not (_gguf_cache_path(directory, gguf) / "config.json").exists()
    try:
        assert model_params(cfg) == converted and converted["matmul"] > 0 and converted["lora"] > 0
        assert not any(tmp_path.rglob("*.safetensors"))  # nothing converted, no weights read
    finally:
        _params.cache_clear()
