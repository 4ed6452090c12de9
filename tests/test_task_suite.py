"""The task suite (issue 24): its configs draw their reasoning-gym tasks, their worked examples are
in a format the gates accept, and ``bench.tasks`` reads each task's comparison the right way round."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench import tasks
from ssb.config import load_config
from ssb.data.load import load_problems
from ssb.data.problem import Problem
from ssb.grading.gates import asks_boxed, check_reply, last_result
from ssb.grading.grade import grade

ROOT = Path(__file__).resolve().parents[1]
TASKS = sorted((ROOT / "configs" / "tasks").glob("*.yaml"))


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_task_config_draws_its_task_and_its_example_passes_the_gates(path):
    cfg = load_config(path)
    assert any(f"ssb run configs/tasks/{path.name}" in line for line in path.read_text().splitlines()[:12])
    train = load_problems(cfg.data.model_copy(update={"limit": 6}))
    held = load_problems(cfg.eval.holdout.model_copy(update={"limit": 6}))
    assert len(train) == len(held) == 6
    assert [t.name for t in cfg.data.tasks] == [t.name for t in cfg.eval.holdout.tasks]  # held out from the same task
    assert not {p.question for p in train} & {p.question for p in held}
    # every worked example is a solution the teacher may write: it passes every text gate, its last result is its answer
    assert cfg.prompt.examples
    for ex in cfg.prompt.examples:
        reply = ex.solution
        boxed = reply.rsplit("\\boxed{", 1)[1].split("}")[0]
        v = check_reply(reply, correct=True, finished=True, outcome="correct", cfg=cfg.teacher.gates, privileged=None,
                        reference=None, want_boxed=asks_boxed(cfg.prompt))
        assert v.ok, (path.name, v)
        assert last_result(reply) == boxed
        assert "\n" in reply.split("\n\n")[0] or path.stem == "products"  # multi-line working (products: one chain)
    # a drawn problem's answer is graded by its own checker: the gold answer in the example's format is correct
    p = train[0]
    assert grade(p, f"So it is.\n\nThe answer is \\boxed{{{p.answer}}}.").correct


def test_suite_reads_each_compare_file_as_ssb_minus_the_other_arm(tmp_path):
    src = json.loads((ROOT / "bench" / "results" / "compare.json").read_text())
    (tmp_path / "compare.json").write_text(json.dumps(src))
    doc = tasks.build(tmp_path, suite=[("chain_sum", "configs/default.yaml", "compare.json", False, "one line")])
    (t,) = doc["tasks"]
    arms = src["arms"]
    assert t["base_accuracy"] == arms["base"]["accuracy"] and len(t["replicates"]) == src["n_replicates"]
    assert t["ssb_base"]["value"] == arms["ssb"]["vs_base"]["value"]
    # compare stores SFT - SSB; the suite reports SSB - SFT with the interval mirrored
    sft = arms["sft"]["vs_ssb"]
    assert t["ssb_sft"]["value"] == -sft["value"] and t["ssb_sft"]["ci"] == [-sft["ci"][1], -sft["ci"][0]]
    assert t["ssb_sft"]["significant"] is (not (sft["ci"][0] <= 0 <= sft["ci"][1]))
    g = arms["grpo"]["vs_ssb"]
    assert t["ssb_grpo"]["ci"] == [-g["ci"][1], -g["ci"][0]]
    r0 = t["replicates"][0]
    assert r0["accuracy"]["ssb"] == arms["ssb"]["per_replicate_accuracy"][0] and r0["pairs"] == src["replicates"][0]["pairs"]
    assert t["name"] in doc["summary"]["ssb_base"]["above" if t["ssb_base"]["significant"] else "level"]


def test_suite_reads_the_sdft_arm_and_ssb_best_where_a_comparison_has_them(tmp_path):
    """The on-policy arm (``accuracy.sdft``, ``ssb_sdft``, ``flops.sdft``) and SSB's loss chosen on validation
    (``ssb_best``, ``ssb_best_choice``, ``ssb_best_<arm>``, best minus that arm) come from compare's
    results as they are; without them the task has neither (and the suite still builds)."""
    src = _with_sdft_and_best(json.loads((ROOT / "bench" / "results" / "compare.json").read_text()))
    row = ("chain_sum", "configs/default.yaml", "compare.json", False, "one line")
    best = src["arms"]["sft"]
    (tmp_path / "compare.json").write_text(json.dumps(src))
    (t,) = tasks.build(tmp_path, suite=[row])["tasks"]
    assert t["accuracy"]["sdft"]["value"] == src["arms"]["sft"]["accuracy"]
    assert t["ssb_sdft"]["value"] == -src["arms"]["sft"]["vs_ssb"]["value"]
    assert 0.9 <= t["flops"]["sdft"] / t["flops"]["ssb"] <= 1.1 and "sdft" in t["replicates"][0]["accuracy"]
    assert t["ssb_best"]["arm"] == "ssb:distill.temperature=1" and t["ssb_best"]["value"] == best["accuracy"]
    assert t["ssb_best_choice"]["paper"]["validation_accuracy"] == 0.4
    assert t["ssb_best_sft"] == {"value": 0.02, "ci": [-0.01, 0.05], "significant": False, "ci_problems": [0.0, 0.04]}
    assert t["ssb_best_grpo"]["significant"] and "ssb_best_rft" not in t  # only what compare set it against
    del src["arms"]["sdft"], src["ssb_best"]
    (tmp_path / "compare.json").write_text(json.dumps(src))
    (t,) = tasks.build(tmp_path, suite=[row])["tasks"]
    assert "sdft" not in t["accuracy"] and "ssb_sdft" not in t and "ssb_best" not in t


def _with_sdft_and_best(src: dict) -> dict:
    """A compare results document with an sdft arm (sft's numbers, 1.05x SSB's FLOPs), ``ssb_best`` (sft's
    numbers for the variant ``ssb:distill.temperature=1``) and ``tuning``, as a tuned rerun writes them."""
    src["arms"]["sdft"] = copy.deepcopy(src["arms"]["sft"])
    src["arms"]["sdft"]["compute"]["flops"] = 1.05 * src["arms"]["ssb"]["compute"]["flops"]
    best = copy.deepcopy(src["arms"]["sft"])  # any pooled arm stands for the chosen variant's numbers
    vs = {"value": 0.02, "ci": [-0.01, 0.05], "ci_problems": [0.0, 0.04]}
    src["ssb_best"] = {"arm": "ssb:distill.temperature=1", "accuracy": best["accuracy"], "ci": best["ci"],
                       "per_replicate_accuracy": best["per_replicate_accuracy"], "compute": best["compute"],
                       "vs": {"sft": vs, "grpo": {**vs, "value": -0.06, "ci": [-0.09, -0.03]}},
                       "choice": {"arm": "ssb:distill.temperature=1", "validation_accuracy": 0.5,
                                  "paper": {"validation_accuracy": 0.4}, "candidates": {"ssb": {}, "x": {}}}}
    src["tuning"] = {a: {"chosen": {"lr": 6.32e-4, "validation_accuracy": 0.5}} for a in ("ssb", "sft", "grpo")}
    return src


def test_the_readme_says_whether_ssb_best_beats_sft_and_grpo_and_what_the_rerun_changed(tmp_path, monkeypatch):
    """The README's sentence per task (beats / level with / below SFT and GRPO, read from the intervals) and
    docs/tasks.md's before-and-after table are rendered from tasks.json and tasks_untuned.json."""
    from bench.render import common
    from bench.render.tasks import render_tasks_changes, render_tasks_main

    results = ROOT / "bench" / "results"
    src = _with_sdft_and_best(json.loads((results / "compare.json").read_text()))
    (tmp_path / "compare.json").write_text(json.dumps(src))
    doc = tasks.build(tmp_path, suite=[("chain_sum", "configs/default.yaml", "compare.json", False, "one line")])
    (tmp_path / "tasks.json").write_text(json.dumps(doc))
    (tmp_path / "tasks_untuned.json").write_text((results / "tasks_untuned.json").read_text())
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    main = render_tasks_main()
    assert ("`chain_sum`: SSB's best loss on validation is `ssb:distill.temperature=1` (validation 50.0% against "
            "the paper loss's 40.0%, of 2 SSB losses); on the held-out problems it is level with SFT (+2.0 pt "
            "[-1.0, +5.0]), is below GRPO (-6.0 pt [-9.0, -3.0])") in main
    changes = render_tasks_changes()
    sft_before = json.loads((results / "tasks_untuned.json").read_text())["tasks"][0]["accuracy"]["sft"]["value"]
    row = next(x for x in changes.splitlines() if x.startswith("| `chain_sum` | SFT |"))
    assert f"| {100 * sft_before:.1f}% | {100 * src['arms']['sft']['accuracy']:.1f}% |" in row and "| 0.000632 |" in row
    assert "Not rerun yet" not in changes
    # where the comparison's time went: its total and its largest part, in hours
    top = max(src["timing"]["by_part"], key=src["timing"]["by_part"].get)
    t = doc["tasks"][0]
    assert t["hours"] == round(src["timing"]["total_seconds"] / 3600, 2)
    assert (f"- `chain_sum`'s tuned comparison took {t['hours']:.1f} h of wall-clock on this CPU: "
            f"{top.removeprefix('stage:')} {t['hours_by_part'][top]:.1f} h") in changes


