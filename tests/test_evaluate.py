"""Evaluation: summaries and paired tables on known records; a real (tiny-model) eval on
a user JSONL that resumes; adapters through PEFT; the holdout set avoids training problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssb.config import EvalConfig, GenerationConfig, ModelConfig, PromptConfig, RunConfig
from ssb.data import heldout
from ssb.report import paired as cmp
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run
from ssb.stages import evaluate as ev


def _rec(pid, correct, tokens=None, finish=None):
    n = len(correct)
    return {"id": pid, "correct": list(correct), "grades": ["correct" if c else "wrong" for c in correct],
            "completion_tokens": tokens or [10] * n, "finish_reasons": finish or ["stop"] * n,
            "formats": ["boxed"] * n}


# ----------------------------------------------------------------------------- pure functions


def test_summarize_greedy_counts_and_wilson():
    recs = [_rec(f"p{i}", [i < 5], tokens=[i + 1], finish=["length" if i == 9 else "stop"]) for i in range(10)]
    s = ev.summarize(recs)
    assert s["accuracy"] == 0.5 and s["correct"] == 5 and s["n_problems"] == 10
    assert s["ci"] == [pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4)]
    assert s["points_per_problem"] == 10.0
    assert s["truncated"] == 1
    assert s["completion_tokens"]["mean"] == 5.5 and s["completion_tokens"]["max"] == 10
    assert s["outcomes"] == {"correct": 5, "wrong": 5}


def test_summarize_sampled_pass_at_k():
    recs = [_rec("a", [1, 1, 0, 0]), _rec("b", [0, 0, 0, 0]), _rec("c", [1, 0, 0, 0])]
    s = ev.summarize(recs)
    assert s["samples_per_problem"] == 4
    assert s["accuracy"] == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert set(s["pass_at_k"]) == {"1", "2", "4"}
    assert s["pass_at_k"]["1"] == pytest.approx(s["accuracy"])
    # pass@2: a = 1 - C(2,2)/C(4,2) = 5/6, b = 0, c = 1 - C(3,2)/C(4,2) = 1/2
    assert s["pass_at_k"]["2"] == pytest.approx((5 / 6 + 0 + 0.5) / 3)
    assert s["pass_at_k"]["4"] == pytest.approx(2 / 3)
    assert s["solved_any"] == 2
    assert ev.pass_ks(8) == [1, 2, 4, 8] and ev.pass_ks(6) == [1, 2, 4, 6] and ev.pass_ks(1) == [1]


def test_paired_table_mcnemar_on_shared_ids():
    base = [_rec(f"p{i}", [i < 30]) for i in range(100)]
    # ssb solves base's 30 minus 1 (p0) plus 9 more (p30..p38); p99 missing on purpose
    ssb = [_rec(f"p{i}", [(i < 30 and i != 0) or 30 <= i < 39]) for i in range(99)]
    rows = cmp.paired_table({"ssb": {"holdout": ssb}, "base": {"holdout": base}})
    assert len(rows) == 1
    r = rows[0]
    assert (r["a"], r["b"], r["n"]) == ("ssb", "base", 99)
    assert (r["a_only"], r["b_only"]) == (9, 1)
    assert r["p_value"] == pytest.approx(0.02148, abs=1e-5)
    assert r["diff"] == pytest.approx(8 / 99)
    assert r["ci"][0] > 0
    md = cmp.markdown_tables({}, rows)
    assert "ssb − base" in md and "9/1" in md


def test_paired_table_sampled_uses_bootstrap():
    a = [_rec(f"p{i}", [1, 1, 0, 1]) for i in range(20)]
    b = [_rec(f"p{i}", [0, 1, 0, 0]) for i in range(20)]
    rows = cmp.paired_table({"base": {"x": b}, "ssb": {"x": a}})
    assert rows[0]["test"] == "sign-flip-permutation"
    assert rows[0]["diff"] == pytest.approx(0.5)


def test_summary_rows_show_counts_and_points():
    s = {"base": {"benches": {"aime2024": {**ev.summarize([_rec(f"p{i}", [i < 1]) for i in range(30)])}}}}
    (row,) = cmp.summary_rows(s)
    assert row["count"] == "1/30" and row["accuracy"] == "3.3%" and row["one_problem"] == "3.33 pt"


def _render(summaries, pairs, width=80) -> str:
    import io

    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    cmp.print_tables(summaries, pairs, console=console)
    return console.export_text()


def test_tables_fit_80_columns_with_full_headers_and_model_names():
    greedy = [_rec(f"p{i}", [i < 70]) for i in range(200)]
    better = [_rec(f"p{i}", [i < 90]) for i in range(200)]
    sampled = [_rec(f"g{i}", [i < 3, i < 5, False, True] * 4, finish=["length"] * 16) for i in range(1319)]
    summaries = {
        "base": {"label": "base", "benches": {"holdout": ev.summarize(greedy), "gsm8k": ev.summarize(sampled),
                                              "aime2024": ev.summarize([_rec(f"a{i}", [i < 1]) for i in range(30)])}},
        # evaluated with --out eval-out: the folder's name must not stand for the model
        "eval-out": {"label": "SmolLM2-135M-Instruct", "benches": {"holdout": ev.summarize(better)}},
    }
    pairs = cmp.paired_table({"base": {"holdout": greedy}, "eval-out": {"holdout": better}})
    text = _render(summaries, pairs)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    header = next(line for line in lines if line.startswith("bench") and "model" in line)
    for word in ("bench", "model", "acc", "correct", "95% CI", "pass@k", "tokens", "trunc"):
        assert word in header.split("  ") or f" {word} " in f" {header} ", (word, header)
    paired_header = next(line for line in lines if line.startswith("bench") and "A − B" in line)
    for word in ("A − B", "n", "diff (pt)", "95% CI (pt)", "only A/B", "p", "p Holm"):
        assert word in paired_header, (word, paired_header)
    assert "test: McNemar" in text and "p Holm: adjusted" in text  # one test for every row: named once, below
    assert "eval-out" not in text
    assert "SmolLM2-" in text and "aime2024" in text  # long names wrap, never cut
    assert "one problem = 0.50 pt (holdout)" in text or "0.50 pt (holdout)" in text
    assert "5308/21104" in text and "100.0% k=16" in text  # sampled: pass@k shown
    # a greedy-only table has no empty pass@k column
    assert "pass@k" not in _render({"base": summaries["base"] | {"benches": {"holdout": ev.summarize(greedy)}}}, [])


def test_display_names_use_the_label_unless_two_share_it():
    names = cmp.display_names({"a": {"label": "ssb"}, "b": {"label": "ssb"}, "base": {"label": "base"}, "x": {}})
    assert names == {"a": "a", "b": "b", "base": "base", "x": "x"}


# ----------------------------------------------------------------------------- real evals (tiny model)


def _write_problems(path: Path, n: int = 3) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n")
    return path


def test_evaluate_user_jsonl_writes_records_and_resumes(tmp_path, tiny_model, tiny_model_dir):
    data = _write_problems(tmp_path / "mine.jsonl")
    out = tmp_path / "eval" / "tiny"
    args = (ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"), None, [], PromptConfig(),
            GenerationConfig(batch_size=4, max_new_tokens=6), EvalConfig(benches=[]), out)
    s = ev.evaluate(*args, data_file=data, loaded=tiny_model)
    b = s["benches"]["mine"]
    assert b["n_problems"] == 3 and b["correct"] == 0 and b["ci"][0] == 0.0
    recs = read_jsonl(out / "mine.jsonl")
    assert [r["id"] for r in recs] == ["q0", "q1", "q2"]
    for r in recs:
        assert len(r["completions"]) == 1 and r["grades"][0] in ("wrong", "no_answer")
        assert r["completion_tokens"][0] <= 6 and r["finish_reasons"][0] in ("stop", "length")
    assert json.loads((out / "summary.json").read_text())["benches"]["mine"]["n_problems"] == 3

    # resume: drop the last record, evaluate again -> only q2 is regenerated (greedy: same text)
    lines = (out / "mine.jsonl").read_text().splitlines(keepends=True)
    (out / "mine.jsonl").write_text("".join(lines[:2]))
    ev.evaluate(*args, data_file=data, loaded=tiny_model)
    again = read_jsonl(out / "mine.jsonl")
    assert [r["id"] for r in again] == ["q0", "q1", "q2"]
    assert again[2]["completions"] == recs[2]["completions"]

    # n > 1 against records made with n = 1: a clear error, not a silent mix
    with pytest.raises(ev.EvalError, match=r"n=1, this eval asks 2 \(--n"):
        ev.evaluate(*args[:5], EvalConfig(benches=[], n=2, temperature=0.7), out, data_file=data, loaded=tiny_model)


def test_rerun_with_other_settings_or_model_is_refused_not_relabelled(tmp_path, tiny_model, tiny_model_dir):
    """Records say what made them; a rerun into the same directory that asks for other
    sampling settings or another model is refused (before loading anything) instead of
    writing the new settings over the old records; the same settings resume."""
    import shutil

    from peft import LoraConfig, get_peft_model

    from ssb.models import load_model

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    data = _write_problems(tmp_path / "mine.jsonl")
    out = tmp_path / "eval" / "tiny"
    mcfg, gen = ModelConfig(name_or_path=str(model_dir), device="cpu"), GenerationConfig(batch_size=4, max_new_tokens=6)

    def run(eval_cfg, adapter=None, loaded=None):
        return ev.evaluate(mcfg, adapter, [], PromptConfig(), gen, eval_cfg, out, data_file=data, loaded=loaded)

    run(EvalConfig(benches=[], max_new_tokens=4), loaded=tiny_model)
    recs = read_jsonl(out / "mine.jsonl")
    assert [r["id"] for r in recs] == ["q0", "q1", "q2"]
    for r in recs:
        assert r["sampling"] == {"n": 1, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 4, "seed": 0}
        assert r["model"] == {"base": str(model_dir.resolve()), "adapter_sha256": None}
        assert r["completion_tokens"][0] <= 4
    jsonl, summary = (out / "mine.jsonl").read_bytes(), (out / "summary.json").read_text()

    # the same settings: every id is there, nothing is generated (the weights are gone, so
    # loading the model would fail), the records stay as they were
    (model_dir / "model.safetensors").unlink()
    s = run(EvalConfig(benches=[], max_new_tokens=4))
    assert s["max_new_tokens"] == 4 and s["benches"]["mine"]["n_problems"] == 3
    assert (out / "mine.jsonl").read_bytes() == jsonl

    # other settings: refused, naming the setting, both values and the flag; nothing rewritten
    with pytest.raises(ev.EvalError, match=r"max_new_tokens=4, this eval asks 8 \(--max-new-tokens") as exc:
        run(EvalConfig(benches=[], max_new_tokens=8))
    assert "mine.jsonl" in str(exc.value) and "--out" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ev.EvalError, match=r"temperature=0.0, this eval asks 0.7 \(--temperature"):
        run(EvalConfig(benches=[], max_new_tokens=4, temperature=0.7))
    with pytest.raises(ev.EvalError, match=r"seed=0, this eval asks 3 \(eval.seed"):
        run(EvalConfig(benches=[], max_new_tokens=4, seed=3))
    assert (out / "mine.jsonl").read_bytes() == jsonl
    assert json.loads((out / "summary.json").read_text())["max_new_tokens"] == 4

    # another model into the same directory: an adapter (a real, saved LoRA) is refused too
    peft_model = get_peft_model(load_model(str(tiny_model_dir), device="cpu").model,
                                LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ev.EvalError, match=r"adapter_sha256=None, this eval asks '[0-9a-f]{64}' \(--model"):
        run(EvalConfig(benches=[], max_new_tokens=4), adapter=tmp_path / "adapter")

    # records of an older ssb (no settings recorded) cannot be vouched for
    (out / "mine.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k not in ("sampling", "model")}) + "\n" for r in recs))
    with pytest.raises(ev.EvalError, match="written before ssb recorded their sampling settings"):
        run(EvalConfig(benches=[], max_new_tokens=4))
    assert json.loads((out / "summary.json").read_text()) == json.loads(summary) | {
        "seconds": json.loads((out / "summary.json").read_text())["seconds"]}


def test_evaluate_sampled_pass_at_k(tmp_path, tiny_model, tiny_model_dir):
    data = _write_problems(tmp_path / "mine.jsonl", 2)
    s = ev.evaluate(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"), None, [], PromptConfig(),
                    GenerationConfig(batch_size=4, max_new_tokens=4), EvalConfig(benches=[], n=3, temperature=1.0),
                    tmp_path / "out", data_file=data, loaded=tiny_model)
    b = s["benches"]["mine"]
    assert b["samples_per_problem"] == 3 and set(b["pass_at_k"]) == {"1", "2", "3"}
    assert all(len(r["completions"]) == 3 for r in read_jsonl(tmp_path / "out" / "mine.jsonl"))


def test_adapter_is_applied_through_peft(tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    from ssb.models import load_model

    fresh = load_model(str(tiny_model_dir), device="cpu")
    peft_model = get_peft_model(fresh.model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                        init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    mcfg = ModelConfig(name_or_path=str(tiny_model_dir), device="cpu")
    base = ev.load_for_eval(mcfg)
    adapted = ev.load_for_eval(mcfg, tmp_path / "adapter")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(base.model(ids).logits, adapted.model(ids).logits)
        assert torch.allclose(peft_model(ids).logits, adapted.model(ids).logits, atol=1e-4)
    with pytest.raises(ev.EvalError, match="adapter"):
        ev.load_for_eval(mcfg, tmp_path)


def test_run_eval_holdout_avoids_training_problems(tmp_path, tiny_model_dir):
    task = {"name": "chain_sum", "options": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}
    cfg = RunConfig.model_validate({
        "name": "t", "runs_dir": str(tmp_path),
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"source": "reasoning_gym", "limit": 60, "seed": 1, "tasks": [task]},
        "generation": {"batch_size": 8, "max_new_tokens": 4},
        "eval": {"benches": ["holdout"], "holdout": {"source": "reasoning_gym", "limit": 5, "seed": 7, "tasks": [task]}},
    })
    run = Run.create(cfg)
    info = ev.run_eval(run, "base")
    assert info["holdout"]["n_problems"] == 5
    from ssb.data.load import load_problems
    from ssb.data.problem import normalize_question

    train = {normalize_question(p.question) for p in load_problems(cfg.data)}
    held = read_jsonl(run.file("eval/holdout.problems.jsonl"))
    assert len(held) == 5 and not {normalize_question(p["question"]) for p in held} & train
    assert run.stage_done("eval_base")
    assert cmp.compare(run) == []  # a single label: nothing to pair
    # the stage rerun with another eval.max_new_tokens: refused, pointing at --force eval_base
    longer = Run(run.path, cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_new_tokens": 8})}))
    with pytest.raises(ev.EvalError, match=r"max_new_tokens=4, this eval asks 8 .*--force eval_base"):
        ev.run_eval(longer, "base")
    # the summary says how deduplication shaped the set
    drawn = json.loads(run.file("eval/base/summary.json").read_text())["benches"]["holdout"]["problems"]
    assert drawn["kept"] == 5 and drawn["wanted"] == 5 and drawn["exhausted"] is False
    assert drawn["dropped_duplicates_of_training"] > 0  # 60 of the 200 one-digit questions are training's
    assert drawn["candidates_drawn"] == (drawn["dropped_duplicates_of_training"] + drawn["dropped_repeats"]
                                         + drawn["kept"])
    # the saved set is reused (with the same counts), and a changed holdout config is refused rather than mixed
    again, again_info = heldout.holdout_problems(cfg.eval.holdout, set(), run.file("eval/holdout.problems.jsonl"))
    assert [p.id for p in again] == [p["id"] for p in held]
    assert {k: again_info[k] for k in drawn} == drawn
    other = cfg.eval.holdout.model_copy(update={"seed": 8})
    with pytest.raises(heldout.EvalError, match="another eval.holdout"):
        heldout.holdout_problems(other, set(), run.file("eval/holdout.problems.jsonl"))


# ----------------------------------------------------------------------------- held-out draw (issue 9, item 6)

ONE_DIGIT = {"name": "chain_sum", "options": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}}


def test_holdout_with_9600_training_problems_is_not_empty():
    """configs/default.yaml with data.limit=9600: reasoning-gym seeds entry i with seed + i,
    so the holdout seed (12345) re-draws training entries for its first ~16,000 indices;
    the held-out set used to come back empty. Now the draw goes on past them."""
    from ssb.config import load_config
    from ssb.data.load import load_problems
    from ssb.data.problem import question_keys

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml", ["data.limit=9600"])
    train = question_keys(load_problems(cfg.data))
    assert len(train) == 9600
    probs, info = heldout.holdout_problems(cfg.eval.holdout, train)
    assert len(probs) == 200 and info["kept"] == 200 and info["exhausted"] is False
    assert not question_keys(probs) & train
    assert info["dropped_duplicates_of_training"] > 10_000  # what deduplication cost, in the summary
    assert info["candidates_drawn"] == info["dropped_duplicates_of_training"] + info["dropped_repeats"] + 200
    assert info["dropped_duplicates"] == info["dropped_duplicates_of_training"] + info["dropped_repeats"]


def test_holdout_exhausted_space_says_so(caplog):
    from ssb.config import DataConfig, ReasoningGymTask
    from ssb.data.gym import reasoning_gym_problems
    from ssb.data.problem import question_keys

    holdout = DataConfig(source="reasoning_gym", limit=100, seed=5, tasks=[ReasoningGymTask(**ONE_DIGIT)])
    # one-digit two-term chain sums have 200 distinct questions: train on 150 of them
    train = question_keys(reasoning_gym_problems([ReasoningGymTask(**ONE_DIGIT)], size=150, seed=1))
    with caplog.at_level("WARNING"):
        probs, info = heldout.holdout_problems(holdout, train)
    assert 0 < len(probs) <= 50 and info["kept"] == len(probs) and info["exhausted"] is True
    assert "only" in caplog.text and "outside the training set" in caplog.text

    # train on all 200: nothing can be held out, and the error says why with the counts
    everything = question_keys(reasoning_gym_problems([ReasoningGymTask(**ONE_DIGIT)], size=200, seed=1))
    assert len(everything) == 200
    with pytest.raises(heldout.EvalError) as exc:
        heldout.holdout_problems(holdout, everything)
    msg = str(exc.value)
    assert "no problem left outside the training set" in msg and "were training questions" in msg
    assert "data.limit" in msg and "kept 0 of the 100 wanted" in msg


# ----------------------------------------------------------------------------- ssb eval's arguments (issue 38)


def test_limit_cuts_the_holdout_set_too_and_keeps_the_pinned_set_whole(tmp_path):
    """`ssb eval --limit 3 --bench holdout`: 3 of the 10 pinned held-out problems (the limit was ignored)."""
    from ssb.config import DataConfig, ReasoningGymTask

    holdout = DataConfig(source="reasoning_gym", limit=10, seed=7, tasks=[ReasoningGymTask(**ONE_DIGIT)])
    probs, info = heldout.bench_problems("holdout", EvalConfig(limit=3, holdout=holdout), set(), tmp_path)
    pinned = read_jsonl(tmp_path / "holdout.problems.jsonl")
    assert len(probs) == 3 and len(pinned) == 10 and [p.id for p in probs] == [r["id"] for r in pinned[:3]]
    assert info["kept"] == 10 and info["limit"] == 3
    every, info = heldout.bench_problems("holdout", EvalConfig(holdout=holdout), set(), tmp_path)
    assert len(every) == 10 and "limit" not in info


def _fake_evaluate(calls):
    """stages.evaluate.evaluate without a model: 2 of 4 problems right, written where it is asked."""
    def evaluate(model_cfg, adapter, benches, prompt_cfg, gen_cfg, eval_cfg, out, data_file=None, exclude=None,
                 label=None, **kw):
        calls.append({"out": Path(out), "limit": eval_cfg.limit, "benches": list(benches), "data": data_file})
        recs = [_rec(f"p{i}", [i < 2]) for i in range(4)]
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "amc23.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        summary = {"label": label, "benches": {"amc23": ev.summarize(recs)}}
        (Path(out) / "summary.json").write_text(json.dumps(summary))
        return summary
    return evaluate


def test_eval_tables_show_this_invocations_models_not_their_neighbours(tmp_path, monkeypatch, capsys):
    """`ssb eval --data amc23.jsonl --out evals/amc` beside an unrelated evals/screen: one row, no pairing."""
    from ssb import cli_eval
    from ssb.cli import build_parser

    calls = []
    monkeypatch.setattr(cli_eval, "evaluate", _fake_evaluate(calls))
    screen = tmp_path / "evals" / "screen"
    screen.mkdir(parents=True)
    other = [_rec(f"p{i}", [True]) for i in range(4)]
    (screen / "amc23.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other))
    (screen / "summary.json").write_text(json.dumps({"label": "screened-model",
                                                     "benches": {"amc23": ev.summarize(other)}}))
    data = tmp_path / "amc23.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    args = build_parser().parse_args(["eval", "--model", "org/some-model", "--data", str(data),
                                      "--out", str(tmp_path / "evals" / "amc"), "--limit", "100"])
    res = cli_eval.evaluate_cli(args)
    out = capsys.readouterr().out
    assert list(res["summaries"]) == ["amc"] and res["paired"] == []
    assert "screened-model" not in out and "some-model" in out
    assert calls[0]["limit"] == 100 and calls[0]["data"] == str(data)
