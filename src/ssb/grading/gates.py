"""Quality gates on a teacher reply: what may become a training pair.

A reply whose final answer grades correct can still teach the student the wrong thing:
it may copy the hinted prompt's scaffolding ("A correct solution: ..."), state only an
answer, contradict its own working ("54 + 86 = 130. The answer is 140."), or loop. The
student sees only the bare question, so it learns such text as if it were reasoning
(the privilege illusion). Each gate is one small pure function over text (``plausible``
needs the model: the teacher stage measures it). :data:`GATES` is the table of the gates, in
the order the teacher stage (``stages/teacher.py``) runs them, each with what it rejects; the
first that fails is recorded. Each but ``verified`` is switched under ``teacher.gates``
(:class:`config.GatesConfig`, with the thresholds :data:`GATES` names); each but ``plausible`` is on
by default.

The privileged text is found by rendering the hinted prompt with sentinel values in
place of the question, the traces and the wrong answer: whatever is left is the
template's own wording, for the default template and for any user template alike.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass, field

from ..config import GatesConfig, PromptConfig
from ..prompts import teacher_prompt
from .answers import as_number, extract_answer
from .grade import same_answer

GATES = {  # name -> what it rejects, in the order they run; the report and docs/method.md show this table
    "verified": "a wrong or missing final answer, or a reply cut off at max_new_tokens",
    "well_formed": "a final answer not in \\boxed{} when the prompt asks for it (its system prompt or a worked "
                   "example uses it), or more than max_words_after_answer words after the final answer",
    "no_leak": "a run of leak_ngram words copied from the hinted prompt's own wording (its template, minus what "
               "the student also sees), or a phrase of the lines that introduce the hints",
    "shows_work": "an answer-only reply (no working once the answer statements are removed), or one under "
                  "min_work_fraction of the correct rollout's length (without one: the first worked example's)",
    "consistent": "an equality between plain numbers that does not hold (each one, on every line), a stated answer "
                  "other than the final one, or (final_result_is_answer) working whose last computed result is not "
                  "the final answer",
    "not_degenerate": "a line repeated max_line_repeats times, or text looping back-to-back",
    "plausible": "(off by default, always measured) a mean log-prob per reply token under the bare student prompt "
                 "below min_student_logprob",
}
GATE_ORDER = tuple(GATES)

_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:[.,]\d+)*")
_STOP = frozenset(
    "a an the of to in on at is are was be it its this that and or for with as by so we you i".split()
)


def _tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Runs of ``n`` consecutive words (numbers break a run: they are content, not wording)."""
    toks = _tokens(text)
    out = set()
    for i in range(len(toks) - n + 1):
        gram = tuple(toks[i : i + n])
        if all(t[0].isalpha() for t in gram):
            out.add(gram)
    return out


# ----------------------------------------------------------------------------- privileged text


_SENT = {"question": "\x00Q\x00", "correct": "\x00C\x00", "wrong": "\x00W\x00", "wrong_answer": "\x00A\x00"}


@dataclass
class Privileged:
    """The hinted prompt's own wording, as word n-grams the student never sees."""

    ngrams: set[tuple[str, ...]]  # leak_ngram-word runs of the template's fixed text
    label_ngrams: set[tuple[str, ...]]  # 2-word phrases of the lines that introduce a hint
    n: int

    def leaks(self, reply: str) -> list[str]:
        hits = sorted(" ".join(g) for g in word_ngrams(reply, self.n) & self.ngrams)
        hits += sorted(" ".join(g) for g in word_ngrams(reply, 2) & self.label_ngrams)
        return hits


def privileged_text(prompt: PromptConfig, template: str | None, mode: str, n: int = 3,
                    student_text: str = "") -> Privileged:
    """Word n-grams of the hinted prompt that come from the template (not from the
    problem or traces) and do not occur in what the student sees (system prompt, worked
    examples, ``student_text``)."""
    rendered = teacher_prompt(_SENT["question"], _SENT["correct"], _SENT["wrong"], _SENT["wrong_answer"],
                              mode, template)
    fixed = [seg for seg in re.split("\x00.\x00", rendered)]
    student = "\n".join([prompt.system, student_text] + [e.question + "\n" + e.solution for e in prompt.examples])
    seen = word_ngrams(student, n)
    seen2 = word_ngrams(student, 2)
    grams: set = set()
    for seg in fixed:
        grams |= word_ngrams(seg, n)
    # the lines that introduce each hint ("A correct solution:", "## A response that ...")
    labels: set = set()
    for key in ("correct", "wrong"):
        pos = rendered.find(_SENT[key])
        if pos < 0:
            continue
        before = rendered[:pos].rstrip("\n")
        lines = [ln for ln in before.split("\n") if ln.strip()][-1:]
        for ln in lines:
            for gram in word_ngrams(re.sub("\x00.\x00", " 0 ", ln), 2):  # a number breaks a run
                if any(w not in _STOP for w in gram):
                    labels.add(gram)
    return Privileged(grams - seen, labels - seen2, n)


