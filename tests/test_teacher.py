"""stages/teacher.py: gated pairs from a scripted teacher, solution sources, resume after kill -9."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from ssb.generation.engine import Completion
from ssb.report.ledger import stage_counts
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run
from ssb.signal.alignment import align_pair
from ssb.stages.curate import run_curate
from ssb.stages.teacher import run_teacher

from test_gates import CHAIN_TEMPLATE
from test_rollout_curate import EASY, _kill_after_first_lines, fake_rollouts, make_run


class ScriptedTeacher:
    """Answers the hinted prompt with a clean worked solution, except: ``fail`` (wrong
    answer), ``late`` (wrong first, clean on the retry), ``leak`` (copies the template's
    scaffolding), ``bare`` (answer only), ``contra`` (working contradicts the answer), ``unworked``
    (true working whose result is not the answer)."""

    backend = "fake"

    def __init__(self, gold: dict[str, str], delay: float = 0.0, **kinds):
        self.gold, self.delay = gold, delay
        self.kinds = {k: set(v) for k, v in kinds.items()}
        self.calls: list[list[dict]] = []
        self.tries: dict[str, int] = {}

    def reply(self, q: str) -> str:
        a = self.gold[q]
        n = self.tries[q]
        if q in self.kinds.get("fail", ()) or (q in self.kinds.get("late", ()) and n == 1):
            return "Step 1: 2 + 2 = 4.\nSo the answer is \\boxed{999}."
        if q in self.kinds.get("leak", ()):
            return f"A correct solution: 2 + 2 = 4.\nSo the answer is \\boxed{{{a}}}."
        if q in self.kinds.get("bare", ()):
            return f"The answer is \\boxed{{{a}}}."
        if q in self.kinds.get("contra", ()):
            return f"2 + 2 = 5.\nSo the answer is \\boxed{{{a}}}."
        if q in self.kinds.get("unworked", ()):
            return f"Step 1: 2 + 2 = 4.\nSo the answer is \\boxed{{{a}}}."
        # the working computes the answer (gates.consistent: its last result is the final answer)
        work = q.removeprefix("What is ").removesuffix("?") if q.startswith("What is ") else "2 + 2"
        return f"Step 1: {work} = {a if work != '2 + 2' else 4}.\nSo the answer is \\boxed{{{a}}}."

    def generate(self, conversations, sampling, progress=True, seeds=None):
        time.sleep(self.delay)
        out = []
        for conv in conversations:
            self.calls.append(conv)
            q = next(q for q, _ in EASY if q in conv[-1]["content"])
            self.tries[q] = self.tries.get(q, 0) + 1
            out.append([Completion(self.reply(q), [1, 2, 3], "stop", 50, 3)])
        return out


ANSWER_TEMPLATE = "{question}\n({correct})"  # configs/default.yaml's


def teacher_run(tmp_path, model_dir, name="t", curate=None, unsolved=(), **teacher) -> Run:
    """A run curated from :func:`fake_rollouts`, whose traces all work out ``1 + 1 = 2`` whatever their
    answer: the gates' final-result check (``final_result_is_answer``) would reject every one of them
    as a solution, so it is off unless ``gates`` turns it on (it is tested in test_gates.py and in
    test_final_result_check_in_the_teacher_stage)."""
    teacher["gates"] = {"final_result_is_answer": False, **teacher.get("gates", {})}
    example = {"question": "What is 1 + 1?", "solution": "Step 1: 1 + 1 = 2.\nSo the answer is \\boxed{2}."}
    run = make_run(tmp_path, str(model_dir), name=name,
                   teacher={"template": CHAIN_TEMPLATE, "hint": "contrastive", **teacher},
                   prompt={"examples": [example]}, curate=curate or {})
    fake_rollouts(run, unsolved)
    run_curate(run)
    return run


def test_teacher_gates_build_pairs_and_record_rejects(tmp_path, tiny_model_dir, tiny_model):
    run = teacher_run(tmp_path, tiny_model_dir, retries=1, max_pairs=10)
    q = [q for q, _ in EASY]
    # p00 clean, p02 wrong twice, p04 right on retry, p06 leaks twice, p08 answer-only then contradicts
    teacher = ScriptedTeacher(dict(EASY), fail=[q[2]], late=[q[4]], leak=[q[6]], bare=[q[8]])
    stats = run_teacher(run, loaded=tiny_model, generator=teacher)
    pairs = read_jsonl(run.file("pairs.jsonl"))
    assert [p["id"] for p in pairs] == ["p00", "p04"]
    p = pairs[0]
    assert p["solution_source"] == "generate" and p["teacher_attempts"] == 1 and p["rejected_replies"] == []
    assert p["teacher_messages"][-1]["content"].count("Working for trace") == 2
    assert p["student_messages"][-1] == {"role": "user", "content": EASY[0][0]}
    assert p["teacher_messages"][:-1] == p["student_messages"][:-1]  # same system prompt and examples
    assert isinstance(p["student_logprob"], float)
    # the plausibility forward (gate off: still measured) read the student prompt + solution: the ledger counts it
    tok = tiny_model.tokenizer
    n = len(align_pair(tok, p["student_messages"], p["student_messages"], p["solution"], run.cfg.distill.max_length).student_ids)
    assert p["student_forward_tokens"] == n and stage_counts(run, "teacher")["forward_tokens"] == n + sum(
        r["student_forward_tokens"] for r in pairs[1:])
    assert pairs[1]["teacher_attempts"] == 2 and pairs[1]["rejected_replies"][0]["gate"] == "verified"
    rejects = {r["id"]: r for r in read_jsonl(run.file("teacher_rejects.jsonl"))}
    assert sorted(rejects) == ["p02", "p06", "p08"]
    assert rejects["p02"]["reasons"] == ["verified", "verified"]
    assert rejects["p06"]["reasons"] == ["no_leak", "no_leak"]
    assert "a correct solution" in rejects["p06"]["rejected_replies"][0]["reason"]
    assert rejects["p08"]["reasons"] == ["shows_work", "shows_work"]
    assert stats["replies_rejected_by_gate"] == {"verified": 3, "well_formed": 0, "no_leak": 2, "shows_work": 2, "consistent": 0,
                                                 "not_degenerate": 0, "plausible": 0}
    assert stats["teacher_tried"] == 5 and stats["pairs_written"] == 2 and stats["teacher_tokens"] == 3 * 9
    assert run.stage("teacher")["replies_rejected_by_gate"]["no_leak"] == 2
    # a rerun retries nothing
    n_calls = len(teacher.calls)
    run_teacher(run, loaded=tiny_model, generator=teacher)
    assert len(teacher.calls) == n_calls and len(read_jsonl(run.file("pairs.jsonl"))) == 2


def test_gates_can_be_switched_off(tmp_path, tiny_model_dir, tiny_model):
    run = teacher_run(tmp_path, tiny_model_dir, retries=0,
                      gates={"no_leak": False, "shows_work": False, "consistent": False})
    q = [q for q, _ in EASY]
    run_teacher(run, loaded=tiny_model, generator=ScriptedTeacher(dict(EASY), leak=[q[2]], bare=[q[4]], contra=[q[6]]))
    assert len(read_jsonl(run.file("pairs.jsonl"))) == 5


def test_contradiction_and_plausible_gate(tmp_path, tiny_model_dir, tiny_model):
    q = [q for q, _ in EASY]
    run = teacher_run(tmp_path, tiny_model_dir, retries=0, gates={"plausible": True, "min_student_logprob": 0.0})
    stats = run_teacher(run, loaded=tiny_model, generator=ScriptedTeacher(dict(EASY), contra=[q[0]]))
    # every clean reply has a log-prob below 0, so the plausible gate rejects all of them
    assert stats["pairs_written"] == 0
    assert stats["replies_rejected_by_gate"]["consistent"] == 1 and stats["replies_rejected_by_gate"]["plausible"] == 4
    r = {x["id"]: x for x in read_jsonl(run.file("teacher_rejects.jsonl"))}
    assert "2 + 2 = 5" in r["p00"]["rejected_replies"][0]["reason"]
    # a reply the plausible gate rejected was scored: its forward pass is counted with the reject
    assert r["p02"]["student_forward_tokens"] > 0 and r["p00"]["student_forward_tokens"] == 0


def test_final_result_check_in_the_teacher_stage(tmp_path, tiny_model_dir, tiny_model):
    """A reply whose working is true but does not compute its answer is rejected by ``consistent``
    when ``final_result_is_answer`` is on (the default), and passes when it is off."""
    q = [q for q, _ in EASY]
    for on in (True, False):
        run = teacher_run(tmp_path, tiny_model_dir, name=f"final-{on}", retries=0,
                          gates={"final_result_is_answer": on})
        stats = run_teacher(run, loaded=tiny_model, generator=ScriptedTeacher(dict(EASY), unworked=[q[0]]))
        assert stats["replies_rejected_by_gate"]["consistent"] == (1 if on else 0)
        assert stats["pairs_written"] == (4 if on else 5)
        if on:
            r = {x["id"]: x for x in read_jsonl(run.file("teacher_rejects.jsonl"))}
            assert "last result '4' is not the final answer '5'" in r["p00"]["rejected_replies"][0]["reason"]


@pytest.mark.parametrize("mode", ["correct", "none"])
def test_hint_modes_and_max_pairs(tmp_path, tiny_model_dir, tiny_model, mode):
    run = make_run(tmp_path, str(tiny_model_dir), teacher={"hint": mode, "max_pairs": 2})
    fake_rollouts(run)
    run_curate(run)
    teacher = ScriptedTeacher(dict(EASY))
    stats = run_teacher(run, loaded=tiny_model, generator=teacher)
    pairs = read_jsonl(run.file("pairs.jsonl"))
    assert len(pairs) == 2 and stats["max_pairs_reached"] and len(teacher.calls) == 2
    user = pairs[0]["teacher_messages"][-1]["content"]
    sel = read_jsonl(run.file("selections.jsonl"))[0]
    assert (f"trace {sel['correct_index']}" in user) == (mode == "correct") and "trace 1" not in user
    assert pairs[0]["hint"] == mode


@pytest.mark.parametrize("hint", ["correct", "answer", "answer_custom"])
def test_rollout_solution_scores_the_rollout_without_showing_it(tmp_path, tiny_model_dir, tiny_model, hint):
    from ssb.stages.logits import run_logits

    extra = {"answer_hint": "Final: ANSWER"} if hint == "answer_custom" else {}
    run = teacher_run(tmp_path, tiny_model_dir, name=f"roll-{hint}", solution="rollout",
                      hint=hint.removesuffix("_custom"), template=ANSWER_TEMPLATE, **extra)
    stats = run_teacher(run, loaded=tiny_model)  # no generator: nothing is generated
    pairs = read_jsonl(run.file("pairs.jsonl"))
    rollouts = {r["id"]: r for r in read_jsonl(run.file("rollouts.jsonl"))}
    assert len(pairs) == 5 and stats["pairs_by_source"] == {"rollout": 5} and stats["teacher_tokens"] == 0
    for p in pairs:
        scored = rollouts[p["id"]]["completions"][p["scored_rollout"]]
        assert p["solution"] == scored and p["solution_source"] == "rollout"
        hinted = p["teacher_messages"][-1]["content"]
        assert scored not in hinted  # the teacher never sees the trace it scores
        if hint == "correct":
            other = 4 if p["scored_rollout"] == 0 else 0
            assert p["hint_correct"] == f"rollout:{other}" and rollouts[p["id"]]["completions"][other] in hinted
        else:  # the verified answer in the answer_hint wording (default: the boxed format the student uses)
            want = f"Final: {p['answer']}" if extra else f"The answer is \\boxed{{{p['answer']}}}."
            assert p["hint_correct"] == "answer" and want in hinted, hinted
    # the teacher store scores exactly the rollout's tokens
    run_logits(run)
    index = json.loads(run.file("teacher/index.json").read_text())
    tok = tiny_model.tokenizer
    for p, ex in zip(pairs, index["examples"]):
        ids = ex["reply_ids"]
        assert tok.decode(ids[:-1]) == p["solution"] and tok.decode(ids[-1:]) == "<|im_end|>"


def test_generate_or_rollout_falls_back(tmp_path, tiny_model_dir, tiny_model):
    q = [q for q, _ in EASY]
    run = teacher_run(tmp_path, tiny_model_dir, solution="generate_or_rollout", retries=0)
    stats = run_teacher(run, loaded=tiny_model, generator=ScriptedTeacher(dict(EASY), fail=[q[2]], leak=[q[4]]))
    pairs = {p["id"]: p for p in read_jsonl(run.file("pairs.jsonl"))}
    assert len(pairs) == 5 and stats["pairs_by_source"] == {"generate": 3, "rollout": 2}
    assert pairs["p02"]["solution_source"] == "rollout" and pairs["p02"]["rejected_replies"][0]["gate"] == "verified"
    assert pairs["p04"]["rejected_replies"][0]["gate"] == "no_leak"


@pytest.mark.parametrize("mode", ["contrastive", "answer"])
def test_keep_any_wrong_generates_from_the_gold_answer(tmp_path, tiny_model_dir, tiny_model, mode):
    """solution=rollout, yet the problems without a correct rollout (p01, p03) are generated,
    hinted with the gold answer in the answer_hint wording; p03's wrong replies fail `verified`."""
    from ssb.stages.logits import run_logits

    q = [q for q, _ in EASY]
    template = CHAIN_TEMPLATE if mode == "contrastive" else ANSWER_TEMPLATE
    run = teacher_run(tmp_path, tiny_model_dir, name=f"unsolved-{mode}", curate={"keep": "any_wrong"},
                      unsolved=(1, 3), solution="rollout", hint=mode,
                      template=template, retries=1)
    teacher = ScriptedTeacher(dict(EASY), fail=[q[3]])
    stats = run_teacher(run, loaded=tiny_model, generator=teacher)
    pairs = {p["id"]: p for p in read_jsonl(run.file("pairs.jsonl"))}
    assert sorted(pairs) == ["p00", "p01", "p02", "p04", "p06", "p08"]
    assert stats["pairs_by_source"] == {"rollout": 5, "generate": 1} and stats["teacher_tried"] == 7
    assert (stats["tried_without_correct"], stats["pairs_without_correct"]) == (2, 1)
    # only the two problems without a correct rollout reach the generator (p03 twice: retries=1)
    assert sorted(next(x for x in q if x in c[-1]["content"]) for c in teacher.calls) == [q[1], q[3], q[3]]
    p = pairs["p01"]
    assert p["solution_source"] == "generate" and p["correct_index"] is None and p["scored_rollout"] is None
    assert p["hint_correct"] == "answer" and p["rejected_replies"] == [] and p["teacher_attempts"] == 1
    assert p["solution"] == "Step 1: 10 - 4 = 6.\nSo the answer is \\boxed{6}."  # passed every gate
    hinted = p["teacher_messages"][-1]["content"]
    assert "The answer is \\boxed{6}." in hinted and q[1] in hinted
    wrong = read_jsonl(run.file("rollouts.jsonl"))[1]["completions"][p["wrong_index"]]
    assert (wrong in hinted) == (mode == "contrastive")  # contrastive still shows the wrong trace
    assert all(pairs[i]["solution_source"] == "rollout" for i in ("p00", "p02", "p04", "p06", "p08"))
    r = {x["id"]: x for x in read_jsonl(run.file("teacher_rejects.jsonl"))}["p03"]
    assert r["reasons"] == ["verified", "verified"] and r["rejected_replies"][0]["reason"] == "wrong"
    run_logits(run)  # the teacher signal needs no correct rollout
    index = json.loads(run.file("teacher/index.json").read_text())
    assert [ex["id"] for ex in index["examples"]] == [p["id"] for p in read_jsonl(run.file("pairs.jsonl"))]


