"""Reading the final answer out of a completion, and reading plain numbers.

:func:`extract_answer` takes the last ``\\boxed{...}`` / ``\\fbox{...}``, else GSM8K's
``#### N``, else "the answer is N". :func:`as_number` reads "$1,800.00", "18 dollars" or
"5 million" as an exact number; :func:`read_number` also tells when a number is followed
by a word that changes its value ("5 pi", "2 and up", "5 x") rather than by unit words.
All are linear in the text's length (model output can be anything), and none imports
more than the standard library.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_TOKEN_RE = re.compile(r"[^\s$]+")
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(r"(?:final\s+answer\s*(?:is)?|answer\s+is)\s*:?\s*([^\n]+)", re.IGNORECASE)


def _brace_pairs(text: str, start: int = 0) -> dict[int, int]:
    """``{open index: close index}`` of every closed, unescaped ``{`` from ``start`` on, in
    one linear pass (a completion with thousands of unclosed ``\\boxed{`` stays linear)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    prev = text[start - 1] if start > 0 else ""
    for i in range(start, len(text)):
        c = text[i]
        if prev != "\\":
            if c == "{":
                stack.append(i)
            elif c == "}" and stack:
                pairs[stack.pop()] = i
        prev = c
    return pairs


def _boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``, ``\\boxed x`` or ``\\fbox{...}``."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    pairs: dict[int, int] | None = None
    for m in reversed(matches):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            if pairs is None:
                pairs = _brace_pairs(text, matches[0].end())
            close = pairs.get(i)
            content = text[i + 1 : close] if close is not None else None
        else:  # "\boxed 5": one token
            tok = _TOKEN_RE.match(text, i) if i > m.end() else None
            content = tok.group(0) if tok else None
        if content is not None and content.strip():
            return content
    return None


def _clean(ans: str) -> str | None:
    """Strip surrounding math delimiters, bold markers and a final full stop."""
    ans = ans.strip()
    inline = re.fullmatch(r".*?\$([^$]+)\$(.*)", ans)  # "is $\frac12$ dollars." -> \frac12
    if inline and not ans.startswith("\\"):
        tail = inline.group(2).split()
        # "$5$ million" keeps its magnitude word: it is part of the number
        scale = bool(tail) and _scale_of(re.sub(r"[^A-Za-z]", "", tail[0])) is not None
        ans = inline.group(1) + (" " + " ".join(tail) if scale else "")
    ans = ans.strip().strip("*").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if ans.startswith(left) and ans.endswith(right) and len(ans) > len(left) + len(right):
            ans = ans[len(left) : -len(right)].strip()
    ans = ans.rstrip(".").strip()
    return ans or None


# The answer formats, in the order counts list them: every ``fmt`` :func:`extract_answer`
# returns (and so every ``Grade.fmt``) is one of them; the funnel, teacher and report counts
# list each. ``"other"`` is returned by nothing today: it stays so those counts keep the key
# they have always listed.
ANSWER_FORMATS = ("boxed", "hash", "answer_is", "other", "none")


def extract_answer(text: str) -> tuple[str | None, str]:
    """Return ``(answer, fmt)``, fmt one of :data:`ANSWER_FORMATS`: the last boxed answer,
    else the last ``#### N``, else the last "the answer is N"; ``(None, "none")`` without one."""
    if not text:
        return None, "none"
    boxed = _boxed(text)
    if boxed is not None and (ans := _clean(boxed)):
        return ans, "boxed"
    hashes = _HASH_RE.findall(text)
    if hashes and (ans := _clean(hashes[-1])):
        return ans, "hash"
    said = _ANSWER_IS_RE.findall(text)
    if said and (ans := _clean(said[-1])):
        return ans, "answer_is"
    return None, "none"


# ----------------------------------------------------------------------------- plain numbers

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_UNIT_WORD = re.compile(r"[A-Za-z]{2,}\.?")
_MAX_DIGITS = 4000  # below Python's int/str conversion limit (4300)
# magnitude words scale the number before them ("5 million" = 5000000, "3 dozen" = 36)
SCALE_WORDS = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12,
               "dozen": 12, "lakh": 10**5, "crore": 10**7}
# words that make "<number> <word>" something other than the number: constants, and
# operations, alternatives or ranges in words ("5 pi", "3 plus 4", "2 and up", "2 or more",
# "5 to 7"). Words that say what the number counts stay units ("5 more", "5 times",
# "12 km per hour"); an operand after them is a number, a letter or a constant, which
# makes the answer not a plain number anyway.
VALUE_WORDS = frozenset({"pi", "inf", "infty", "infinity",
                         "and", "or", "plus", "minus", "over", "divided", "to", "sqrt", "root"})


def _scale_of(word: str) -> int | None:
    """The factor of a magnitude word ("million", "millions"); 0 for a word built on one
    that is not a plain factor ("thousandths", "millionth"); None for any other word."""
    w = word.rstrip(".").lower()
    if w in SCALE_WORDS:
        return SCALE_WORDS[w]
    if w.endswith("s") and w[:-1] in SCALE_WORDS:
        return SCALE_WORDS[w[:-1]]
    return 0 if any(w.startswith(k) for k in SCALE_WORDS) else None


def read_number(s: str) -> tuple[Fraction | None, bool]:
    """``(value, changed)``: ``value`` is :func:`as_number`'s reading of ``s``; ``changed``
    is True when ``s`` is a number followed by words of which one changes its value: a
    single letter ("5 x", "5x", "5π", "5 e": a variable or constant) or one of
    :data:`VALUE_WORDS` ("5 pi", "2 and up"), before any other word that is not a unit
    word. ``value`` is None whenever ``changed`` is True."""
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}", r" \1 ", s)
    s = s.replace("\\$", "").replace("$", "").replace("{,}", ",").replace("\\!", "").replace("\\%", "")
    s = re.sub(r"\^\{?\\circ\}?|%|\\,|\\ ", " ", s).strip()
    m = _NUMBER.match(s)
    if not m:
        return None, False
    digits = m.group(0).replace(",", "")
    if len(digits) > _MAX_DIGITS:
        return None, False
    value = Fraction(digits)
    scaling = True
    for word in s[m.end() :].split():  # unit words: letters only, 2+ of them
        if len(word.rstrip(".")) == 1 and word[0].isalpha():  # a variable or constant
            return None, True
        if not _UNIT_WORD.fullmatch(word):
            return None, False
        if word.rstrip(".").lower() in VALUE_WORDS:
            return None, True
        factor = _scale_of(word)
        if factor is None:
            scaling = False
        elif factor == 0 or not scaling:
            return None, False
        else:
            value *= factor
    return value, False


def as_number(s: str) -> Fraction | None:
    """A plain number, tolerating $, thousands separators, %, degrees and unit words
    ("$1,800.00", "18 dollars", "90^\\circ", "12 km per hour"); magnitude words right after
    the number scale it ("5 million", "2.5 thousand dollars", "3 dozen"). None for anything
    else, including a magnitude word anywhere else ("5 dollars million", "2 thousand 500"),
    a word that changes the value ("5 pi", "2 and up", "5 x"; see :func:`read_number`) and
    numbers of more than 4000 digits."""
    return read_number(s)[0]
