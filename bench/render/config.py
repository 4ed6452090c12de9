"""The field reference of docs/configuration.md, rendered from the config model (``ssb.config``) rather
than a results file: one table per section with each field's type and range, its code default, its
value in the shipped ``configs/default.yaml`` and its description, so the reference cannot drift from
the code. A shipped value that differs from the code default is in bold."""

from __future__ import annotations

import inspect
from typing import get_origin

from ssb.config import STAGE_SEEDS, DataConfig, ReasoningGymTask, RunConfig, WorkedExample, load_config
from ssb.config_fields import bounds, leaves, models_in, show, type_name

from .common import ROOT, table

SHIPPED = "configs/default.yaml"
WIDTH = 60  # the longest value a cell shows; a longer one ends in "…" (`ssb config show` prints it whole)
NAMES = {DataConfig: "data section", ReasoningGymTask: "task", WorkedExample: "example"}
UNSET = object()


def _code(value) -> str:
    text = show(value)
    text = text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"
    return "`" + text.replace("|", "\\|") + "`"


def _lookup(data, path: str):
    """The value at a dotted ``path`` of a dumped config; :data:`UNSET` inside a list or a None section."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return UNSET
        data = data[part]
    return data


def render_config_reference() -> str:
    shipped_cfg = load_config(ROOT / SHIPPED)
    shipped = shipped_cfg.model_dump(mode="json")
    code = RunConfig().model_dump(mode="json")
    sections: dict[str, list[list[str]]] = {}
    lists: set[str] = set()
    for path, f in leaves(RunConfig, once=True):
        top, _, rest = path.partition(".")
        stage_seed = rest == "seed" and top in STAGE_SEEDS
        if models_in(f.annotation) and get_origin(f.annotation) is list:
            lists.add(path)
        shown = path
        for p in lists:
            shown = shown.replace(p + ".", p + "[].") if shown.startswith(p + ".") else shown
        kind = type_name(f.annotation, NAMES) + (f" ({bounds(f)})" if bounds(f) else "")
        if stage_seed:
            default, code_value = "top-level `seed`", shipped_cfg.seed
        elif f.is_required():
            default, code_value = "required", UNSET
        else:
            code_value = _lookup(code, path)  # as validated (3 -> 3.0); a list item's field: its own default
            code_value = f.get_default(call_default_factory=True) if code_value is UNSET else code_value
            default = _code(code_value)
        value = _lookup(shipped, path)
        cell = "—" if value is UNSET else _code(value)
        if value is not UNSET and value != code_value:
            cell = f"**{cell}**"
        description = (f.description or "").replace("|", "\\|").replace("<", "&lt;")
        sections.setdefault(top if rest else "", []).append(
            [f"`{shown}`", kind.replace("|", "\\|"), default, cell, description])
    out = []
    for name, rows in sections.items():
        doc = inspect.getdoc(RunConfig.model_fields[name].annotation) if name else None
        intro = " ".join((doc or "").split("\n\n")[0].split()).replace("``", "`")
        out += [f"### {f'`{name}`' if name else 'Top level'}", ""] + ([intro, ""] if intro else [])
        out += [table(["field", "type", "code default", f"`{SHIPPED}`", "description"], rows, "lllll"), ""]
    return "\n".join(out)