def test_shows_work_reference_without_a_correct_rollout(tmp_path, tiny_model_dir):
    """No correct rollout: shows_work measures against the first worked example, else only
    checks that there is working."""
    from ssb.stages.teacher import Candidate

    run = teacher_run(tmp_path, tiny_model_dir, curate={"keep": "any_wrong"}, unsolved=(1,))
    rows = {r["id"]: r for r in read_jsonl(run.file("rollouts.jsonl"))}
    sel = {s["id"]: s for s in read_jsonl(run.file("selections.jsonl"))}
    c = Candidate(rows["p01"], sel["p01"], run.cfg)
    assert c.reference() == (run.cfg.prompt.examples[0].solution, "worked example")
    assert c.hint() == ("The answer is \\boxed{6}.", "answer")
    short = "4 + 2 = 6. \\boxed{6}"  # working, but under half the example's 11 words
    v = c.vet(short, "stop", "generate")
    assert v.gate == "shows_work" and "the worked example's 11" in v.reason
    assert c.vet("The answer is \\boxed{6}.", "stop", "generate").gate == "shows_work"  # answer only
    bare = Candidate(rows["p01"], sel["p01"], run.cfg.model_copy(update={"prompt": run.cfg.prompt.model_copy(
        update={"examples": []})}))
    assert bare.reference() == (None, "worked example") and bare.vet(short, "stop", "generate").ok
    solved = Candidate(rows["p00"], sel["p00"], run.cfg)
    assert solved.reference() == (rows["p00"]["completions"][sel["p00"]["correct_index"]], "correct rollout")


