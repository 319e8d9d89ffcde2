"""One config mechanism for train.py and md.py: trees of typed dataclasses read from YAML.

A config class is a dataclass whose fields carry type hints (int, float, bool, str, Literal[...], list[T],
tuple[T, ...], dict[K, V], Optional/Union, Any, nested dataclasses) and, where a number has a range, a
`check(...)` in the field's metadata. `build(cls, mapping)` converts and checks every value; an unknown key or a
bad value raises `ConfigError` quoting the dotted key and the value, e.g.
``training.lr: expected a positive float, got 'abc'``. `apply_overrides` applies `--set a.b=value` strings
(each value parsed as YAML) before the build. Cross-field checks belong to each tree (training/config.py,
simulation/md_config.py).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from data.atomic import atomic_path

__all__ = ["ConfigError", "check", "build", "apply_overrides", "read_yaml", "to_dict", "dump"]


class ConfigError(ValueError):
    """A configuration (or input data) problem found before any work starts."""


def check(kind: str, **extra) -> dict:
    """Field metadata: `kind` is one of the value checks in `_CHECKS` (field(default=..., metadata=check("positive")))."""
    return {"check": kind, **extra}


_CHECKS = {  # kind: (test, description with {} for the type name)
    "positive": (lambda v: v > 0, "a positive {}"),
    "nonnegative": (lambda v: v >= 0, "a non-negative {}"),
    "fraction": (lambda v: 0 <= v < 1, "a {} in [0, 1)"),
    "unit": (lambda v: 0 < v <= 1, "a {} in (0, 1]"),
    "decay": (lambda v: 0 <= v < 1, "a {} in [0, 1)"),
}


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a float"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list (each {_describe(typing.get_args(tp)[0])})"
    if origin is dict:
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _convert(value: Any, tp, key: str, check: str | None) -> Any:
    """Convert a YAML value to type `tp`; raise ConfigError quoting `key` and the value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(what: str | None = None):
        what = what or _describe(tp)
        if check and tp in (int, float):
            what = _CHECKS[check][1].format("integer" if tp is int else "float")
        return ConfigError(f"{key}: expected {what}, got {value!r}")

    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, check)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else bad()
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise bad()
        return build(tp, value, key)
    if origin is Literal:
        if value not in args:
            raise bad()
        return value
    if tp is Any:
        return value
    if origin in (list, tuple):  # list[T] or tuple[T, ...]
        if not isinstance(value, (list, tuple)):
            raise bad()
        items = [_convert(v, args[0], f"{key}[{i}]", check) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        return {_convert(k, args[0], f"{key}", None): _convert(v, args[1], f"{key}.{k}", check)
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            raise bad()
        return value
    if tp in (int, float):
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value_num = float(value)
            except ValueError:
                raise bad() from None
        elif isinstance(value, (int, float)):
            value_num = value
        else:
            raise bad()
        if tp is int:
            if float(value_num) != int(value_num):
                raise bad()
            value_num = int(value_num)
        else:
            value_num = float(value_num)
            if value_num != value_num or value_num in (float("inf"), float("-inf")):
                raise bad()
        if check and not _CHECKS[check][0](value_num):
            raise bad()
        return value_num
    raise ConfigError(f"{key}: unsupported type {tp}")


def build(cls, raw: dict, prefix: str = ""):
    """The dataclass `cls` from a plain mapping, every value converted and checked against its type hint and
    `check` metadata; an unknown key is an error that lists the valid ones. `prefix` is the dotted key of `raw`."""
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(f"unknown key '{key}' (valid keys{' in ' + prefix if prefix else ''}: "
                              f"{', '.join(names)})")
        kwargs[k] = _convert(v, hints[k], key, names[k].metadata.get("check"))
    return cls(**kwargs)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings to a nested dict in place (value parsed as YAML) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=0.005")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse value {text!r} as YAML ({e})") from None
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: bad key {key!r}")
        node = raw
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{'.'.join(parts[:i + 1])}' is not a section "
                                  f"(it is {child!r})")
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path, what: str = "--config") -> dict:
    """The top-level mapping of a YAML file ({} for an empty file); ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: file not found: '{path}'")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {raw!r}")
    return raw


def to_dict(cfg) -> dict:
    """Plain-dict form (YAML-safe) of a config dataclass."""
    return dataclasses.asdict(cfg)


def dump(cfg, path: str | Path) -> None:
    """Write the resolved config as YAML (round-trips through `read_yaml` and `build`), atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
