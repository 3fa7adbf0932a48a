"""Markdown pieces of the tables rendered from benchmarks/results/."""
from __future__ import annotations

HEADER = ["what", "figure", "machine", "file"]


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def files(*names: str) -> str:
    return ", ".join(f"`{n}`" for n in names)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def runs(k: int) -> str:
    return f"{k} run" + ("s" if k != 1 else "")
