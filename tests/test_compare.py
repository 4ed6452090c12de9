"""`ssb compare` on the smoke config end to end (one comparison shared by the module: every arm,
one replicate, K sensitivity at K_max 3), the compute ledger's sums, the curve points, the K
subsampling, resuming; and the aggregation on synthetic replicates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssb.comparison import results as arms_results
from ssb.comparison.spec import CompareError, ablation_overrides, parse_arms
from ssb.report import stats
from ssb.report.funnel import rollout_counts
from ssb.report.ledger import KINDS, flops, ledger
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run
from ssb.rundir.table import STAGES

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("base", "ssb", "sft", "rft", "grpo", "sdft")
ABLATION = "ssb:distill.temperature=1"  # a student-only ablation: it reuses r0's pairs and teacher signal


def ssb(*args, timeout=1200):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "ssb.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


ARM_SPEC = ",".join(ARMS) + "," + ABLATION  # the shared comparison's arms (a rerun names the same)
COMPARE = ("compare", "configs/smoke.yaml", "--replicates", "1", "--n", "8", "--k-max", "3", "--k-values", "2")


@pytest.fixture(scope="module")
def smoke_compare(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    res = ssb(*COMPARE, "--dir", str(d), "--arms", ARM_SPEC)
    assert res.returncode == 0, res.stderr[-4000:]
    return d, json.loads((d / "results.json").read_text()), res.stdout


@pytest.mark.slow
def test_every_arm_is_trained_and_evaluated_on_the_same_problems(smoke_compare):
    d, doc, stdout = smoke_compare
    assert set(ARMS) <= set(doc["arms"]) and doc["n_replicates"] == 1 and doc["n_problems"] == 8
    assert doc["training_shared_with_replicate_0"] == {}  # one replicate: nothing to share
    for name in ARMS:
        a = doc["arms"][name]
        assert 0 <= a["ci"][0] <= a["accuracy"] <= a["ci"][1] <= 1
        assert set(a["output_quality"]) >= {"states_equation", "equations_hold", "shows_work", "mean_tokens",
                                            "no_answer_rate"}
        if name != "base":
            assert a["compute"]["flops"] > 0 and a["vs_base"]["per_replicate"][0]["a_only"] >= 0
    ids = {lab.name: {str(r["id"]) for r in read_jsonl(lab / "holdout.jsonl")} for lab in (d / "eval").iterdir()
           if lab.is_dir()}
    assert len(ids) >= 8 and len({frozenset(v) for v in ids.values()}) == 1  # every model, the same 8 problems
    assert (d / "results.md").read_text().startswith("8 held-out problems") and "| grpo |" in stdout
    assert (d / "plots" / "accuracy_vs_flops.png").stat().st_size > 0
    # the smoke config's GRPO stops on max_steps: the verdict must not call that matched compute
    assert doc["grpo_budget"] == "steps" and "compute is not matched" in doc["verdict"][0]


@pytest.mark.slow
def test_the_ledger_adds_up(smoke_compare):
    d, doc, _ = smoke_compare
    run = Run.open(d / "r0")
    led = ledger(run)
    assert run.manifest()["compute"]["arms"] == led["arms"]  # the report wrote it
    rollouts = read_jsonl(run.file("rollouts.jsonl"))
    assert led["stages"]["rollout"]["prefill_tokens"] == sum(r["prompt_tokens"] for r in rollouts)
    assert led["stages"]["rollout"]["generated_tokens"] == sum(sum(r["completion_tokens"]) for r in rollouts)
    teacher = read_jsonl(run.file("pairs.jsonl")) + read_jsonl(run.file("teacher_rejects.jsonl"))
    assert led["stages"]["teacher"]["prefill_tokens"] == sum(r["teacher_prompt_tokens"] for r in teacher) > 0
    # the plausibility forward (student prompt + solution of every scored reply) is counted, gate on or off
    assert led["stages"]["teacher"]["forward_tokens"] == sum(r["student_forward_tokens"] for r in teacher) > 0
    n = led["params"]["matmul"]
    for name, st in led["stages"].items():
        fwd = st["prefill_tokens"] + st["generated_tokens"] + st["forward_tokens"]
        assert st["flops"] == 2 * n * fwd + (4 * n + 6 * led["params"]["lora"]) * st["trained_tokens"], name
    for arm, a in led["arms"].items():
        paid = [s.name for s in STAGES if arm in s.cost_of and s.name in led["stages"]]
        assert a["stages"] == paid
        for k in (*KINDS, "flops"):
            assert a[k] == sum(led["stages"][s][k] for s in paid), (arm, k)
    assert set(led["arms"]) == {"ssb", "sft", "rft", "grpo", "sdft"}
    assert doc["arms"]["ssb"]["compute"]["flops"] == led["arms"]["ssb"]["flops"]
    # SFT pays for SSB's data but not its teacher signal; RFT for the rollouts alone
    assert led["arms"]["sft"]["flops"] < led["arms"]["ssb"]["flops"]
    assert led["arms"]["rft"]["generated_tokens"] == led["stages"]["rollout"]["generated_tokens"]
    assert led["stages"]["distill"]["trained_tokens"] == led["stages"]["sft"]["trained_tokens"] > 0


@pytest.mark.slow
def test_nothing_is_generated_twice_and_curves_have_points(smoke_compare):
    d, doc, _ = smoke_compare
    r0 = Run.open(d / "r0")
    assert (d / "r0-ssb-half" / "rollouts.jsonl").read_bytes() == r0.file("rollouts.jsonl").read_bytes()
    half = read_jsonl(d / "r0-ssb-half" / "pairs.jsonl")
    assert half == read_jsonl(r0.file("pairs.jsonl"))[: len(half)] and half
    for arm in ("ssb", "sft", "rft", "grpo"):
        assert r0.stage(arm if arm != "ssb" else "distill")["status"] == "done"
    grpo = doc["curves"]["grpo"]
    points = json.loads(r0.file("grpo_points/points.json").read_text())
    assert [p["point"] for p in points] == [1, 2, 3, 4]  # --grpo-points 4 along max_steps 2
    assert grpo[-1]["point"] == "final" and all(p["flops"] > 0 and 0 <= p["accuracy"] <= 1 for p in grpo)
    assert [p["flops"] for p in grpo] == sorted(p["flops"] for p in grpo)
    ssb_pts = {p["point"]: p for p in doc["curves"]["ssb"]}
    assert ssb_pts["half_pairs"]["flops"] < ssb_pts["final"]["flops"]


@pytest.mark.slow
def test_k_sensitivity_subsamples_one_rollout_pass(smoke_compare):
    d, doc, _ = smoke_compare
    k = doc["k_sensitivity"]
    top = read_jsonl(d / "k3" / "rollouts.jsonl")
    assert [r["k"] for r in k["yield"]] == [2, 3]
    assert k["yield"][-1]["with_both"] == rollout_counts(top)["with_both"]
    sub = read_jsonl(d / "k3-sub2" / "rollouts.jsonl")
    assert [s["grades"] for s in sub] == [t["grades"][:2] for t in top]
    assert [s["completions"] for s in sub] == [t["completions"][:2] for t in top]
    assert k["yield"][0]["with_both"] == rollout_counts(sub)["with_both"]
    assert k["trained"][0]["k"] == 2 and 0 <= k["trained"][0]["accuracy"] <= 1


@pytest.mark.slow
def test_a_rerun_resumes_without_training_again(smoke_compare):
    d, doc, _ = smoke_compare
    before = {s: v.get("finished") for s, v in Run.open(d / "r0").manifest()["stages"].items() if s != "report"}
    res = ssb(*COMPARE, "--dir", str(d), "--arms", ARM_SPEC)
    assert res.returncode == 0, res.stderr[-3000:]
    after = {s: v.get("finished") for s, v in Run.open(d / "r0").manifest()["stages"].items() if s != "report"}
    assert after == before
    again = json.loads((d / "results.json").read_text())
    assert {a: v["accuracy"] for a, v in again["arms"].items()} == {a: v["accuracy"] for a, v in doc["arms"].items()}


@pytest.mark.slow
def test_no_curves_evaluates_the_final_adapters_only(smoke_compare):
    """--no-curves on the same directory: nothing trained again, every curve is its final point alone."""
    d, doc, _ = smoke_compare
    before = {s: v.get("finished") for s, v in Run.open(d / "r0").manifest()["stages"].items() if s != "report"}
    res = ssb(*COMPARE, "--dir", str(d), "--arms", ARM_SPEC, "--no-curves")
    assert res.returncode == 0, res.stderr[-3000:]
    assert {s: v.get("finished") for s, v in Run.open(d / "r0").manifest()["stages"].items() if s != "report"} == before
    flat = json.loads((d / "results.json").read_text())
    assert flat["curves_measured"] is False and doc["curves_measured"] is True
    assert {a: [p["point"] for p in c] for a, c in flat["curves"].items()} == {a: ["final"] for a in doc["curves"]}
    assert {a: v["accuracy"] for a, v in flat["arms"].items()} == {a: v["accuracy"] for a, v in doc["arms"].items()}


@pytest.mark.slow
def test_a_rounds_arm_adds_rounds_to_the_same_replicates(smoke_compare):
    """``ssb@2`` on the same directory: replicate 0 runs a second round (rounds/r2, on its merged model),
    nothing it had is trained again, and the new arm is scored on the same held-out problems with its
    compute added up over both rounds and set against GRPO's (the last round meets the final GRPO)."""
    d, doc, _ = smoke_compare
    before = {s: v.get("finished") for s, v in Run.open(d / "r0").manifest()["stages"].items()
              if s not in ("report", "rounds")}
    res = ssb(*COMPARE, "--dir", str(d), "--no-curves", "--arms", "base,ssb,grpo,ssb@2")
    assert res.returncode == 0, res.stderr[-3000:]
    m = Run.open(d / "r0").manifest()["stages"]
    assert {s: v.get("finished") for s, v in m.items() if s not in ("report", "rounds")} == before
    assert m["rounds"]["status"] == "done" and (d / "r0" / "rounds" / "r2" / "student" / "adapter_config.json").is_file()
    two = json.loads((d / "results.json").read_text())
    a = two["arms"]["ssb@2"]
    ids = [str(r["id"]) for r in read_jsonl(d / "eval" / "base" / "holdout.jsonl")]
    assert [str(r["id"]) for r in read_jsonl(d / "eval" / "r0-ssb@2" / "holdout.jsonl")] == ids
    assert a["compute"]["flops"] > two["arms"]["ssb"]["compute"]["flops"] > 0
    assert a["vs_ssb"]["per_replicate"] and a["matched_grpo"] == "grpo" and a["vs_matched_grpo"]["ci"]
    assert "matched_grpo" not in two["arms"]["ssb"]  # GRPO ran at a steps budget: no point at round 1's compute
    assert two["arms"]["ssb"]["accuracy"] == doc["arms"]["ssb"]["accuracy"]
    # bench.rounds's reading of this file (it asks for 2 replicates; this one has 1)
    from bench import rounds

    with pytest.raises(rounds.SuiteError, match="1 replicate"):
        rounds.task_rounds("smoke", "configs/smoke.yaml", "results.json", results_dir=d)
    t = rounds.task_rounds("smoke", "configs/smoke.yaml", "results.json", results_dir=d, min_replicates=1)
    r1, r2 = t["rounds"]
    assert (r1["round"], r2["round"]) == (1, 2) and r2["accuracy"] == a["accuracy"] and r1["vs_round1"] is None
    assert r2["vs_round1"]["value"] == a["vs_ssb"]["value"] and r2["vs_grpo"]["value"] == a["vs_matched_grpo"]["value"]
    assert r2["grpo_arm"] == "grpo" and r2["flops"] == a["compute"]["flops"]
    row = json.loads((d / "r0" / "rounds" / "rounds.json").read_text())["rounds"][1]
    assert r2["collapse"]["validation_accuracy"] == row["validation"]["accuracy"]
    assert r2["collapse"]["rollout_no_answer_rate"] == row["rollout_no_answer_rate"] and r2["pairs"] == row["pairs"]
    assert r2["collapse"]["stop_rule_would_stop"] == int(row["validation"]["accuracy"] < r1["collapse"]["validation_accuracy"])
    assert r2["pairs_written"] is None and t["pairs_file"] is None  # no round_pairs file beside it yet
    # bench.round_pairs reads what each round's teacher wrote from the directory; bench.rounds adds it
    from bench import round_pairs

    written = round_pairs.build(d)
    (rep,) = written["replicates"]
    assert [x["round"] for x in rep["rounds"]] == [1, 2] and rep["rounds"][1]["n"] == row["pairs"]
    sol = [p["solution"] for p in read_jsonl(d / "r0" / "rounds" / "r2" / "pairs.jsonl")]
    taught = sum(s.strip().split("\n")[-1].startswith("The answer is \\boxed{") and s.strip().endswith("}.") for s in sol)
    assert rep["rounds"][1]["ends_as_taught"] == taught / len(sol)
    (d / "results_pairs.json").write_text(json.dumps(written))
    t = rounds.task_rounds("smoke", "configs/smoke.yaml", "results.json", results_dir=d, min_replicates=1)
    w = t["rounds"][1]["pairs_written"]
    assert w["ends_as_taught"] == rep["rounds"][1]["ends_as_taught"] and t["pairs_file"].endswith("results_pairs.json")
    assert w["equalities_per_solution"] == rep["rounds"][1]["pair_working"]["equalities_per_solution"]


