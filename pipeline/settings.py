"""Typed settings tables: a nested dict checked against a dataclass, every key and type named in
the error. ``pipeline.config`` builds the run config with it, and each method its parameters."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if type(value) is not annotation:
            raise ConfigError(
                f"config key '{key}' must be {annotation.__name__}, got {type(value).__name__} {value!r}"
            )
        return value
    if origin is list:
        (inner,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {type(value).__name__} {value!r}")
        return [_check_type(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict or annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    raise ConfigError(f"config key '{key}': unsupported type {annotation}")


def build_dataclass(cls, values: dict[str, Any], prefix: str):
    """Instantiate ``cls`` from ``values``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix}' must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"section [{prefix}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown config key '{(prefix + '.') if prefix else ''}{unknown[0]}' in {where}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = build_dataclass(annotation, value, key)
        else:
            kwargs[name] = _check_type(key, value, annotation)
    return cls(**kwargs)


