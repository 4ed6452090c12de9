"""reasoning-gym problems: drawn from the task generators, split by weight, distinct, and
kept apart from the questions they must not repeat (a run's training set, for a holdout).
"""

from __future__ import annotations

import ast
import logging
from fractions import Fraction

from ..config import ReasoningGymTask
from .problem import DataError, Problem, jsonable, normalize_question

log = logging.getLogger(__name__)

# basic_arithmetic computes answers with floor division ("/" -> "//"), so a few
# problems with "/" have answers that differ from the written expression (checked in
# reasoning-gym 0.1.25: 19 of 644 division problems among 2000 drawn). Such entries
# are dropped: we re-evaluate the expression exactly and keep only those that agree.
#
# Small tasks have a finite set of distinct questions (chain_sum with 2 terms of 1-2
# digits: about 16,400), and reasoning-gym seeds entry i of a dataset with ``seed + i``,
# so two seeds draw the same entries shifted by their difference. We therefore draw
# until enough distinct new questions are found, and call a task's space exhausted when
# EXHAUSTED_AFTER draws in a row bring nothing new (or after MAX_DRAWS draws in all).
EXHAUSTED_AFTER = 20_000
MAX_DRAWS = 1_000_000


def _exact_value(expr: str):
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b}

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("unsupported expression")

    return ev(ast.parse(expr, mode="eval").body)


def _entry_is_consistent(task: str, entry: dict) -> bool:
    """False for generator entries whose gold answer contradicts their question. basic_arithmetic
    computes its answer on the expression tree it built but, without parentheses, prints the tree
    flat: `4 + 2 * 2` comes with the answer 12 ((4 + 2) * 2), and about a fifth of `+ *` problems
    are such; its divisions round. Its answer must be the printed expression's value under the usual
    precedence."""
    if task != "basic_arithmetic":
        return True
    expr = (entry.get("metadata") or {}).get("expression")
    if not expr:
        return True
    try:
        return _exact_value(expr) == Fraction(str(entry["answer"]))
    except (ValueError, ZeroDivisionError, SyntaxError):
        return False


def _split_by_weight(size: int, tasks: list[ReasoningGymTask]) -> list[int]:
    """Largest-remainder split of ``size`` over the task weights."""
    total = sum(t.weight for t in tasks)
    if total <= 0:
        raise DataError("reasoning_gym: task weights must sum to a positive number")
    shares = [size * t.weight / total for t in tasks]
    counts = [int(s) for s in shares]
    order = sorted(range(len(tasks)), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in order[: size - sum(counts)]:
        counts[i] += 1
    return counts


def _draw_task(task: ReasoningGymTask, want: int, seed: int, seen: set[str], exclude: set[str],
               stats: dict) -> list[Problem]:
    """Up to ``want`` problems whose questions are neither in ``seen`` (drawn already) nor
    in ``exclude``; ``stats`` gets the counts (candidates, dropped, kept, exhausted)."""
    import reasoning_gym  # heavy (sympy, ...) and optional: imported only when problems are drawn

    out: list[Problem] = []
    counts = {"candidates": 0, "dropped_excluded": 0, "dropped_repeats": 0, "dropped_inconsistent": 0}
    next_index, gen_size, last_new = 0, max(want, 1), 0
    stop = None
    while stop is None:
        try:
            ds = reasoning_gym.create_dataset(task.name, size=gen_size, seed=seed, **task.options)
        except Exception as e:  # noqa: BLE001 - bad names/options raise various types
            raise DataError(f"reasoning_gym: cannot create task {task.name!r} with {task.options}: {e}") from e
        # Entries depend only on (seed, index), so a larger size extends the same sequence.
        for index in range(next_index, gen_size):
            entry = ds[index]
            counts["candidates"] += 1
            key = normalize_question(entry["question"])
            if key in exclude:
                counts["dropped_excluded"] += 1
            elif key in seen:
                counts["dropped_repeats"] += 1
            elif not _entry_is_consistent(task.name, entry):
                counts["dropped_inconsistent"] += 1
            else:
                seen.add(key)
                last_new = index
                entry = jsonable(entry)
                out.append(
                    Problem(
                        id=f"rg-{task.name}-s{seed}-{index}",
                        question=entry["question"],
                        answer=str(entry["answer"]),
                        metadata={"source": "reasoning_gym", "task": task.name, "entry": entry},
                    )
                )
                if len(out) == want:
                    stop = "enough"
                    break
            if index - last_new >= EXHAUSTED_AFTER:
                stop = "exhausted"
                break
            if counts["candidates"] >= MAX_DRAWS:
                stop = "max_draws"
                break
        next_index, gen_size = gen_size, min(gen_size * 2, MAX_DRAWS)
    counts["kept"] = len(out)
    counts["wanted"] = want
    counts["exhausted"] = stop != "enough"
    stats[task.name] = counts
    if stop != "enough":
        why = (f"no new question in the last {EXHAUSTED_AFTER:,} draws: its space of distinct questions looks "
               "exhausted" if stop == "exhausted" else f"stopped at {MAX_DRAWS:,} draws")
        log.warning("reasoning_gym %s: only %d of %d distinct problems after %d draws (%d excluded, %d repeats, "
                    "%d inconsistent); %s", task.name, len(out), want, counts["candidates"],
                    counts["dropped_excluded"], counts["dropped_repeats"], counts["dropped_inconsistent"], why)
    return out


def reasoning_gym_problems(
    tasks: list[ReasoningGymTask], size: int, seed: int, exclude: set[str] | None = None,
    stats: dict | None = None,
) -> list[Problem]:
    """Draw ``size`` problems from reasoning-gym tasks, split by weight.

    Questions are unique (by :func:`normalize_question`) across all tasks and never in
    ``exclude`` (normalised training questions, so held-out sets do not overlap them).
    Draws go on until each task has its share or its space of distinct questions looks
    exhausted (see ``EXHAUSTED_AFTER``); then a warning is logged and fewer problems are
    returned. ``stats`` (a dict) receives per-task counts: ``{task: {candidates,
    dropped_excluded, dropped_repeats, dropped_inconsistent, kept, wanted, exhausted}}``.
    """
    if not tasks:
        raise DataError("reasoning_gym: data.tasks is empty; name at least one task (e.g. chain_sum)")
    exclude = set(exclude or ())
    seen: set[str] = set()
    stats = {} if stats is None else stats
    out: list[Problem] = []
    for task, want in zip(tasks, _split_by_weight(size, tasks)):
        if want > 0:
            per_task: dict = {}
            out.extend(_draw_task(task, want, seed, seen, exclude, per_task))
            _merge_counts(stats, per_task[task.name], task.name)
    return out


def _merge_counts(stats: dict, counts: dict, name: str) -> None:
    if name in stats:  # the same task listed twice (other options)
        for k, v in counts.items():
            stats[name][k] = (stats[name][k] or v) if isinstance(v, bool) else stats[name][k] + v
    else:
        stats[name] = dict(counts)