# ----------------------------------------------------------------------------- fast


def _recs(correct: list[bool], text: str = "2 + 2 = 4.\n\nThe answer is \\boxed{4}.") -> list[dict]:
    return [{"id": f"p{i}", "correct": [c], "completions": [text], "grades": ["correct" if c else "wrong"],
             "completion_tokens": [9]} for i, c in enumerate(correct)]


def test_pooled_results_pair_every_replicate_on_the_same_problems():
    base = [True] * 10 + [False] * 30
    r0 = [True] * 14 + [False] * 26
    r1 = [True] * 12 + [False] * 28
    records = {"base": _recs(base), "r0-ssb": _recs(r0), "r1-ssb": _recs(r1)}
    comp = [{"flops": 2.0, "generated_tokens": 3}, {"flops": 4.0, "generated_tokens": 5}]
    doc = arms_results.results({"base": {"labels": ["base"]}, "ssb": {"labels": ["r0-ssb", "r1-ssb"], "compute": comp}},
                               records, "base", {"ssb": [{"point": "final", "labels": ["r0-ssb", "r1-ssb"],
                                                          "flops": [2.0, 4.0]}]}, iters=500)
    s = doc["arms"]["ssb"]
    assert s["accuracy"] == pytest.approx(13 / 40) and s["per_replicate_accuracy"] == [14 / 40, 12 / 40]
    assert s["vs_base"]["value"] == pytest.approx(3 / 40)
    ref = stats.paired_diff(r0, base)
    assert s["vs_base"]["per_replicate"][0]["ci"] == list(ref["ci"]) and s["vs_base"]["per_replicate"][0]["a_only"] == 4
    assert s["compute"]["flops"] == 3.0 and s["compute"]["per_replicate"] == comp
    assert doc["curves"]["ssb"][0]["flops"] == 3.0 and doc["reach"]["ssb"]["+5pt"] == 3.0
    assert doc["reach"]["ssb"]["+1pt"] == 3.0
    text = arms_results.markdown({**doc, "grpo_budget": "flops"})
    assert "| ssb | 32.5" in text and "vs base +7.5 pt" in text


