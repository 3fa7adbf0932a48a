"""Grid axes: `name=values` with AUTOMATIC1111's value forms (scripts/xyz_grid.py), checked against the axis's entry
in `noisecraft.registry.GRID_AXES` (its kind and bounds; names against their own registry). Torch-free.

    steps=5,10,20        a list (CSV: "a, b", quoted values may hold commas)
    steps=1-5            1, 2, 3, 4, 5 (a range, both ends included)
    steps=1-10 (+3)      1, 4, 7, 10 (a step; floats too: 0.5-2 (+0.5))
    guidance=1-4 [4]     1, 2, 3, 4 (a count, evenly spaced; ints are rounded)
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from noisecraft import registry
from noisecraft.errors import UserError
from noisecraft.registry import GRID_AXES

MAX_VALUES = 1024  # one axis's values (a grid's cells are limited again in noisecraft.grid.plan)
_NUM = r"[+-]?\d+(?:\.\d*)?"
_RANGE = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})\s*(?:\(\s*({_NUM})\s*\)|\[\s*(\d+)\s*\])?\s*")


@dataclass(frozen=True)
class Axis:
    """One axis of a grid: a registered setting and its values, in order."""

    name: str  # a GRID_AXES name
    values: tuple[Any, ...]  # parsed: int, float, str, or (lo, hi) / () for guidance_interval
    search: str | None = None  # prompt_sr: the term each value replaces (its first value)

    @property
    def labels(self) -> list[str]:
        """How the sheet and the JSON label the values (a run by its directory's name)."""
        if GRID_AXES.get(self.name).kind == "run":
            return [PurePath(str(v)).name or str(v) for v in self.values]
        return [format_value(v) for v in self.values]


def format_value(value: Any) -> str:
    """A value as grids and their JSON label it: 2.5, ddim, 0.3:5, all."""
    if isinstance(value, tuple):
        return f"{value[0]:g}:{value[1]:g}" if value else "all"
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_axis(spec: str) -> Axis:
    """'name=values' -> an Axis; an unknown name or a refused value is a UserError naming the axis and value."""
    name, eq, text = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not eq or not text.strip():
        raise UserError(f"grid axis '{spec}' must be NAME=VALUES, e.g. steps=5,10,20 (axes: "
                        f"{', '.join(GRID_AXES.names())})")
    entry = GRID_AXES.get(name, "grid axis")
    items = _split(text)
    values = tuple(v for item in items for v in _values(entry, item))
    if not values:
        raise UserError(f"grid axis {name}: no values in '{text}'")
    if len(values) > MAX_VALUES:
        raise UserError(f"grid axis {name}: {len(values)} values, at most {MAX_VALUES}")
    if len(set(values)) != len(values):
        raise UserError(f"grid axis {name}: a value is repeated in '{text}'")
    return Axis(name, values, values[0] if entry.kind == "text" else None)


def _split(text: str) -> list[str]:
    try:
        row = next(csv.reader([text], skipinitialspace=True))
    except (csv.Error, StopIteration):
        raise UserError(f"cannot split grid values '{text}' (comma-separated, \"quoted\" where a value has a comma)"
                        ) from None
    return [item.strip() for item in row if item.strip()]


def _values(entry, item: str) -> list[Any]:
    """One comma-separated item of an axis -> its values (a range gives several), checked."""
    kind = entry.kind
    if kind in ("int", "float"):
        return [_bounded(entry, v, item) for v in _numbers(entry.name, item, kind == "int")]
    if kind == "name":
        return [getattr(registry, entry.choices).get(item, f"grid axis {entry.name}").name]
    if kind == "interval":
        return [_interval(entry.name, item)]
    return [item]  # text, run: taken as written (a run is checked when it loads)


def _numbers(name: str, item: str, whole: bool) -> list[float | int]:
    m = _RANGE.fullmatch(item)
    if m is None:
        try:
            return [int(item) if whole else float(item)]
        except ValueError:
            raise UserError(f"grid axis {name}: '{item}' is not {'a whole number' if whole else 'a number'} "
                            f"or a range (1-5, 1-10 (+2), 1-10 [5])") from None
    a, b, step, count = float(m[1]), float(m[2]), m[3], m[4]
    if count is not None:
        values = _linspace(name, item, a, b, int(count))
    else:
        values = _arange(name, item, a, b, float(step) if step else (1.0 if b >= a else -1.0))
    if whole and any(v != int(v) for v in (a, b, float(step or 1))):
        raise UserError(f"grid axis {name}: '{item}' must range over whole numbers")
    return [round(v) for v in values] if whole else values


def _linspace(name: str, item: str, a: float, b: float, count: int) -> list[float]:
    if not 1 <= count <= MAX_VALUES:
        raise UserError(f"grid axis {name}: '{item}' asks for {count} values; give 1 to {MAX_VALUES}")
    if count == 1:
        return [a]
    return [round(a + (b - a) * k / (count - 1), 10) for k in range(count)]


def _arange(name: str, item: str, a: float, b: float, step: float) -> list[float]:
    if step == 0 or (b - a) * step < 0:
        raise UserError(f"grid axis {name}: the step of '{item}' never reaches {b:g} from {a:g}")
    count = math.floor((b - a) / step + 1e-9) + 1
    if count > MAX_VALUES:
        raise UserError(f"grid axis {name}: '{item}' gives {count} values, at most {MAX_VALUES}")
    return [round(a + k * step, 10) for k in range(count)]


def _bounded(entry, value: float, item: str) -> float | int:
    lo, hi = entry.facts.get("minimum"), entry.facts.get("maximum")
    low = lo is not None and (value <= lo if entry.facts.get("open_min") else value < lo)
    if not math.isfinite(value) or low or (hi is not None and value > hi):
        where = f"{'(' if entry.facts.get('open_min') else '['}{lo}, {hi}]"
        raise UserError(f"grid axis {entry.name}: value {value:g} (from '{item}') must be in {where}")
    return value


def _interval(name: str, item: str) -> tuple[float, ...]:
    if item.lower() in ("all", "none"):
        return ()
    lo, colon, hi = item.partition(":")
    try:
        pair = (float(lo), float(hi)) if colon else None
    except ValueError:
        pair = None
    if pair is None or not (math.isfinite(pair[0]) and 0 <= pair[0] < pair[1]):
        raise UserError(f"grid axis {name}: '{item}' must be LO:HI with 0 <= LO < HI (guide where LO < sigma <= HI) "
                        f"or all")
    return pair
