"""Registry of semi-supervised methods, selectable by name (``[method] name = ...``).

Each method is one short module that defines a :class:`~pipeline.methods.base.Method`
subclass and registers it with :func:`register`.  Unknown names and unknown method
keys fail loudly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.methods.base import Method, StepBatch
from pipeline.settings import ConfigError, build_dataclass

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise RuntimeError(f"method '{cls.name}' registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"unknown method.name '{name}'; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_params(method: dict[str, Any]):
    """The chosen method's validated parameters, from the table ``[method.<name>]``."""
    name = method.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("config key 'method.name' is required (a string)")
    return build_dataclass(get_method(name).Params, method.get(name, {}), f"method.{name}")


def validate_method_config(method: dict[str, Any]) -> dict[str, Any]:
    """Check ``[method]``: a ``name`` plus optional ``[method.<name>]`` tables of parameters.

    Every table must name a registered method and hold only that method's keys, so a
    config can carry settings for several methods and switch with ``method.name=...``.
    Returns the section with the chosen method's defaults filled in.
    """
    params = method_params(method)
    resolved: dict[str, Any] = {"name": method["name"]}
    for key, table in method.items():
        if key == "name":
            continue
        if key not in METHODS:
            raise ConfigError(
                f"unknown config key 'method.{key}'; [method] takes 'name' and tables named after "
                f"methods ({', '.join(sorted(METHODS))})"
            )
        resolved[key] = dataclasses.asdict(build_dataclass(METHODS[key].Params, table, f"method.{key}"))
    resolved[method["name"]] = dataclasses.asdict(params)
    return resolved


def _import_all_methods() -> None:
    """Import every module of this package: each registers its method on import."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name not in ("base", "shared", "confidence"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_all_methods()

__all__ = ["METHODS", "Method", "StepBatch", "get_method", "method_params", "register", "validate_method_config"]