def test_ssb_best_is_the_chosen_variant_against_every_other_arm():
    """``best``: the SSB arm chosen on validation gets its pooled accuracy and best-minus-other differences
    (pooled, paired per replicate) against base, sft and grpo; the paper's arm keeps its own entry."""
    base, ssb, var, sft = [True] * 10 + [False] * 30, [True] * 12 + [False] * 28, [True] * 16 + [False] * 24, \
        [True] * 15 + [False] * 25
    records = {"base": _recs(base), "r0-ssb": _recs(ssb), "r0-ssb-distill.temperature=1": _recs(var),
               "r0-sft": _recs(sft)}
    arms = {"base": {"labels": ["base"]}, "ssb": {"labels": ["r0-ssb"]}, "sft": {"labels": ["r0-sft"]},
            "ssb:distill.temperature=1": {"labels": ["r0-ssb-distill.temperature=1"]}}
    doc = arms_results.results(arms, records, "base", {}, iters=300, best="ssb:distill.temperature=1")
    b = doc["ssb_best"]
    assert b["arm"] == "ssb:distill.temperature=1" and b["accuracy"] == pytest.approx(16 / 40)
    assert set(b["vs"]) == {"base", "sft"}  # no grpo arm here: nothing to set it against
    assert b["vs"]["sft"]["value"] == pytest.approx(1 / 40) and b["vs"]["base"]["value"] == pytest.approx(6 / 40)
    assert b["vs"]["sft"]["per_replicate"][0]["ci"] == list(stats.paired_diff(var, sft)["ci"])
    assert b["vs"]["sft"]["ci"][0] <= 1 / 40 <= b["vs"]["sft"]["ci"][1] and "ci_problems" in b["vs"]["sft"]
    assert doc["arms"]["ssb"]["accuracy"] == pytest.approx(12 / 40)
    doc["ssb_best"]["choice"] = {"validation_accuracy": 0.5, "paper": {"validation_accuracy": 0.4}}
    line = [x for x in arms_results.verdict({**doc, "grpo_budget": "flops"}) if x.startswith("SSB's best")][0]
    assert "ssb:distill.temperature=1 (validation 50.0% against the paper loss's 40.0%): 40.0% held-out" in line
    assert "minus sft +2.5 pt" in line
    assert "ssb_best" not in arms_results.results(arms, records, "base", {}, iters=50)  # no choice: no entry
    assert "ssb_best" not in arms_results.results(arms, records, "base", {}, iters=50, best="ssb:nope")