def test_suite_refuses_one_replicate_and_a_missing_arm(tmp_path):
    src = json.loads((ROOT / "bench" / "results" / "compare.json").read_text())
    row = ("chain_sum", "configs/default.yaml", "compare.json", False, "one line")
    one = copy.deepcopy(src)
    one["n_replicates"] = 1
    (tmp_path / "compare.json").write_text(json.dumps(one))
    with pytest.raises(tasks.SuiteError, match="1 replicate"):
        tasks.build(tmp_path, suite=[row])
    del src["arms"]["grpo"]
    (tmp_path / "compare.json").write_text(json.dumps(src))
    with pytest.raises(tasks.SuiteError, match="grpo"):
        tasks.build(tmp_path, suite=[row])
    with pytest.raises(tasks.SuiteError, match="missing"):
        tasks.build(tmp_path / "nowhere", suite=[row])


def test_the_committed_suite_is_what_its_compare_files_say():
    """bench/results/tasks.json has what issue 24 asks (≥ 3 tasks, ≥ 2 multi-step, one not addition, ≥ 2
    replicates each, SSB minus base / GRPO / SFT with intervals), and is exactly bench.tasks's reading of
    the committed compare files (nothing typed, nothing stale)."""
    doc = json.loads((ROOT / "bench" / "results" / "tasks.json").read_text())
    assert {k: v for k, v in doc.items() if k != "provenance"} == json.loads(json.dumps(tasks.build()))
    assert doc["n_tasks"] >= 3 and doc["multi_step_tasks"] >= 2
    assert any("not addition" in t["why"] for t in doc["tasks"])
    for t in doc["tasks"]:
        assert (ROOT / t["results"]).is_file() and load_config(ROOT / t["config"])
        assert len(t["replicates"]) >= 2 and 0 < t["base_accuracy"] < 1
        for key in ("ssb_base", "ssb_grpo", "ssb_sft"):
            lo, hi = t[key]["ci"]
            assert lo <= t[key]["value"] <= hi and t[key]["significant"] is (not lo <= 0 <= hi)


