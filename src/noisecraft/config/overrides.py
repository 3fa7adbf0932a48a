"""`--section.field=value` overrides: a JSON value or a command-line string coerced to the field's declared type."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from noisecraft.errors import UserError

C = TypeVar("C")


def _field_type(obj: Any, name: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    return hints[name]


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a JSON value or a command-line string to the field's declared type, or raise UserError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{name} expects a comma-separated list, got {value!r}")
        return tuple(_coerce(name, args[0], v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{name} expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{name} expects an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} expects an integer, got {value!r}") from None
        if f != int(f):
            raise UserError(f"{name} expects an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} expects a number, got {value!r}") from None
    if tp is str:
        return str(value)
    raise UserError(f"cannot set {name} of type {tp}")


def set_field(cfg: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise UserError(f"config key must look like section.field, got '{dotted}'")
    section, key = parts
    sub = getattr(cfg, section, None)
    if sub is None or not dataclasses.is_dataclass(sub):
        raise UserError(f"unknown config section '{section}' in '{dotted}'")
    if key not in {f.name for f in dataclasses.fields(sub)}:
        raise UserError(f"unknown config key '{dotted}'")
    setattr(sub, key, _coerce(dotted, _field_type(sub, key), value))


def resolve_key(cfg: Any, key: str) -> str:
    """Accept `section.field` or a bare `field` when it is unique across sections."""
    if "." in key:
        return key
    owners = [f.name for f in dataclasses.fields(cfg) if key in {g.name for g in dataclasses.fields(getattr(cfg, f.name))}]
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    if not owners:
        raise UserError(f"unknown config key '{key}'")
    raise UserError(f"ambiguous config key '{key}': use one of {', '.join(o + '.' + key for o in owners)}")


def apply_overrides(cfg: C, overrides: dict[str, Any]) -> C:
    """Return a copy of cfg with `{"train.lr": "1e-3", ...}` applied, type-checked, then validated."""
    cfg = dataclasses.replace(cfg, **{f.name: dataclasses.replace(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)})
    for key, value in overrides.items():
        set_field(cfg, resolve_key(cfg, key.replace("-", "_")), value)
    cfg.validate()
    return cfg