def test_the_verdict_reads_each_interval_one_way():
    """The verdict calls a difference "not significant", and names no winner, exactly where
    ``stats.reading`` reads its interval as level (it holds zero)."""
    d = lambda v, lo, hi: {"value": v, "ci": [lo, hi]}  # noqa: E731
    flops = {"flops": 1e12}
    doc = {"grpo_budget": "flops", "arms": {
        "base": {"accuracy": 0.3},
        "ssb": {"accuracy": 0.35, "vs_base": d(0.05, 0.01, 0.09), "compute": flops},
        "grpo": {"accuracy": 0.36, "vs_base": d(0.06, -0.01, 0.12), "vs_ssb": d(0.01, -0.03, 0.05), "compute": flops}}}
    first, ssb, grpo = arms_results.verdict(doc)
    assert first.endswith("the winner is neither (the interval holds zero): GRPO minus SSB +1.0 pt [-3.0, +5.0], "
                          "not significant.")
    assert "vs base +5.0 pt [+1.0, +9.0]." in ssb and "vs base +6.0 pt [-1.0, +12.0], not significant" in grpo
    doc["arms"]["grpo"]["vs_ssb"] = d(-0.04, -0.07, -0.01)
    assert "the winner is SSB: GRPO minus SSB -4.0 pt [-7.0, -1.0]." in arms_results.verdict(doc)[0]