# ----------------------------------------------------------------------------- work + consistency


def _boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every ``\\boxed{...}`` (nested braces allowed)."""
    out = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        i, depth = m.end(), 1
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((m.start(), i, text[m.end() : i - 1].strip()))
    return out


_STATED = re.compile(r"answer\s*(?:is|=|:)\s*:?\s*\$?\s*([-+]?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def work_text(reply: str) -> str:
    """The reply without its answer statements (each ``\\boxed{}`` and 'answer is N')."""
    for start, end, _ in reversed(_boxed_spans(reply)):
        reply = reply[:start] + " " + reply[end:]
    return _STATED.sub(" ", reply)


def shows_work(reply: str, reference: str | None, min_fraction: float, min_words: int = 6,
               reference_name: str = "correct rollout", answer: str | None = None) -> tuple[bool, str]:
    """Working = a number or ``min_words`` words left once the answer statements are removed
    (the final ``answer`` restated, ``121.`` before ``\\boxed{121}``, is not working), and at
    least ``min_fraction`` of the reference's length (the correct rollout, or what
    ``reference_name`` says; no reference: no length check)."""
    value = _eval_arith(answer) if answer else None
    rest = [t for t in _tokens(work_text(reply)) if value is None or not t[0].isdigit() or _eval_arith(t) != value]
    if not any(t[0].isdigit() for t in rest) and len(rest) < min_words:
        return False, "answer only: no working besides the final answer"
    if reference and min_fraction > 0:
        need = min_fraction * len(_tokens(reference))
        if len(_tokens(reply)) < need:
            return False, (f"{len(_tokens(reply))} words, under {min_fraction:g} x the {reference_name}'s "
                           f"{len(_tokens(reference))}")
    return True, ""


def stated_answers(reply: str) -> list[str]:
    """Every answer the reply states: each ``\\boxed{}`` and each 'answer is N'."""
    out = [c for _, _, c in _boxed_spans(reply)] + [m.group(1) for m in _STATED.finditer(reply)]
    return [a for a in out if a]


_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_ARITH = re.compile(rf"^[\s(]*-?[\s(]*{_NUM}[\s)]*(?:[-+*/×x÷·][\s(]*{_NUM}[\s)]*)+$")  # a leading minus: -5 + 2
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval_arith(expr: str) -> float | None:
    """Value of a plain-number arithmetic expression (+ - * / × ÷ and parentheses), else None."""
    expr = expr.strip().rstrip(".").strip().replace("$", "")
    if len(expr) > 200 or not (_ARITH.match(expr) or re.fullmatch(rf"\s*-?{_NUM}\s*", expr)):
        return None
    expr = re.sub(r"(?<=\d),(?=\d{3})", "", expr)
    expr = expr.replace("×", "*").replace("÷", "/").replace("·", "*")
    expr = re.sub(r"(?<=[\d)\s])x(?=[\s(\d])", "*", expr)
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return None

    def ev(n):
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return float(n.value)
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            a, b = ev(n.left), ev(n.right)
            if type(n.op) is ast.Div and b == 0:
                raise ZeroDivisionError
            return _OPS[type(n.op)](a, b)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        raise ValueError

    try:
        return ev(node)
    except (ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


# One side of an equation: numbers, operators, parentheses, $ and spaces, with a period or a comma only
# inside a number (2.5, 1,000). So a chain never runs over a line break, a sentence's full stop
# ("17.\n17 - 78" or "= 5. 4 + 4") or a list comma, and each line's equalities are checked on their own.
_SIDE = r"(?:[\d \t$()+\-*/×x÷·]|[.,](?=\d))*"
_EQ_CHAIN = re.compile(rf"[-\d(]{_SIDE}(?:=[ \t]*\$?[-\d(]{_SIDE})+")
# before a chain on its line: an operator, a comparison, a one-letter variable or 'of' (2y + 3 = 7, 2^3 = 8,
# 3! - 1 = 5, 20% of 50 = 10), a word glued to it (f(3) = 9) or a time (2:30 = ...): part of a larger expression
_BARE = re.compile(rf"\s*\$?\s*-?{_NUM}\s*")
_NOT_PLAIN_BEFORE = re.compile(r"(?:[-+*/×÷^%!<>]|[<>!=]=|\b[A-Za-z]|\bof)\s*$|[A-Za-z_\\]$|\d:$")
_LATEX_OPS = {"\\times": " × ", "\\cdot": " · ", "\\div": " ÷ ", "\\$": "$", "−": "-", "–": "-"}  # minus signs too


def _normalized(text: str) -> str:
    for tex, op in _LATEX_OPS.items():
        text = text.replace(tex, op)
    return text


def _equalities(text: str) -> list[tuple[str, float | None, str, float | None, int]]:
    """Each equality of each equation chain between plain-number expressions in ``text`` (already
    :func:`_normalized`), in order, as ``(left, value, right, value, end)`` (a value is None where that
    side is not plain arithmetic; ``end``: where the chain ends in ``text``). A chain inside a larger
    expression with a variable, a power, a factorial, a percentage or 'of' (``2y + 3 = 7``, ``2^3 = 8``,
    ``20% of 50 = 10``) is left out; one after a text left side (``Total = 12 + 5 = 17``) is checked."""
    out = []
    for m in _EQ_CHAIN.finditer(text):
        line = text[text.rfind("\n", 0, m.start()) + 1 : m.start()]
        if _NOT_PLAIN_BEFORE.search(line.removesuffix("$")):  # 15% * $1000 = $150: part of a larger one
            continue
        sides = m.group(0).split("=")
        after = text[m.end() : m.end() + 2]
        # a word after the last side: glued (100 = 5A) or after bare numbers only ($1 = 100 cents), a
        # conversion, not plain; after an expression (14 * 3 = 40 legs) a unit of the result, checked
        word = after[:1].isalpha() and (not m.group(0)[-1].isspace() or all(_BARE.fullmatch(x) for x in sides[:-1]))
        if after and (after[0] in "%^!{\\" or word or re.match(r":\d", after)):
            sides = sides[:-1]  # the last side goes on past the chain (0.5 = 50%, 100 = 5A, = 3:30): not plain
        vals = [_eval_arith(s) for s in sides]
        for (sa, a), (sb, b) in zip(zip(sides, vals), zip(sides[1:], vals[1:])):
            out.append((sa.strip(), a, sb.strip().rstrip("."), b, m.end()))
    return out


def arithmetic_errors(reply: str) -> list[str]:
    """Equalities between plain-number expressions that do not hold (``54 + 86 = 130``), on every
    line and every link of a chain (``3 + 4 = 7 = 8``)."""
    return [f"{sa} = {sb}" for sa, a, sb, b, _ in _equalities(_normalized(reply))
            if a is not None and b is not None and not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)]


def equalities_hold(reply: str) -> list[bool]:
    """Whether each checked equality (both sides plain arithmetic; every line, every link) holds."""
    return [math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for _, a, _, b, _ in _equalities(_normalized(reply))
            if a is not None and b is not None]


def last_result(reply: str) -> str | None:
    """The working's last computed result: the right side of the last equality between plain-number
    expressions outside the answer statements (:func:`work_text`); None without one."""
    return _last_result(reply)[0]


def _last_result(reply: str) -> tuple[str | None, list[str]]:
    """:func:`last_result`, and the numbers the working states after it."""
    work = _normalized(work_text(reply))
    links = [(sb, end) for _, a, sb, b, end in _equalities(work) if a is not None and b is not None]
    if not links:
        return None, []
    last, end = links[-1]
    return last, re.findall(rf"-?{_NUM}", work[end:])


def _numeric(answer: str) -> bool:
    """A plain number in some form (``42``, ``1,000``, ``$15``, ``25\\%``, ``-\\frac{1}{2}``, ``7/2``)."""
    frac = re.fullmatch(r"\s*(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}\s*", answer)
    return frac is not None or _eval_arith(answer) is not None or as_number(answer) is not None


def consistent(reply: str, final: str | None, final_result_is_answer: bool = True) -> tuple[bool, str]:
    """No false equality in the working, no stated answer besides ``final``, and (``final_result_is_answer``)
    the working's last computed result (:func:`last_result`) equal to ``final`` when ``final`` is a
    plain number (a symbolic or multiple-choice answer is not compared). A number the working states
    after that result counts as its result too: the last step may be one the checker cannot read
    (``32 hours + 64 hours = 96 hours``, ``3/25 * 100% = 12%``), and it ends at that number."""
    errors = arithmetic_errors(reply)
    if errors:
        return False, "arithmetic does not hold: " + "; ".join(errors[:3])
    if final is not None:
        for a in stated_answers(reply):
            if a != final and not _same(a, final):
                return False, f"states answer {a!r} besides the final {final!r}"
        if final_result_is_answer and _numeric(final):
            last, later = _last_result(reply)
            if last is not None and not any(_same(x, final) for x in [last] + later):
                return False, f"the working's last result {last!r} is not the final answer {final!r}"
    return True, ""


def _same(a: str, b: str) -> bool:
    va, vb = _eval_arith(a), _eval_arith(b)
    if va is not None and vb is not None:
        return math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-9)
    try:
        return same_answer(a, b)
    except Exception:  # noqa: BLE001 - an unparseable statement simply does not match
        return False


def asks_boxed(prompt: PromptConfig) -> bool:
    """The prompt asks for the answer in ``\\boxed{}``: its system prompt or a worked example uses it."""
    return any("\\boxed" in t for t in [prompt.system] + [e.solution for e in prompt.examples])


def well_formed(reply: str, want_boxed: bool, max_words_after: int) -> tuple[bool, str]:
    """The answer in the asked-for format (``want_boxed``: a ``\\boxed{}``) and the reply ending
    there: at most ``max_words_after`` words after the last answer statement (< 0: no limit)."""
    boxes = _boxed_spans(reply)
    if want_boxed and not boxes:
        return False, "final answer not in \\boxed{} as the prompt asks"
    ends = [end for _, end, _ in boxes] + [m.end() for m in _STATED.finditer(reply)]
    if max_words_after >= 0 and ends:
        after = _tokens(reply[max(ends):])
        if len(after) > max_words_after:
            return False, f"{len(after)} words after the final answer: {' '.join(after[:8])!r}..."
    return True, ""


# ----------------------------------------------------------------------------- loops


_LOOP = re.compile(r"(.{6,}?)\1{3,}", re.DOTALL)


def degenerate(reply: str, max_line_repeats: int) -> str | None:
    lines = [re.sub(r"\s+", " ", ln.strip().lower()) for ln in reply.split("\n")]
    counts: dict[str, int] = {}
    for ln in lines:
        if len(ln) >= 4:
            counts[ln] = counts.get(ln, 0) + 1
    worst = max(counts.items(), key=lambda kv: kv[1], default=("", 0))
    if max_line_repeats and worst[1] >= max_line_repeats:
        return f"line repeated {worst[1]} times: {worst[0][:60]!r}"
    m = _LOOP.search(reply[:4000])
    if m:
        return f"text loops: {m.group(1)[:40]!r} repeated"
    return None


# ----------------------------------------------------------------------------- all gates


@dataclass
class Verdict:
    ok: bool
    gate: str | None = None  # first gate that failed
    reason: str = ""
    leaks: list[str] = field(default_factory=list)


def check_reply(reply: str, *, correct: bool, finished: bool, outcome: str, cfg: GatesConfig,
                privileged: Privileged | None, reference: str | None,
                reference_name: str = "correct rollout", want_boxed: bool = False) -> Verdict:
    """Run the text gates (everything but ``plausible``, which needs the model) in order;
    ``reference`` (named ``reference_name`` in a reason) is what ``shows_work`` measures length against;
    ``want_boxed``: the prompt asks for the answer in ``\\boxed{}`` (``well_formed``)."""
    if not (correct and finished):
        return Verdict(False, "verified", "truncated" if not finished else outcome)
    if cfg.well_formed:
        ok, why = well_formed(reply, want_boxed, cfg.max_words_after_answer)
        if not ok:
            return Verdict(False, "well_formed", why)
    if cfg.no_leak and privileged is not None:
        hits = privileged.leaks(reply)
        if hits:
            return Verdict(False, "no_leak", "copies the hinted prompt: " + ", ".join(repr(h) for h in hits[:3]), hits)
    if cfg.shows_work:
        ok, why = shows_work(reply, reference, cfg.min_work_fraction, reference_name=reference_name,
                             answer=extract_answer(reply)[0])
        if not ok:
            return Verdict(False, "shows_work", why)
    if cfg.consistent:
        ok, why = consistent(reply, extract_answer(reply)[0], cfg.final_result_is_answer)
        if not ok:
            return Verdict(False, "consistent", why)
    if cfg.not_degenerate:
        why = degenerate(reply, cfg.max_line_repeats)
        if why:
            return Verdict(False, "not_degenerate", why)
    return Verdict(True)
