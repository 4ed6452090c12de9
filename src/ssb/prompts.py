"""Every prompt the pipeline shows a model, in one place.

* ``student_messages``: the bare-question conversation used for rollouts, the SSB
  student, GRPO and evaluation alike (system prompt, optional worked examples as
  earlier turns, then the question).
* ``render_prompt_ids`` / ``chat_ids``: the one place a conversation becomes token ids;
  message contents are always encoded as text, so a question, trace or solution that
  contains ``<|im_end|>``-style strings cannot open or close turns
  (``special_token_hits`` finds such strings for ``ssb data validate``).
* the hinted teacher prompt (problem + the hint of ``teacher.hint``) lives below it.
"""

from __future__ import annotations

import re

from .config import HINTS, PromptConfig
from .errors import SSBError

Message = dict[str, str]


def student_messages(prompt: PromptConfig, question: str) -> list[Message]:
    """The conversation the student sees: identical at rollout, training and inference."""
    msgs: list[Message] = [{"role": "system", "content": prompt.system}]
    for ex in prompt.examples:
        msgs.append({"role": "user", "content": ex.question})
        msgs.append({"role": "assistant", "content": ex.solution})
    msgs.append({"role": "user", "content": question})
    return msgs


class ChatTemplateError(SSBError, ValueError):
    pass