def test_output_quality_reads_the_working():
    recs = (_recs([True]) + _recs([False], "54 + 86 = 130.\n\nThe answer is \\boxed{130}.")
            + _recs([False], "I do not know.") + _recs([True], "\\boxed{4}"))
    recs[2]["grades"] = ["no_answer"]
    q = arms_results.output_quality(recs)
    assert q["states_equation"] == 0.5 and q["equations_hold"] == 0.5
    assert q["shows_work"] == 0.75 and q["no_answer_rate"] == 0.25 and q["mean_tokens"] == 9
    # per equality: a two-step answer with one false step
    two = _recs([False], "12 + 5 = 17.\n17 - 3 = 15.\n\nThe answer is \\boxed{15}.") + _recs([True], "3 * 4 = 12.")
    q = arms_results.output_quality(two)
    assert q["equalities_per_answer"] == 1.5 and q["equalities_hold"] == 2 / 3 and q["equations_hold"] == 0.5


def test_pair_working_counts_steps_and_copies():
    rollouts = [{"id": "a", "completions": ["x", "1 + 2 = 3.\n3 + 4 = 7.\n\n\\boxed{7}"]},
                {"id": "b", "completions": ["5 * 3 = 15.\n\n\\boxed{15}"]}]
    pairs = [{"id": "a", "correct_index": 1, "solution": "1 + 2 = 3.\n3 + 4 = 7.\n\n\\boxed{7}"},
             {"id": "b", "correct_index": 0, "solution": "5 * 3 = 16.\n\n\\boxed{15}"}]
    w = arms_results.pair_working(pairs, rollouts)
    assert w == {"n": 2, "equalities_per_solution": 1.5, "multi_step_share": 0.5, "equalities_hold": 0.5,
                 "copies_of_shown_rollout": 0.5}