# ----------------------------------------------------------------------------- docs/tasks.md's reading


@pytest.fixture(scope="module")
def suite():
    doc = json.loads((ROOT / "bench" / "results" / "tasks.json").read_text())
    return {t["name"]: t for t in doc["tasks"]}


def _below(d):
    return d["significant"] and d["value"] < 0


def test_ssb_helps_on_the_in_range_tasks_and_is_never_the_best_arm(suite):
    in_range = [t for t in suite.values() if t["in_range"]]
    assert {t["name"] for t in in_range} == {"chain_sum", "chain_sum3", "basic_arithmetic"}
    c3, c2, ba = suite["chain_sum3"], suite["chain_sum"], suite["basic_arithmetic"]
    # untuned, 2 replicates on nearly the same problems, SSB was ahead of the base everywhere; tuned with 3
    # independent replicates, on chain_sum the paper's loss is level with the base (its interval holds 0)
    assert all(t["ssb_base"]["significant"] and t["ssb_base"]["value"] > 0 for t in (c3, ba))
    assert c2["tuning"] and len(c2["replicates"]) == 3 and c2["ssb_base"]["value"] > 0 and not c2["ssb_base"]["significant"]
    for t in (c3, ba):  # the multi-step tasks: GRPO, SFT and RFT all ahead of SSB
        assert t["multi_step"] and _below(t["ssb_grpo"]) and _below(t["ssb_sft"]) and _below(t["ssb_rft"])
        r0, r1 = (r["accuracy"] for r in t["replicates"])
        assert r0["grpo"] - r0["ssb"] > 0.05 and r1["grpo"] - r1["ssb"] < 0.01  # GRPO's lead is replicate 0's
    assert abs(c3["replicates"][1]["accuracy"]["grpo"] - c3["replicates"][1]["accuracy"]["ssb"]) < 0.01  # level
    r1 = ba["replicates"][1]["accuracy"]
    assert r1["grpo"] < r1["base"]  # below the base model
    assert not c2["ssb_grpo"]["significant"] and _below(c2["ssb_sft"]) and _below(c2["ssb_rft"])
    assert _below(c2["ssb_sdft"]) and c2["ssb_grpo"]["value"] < 0 and c2["ssb_best_base"]["significant"]
    assert c2["ssb_best"]["arm"] == "ssb:distill.temperature=1" and _below(c2["ssb_best_sft"]) and _below(c2["ssb_best_rft"])
    assert not c2["ssb_best_grpo"]["significant"] and not c2["ssb_best_sdft"]["significant"]
    assert not c3.get("tuning") and c3["replicate_training"]["shared_with_replicate_0"][0] > 300  # still untuned
    # the README: "the tuned rerun has finished chain_sum; the other tasks' rows are still the untuned comparisons"
    assert [t["name"] for t in suite.values() if t.get("tuning")] == ["chain_sum"]
    assert c3["pairs_multi_step_share"] > 0.3 and c2["pairs_multi_step_share"] == 0


