"""``--set section.field=value`` overrides applied to a config's nested mapping before it is
validated (``config.load_config``, the Python API), and the error a bad config raises."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import SSBError


class ConfigError(SSBError, ValueError):
    pass


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would ("8" -> 8, "true" -> True, "[a,b]" -> list)."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides or []:
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
