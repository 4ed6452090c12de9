"""Token alignment of prompt ‖ reply, by construction from the chat template.

The reply ids are the assistant turn exactly as the tokenizer's chat template renders
it, *including the end-of-turn token* (so the student learns to stop)::

    reply = tokens(template(msgs + [assistant])) - tokens(template(msgs, add_generation_prompt=True))

We assert that the generation-prompt rendering is a token-level prefix of the full
rendering, so prompt ‖ reply is exactly what the model sees at inference followed by
what it should generate.

**Trailing newline.** ChatML templates (SmolLM2, Qwen2.5) render ``<|im_end|>\\n``
after every turn. The ``\\n`` is the template's separator *between* turns: a model
stops generating at ``<|im_end|>`` and never produces it. So the reply ends at the
end-of-turn token and whatever the template puts after it (whitespace only, checked)
is not part of the reply. Hence teacher/student input = prompt ‖ reply equals the
whole conversation's rendering minus that trailing separator.

Every content, the reply included, is tokenized as text (:func:`prompts.chat_ids`): a
solution that contains ``<|im_end|>`` as text stays text and cannot end the turn early.

Sequences longer than ``max_length`` are refused (:class:`AlignmentError`), never
truncated: a truncated reply would silently misalign teacher and student.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SSBError
from ..prompts import Message, chat_ids, end_of_turn_ids, render_prompt_ids


class AlignmentError(SSBError, ValueError):
    pass


@dataclass
class AlignedPair:
    teacher_prompt_ids: list[int]
    student_prompt_ids: list[int]
    reply_ids: list[int]

    @property
    def teacher_ids(self) -> list[int]:
        return self.teacher_prompt_ids + self.reply_ids

    @property
    def student_ids(self) -> list[int]:
        return self.student_prompt_ids + self.reply_ids


def prompt_and_reply_ids(tokenizer, messages: list[Message], reply: str) -> tuple[list[int], list[int]]:
    """(prompt ids with generation prompt, reply ids ending with the end-of-turn token)."""
    prompt = render_prompt_ids(tokenizer, messages)
    full = chat_ids(tokenizer, messages + [{"role": "assistant", "content": reply}], add_generation_prompt=False)
    if full[: len(prompt)] != prompt:
        raise AlignmentError(
            "the chat template's generation prompt is not a token prefix of the rendered conversation; "
            "prompt ‖ reply cannot be aligned by construction for this template"
        )
    suffix = full[len(prompt):]
    eot = end_of_turn_ids(tokenizer)
    ends = [i for i, t in enumerate(suffix) if t in eot]
    if not ends:
        raise AlignmentError("the rendered assistant turn contains no end-of-turn token (eos / <|im_end|> ...)")
    cut = ends[-1] + 1
    trailing = tokenizer.decode(suffix[cut:])
    if trailing.strip():
        raise AlignmentError(f"the template renders non-whitespace after the end-of-turn token: {trailing!r}")
    return prompt, suffix[:cut]


def align_pair(tokenizer, teacher_messages: list[Message], student_messages: list[Message], solution: str,
               max_length: int | None = None) -> AlignedPair:
    """Teacher and student inputs over the same reply ids; refuses sequences over ``max_length``."""
    t_prompt, reply = prompt_and_reply_ids(tokenizer, teacher_messages, solution)
    s_prompt, s_reply = prompt_and_reply_ids(tokenizer, student_messages, solution)
    if s_reply != reply:
        raise AlignmentError("the template renders the same reply differently after the teacher and "
                             "student prompts; the reply tokens would not align")
    pair = AlignedPair(t_prompt, s_prompt, reply)
    if max_length is not None:
        longest = max(len(pair.teacher_ids), len(pair.student_ids))
        if longest > max_length:
            raise AlignmentError(f"sequence of {longest} tokens exceeds max_length={max_length}; "
                                 "refusing to truncate (raise distill.max_length or drop the pair)")
    return pair


def answer_slice(prompt_len: int, reply_len: int) -> slice:
    """Positions whose next-token prediction is a reply token (in prompt ‖ reply)."""
    return slice(prompt_len - 1, prompt_len - 1 + reply_len)
