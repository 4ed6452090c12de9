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
from ssb.grading.answers import extract_answer
from ssb.grading.gates import (GATE_ORDER, GATES, arithmetic_errors, asks_boxed, check_reply, consistent, degenerate,
                               last_result, privileged_text, shows_work, stated_answers, well_formed, word_ngrams)
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
    # a negative result is checked too (read in ssb compare's held-out answers: "46 - 61 = -1" passed)
    assert arithmetic_errors("46 - 61 = -1.\n\nThe answer is \\boxed{-1}.") == ["46 - 61 = -1"]
    assert arithmetic_errors("-5 + 2 = 3.") == ["-5 + 2 = 3"] and arithmetic_errors("-5 + 2 = -3.") == []
    assert arithmetic_errors("12 * 12 = 124") == ["12 * 12 = 124"]
    assert arithmetic_errors("a chain 2 + 2 = 4 = 5") == ["4 = 5"]
    # not plain arithmetic: left alone
    assert arithmetic_errors("x + 2 = 5 so x = 3; 20% of 50 = 10") == []


# read in real runs (issue 24): two lines used to be matched as one chain ("17.\n17"), whose middle side
# does not parse, so no equality was checked; and working whose last result is not the answer passed
MULTILINE_BAD = [
    ("22 - 78 = 17.\n17 - 78 = 17.\n\nThe answer is \\boxed{17}.", "22 - 78 = 17; 17 - 78 = 17"),
    ("14 - 1 = 14.\n13 - 1 = 13.\n\nThe answer is \\boxed{13}.", "14 - 1 = 14"),
    ("5 - 0 = 5.\n\nThe answer is \\boxed{0}.", "last result '5' is not the final answer '0'"),
]


@pytest.mark.parametrize("reply,needle", MULTILINE_BAD)
def test_multiline_working_that_does_not_hold_is_rejected(reply, needle):
    v = verdict(reply, cfg=GatesConfig(no_leak=False, shows_work=False))
    assert v.gate == "consistent" and needle in v.reason, (v.gate, v.reason)


@pytest.mark.parametrize("reply", [
    "12 + 5 = 17.\n17 - 3 = 14.\n\nThe answer is \\boxed{14}.",
    "27 + 15 = 42.\n\nThe answer is \\boxed{42}.",
    "Each box holds 2.5 kg, so 4 boxes hold 4 x 2.5 = 10 kg.\nWith 1.5 kg more: 10 + 1.5 = 11.5.\n\n"
    "The answer is \\boxed{11.5}.",
    "First find the cost of the pens.\nEach pen costs $3 and she buys 4 of them.\n4 x 3 = 12.\n\n"
    "Then add the notebook.\nThe notebook costs $8.\n12 + 8 = 20.\n\nSo she spends 20 dollars in all.\n\n"
    "The answer is \\boxed{20}.",
    "Total = 600 + 400 = 1,000.\n\nThe answer is \\boxed{1000}.",  # another form of the same number
    "1 / 2 = 0.5 of the cake is left.\n\nThe answer is \\boxed{\\frac{1}{2}}.",
    "The answer is \\boxed{140}. We add 54 and 86 to get the total of all the marbles in the jar.",  # no equality
    # the last step is not plain arithmetic, but the working states the answer after the last result read
    "He watches 8 x 4 = 32 hours of games and 32 x 2 = 64 hours of practice.\n"
    "So 32 hours + 64 hours = 96 hours.\n\nThe answer is \\boxed{96}.",
    "3/5 * 1/5 = 3/25.\n3/25 * 100% = 12%.\n\nThe answer is \\boxed{12}.",
    "$40 − $4 = $36 more.\n\nThe answer is \\boxed{36}.",  # a Unicode minus sign
])
def test_multiline_working_that_holds_passes(reply):
    assert consistent(reply, extract_answer(reply)[0]) == (True, "")