def chat_ids(tokenizer, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` through the chat template, every message's content as *text*.

    Control tokens that appear inside a content string (``<|im_end|>``, ``<|im_start|>`` ... as
    typed in a question, a trace or a solution) are encoded as plain text; only the control
    tokens the template writes itself become special ids. This is transformers'
    ``apply_chat_template(..., sanitize_control_tokens=True)``: for content without control-token
    text the ids are exactly those of the plain rendering."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; SSB needs an "
            "instruct/chat model (set tokenizer.chat_template or pick an -Instruct checkpoint)"
        )
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True,
                                            sanitize_control_tokens=True)
    except ValueError as exc:  # e.g. "Can't sanitize '<x>': the tokenizer produces it from plain text"
        raise ChatTemplateError(f"cannot render the conversation with its content as plain text: {exc}") from exc
    if hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def render_prompt_ids(tokenizer, messages: list[Message]) -> list[int]:
    """Token ids of ``messages`` through the chat template, with the generation prompt
    (contents tokenized as text, see :func:`chat_ids`)."""
    return chat_ids(tokenizer, messages, add_generation_prompt=True)


# End-of-turn tokens of common chat templates (ChatML, Llama 3, Gemma, Phi-3, ...), used besides
# tokenizer.eos_token: the one list for generation's stop ids and training's reply ends.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def end_of_turn_ids(tokenizer) -> set[int]:
    """Ids that close an assistant turn: the tokenizer's EOS plus those of
    :data:`END_OF_TURN_TOKENS` that its vocabulary has as special tokens."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    vocab = tokenizer.get_vocab()
    for tok in END_OF_TURN_TOKENS:
        if tok in vocab and tok in special:
            ids.add(int(vocab[tok]))
    return ids


# Chat-turn markers of common template families, for checking data without a model.
COMMON_CONTROL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_sep|>",  # ChatML (Qwen, SmolLM, Phi-4)
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",  # Llama 3
    "<|eot_id|>", "<|eom_id|>", "<|python_tag|>",
    "<start_of_turn>", "<end_of_turn>",  # Gemma
    "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",  # Phi-3
    "[INST]", "[/INST]",  # Mistral / Llama 2
    "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>",  # Cohere
)


def control_tokens(tokenizer=None) -> tuple[str, ...]:
    """The strings that act as chat control tokens: :data:`COMMON_CONTROL_TOKENS`, plus, with a
    tokenizer, its special added tokens and ``tokenizer.chat_control_tokens``."""
    toks = set(COMMON_CONTROL_TOKENS)
    if tokenizer is not None:
        toks.update(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special)
        toks.update(getattr(tokenizer, "chat_control_tokens", None) or [])
    return tuple(sorted((t for t in toks if t and not t.isspace()), key=lambda t: (-len(t), t)))


def special_token_hits(text: str, tokenizer=None) -> list[str]:
    """Control-token strings found in ``text`` (each once, in order of first appearance).

    Such rows are still safe to use (every prompt encodes content as text, see :func:`chat_ids`),
    but they usually come from scraped chat logs and are worth a look: ``ssb data validate``
    reports them."""
    if not text:
        return []
    pattern = re.compile("|".join(re.escape(t) for t in control_tokens(tokenizer)))
    seen: dict[str, None] = {}
    for m in pattern.finditer(text):
        seen.setdefault(m.group(0), None)
    return list(seen)


# ----------------------------------------------------------------------------- hinted teacher
#
# The teacher is the same base model, shown the problem together with a hint
# (``teacher.hint``: the verified answer, one of its own correct rollouts, or that and the
# most common wrong one), and asked for a fresh, standalone, error-aware solution. Everything it is told lives in TEACHER_TEMPLATE and
# the CONTEXT_BLOCKS below; ``teacher.template`` overrides the template.
#
# Placeholders (replaced by name; any other braces, like \boxed{}, are left alone):
#   {question} {intro} {context} {correct} {wrong} {wrong_answer}

# What the hinted prompt shows (``teacher.hint``): the verified final answer, one verified
# correct rollout, the paper's correct + most common wrong rollout, or nothing (the control).
# ``{correct}`` holds the answer (in ``teacher.answer_hint``'s wording) or the correct trace.
# The values: ``config.HINTS``.

TEACHER_TEMPLATE = """\
Here is a math problem{intro}.

## Problem
{question}
{context}
## Your task
Write a complete solution to the problem for a student who sees it for the first time.
- Work step by step and explain each step in detail.
- Be error-aware: where a solver could easily go wrong, say what the tempting mistake \
is and why it fails, then take the right path.
- Make it standalone: write as if you solved the problem yourself, and never mention \
other responses, attempts, students or hints.
- Finish with the final answer in the form \\boxed{ANSWER}.
"""

CONTEXT_INTROS = {
    "answer": ", followed by its verified final answer",
    "correct": ", followed by an earlier response to it that reaches the correct answer",
    "contrastive": ", followed by two earlier responses to it: one reaches the correct answer, "
                   "the other is incorrect",
    "none": "",
}

CONTEXT_BLOCKS = {
    "answer": "\n## The verified final answer\n{correct}\n",
    "correct": "\n## A response that reaches the correct answer\n{correct}\n",
    "contrastive": (
        "\n## A response that reaches the correct answer\n{correct}\n\n"
        "## A response that is incorrect ({wrong_note})\n{wrong}\n"
    ),
    "none": "",
}

_PLACEHOLDER = re.compile(r"\{(question|intro|context|correct|wrong|wrong_answer|wrong_note)\}")


class TemplateError(SSBError, ValueError):
    pass


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def check_teacher_template(template: str, mode: str) -> None:
    """A teacher template must show the question and, in a hint mode, the hint."""
    if mode not in HINTS:
        raise TemplateError(f"unknown teacher.hint {mode!r}; use one of {', '.join(HINTS)}")
    if "{question}" not in template:
        raise TemplateError("teacher.template must contain {question}")
    if mode != "none" and "{context}" not in template and "{correct}" not in template:
        raise TemplateError(f"teacher.template must contain {{context}} or {{correct}} for teacher.hint={mode}")
    if mode == "contrastive" and "{context}" not in template and "{wrong}" not in template:
        raise TemplateError("teacher.template must contain {context} or {wrong} for teacher.hint=contrastive")
    if mode in ("answer", "correct") and re.search(r"\{(wrong|wrong_answer|wrong_note)\}", template):
        raise TemplateError(f"teacher.template shows the wrong rollout ({{wrong}}, {{wrong_answer}} or {{wrong_note}}), "
                            f"which teacher.hint={mode} does not: remove it, or set teacher.hint=contrastive")


def teacher_prompt(question: str, correct: str | None = None, wrong: str | None = None,
                   wrong_answer: str | None = None, mode: str = "contrastive",
                   template: str | None = None) -> str:
    """The hinted user message for the teacher."""
    template = template or TEACHER_TEMPLATE
    check_teacher_template(template, mode)
    if mode == "none" and re.search(r"\{(correct|wrong|wrong_answer)\}", template):
        return question.strip()  # a template that places the hints itself has nothing to show without them
    if mode != "none" and not correct:
        raise ValueError(f"teacher.hint={mode} needs the {'answer' if mode == 'answer' else 'correct response'}")
    if mode == "contrastive" and wrong is None:
        raise ValueError("teacher.hint=contrastive needs an incorrect response")
    note = f"its final answer, {wrong_answer}, is wrong" if wrong_answer else "it reaches no valid final answer"
    values = {
        "question": question.strip(),
        "correct": (correct or "").strip(),
        "wrong": (wrong or "").strip(),
        "wrong_answer": wrong_answer or "",
        "wrong_note": note,
        "intro": CONTEXT_INTROS[mode],
    }
    values["context"] = _fill(CONTEXT_BLOCKS[mode], values)
    return _fill(template, values)


def teacher_messages(prompt: PromptConfig, question: str, correct: str | None = None,
                     wrong: str | None = None, wrong_answer: str | None = None,
                     mode: str = "contrastive", template: str | None = None,
                     examples: bool = True) -> list[Message]:
    """The teacher's conversation (no assistant turn): the student's, with the hinted user
    message in place of the bare question.

    With ``examples`` the teacher sees the same worked examples as the student, as earlier
    turns. Without them its distribution over the reply follows its own habits, not the
    format the student is taught (bench/teacher_signal.py on the default config: the
    teacher's top token missed 21% of the solution tokens and was end-of-turn too early in
    84 of 85 pairs, against 3.5% and 1 of 85 with the examples shown)."""
    msgs = student_messages(prompt, question) if examples else [{"role": "system", "content": prompt.system},
                                                                {"role": "user", "content": question}]
    msgs[-1] = {"role": "user", "content": teacher_prompt(question, correct, wrong, wrong_answer, mode, template)}
    return msgs
