"""gates.py: each gate rejects its constructed bad reply with a reason; clean replies pass; the
gates table (``GATES``) is the one that docs/method.md, README.md and config.GatesConfig follow.

The bad replies are the kinds read in real runs (issue 12): scaffolding copied from the
hinted prompt, answer-only replies, working that contradicts the final answer, loops.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssb.config import GatesConfig, PromptConfig, WorkedExample
from ssb.gates import (GATE_ORDER, GATES, arithmetic_errors, asks_boxed, check_reply, degenerate, privileged_text, shows_work,
                       stated_answers, well_formed, word_ngrams)
from ssb.prompts import TEACHER_TEMPLATE

CHAIN_TEMPLATE = """{question}

A correct solution:
{correct}

A wrong solution (its answer {wrong_answer} is wrong; do not repeat its mistake):
{wrong}

Write your own short solution in the same style as the correct one, ending with \\boxed{ANSWER}.
"""
PROMPT = PromptConfig(
    system="You are a careful math tutor. Work it out step by step, then give the final answer as \\boxed{ANSWER}.",
    examples=[WorkedExample(question="State the final answer to the following arithmetic problem: 27 + 15 =",
                            solution="27 + 15 = 42.\n\nThe answer is \\boxed{42}.")],
)
QUESTION = "State the final answer to the following arithmetic problem: 54 + 86 ="
REFERENCE = "54 + 86 = 140.\n\nThe answer is \\boxed{140}."


def verdict(reply: str, template=CHAIN_TEMPLATE, mode="contrastive", cfg=None, correct=True, finished=True,
            want_boxed=True):
    priv = privileged_text(PROMPT, template, mode, 3, student_text=QUESTION)
    return check_reply(reply, correct=correct, finished=finished, outcome="correct" if correct else "wrong",
                       cfg=cfg or GatesConfig(), privileged=priv, reference=REFERENCE, want_boxed=want_boxed)


@pytest.mark.parametrize("reply", [
    "54 + 86 = 140.\n\nThe answer is \\boxed{140}.",
    "First add the tens: 50 + 80 = 130. Then the ones: 4 + 6 = 10. So 130 + 10 = 140.\n\nThe answer is \\boxed{140}.",
    "54 + 86 = 140\n\\boxed{140}",
])
def test_clean_reply_passes(reply):
    v = verdict(reply)
    assert v.ok, (v.gate, v.reason)


def test_unverified_and_truncated_fail_first_gate():
    assert verdict("54 + 86 = 141. The answer is \\boxed{141}.", correct=False).gate == "verified"
    v = verdict("54 + 86 = 140.", finished=False)
    assert (v.gate, v.reason) == ("verified", "truncated")


def test_leaky_reply_copying_scaffolding_is_rejected():
    v = verdict("A correct solution: 54 + 86 = 140.\n\nThe answer is \\boxed{140}.")
    assert v.gate == "no_leak" and "a correct solution" in v.reason


def test_reply_referring_to_the_wrong_solution_is_rejected():
    v = verdict("54 + 86 = 140, so the wrong solution made a mistake.\n\nThe answer is \\boxed{140}.")
    assert v.gate == "no_leak" and "wrong solution" in v.reason


def test_leak_gate_follows_the_configured_template():
    """The default (long) template's wording is caught too; nothing is hard-coded."""
    v = verdict("As the response that reaches the correct answer shows, 54 + 86 = 140.\n\nThe answer is \\boxed{140}.",
                template=TEACHER_TEMPLATE)
    assert v.gate == "no_leak"
    # the same sentence is fine under the chain_sum template, which never says it
    assert verdict("54 + 86 = 140, the one that reaches it.\n\nThe answer is \\boxed{140}.").ok
    # wording the student also sees (system prompt: 'the final answer') is not privileged
    assert verdict("54 + 86 = 140, so the final answer is 140.\n\n\\boxed{140}").ok


# both read in the pairs of a CPU default run (solution=rollout): the student learns to drop \boxed, or to ramble on
@pytest.mark.parametrize("reply,needle", [
    ("54 + 86 = 140.\n\nThe answer is 140.", "not in \\boxed{}"),
    ("54 + 86 = 140.\n\nThe answer is \\boxed{140}.\n\nThe answer to a multiple of 10 is usually left in the "
     "final answer as 140.", "16 words after the final answer"),
])
def test_badly_formed_reply_is_rejected(reply, needle):
    v = verdict(reply)
    assert v.gate == "well_formed" and needle in v.reason, (v.gate, v.reason)