def test_the_flop_rule():
    p = {"matmul": 100, "lora": 3, "total": 120}
    assert flops({"prefill_tokens": 1, "generated_tokens": 2, "forward_tokens": 3}, p) == 2 * 100 * 6
    assert flops({"trained_tokens": 2}, p) == 2 * (4 * 100 + 6 * 3)
    assert flops({"trained_tokens": 1}, p, checkpointing=True) == 6 * 100 + 6 * 3


def test_arms_are_checked():
    assert parse_arms("ssb,grpo") == ["base", "ssb", "grpo"]
    with pytest.raises(CompareError, match="unknown arm 'ppo'"):
        parse_arms("ssb,ppo")
    assert ablation_overrides("ssb:correct", "{question}\n({correct})") == ["teacher.hint=correct"]
    assert ablation_overrides("ssb:contrastive", "{question}\n({correct})")[1].startswith("teacher.template=")
    assert ablation_overrides("ssb:teacher.solution=rollout", None) == ["teacher.solution=rollout"]
    with pytest.raises(CompareError, match="neither a teacher.hint"):
        ablation_overrides("ssb:both", None)
    assert ablation_overrides("ssb:distill.temperature=1+distill.ce_weight=0.5", None) == [
        "distill.temperature=1", "distill.ce_weight=0.5"]
    assert ablation_overrides("ssb:distill.lr=1e+3", None) == ["distill.lr=1e+3"]  # a '+' inside a value stays
    with pytest.raises(CompareError, match="not key=value"):
        ablation_overrides("ssb:=2", None)


def test_an_ablation_reuses_what_it_does_not_change():
    from ssb.comparison.spec import reused_stages

    upstream = ("rollout", "curate", "teacher", "logits")
    assert reused_stages(["distill.temperature=1", "lora.r=8"], "hidden") == upstream
    assert reused_stages(["distill.ce_weight=1"], "topk") == upstream
    assert reused_stages(["distill.temperature=1"], "topk") == ("rollout", "curate", "teacher")  # its lse is at T
    for other in (["teacher.hint=answer"], ["distill.max_length=128"], ["distill.epochs=1", "curate.seed=3"]):
        assert reused_stages(other, "hidden") == ("rollout",), other


@pytest.mark.slow
def test_a_student_only_ablation_trains_on_exactly_the_ssb_arms_pairs(smoke_compare):
    d, doc, _ = smoke_compare
    main, abl = Run.open(d / "r0"), Run.open(d / "r0-ssb-distill_temperature-1")
    pairs = read_jsonl(main.file("pairs.jsonl"))
    assert pairs and read_jsonl(abl.file("pairs.jsonl")) == pairs
    assert abl.file("teacher/index.json").read_bytes() == main.file("teacher/index.json").read_bytes()
    for st in ("curate", "teacher", "logits"):  # taken as they are, not rerun
        assert abl.stage(st)["seconds"] == main.stage(st)["seconds"], st
    assert abl.cfg.distill.temperature == 1 != main.cfg.distill.temperature and abl.stage_done("distill")
    # every trained arm carries what its training did (report/train_summary.py), per replicate
    assert doc["arms"]["ssb"]["training"][0][0]["epoch"] == 1 and doc["arms"]["sft"]["training"][0][0]["loss"] > 0
    assert doc["arms"]["grpo"]["training"][0][0]["zero_std_share"] is not None
    a = doc["arms"][ABLATION]
    assert a["training"][0][0]["kd"] is not None and a["accuracy"] is not None and a["compute"]["flops"] > 0 and a["vs_ssb"] is not None