def test_equation_chains_stop_at_a_line_or_a_sentence():
    assert arithmetic_errors("22 - 78 = 17.\n17 - 78 = 17.") == ["22 - 78 = 17", "17 - 78 = 17"]
    assert arithmetic_errors("2 + 3 = 5. 4 + 4 = 9") == ["4 + 4 = 9"]
    assert arithmetic_errors("2 + 3 = 5\n4 + 4 = 8\n3 + 4 = 7 = 8") == ["7 = 8"]  # a chain still link by link
    assert arithmetic_errors("Add 2, 3 + 4 = 8") == ["3 + 4 = 8"]  # a list comma is not a thousands separator
    assert arithmetic_errors("2.5 + 1 = 3.5.\n1,000 + 2 = 1,002.\n12,500 / 2 = 6,250.") == []
    assert arithmetic_errors("Total = 12 + 5 = 18") == ["12 + 5 = 18"]  # a text left side: the rest is checked
    assert arithmetic_errors("3 \\times 4 = 12 and 10 \\div 4 = 2.5 and 2 \\cdot 3 = 6") == []
    # not plain arithmetic: left alone, on any line
    assert arithmetic_errors("Let x = 5.\n5 apples = 3 apples + 2 apples.\ny - 3 = 4\n2 + 5 = 3 + 4y\n"
                             "1/2 = 50%\n2^3 = 8\nf(3) = 9\n2:30 + 1:00 = 3:30\n100 = 5A") == []
    assert arithmetic_errors("Step 1: 2 + 3 = 6.\n1. 4 + 4 = 9") == ["2 + 3 = 6", "4 + 4 = 9"]  # labels are not sides


def test_a_unit_after_a_result_does_not_hide_the_equality():
    """leg_counting's base answers: ``14 * 3 = 40 legs`` is false working (a unit after an expression's
    result is the result's unit); a conversion between bare numbers (``$1 = 100 cents``) is not checked."""
    reply = "12 cats have 12 * 4 = 48 legs.\n14 jellyfish have 14 * 3 = 40 legs.\n\nThe answer is \\boxed{88}."
    assert arithmetic_errors(reply) == ["14 * 3 = 40"]
    assert arithmetic_errors("2 chickens have 2 * 2 = 4 legs.\n3 + 4 = 7 legs") == []
    assert last_result("3 dogs have 3 * 4 = 12 legs.\n\nThe answer is \\boxed{12}.") == "12"
    assert arithmetic_errors("$1 = 100 cents, and 1 = 60 minutes") == []
    assert arithmetic_errors("60 * 2 = 120 minutes = 2 hours") == []  # the conversion link is left alone


def test_last_result_is_read_from_the_working_only():
    assert last_result("12 + 5 = 17.\n17 - 3 = 14.\n\nThe answer is \\boxed{14}.") == "14"
    assert last_result("3 + 4 = 7 = 7.0\nThe answer is \\boxed{7}.") == "7.0"
    assert last_result("The answer is 5 + 3 = \\boxed{8}.") is None  # the answer statement is not working
    assert last_result("We add them all up.\n\nThe answer is \\boxed{8}.") is None


def test_final_result_check_follows_its_switch_and_the_answer_kind():
    reply = "5 - 0 = 5.\n\nThe answer is \\boxed{0}."
    assert verdict(reply, cfg=GatesConfig(no_leak=False, shows_work=False, final_result_is_answer=False)).ok
    assert consistent(reply, "0", final_result_is_answer=False) == (True, "")
    assert not consistent(reply, "0")[0]
    # a symbolic or lettered final answer is not compared with a number
    assert consistent("2 x 6 = 12, so the side is the root of 12.\n\n\\boxed{2\\sqrt{3}}", "2\\sqrt{3}")[0]
    assert consistent("3 + 4 = 7, which is option C.\n\n\\boxed{C}", "C")[0]
    # false working is still rejected with the switch off
    assert not consistent("14 - 1 = 14.\n\n\\boxed{14}", "14", final_result_is_answer=False)[0]


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
    "off by default", and every other field of GatesConfig (a threshold, or the switch of one check
    of a gate, e.g. ``final_result_is_answer``) is named in the table."""
    fields = GatesConfig.model_fields
    switches = [n for n, f in fields.items() if f.annotation is bool and n in GATES]
    assert switches == [g for g in GATE_ORDER if g != "verified"]
    for g in switches:
        assert fields[g].default is ("off by default" not in GATES[g]), g
    thresholds = [n for n in fields if n not in switches]
    assert thresholds and all(any(t in d for d in GATES.values()) for t in thresholds), thresholds
    assert "final_result_is_answer" in GATES["consistent"] and fields["final_result_is_answer"].default is True
