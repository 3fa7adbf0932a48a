"""Strict JSON for every file and report noisecraft writes."""
from __future__ import annotations

import json
import math
from typing import Any


def to_json(obj: Any) -> str:
    """Strict, indented JSON for every file and report noisecraft writes (see `json_safe`)."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False)


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats as the strings "inf", "-inf" and "nan", tuples as lists. Python's json writes
    them as Infinity and NaN, which strict parsers (JavaScript's JSON.parse, jq) reject; the config's typed loader
    and `float()` read the strings back."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