@pytest.mark.slow
def test_an_ablations_upstream_for_tune_takes_its_replicates_stages_and_runs_nothing(smoke_compare):
    """What ``--tune``'s trials of a student-only ablation start from (``upstream_only``): the replicate's
    rollouts, curation, pairs and teacher signal, copied, and no stage run (it once ran the whole
    pipeline: distillation at the untuned learning rate, GRPO and the evaluations)."""
    from ssb.comparison.arms import Compare
    from ssb.comparison.defaults import SEED

    d, _, _ = smoke_compare
    arm = "ssb:distill.ce_weight=1"  # not among the shared comparison's arms: its directory is new
    c = Compare(str(ROOT / "configs" / "smoke.yaml"), parse_arms(f"{ARM_SPEC},{arm}"), 1, 8, SEED, d, [])
    main = Run.open(d / "r0")
    run = c.ablation_run(0, arm, main, upstream_only=True)
    stages = run.manifest()["stages"]
    assert set(stages) == {"rollout", "curate", "teacher", "logits"}
    assert all(v["copied_from"] == str(main.path) for v in stages.values())
    assert read_jsonl(run.file("pairs.jsonl")) == read_jsonl(main.file("pairs.jsonl"))
    assert not run.file("student").exists() and not run.file("grpo").exists() and not (run.path / "eval").exists()


def test_replicates_draw_their_own_training_problems():
    """reasoning-gym draws entry i of seed s from Random(s + i): replicate seeds one apart would
    share all but one problem (they did before DATA_SEED_STRIDE); stepped by the stride they share
    only chance coincidences (the task's small question space makes some)."""
    from ssb.comparison.spec import replicate_overrides
    from ssb.config import load_config
    from ssb.data.load import load_problems
    from ssb.data.problem import question_keys

    path = ROOT / "configs" / "default.yaml"
    cfg = load_config(path)
    draws = [question_keys(load_problems(load_config(path, replicate_overrides(cfg, r)).data)) for r in (0, 1)]
    old = question_keys(load_problems(load_config(path, [f"data.seed={cfg.data.seed + 1}"]).data))
    assert len(draws[0]) == len(draws[1]) == cfg.data.limit
    assert len(draws[0] & old) >= cfg.data.limit - 1  # the old rule: the same problems shifted by one
    # the default task's small numbers repeat by chance (78 of 320 shared), never wholesale
    assert len(draws[0] & draws[1]) < cfg.data.limit // 2


def test_training_summaries_per_epoch_and_per_budget_quarter(tmp_path):
    """summarize reads a stage's log: per epoch the mean loss and its KL/CE parts, the mean gradient norm,
    the share of steps clipped (norm above max_grad_norm); GRPO per quarter of its FLOPs budget, with the
    share of zero-variance groups and of steps that moved nothing."""
    from ssb.config import load_config
    from ssb.report.train_summary import summarize

    run = Run.create(load_config(ROOT / "configs" / "smoke.yaml", [f"runs_dir={tmp_path}"]))
    rows = [{"step": 1, "epoch": 0.5, "loss": 2.0, "kd": 2.0, "ce": 0.0, "grad_norm": 3.0},
            {"step": 2, "epoch": 1.0, "loss": 1.0, "kd": 1.0, "ce": 0.0, "grad_norm": 0.5},
            {"step": 3, "epoch": 1.5, "loss": 0.5, "kd": 0.4, "ce": 0.1, "grad_norm": 0.25}]
    run.file("train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert summarize(run, "distill") == [
        {"epoch": 1, "steps": 2, "loss": 1.5, "grad_norm": 1.75, "clipped_share": 0.5, "kd": 1.5, "ce": 0.0},
        {"epoch": 2, "steps": 1, "loss": 0.5, "grad_norm": 0.25, "clipped_share": 0.0, "kd": 0.4, "ce": 0.1}]
    run.set_stage("grpo", budget_flops=100.0)
    grpo = [{"step": i, "loss": 0.0, "grad_norm": g, "frac_reward_zero_std": z, "reward": 0.5, "flops": f}
            for i, (g, z, f) in enumerate([(0.0, 1.0, 20.0), (2.0, 0.5, 40.0), (0.0, 1.0, 90.0), (1.0, 0.0, 104.0)], 1)]
    run.file("grpo_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grpo))
    got = summarize(run, "grpo")
    assert [(r["quarter"], r["steps"], r["zero_std_share"], r["zero_grad_share"], r["clipped_share"]) for r in got] == [
        (1, 1, 1.0, 1.0, 0.0), (2, 1, 0.5, 0.0, 1.0), (4, 2, 0.5, 0.5, 0.0)]
    assert summarize(run, "sft") is None  # no log: not trained
