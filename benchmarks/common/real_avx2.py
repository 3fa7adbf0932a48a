"""real_avx2.json: each command as a user types it on a real 2-core AVX2-only CPU (copied byte for byte from the
project's measured notes, as benchmarks/results/README.md says), read by the tables beside their capped runs."""
from __future__ import annotations

from common.machine import describe
from common.results import load
from common.tables import runs

REAL = "real_avx2.json"


def real_rows() -> dict[str, dict]:
    """The rows of real_avx2.json (each command's whole-command wall) by what they ran: a preset's name,
    `distill`, or `install`."""
    rows = {}
    for r in load(REAL)["rows"]:
        words = r["command"].split()
        key = (words[words.index("--preset") + 1] if "--preset" in words
               else "distill" if words[:2] == ["noisecraft", "distill"] else "install")
        rows[key] = r
    return rows


def real_machine() -> str:
    """The real AVX2 CPU of real_avx2.json in one line (it runs native kernels: it has no wider ones to cap)."""
    m = load(REAL)["machine"]
    return describe({"machine": {**m, "kernels_capped_to": None}}, precision=m["precision"].split(" ")[0])


def real_wall(key: str, goal_s: float | None = None) -> str:
    """A command's whole wall on the real AVX2 CPU, in seconds and in quickstarts timed there, with its goal."""
    rows = real_rows()
    r, unit = rows[key], rows["digits"]["wall_s"]
    text = f"{r['wall_s']:g} s = {r['wall_s'] / unit:.2f} quickstarts"
    if goal_s is not None:
        verdict = "met" if r["wall_s"] <= goal_s else "**not met**"
        text += f" (goal {goal_s:g} s = {goal_s / unit:.2f} quickstarts: {verdict})"
    return text


def real_note() -> str:
    """Where the real-AVX2 figures come from, in one sentence."""
    d = load(REAL)
    return (f"measured on a real 2-core AVX2-only CPU ({real_machine()}), each command alone as a user types it, "
            f"{runs(d['runs'])}, at commit `{d['commit']}` (`{REAL}`); a quickstart is the `digits` quickstart's "
            f"whole command there ({real_rows()['digits']['wall_s']:g} s)")
