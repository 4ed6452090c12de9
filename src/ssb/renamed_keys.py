"""Config keys that were renamed: a config or ``--set`` that still uses an old key is read
under the new one, with a logged warning that names it; an old key set beside its new one to
another value is an error. ``config.py`` calls these from its validators (kept apart so that
the typed sections read as they are today)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic_core import PydanticCustomError

log = logging.getLogger(__name__)

# Keys that moved, old -> new: a config or --set that still uses an old key is read under the
# new one, with a logged warning.
MOVED_KEYS = {  # teacher.hint_context / teacher.rollout_hint then map to teacher.hint (read_old_hint_keys)
    "curate.hint_context": "teacher.hint_context", "curate.teacher_template": "teacher.template",
    "curate.teacher_temperature": "teacher.temperature", "curate.teacher_top_k": "teacher.top_k",
    "curate.teacher_retries": "teacher.retries", "curate.max_pairs": "teacher.max_pairs",
    "distill.lora_r": "lora.r", "distill.lora_alpha": "lora.alpha", "distill.lora_dropout": "lora.dropout",
    "distill.target_modules": "lora.target_modules", "distill.report_to": "tracking.report_to",
}


def move_keys(data: dict, source: str = "config") -> dict:
    """``data`` with each old key of :data:`MOVED_KEYS` under its new name, and a warning that
    names them; an old key set beside its new one to another value is an error."""
    moved = []
    for old, new in MOVED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section, target = data.get(old_section), data.get(new_section) or {}
        if not (isinstance(section, dict) and old_key in section and isinstance(target, dict)):
            continue
        value = section[old_key]
        if target.get(new_key, value) != value:
            raise PydanticCustomError("renamed_key", "{old}={value} and {new}={current}: {old} is the old name of "
                                      "{new}; set only {new}",
                                      {"old": old, "new": new, "value": repr(value), "current": repr(target[new_key])})
        data = {**data, old_section: {k: v for k, v in section.items() if k != old_key},
                new_section: {**target, new_key: value}}
        moved.append(f"{old} -> {new}")
    if moved:
        log.warning("%s: renamed keys read under their new names (rename them there): %s", source, ", ".join(moved))
    return data


def read_old_hint_keys(data: Any) -> Any:
    """The ``teacher`` section ``data`` with ``hint_context`` / ``rollout_hint`` (before
    ``hint``) read as the ``hint`` that does what they did (:func:`old_hint`), with a warning
    that says so; either beside a ``hint`` that means something else is an error."""
    if not isinstance(data, dict) or not ({"hint_context", "rollout_hint"} & data.keys()):
        return data
    data = dict(data)
    context, rollout = data.pop("hint_context", None), data.pop("rollout_hint", None)
    hint = old_hint(context, rollout, data.get("solution", "generate"))
    if data.get("hint", hint) != hint:
        raise PydanticCustomError("renamed_key", "teacher.hint={hint} and the old teacher.hint_context/"
                                  "rollout_hint, which mean teacher.hint={old}: set only teacher.hint",
                                  {"hint": repr(data["hint"]), "old": hint})
    old = ", ".join(f"{k}={v}" for k, v in (("hint_context", context), ("rollout_hint", rollout)) if v)
    log.warning("teacher.%s is read as teacher.hint=%s (what it did with teacher.solution=%s); "
                "set teacher.hint instead", old, hint, data.get("solution", "generate"))
    return {**data, "hint": hint}


def old_hint(hint_context: str | None, rollout_hint: str | None, solution: str) -> str:
    """The ``teacher.hint`` that shows what the old keys showed. ``hint_context`` (default
    ``contrastive``) said whether a correct / wrong rollout is shown; ``rollout_hint`` (default
    ``other_correct``) acted only with ``solution: rollout``, where ``answer`` showed the answer
    in place of another correct rollout. With ``solution: generate`` the chosen correct rollout
    was shown, whatever ``rollout_hint`` said. Old ``contrastive`` + ``rollout_hint: answer``
    (answer + wrong rollout) has no exact new form: it maps to ``contrastive``."""
    context = hint_context or "contrastive"
    if context not in ("contrastive", "correct_only", "none"):
        raise PydanticCustomError("old_hint", "teacher.hint_context={value} is not one of contrastive, correct_only, "
                                  "none (and is an old key: set teacher.hint)", {"value": repr(context)})
    if context == "correct_only":
        return "answer" if solution == "rollout" and rollout_hint == "answer" else "correct"
    return context