TEACHER_SCRIPT = """
import sys
from test_teacher import ScriptedTeacher, EASY  # tests/ is on PYTHONPATH
from ssb.rundir.run import Run
from ssb.signal.alignment import align_pair
from ssb.stages.teacher import run_teacher
run_teacher(Run.open(sys.argv[1]), generator=ScriptedTeacher(dict(EASY), delay=0.7))
"""


def test_teacher_resumes_after_kill(tmp_path, tiny_model_dir, tiny_model):
    run = make_run(tmp_path, str(tiny_model_dir), generation={"batch_size": 1, "max_new_tokens": 12},
                   teacher={"template": CHAIN_TEMPLATE, "hint": "contrastive"})
    fake_rollouts(run)
    run_curate(run)
    script = tmp_path / "teach.py"
    script.write_text(TEACHER_SCRIPT)
    out = run.file("pairs.jsonl")
    tests = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]  # the script imports this file
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(tests)}
    partial = _kill_after_first_lines([sys.executable, str(script), str(run.path)], out, env=env)
    assert 1 <= partial < 5
    stats = run_teacher(Run.open(run.path), loaded=tiny_model, generator=ScriptedTeacher(dict(EASY)))
    ids = [p["id"] for p in read_jsonl(out)]
    assert ids == ["p00", "p02", "p04", "p06", "p08"] and stats["pairs_written"] == 5


