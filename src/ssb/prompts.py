"""Every prompt the pipeline shows a model, in one place.

* ``student_messages``: the bare-question conversation used for rollouts, the SSB
  student, GRPO and evaluation alike (system prompt, optional worked examples as
  earlier turns, then the question).
* the hinted teacher prompt (problem + a correct and a wrong attempt) lives below it.
"""

from __future__ import annotations

from .config import PromptConfig

Message = dict[str, str]


def student_messages(prompt: PromptConfig, question: str) -> list[Message]:
    """The conversation the student sees: identical at rollout, training and inference."""
    msgs: list[Message] = [{"role": "system", "content": prompt.system}]
    for ex in prompt.examples:
        msgs.append({"role": "user", "content": ex.question})
        msgs.append({"role": "assistant", "content": ex.solution})
    msgs.append({"role": "user", "content": question})
    return msgs


class ChatTemplateError(ValueError):
    pass


def render_prompt_ids(tokenizer, messages: list[Message]) -> list[int]:
    """Token ids of ``messages`` through the chat template, with the generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; SSB needs an "
            "instruct/chat model (set tokenizer.chat_template or pick an -Instruct checkpoint)"
        )
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)
