"""The fields of a typed (pydantic) config, walked generically: their dotted keys, types, bounds
and descriptions, the values of a loaded config and whether each was given, and the words of an
error about a key (the likely key a typo meant, the YAML line a key sits on).

``config.py`` builds on it (``load_config``'s errors, ``ssb config show --describe``), and so does
the field reference of docs/configuration.md (``bench/render/config.py``). Nothing here knows the
sections of a run: every function takes the model. Also the base of every section (:class:`Section`)
and the ``--set section.field=value`` overrides of a nested dict (:func:`apply_overrides`)."""

from __future__ import annotations

import difflib
import json
import textwrap
import types
from typing import Any, Callable, Iterator, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from .errors import ConfigError

BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


class Section(BaseModel):
    """A config section: typed, an unknown key is an error, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would ("8" -> 8, "true" -> True, "[a,b]" -> list)."""
    return yaml.safe_load(text) if text != "" else ""


def as_overrides(overrides: str | list[str] | tuple | None) -> list[str]:
    """``overrides`` as a list: one string is one override (``"data.limit=8"``)."""
    return [overrides] if isinstance(overrides, str) else list(overrides or [])


def apply_overrides(data: dict, overrides: str | list[str] | None) -> dict:
    """Apply ``a.b.c=value`` overrides (a list, or one string) to a nested dict (in place) and return it."""
    for item in as_overrides(overrides):
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_scalar(value)
    return data


class Leaf(NamedTuple):
    """A field that holds a value: ``path`` dotted (``teacher.gates.leak_ngram``; the fields of a
    list's items under the list's key: ``data.tasks.name``)."""

    path: str
    field: FieldInfo


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds: ``X``, ``X | None``, ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in models_in(a)]


def leaves(model: type[BaseModel], prefix: str = "", once: bool = False,
           _seen: set | None = None) -> Iterator[Leaf]:
    """Every field of ``model`` that holds a value, depth first. A field typed as a section is
    walked into (no leaf of its own); one that holds sections in a list or beside None
    (``data.tasks``, ``eval.holdout``) is a leaf, its section's fields following; with ``once``
    a section type's fields follow only where it first appears."""
    seen = set() if _seen is None else _seen
    for name, f in model.model_fields.items():
        inner = models_in(f.annotation)
        if inner != [f.annotation]:
            yield Leaf(prefix + name, f)
        for m in inner:
            if not (once and m in seen):
                seen.add(m)
                yield from leaves(m, f"{prefix}{name}.", once, seen)


def keys(model: type[BaseModel], prefix: str = "") -> dict[str, list[str]]:
    """The keys ``model`` accepts under each section path (``""``: the top level)."""
    out = {prefix.rstrip("."): list(model.model_fields)}
    for name, f in model.model_fields.items():
        for m in models_in(f.annotation):
            out.update(keys(m, f"{prefix}{name}."))
    return out


def likely_keys(model: type[BaseModel], path: str) -> list[str]:
    """What an unknown dotted key probably meant: a near key of the same section, else the same
    (or a near) key in other sections; none when nothing is close."""
    parent, _, name = path.rpartition(".")
    table = keys(model)
    near = difflib.get_close_matches(name, table.get(parent, []), n=1, cutoff=0.6)
    if near:
        return [f"{parent}.{near[0]}" if parent else near[0]]
    return [f"{p}.{k}" if p else k for p, ks in table.items() for k in ks
            if difflib.SequenceMatcher(None, name, k).ratio() >= 0.85][:3]


def yaml_line(text: str, loc: tuple) -> int | None:
    """The 1-based line of the key at ``loc`` (keys, and list indices as ints) in the YAML
    ``text``, or of the deepest part of it there (a missing key: its section; a shorthand such as
    ``rounds: 3``: that line); None when not even its first key is (a renamed key read under its
    new name)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            hit = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def show(value: Any) -> str:
    """A value as ``--set`` would take it back: a plain string bare, anything else as JSON (which
    YAML reads)."""
    if isinstance(value, str) and value and value == value.strip() and "\n" not in value:
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value, ensure_ascii=False)


def type_name(annotation: Any, names: dict | None = None) -> str:
    """``int``, ``float | None``, ``"hf" | "vllm"``, ``list[str]``; a model by ``names`` (else its class name)."""
    names = names or {}
    origin = get_origin(annotation)
    if annotation is type(None):
        return "None"
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a, names) for a in get_args(annotation))
    if origin is list:
        return f"list[{type_name(get_args(annotation)[0], names)}]"
    if origin is dict:
        return "mapping"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def bounds(field: FieldInfo) -> str:
    """The field's range as ``≥ 1``, ``> 0, ≤ 1``; empty when it has none."""
    return ", ".join(f"{sym} {getattr(m, k)}" for m in field.metadata for k, sym in BOUNDS.items()
                     if getattr(m, k, None) is not None)


def values(cfg: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any, FieldInfo, bool]]:
    """``(path, value, field, given)`` for every value of a loaded config, values as JSON types:
    a section is walked into (one beside None too, when there is one: ``eval.holdout``), a list is
    one value. ``given``: the field was in the input (a file or an override), not its code default."""
    dumped = cfg.model_dump(mode="json")
    for name, f in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            yield from values(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", dumped[name], f, name in cfg.model_fields_set


def describe(cfg: BaseModel, origin: Callable[[str, bool], str], width: int = 100) -> str:
    """Every value of ``cfg`` as ``path = value  [origin]`` with its description wrapped below;
    ``origin(path, given)`` names where the value came from."""
    out = []
    for path, value, f, given in values(cfg):
        out.append(f"{path} = {show(value)}  [{origin(path, given)}]")
        out += textwrap.wrap(f.description or "(no description)", width, initial_indent="    ",
                             subsequent_indent="    ")
    return "\n".join(out) + "\n"