@pytest.mark.parametrize("solution", ["generate", "rollout"])
def test_the_teacher_turn_shows_what_teacher_hint_names(tmp_path, tiny_model_dir, solution):
    """The hinted last turn of p00 for each ``teacher.hint``, rendered and read. p00's rollouts:
    0 and 4 correct (``5``), 1 and 2 the most common wrong answer (``0.5`` = ``1/2``), 3 wrong."""
    from ssb.stages.teacher import Candidate

    q, trace = EASY[0][0], "Working for trace {}: 1 + 1 = 2.\nSo the answer is \\boxed{{{}}}.".format
    seen = {}
    for hint, template in [("answer", ANSWER_TEMPLATE), ("correct", ANSWER_TEMPLATE), ("none", ANSWER_TEMPLATE),
                           ("contrastive", CHAIN_TEMPLATE), ("answer", None), ("none", None)]:
        run = teacher_run(tmp_path, tiny_model_dir, name=f"{solution}-{hint}-{template is None}", solution=solution,
                          hint=hint, template=template)
        row = read_jsonl(run.file("rollouts.jsonl"))[0]
        sel = read_jsonl(run.file("selections.jsonl"))[0]
        c = Candidate(row, sel, run.cfg)
        if solution == "generate":
            shown, label = c.hint()
            text, correct = c.hinted(shown)[-1]["content"], sel["correct_index"]
        else:  # the correct rollout is the solution: the hint never shows it, but the other correct one
            _, scored, msgs, label = c.rollout_solution()
            text, correct = msgs[-1]["content"], 4 if scored == 0 else 0
        wrong = trace(sel["wrong_index"], row["extracted"][sel["wrong_index"]])
        seen[hint, template is None] = text
        if template is None:  # the built-in template: instructions + the hint's own section
            assert q in text and "Write a complete solution" in text and "Working for trace" not in text
            assert ("## The verified final answer\nThe answer is \\boxed{5}." in text) == (hint == "answer")
            continue
        want = {"answer": f"{q}\n(The answer is \\boxed{{5}}.)",
                "correct": f"{q}\n({trace(correct, 5)})",
                "none": q,
                "contrastive": CHAIN_TEMPLATE.replace("{question}", q).replace("{correct}", trace(correct, 5))
                .replace("{wrong_answer}", sel["wrong_answer"]).replace("{wrong}", wrong)}[hint]
        assert text == want, (hint, text)
        assert label == {"answer": "answer", "none": None}.get(hint, f"rollout:{correct}")
    assert seen["none", True] != seen["answer", True]


def test_a_template_showing_the_wrong_rollout_needs_the_contrastive_hint(tmp_path, tiny_model_dir):
    from ssb.prompts import TemplateError

    run = teacher_run(tmp_path, tiny_model_dir, hint="answer")  # CHAIN_TEMPLATE shows {wrong}
    with pytest.raises(TemplateError, match="teacher.hint=answer does not"):
        run_teacher(run)