def test_products_is_below_range_with_one_line_pairs(suite):
    p = suite["products"]
    assert not p["in_range"] and p["base_accuracy"] < 0.15 and p["pairs_multi_step_share"] < 0.1
    assert not p["ssb_base"]["significant"]
    full = json.loads((ROOT / p["results"]).read_text())["arms"]
    lo, hi = full["grpo"]["vs_base"]["ci"]
    assert lo <= 0 <= hi  # GRPO stays at the base too
    assert all(full[a]["vs_base"]["ci"][0] > 0 for a in ("sft", "rft"))  # SFT and RFT gain a few points


def test_what_the_chain_sum3_student_writes(suite):
    q = suite["chain_sum3"]["output_quality"]
    assert q["base"]["equalities_hold"] < q["ssb"]["equalities_hold"] < q["grpo"]["equalities_hold"]
    assert q["sft"]["equalities_per_answer"] < q["ssb"]["equalities_per_answer"] < q["grpo"]["equalities_per_answer"]
    assert q["grpo"]["equalities_per_answer"] > 1.9  # almost always two lines


def test_what_the_basic_arithmetic_student_writes(suite):
    t = suite["basic_arithmetic"]
    q = t["output_quality"]
    assert all(q["ssb"]["equalities_per_answer"] < q[a]["equalities_per_answer"] for a in ("base", "sft", "rft", "grpo"))
    assert all(q["base"]["equalities_hold"] < q["ssb"]["equalities_hold"] < q[a]["equalities_hold"]
               for a in ("sft", "rft", "grpo"))
    assert t["pairs_multi_step_share"] < 0.5  # most pairs are one line
    assert "not addition" in t["why"] and t["replicate_training"]["shared_with_replicate_0"][0] < 64


def test_why_ssb_loses_the_teacher_is_close_to_the_student_but_at_the_results(suite):
    ts = json.loads((ROOT / "bench" / "results" / "teacher_signal_tasks.json").read_text())
    assert {Path(r["run"]).parent.name for r in ts["runs"]} >= {"chain_sum3", "products"}
    for r in ts["runs"]:
        teacher, student = r["results"]["run"], r["results"]["student"]
        assert student["argmax_miss"] < 0.1  # the bare student already picks nearly every solution token
        assert teacher["answer_logprob"] > student["answer_logprob"]  # the hint makes the teacher surer at results
        assert teacher["answer_argmax_acc"] > student["answer_argmax_acc"]
    assert all(t["pairs_copies_of_shown_rollout"] > 0.5 for t in suite.values())  # mostly copies of the shown rollout


