"""Alignment of prompt ‖ reply with the chat template (embedded SmolLM2 template and Qwen2.5-style ChatML)."""

import pytest

from ssb.prompts import end_of_turn_ids
from ssb.signal.alignment import AlignmentError, align_pair, prompt_and_reply_ids

SYSTEM = {"role": "system", "content": "You are a careful math tutor."}
STUDENT = [SYSTEM, {"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?"}]
TEACHER = [SYSTEM, {"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?\n"
                                               "Hint: a correct attempt found 7; a wrong one said 12."}]
SOLUTION = "He has 3 + 4 = 7 apples.\n\\boxed{7}"


def _full(tok, msgs, reply):
    out = tok.apply_chat_template(msgs + [{"role": "assistant", "content": reply}], tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture(params=["embedded", "chatml"])
def tok(request, embedded_tokenizer, chatml_tokenizer):
    return embedded_tokenizer if request.param == "embedded" else chatml_tokenizer


@pytest.mark.parametrize("msgs", [STUDENT, TEACHER, TEACHER[1:]], ids=["student", "teacher", "no-system"])
def test_prompt_plus_reply_is_the_rendered_conversation(tok, msgs):
    prompt, reply = prompt_and_reply_ids(tok, msgs, SOLUTION)
    full = _full(tok, msgs, SOLUTION)
    # prompt ‖ reply is the whole rendering up to and including the end-of-turn token; what the
    # template adds after it (ChatML's "\n" between turns) is whitespace the model never generates
    assert full[: len(prompt) + len(reply)] == prompt + reply
    assert tok.decode(full[len(prompt) + len(reply):]).strip() == ""
    assert reply[-1] in end_of_turn_ids(tok)
    assert reply[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(reply[:-1]) == SOLUTION


def test_teacher_and_student_share_reply_ids(tok):
    pair = align_pair(tok, TEACHER, STUDENT, SOLUTION)
    assert pair.teacher_ids[-len(pair.reply_ids):] == pair.reply_ids
    assert pair.student_ids == pair.student_prompt_ids + pair.reply_ids
    assert pair.student_ids == _full(tok, STUDENT, SOLUTION)[: len(pair.student_ids)]
    assert pair.teacher_ids == _full(tok, TEACHER, SOLUTION)[: len(pair.teacher_ids)]
    assert len(pair.teacher_prompt_ids) > len(pair.student_prompt_ids)


def test_too_long_is_refused_not_truncated(tok):
    pair = align_pair(tok, TEACHER, STUDENT, SOLUTION)
    assert align_pair(tok, TEACHER, STUDENT, SOLUTION, max_length=len(pair.teacher_ids)).reply_ids == pair.reply_ids
    with pytest.raises(AlignmentError, match="max_length"):
        align_pair(tok, TEACHER, STUDENT, SOLUTION, max_length=len(pair.teacher_ids) - 1)


def _plain_template(tok, gen_prompt):
    import copy

    tok = copy.deepcopy(tok)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] + ':\\n' + m['content'] + '\\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '" + gen_prompt + "' }}{% endif %}")
    return tok


def test_template_without_end_of_turn_is_refused(embedded_tokenizer):
    with pytest.raises(AlignmentError, match="end-of-turn"):
        prompt_and_reply_ids(_plain_template(embedded_tokenizer, "assistant:\\n"), STUDENT, SOLUTION)


def test_prompt_that_merges_with_the_reply_is_refused(embedded_tokenizer):
    # "assistant: " + "He" tokenises as "assistant:" + " He": the prompt is no token prefix
    with pytest.raises(AlignmentError, match="prefix"):
        prompt_and_reply_ids(_plain_template(embedded_tokenizer, "assistant: "), STUDENT, SOLUTION)


def test_generation_stops_where_training_replies_end(embedded_model):
    """Generation's stop ids and alignment's end-of-turn ids come from one list and agree on
    the embedded model's template: a generated reply ends on a token training treats as its end."""
    from ssb.generation.engine import stop_token_ids

    tok = embedded_model.tokenizer
    stops = set(stop_token_ids(tok, embedded_model.model))
    assert stops == end_of_turn_ids(tok)
    _, reply = prompt_and_reply_ids(tok, [{"role": "user", "content": "1 + 1?"}], "2")
    assert reply[-1] in stops
