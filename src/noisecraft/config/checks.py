"""Small checks the config sections share; each raises a UserError naming the key."""
from __future__ import annotations

from typing import Any

from noisecraft.errors import UserError


def choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got '{value}'")


def positive(name: str, value: int) -> None:
    if value <= 0:
        raise UserError(f"{name} must be > 0, got {value}")


def non_negative(section: Any, prefix: str, names: tuple[str, ...]) -> None:
    """Each of `names` of `section` is >= 0 (NaN fails too)."""
    for name in names:
        if not getattr(section, name) >= 0:
            raise UserError(f"{prefix}.{name} must be >= 0, got {getattr(section, name)}")


def in_unit_interval(name: str, value: float) -> None:
    """0 <= value < 1 (NaN fails)."""
    if not 0.0 <= value < 1.0:
        raise UserError(f"{name} must be in [0, 1), got {value}")