def test_the_answer_sign_reading_counts_negative_answers_per_arm_and_in_training(tmp_path):
    """bench/answer_sign.py on a comparison directory written by hand: held-out accuracy split by the sign
    of the gold answer, pooled over the evaluated replicates; the training draw's negative problems."""
    from bench.answer_sign import task

    def rec(answer, extracted):
        return {"answer": answer, "extracted": [extracted], "correct": [answer == extracted]}

    def write(path, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    held = [("-3", "3"), ("-5", "-5"), ("7", "7"), ("8", "1")]
    write(tmp_path / "eval/base/holdout.jsonl", [rec(a, "1") for a, _ in held])
    write(tmp_path / "eval/r0-ssb/holdout.jsonl", [rec(a, e) for a, e in held])
    write(tmp_path / "eval/r0-ssb-distill.temperature=1/holdout.jsonl", [rec(a, a) for a, _ in held])
    (tmp_path / "eval/r0.done.json").write_text(json.dumps({"replicate": 0, "labels": []}))
    write(tmp_path / "r0/rollouts.jsonl", [{"problem": {"answer": "-2"}, "grades": ["correct", "wrong"]},
                                           {"problem": {"answer": "-9"}, "grades": ["wrong", "wrong"]},
                                           {"problem": {"answer": "4"}, "grades": ["correct", "correct"]}])
    write(tmp_path / "r0/pairs.jsonl", [{"problem": {"answer": "-2"}}, {"problem": {"answer": "4"}}])
    doc = task(tmp_path)
    assert doc["replicates_evaluated"] == [0]
    ssb = doc["held_out"]["ssb"]
    assert (ssb["negative_n"], ssb["negative_correct"], ssb["negative_accuracy"]) == (2, 1, 0.5)
    assert (ssb["positive_n"], ssb["positive_accuracy"], ssb["accuracy"]) == (2, 0.5, 0.5)
    assert ssb["writes_a_negative_answer"] == 0.25
    assert doc["held_out"]["ssb:distill.temperature=1"]["negative_accuracy"] == 1.0
    assert doc["held_out"]["base"]["accuracy"] == 0.0 and doc["held_out"]["sft"]["n"] == 0  # not evaluated
    assert doc["training"]["r0"] == {"problems": 3, "negative": 2, "negative_with_a_correct_rollout": 1,
                                     "correct_rollouts_of_negative": 1, "pairs": 2, "pairs_with_a_negative_answer": 1}


def test_the_signal_benchmark_takes_ssb_best_from_a_finished_search(tmp_path):
    """bench.signal_shares --best-from-tuning: the loss diagnosed as ``ssb_best`` is the one the search
    chose on validation (``tuning.best_variant``, the rule ``ssb compare`` reports), with its lr."""
    from bench.signal_shares import best_from_tuning

    def arm(lr, acc):
        return {"trials": [{"lr": lr, "validation_accuracy": acc}], "chosen": {"lr": lr, "validation_accuracy": acc}}

    f = tmp_path / "tuning.json"
    f.write_text(json.dumps({"tuning": {"ssb": arm(2e-4, 0.30), "ssb:distill.temperature=1": arm(2e-3, 0.35),
                                        "ssb:distill.ce_weight=1": arm(2e-4, 0.34), "sft": arm(6.32e-4, 0.37)}}))
    b = best_from_tuning(str(f))
    assert b["arm"] == "ssb:distill.temperature=1" and b["changes"] == {"temperature": 1}
    assert b["overrides"] == ["distill.temperature=1", "distill.lr=0.002"]
    f.write_text(json.dumps({"tuning": {"ssb": arm(2e-4, 0.30), "sft": arm(6.32e-4, 0.37)}}))
    with pytest.raises(SystemExit, match="no ssb arm and ssb: variant"):
        best_from_tuning(str(f))
