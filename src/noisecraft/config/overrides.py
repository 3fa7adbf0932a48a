"""`--section.field=value` overrides: a JSON value or a command-line string coerced to the field's declared type."""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any, TypeVar

from noisecraft.config.sections import ARCH_SETTINGS, other_arch_error
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


# Flat `model.NAME` keys of the configs (and overrides) from before each architecture held its own settings, read
# as `model.ARCH.FIELD`. Saved keys are forever: this table only ever grows.
LEGACY_MODEL_KEYS = {
    "unet": {k: k for k in ("base_channels", "channel_mult", "num_res_blocks", "attn_resolutions", "scale_shift",
                            "cross_attn_resolutions")},
    "dit": {"base_channels": "width", "depth": "depth", "mlp_ratio": "mlp_ratio", "pos_embed": "pos_embed",
            "long_skip": "long_skip"},
}


# Keys added after configs were saved without them, with the value such a config meant (a saved run resumes as it
# began, not with a later default). This table only ever grows too.
SAVED_BEFORE = {"finetune.prior_batch": 0}  # as many prior images as new ones


def with_saved_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config's dotted values, with SAVED_BEFORE's values for keys its section was saved without."""
    sections = {k.split(".")[0] for k in values}
    return {**{k: v for k, v in SAVED_BEFORE.items() if k.split(".")[0] in sections and k not in values}, **values}


def model_key(key: str, arch: str, saved: bool) -> str | None:
    """`key` as this version names it: an old flat setting of the architecture `arch` becomes `model.ARCH.FIELD`.
    One of another architecture is refused, or, in a `saved` config (which never read it), dropped (None)."""
    section, _, name = key.partition(".")
    if section != "model" or not any(name in keys for keys in LEGACY_MODEL_KEYS.values()):
        return key
    own = LEGACY_MODEL_KEYS.get(arch, {})
    if name in own:
        return f"model.{arch}.{own[name]}"
    if saved:
        return None
    raise UserError(other_arch_error(key, arch))


def set_field(cfg: Any, dotted: str, value: Any) -> None:
    """Set `section.field` (or `model.ARCH.field`, the chosen architecture's settings) to `value`, type-checked."""
    *path, key = dotted.split(".")
    if len(path) not in (1, 2):
        raise UserError(f"config key must look like section.field or model.ARCH.field, got '{dotted}'")
    obj = cfg
    for level, name in enumerate(path):
        sub = getattr(obj, name, None) if name in {f.name for f in dataclasses.fields(obj)} else None
        if sub is None and level == 1 and name in ARCH_SETTINGS:
            raise UserError(other_arch_error(dotted, cfg.model.arch))
        if sub is None or not dataclasses.is_dataclass(sub):
            raise UserError(f"unknown config section '{'.'.join(path[:level + 1])}' in '{dotted}'")
        obj = sub
    if key not in {f.name for f in dataclasses.fields(obj)} or dataclasses.is_dataclass(getattr(obj, key)):
        raise UserError(f"unknown config key '{dotted}'")
    setattr(obj, key, _coerce(dotted, _field_type(obj, key), value))


def set_fields(cfg: Any, values: dict[str, Any], saved: bool = False) -> None:
    """Set `{"section.field": value, ...}` on cfg: model.arch first (another architecture starts from its default
    settings), then the rest in order, old flat model keys read through `model_key` (`saved`: from a saved config)."""
    values = dict(values)
    if "model.arch" in values:
        cfg.model.use_arch(_coerce("model.arch", str, values.pop("model.arch")))
    for key, value in values.items():
        key = model_key(key, cfg.model.arch, saved)
        if key is not None:
            set_field(cfg, key, value)


def resolve_key(cfg: Any, key: str) -> str:
    """Accept `section.field` or a bare `field` when it is unique across sections (or an old flat model setting)."""
    if "." in key:
        return key
    owners = [f.name for f in dataclasses.fields(cfg) if key in {g.name for g in dataclasses.fields(getattr(cfg, f.name))}]
    owners += ["model"] if any(key in keys for keys in LEGACY_MODEL_KEYS.values()) else []
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    if not owners:
        raise UserError(f"unknown config key '{key}'")
    raise UserError(f"ambiguous config key '{key}': use one of {', '.join(o + '.' + key for o in owners)}")


def apply_overrides(cfg: C, overrides: dict[str, Any]) -> C:
    """Return a copy of cfg with `{"train.lr": "1e-3", ...}` applied, type-checked, then validated."""
    cfg = copy.deepcopy(cfg)
    set_fields(cfg, {resolve_key(cfg, key.replace("-", "_")): value for key, value in overrides.items()})
    cfg.validate()
    return cfg