def test_well_formed_follows_the_prompt_and_its_settings():
    assert asks_boxed(PROMPT)
    hash_prompt = PromptConfig(system="Solve it. End with '#### N'.")
    assert not asks_boxed(hash_prompt)
    unboxed = "54 + 86 = 140.\n\nThe answer is 140."
    assert verdict(unboxed, want_boxed=False).ok  # a prompt that does not ask for \boxed
    assert verdict("54 + 86 = 140.\n\nThe answer is \\boxed{140}. I hope it is correct.").ok  # 5 words: allowed
    assert well_formed("\\boxed{140} and then a much longer ramble that keeps going", True, 6)[0] is False
    assert well_formed("\\boxed{140} and then a much longer ramble that keeps going", True, -1)[0] is True
    assert verdict(unboxed, cfg=GatesConfig(well_formed=False)).ok


def test_leak_gate_can_be_switched_off():
    v = verdict("A correct solution: 54 + 86 = 140.\n\nThe answer is \\boxed{140}.", cfg=GatesConfig(no_leak=False))
    assert v.ok


@pytest.mark.parametrize("reply", ["The correct answer is \\boxed{140}.", "\\boxed{140}", "The answer is: 140",
                                   "140.\n\nThe answer is \\boxed{140}."])  # the last read in a generated pair
def test_answer_only_reply_is_rejected(reply):
    v = verdict(reply, cfg=GatesConfig(no_leak=False), want_boxed=False)
    assert v.gate == "shows_work" and "answer only" in v.reason


def test_too_short_against_the_correct_rollout():
    ok, why = shows_work("Sum: 140. \\boxed{140}", "a b c d e f g h i j k l m n o p q r s t", 0.5)
    assert not ok and "correct rollout" in why


@pytest.mark.parametrize("reply,needle", [
    ("54 + 86 = 130.\n\nA good answer is \\boxed{140}.", "54 + 86 = 130"),
    ("13 + 18 = 21\n\nThe answer is \\boxed{21}.\n\nThe correct answer is \\boxed{31}.", "13 + 18 = 21"),
    ("54 + 86 = 140.\n\nThe answer is 5.\n\nThe answer is \\boxed{140}.", "'5'"),
])
def test_contradictory_working_is_rejected(reply, needle):
    v = verdict(reply, cfg=GatesConfig(no_leak=False))
    assert v.gate == "consistent" and needle in v.reason


def test_arithmetic_checker_reads_common_forms():
    assert arithmetic_errors("3 x 4 = 12, 1,000 + 2 = 1,002 and $5 + $3 = $8. (2 + 3) * 4 = 20") == []
    assert arithmetic_errors("10 / 4 = 2.5 and 7 - 9 = -2") == []
    assert arithmetic_errors("12 * 12 = 124") == ["12 * 12 = 124"]
    assert arithmetic_errors("a chain 2 + 2 = 4 = 5") == ["4 = 5"]
    # not plain arithmetic: left alone
    assert arithmetic_errors("x + 2 = 5 so x = 3; 20% of 50 = 10") == []


def test_stated_answers():
    assert stated_answers("So the answer is 12. Check: \\boxed{\\frac{1}{2}}") == ["\\frac{1}{2}", "12"]


def test_loop_is_rejected():
    reply = "54 + 86 = 140.\n" * 4 + "The answer is \\boxed{140}."
    v = verdict(reply, cfg=GatesConfig(no_leak=False))
    assert v.gate == "not_degenerate" and "repeated 4 times" in v.reason
    assert degenerate("140 " + "0" * 50 + " \\boxed{140}", 3).startswith("text loops")
    assert degenerate("54 + 86 = 140.\nThe answer is \\boxed{140}.", 3) is None


def test_ngrams_skip_numbers():
    assert word_ngrams("A correct solution: 41 + 53", 3) == {("a", "correct", "solution")}
    assert word_ngrams("solution 41 is", 2) == set()


# ----------------------------------------------------------------------------- one table of gates

ROOT = Path(__file__).resolve().parents[1]


def test_method_doc_and_readme_list_the_gates_of_gates_py_in_order():
    """docs/method.md's gate table and README's one-line list name exactly GATES, in its order."""
    assert GATE_ORDER == tuple(GATES) and all(GATES.values())
    method = (ROOT / "docs" / "method.md").read_text()
    table = method[method.index("| gate | rejects |"):].split("\n\n")[0]
    assert re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE) == list(GATE_ORDER)
    readme = (ROOT / "README.md").read_text()
    bullet = readme[readme.index("- **Quality gates**"):].split("\n- ")[0]
    assert re.findall(r"`(\w+)`", bullet) == list(GATE_ORDER)


def test_gates_config_switches_and_thresholds_match_the_gates_table():
    """Every gate but ``verified`` has its switch in GatesConfig, on by default unless GATES says
    "off by default", and every threshold of GatesConfig is named in the table."""
    fields = GatesConfig.model_fields
    switches = [n for n, f in fields.items() if f.annotation is bool]
    assert switches == [g for g in GATE_ORDER if g != "verified"]
    for g in switches:
        assert fields[g].default is ("off by default" not in GATES[g]), g
    thresholds = [n for n in fields if n not in switches]
    assert thresholds and all(any(t in d for d in GATES.values()) for t in thresholds), thresholds
