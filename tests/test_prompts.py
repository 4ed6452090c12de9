"""prompts.py: the hinted teacher prompt in its three hint-context modes."""

from __future__ import annotations

import pytest

from ssb.config import PromptConfig
from ssb.prompts import TemplateError, student_messages, teacher_messages, teacher_prompt

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
GOOD = "3 + 4 = 7, so he has \\boxed{7} apples."
BAD = "3 * 4 = 12, so he has \\boxed{12} apples."


def test_contrastive_shows_both_responses_and_labels_the_wrong_one():
    text = teacher_prompt(Q, GOOD, BAD, "12", mode="contrastive")
    assert Q in text and GOOD in text and BAD in text
    assert "A response that reaches the correct answer" in text
    assert "A response that is incorrect (its final answer, 12, is wrong)" in text
    assert text.index(GOOD) < text.index(BAD)
    # the instructions: standalone, detailed, error-aware, never mention attempts, boxed answer
    assert "step by step" in text and "in detail" in text
    assert "error-aware" in text
    assert "never mention" in text and "attempts" in text and "students" in text
    assert "\\boxed{ANSWER}" in text


def test_correct_hides_the_wrong_response():
    text = teacher_prompt(Q, GOOD, BAD, "12", mode="correct")
    assert Q in text and GOOD in text
    assert BAD not in text and "incorrect" not in text
    assert "A response that reaches the correct answer" in text


def test_none_shows_only_the_problem():
    text = teacher_prompt(Q, GOOD, BAD, "12", mode="none")
    assert Q in text and GOOD not in text and BAD not in text
    assert "response that" not in text
    assert "\\boxed{ANSWER}" in text


def test_no_answer_wrong_trace_is_labelled():
    text = teacher_prompt(Q, GOOD, "I am not sure.", None, mode="contrastive")
    assert "it reaches no valid final answer" in text


def test_teacher_messages_are_the_student_conversation_with_the_hinted_question():
    cfg = PromptConfig(examples=[{"question": "1 + 2 =", "solution": "1 + 2 = 3. \\boxed{3}"}])
    msgs = teacher_messages(cfg, Q, GOOD, BAD, "12")
    student = student_messages(cfg, Q)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[:-1] == student[:-1]  # same system prompt and worked examples as the student
    assert msgs[-1]["content"] == teacher_prompt(Q, GOOD, BAD, "12")
    bare = teacher_messages(cfg, Q, GOOD, BAD, "12", examples=False)
    assert [m["role"] for m in bare] == ["system", "user"] and bare[-1] == msgs[-1]


def test_template_override_and_validation():
    tpl = "Problem: {question}\nRight: {correct}\nWrong ({wrong_answer}): {wrong}\nAnswer in \\boxed{}."
    text = teacher_prompt(Q, GOOD, BAD, "12", template=tpl)
    assert text == f"Problem: {Q}\nRight: {GOOD}\nWrong (12): {BAD}\nAnswer in \\boxed{{}}."
    with pytest.raises(TemplateError, match="question"):
        teacher_prompt(Q, GOOD, BAD, "12", template="no placeholders")
    with pytest.raises(TemplateError, match="wrong"):
        teacher_prompt(Q, GOOD, BAD, "12", template="{question} {correct}", mode="contrastive")
    assert teacher_prompt(Q, GOOD, template="{question} {correct}", mode="correct") == f"{Q} {GOOD}"
    with pytest.raises(TemplateError, match="teacher.hint"):
        teacher_prompt(Q, GOOD, BAD, "12", mode="bogus")


def test_response_text_with_braces_is_kept_verbatim():
    tricky = "Let {question} be x; \\frac{1}{2} \\boxed{7}"
    text = teacher_prompt(Q, tricky, BAD, "12")
    assert tricky in text


def test_no_hint_with_a_hint_placing_template_shows_the_bare_question():
    tpl = "A correct solution:\n{correct}\n\nA wrong one ({wrong_answer}):\n{wrong}\n\n{question}"
    assert teacher_prompt(Q, mode="none", template=tpl) == Q
    assert teacher_prompt(Q, GOOD, BAD, "12", template=tpl).endswith(Q)
    assert "## Problem" in teacher_prompt(Q, mode="none")  # the library template keeps its instructions
