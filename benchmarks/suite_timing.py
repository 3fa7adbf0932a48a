"""The README's second command, `python -m pytest -q`, timed cold and warm as a multiple of the quickstart on the
same machine.

Issue 38's goal: the suite within 5 minutes warm and 8 minutes cold on a real 2-core AVX2 laptop, or within 2 (warm)
and 3.2 (cold) quickstarts of the same machine. This trains the quickstart as a user types it (`noisecraft train
--preset digits`, the machine's own kernels and precision, as the suite runs), then runs the suite twice, one after
the other, each a fresh process with the same environment (the suite on every core, as pyproject's addopts say).
Nothing else should run meanwhile.

* cold: as on a fresh clone of a fresh machine: empty caches for what the suite and its libraries build on first
  use ($NOISECRAFT_CACHE, $XDG_CACHE_HOME, matplotlib's font cache) and no compiled bytecode of this checkout (its
  `__pycache__` folders removed; the installed libraries keep the bytecode pip compiled at install). Python writes
  bytecode as it does on a user's machine ($PYTHONDONTWRITEBYTECODE, which some sandboxes set, is dropped: with it
  every process compiles this checkout again, as no user's Python does). The suite builds its own judge and
  rasterised emoji in its temporary folder either way (tests/conftest.py), so what differs is the libraries' caches
  and the bytecode. The operating system's file cache is not dropped (that needs root and disturbs everything else
  running).
* warm: the same command again, with the caches the cold run left.

    PYTHONPATH=src python benchmarks/suite_timing.py [--avx2 (kernels capped to AVX2, fp32 quickstart)]
        [--name suite_timing]

writes benchmarks/results/NAME.json: both walls, their ratios to the quickstart, each run's slowest tests.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.cli import train_cli
from common.machine import capped_env, record
from common.results import BENCHMARKS, loadavg, write_result

GOALS = {"cold": 3.2, "warm": 2.0}  # quickstarts
ROOT = BENCHMARKS.parent  # the checkout the suite runs in
DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")


def run_suite(env: dict) -> dict:
    """`python -m pytest -q` from the repository root: its wall, its last line (passed, deselected), the tests that
    failed, its slowest 25 test phases."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=25"], cwd=ROOT,
                       env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = p.stdout.strip().splitlines()
    slowest = [{"s": float(m[1]), "phase": m[2], "test": m[3]} for m in map(DURATION.match, lines) if m]
    return {"command": "python -m pytest -q", "wall_s": round(wall, 1), "returncode": p.returncode,
            "result": (lines or [""])[-1], "failed": [line for line in lines if line.startswith("FAILED")],
            "slowest": slowest}


def as_user(env: dict) -> dict:
    """`env` with Python writing bytecode where it imports from, as a user's Python does."""
    return {k: v for k, v in env.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}


def cold_env(env: dict, root: Path) -> dict:
    """`env` with every first-use cache the suite and its libraries write pointed at empty folders under `root`."""
    folders = {"NOISECRAFT_CACHE": "noisecraft", "XDG_CACHE_HOME": "xdg", "MPLCONFIGDIR": "matplotlib"}
    for name in folders.values():
        (root / name).mkdir()
    return dict(env, **{key: str(root / name) for key, name in folders.items()})


def remove_bytecode() -> None:
    """Delete the checkout's own `__pycache__` folders (git-ignored build output; a fresh clone has none)."""
    for folder in [p for top in ("src", "tests", "benchmarks") for p in (ROOT / top).rglob("__pycache__")]:
        shutil.rmtree(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--avx2", action="store_true", help="kernels capped to AVX2 and an fp32 quickstart")
    ap.add_argument("--name", default="suite_timing")
    args = ap.parse_args()
    env = as_user(capped_env(avx2=args.avx2))
    before = loadavg()
    with tempfile.TemporaryDirectory() as work:
        flags = ["--train.precision=fp32"] if args.avx2 else []
        remove_bytecode()  # the quickstart as the first command after installing
        quickstart = train_cli("train", "digits", Path(work) / "digits", flags, env=env)
        (Path(work) / "caches").mkdir()
        fresh = cold_env(env, Path(work) / "caches")
        remove_bytecode()
        suites = {"cold": run_suite(fresh)}
        suites["warm"] = run_suite(fresh)  # the same folders, now holding what the cold run built
    ratios = {k: round(s["wall_s"] / quickstart["wall_s"], 2) for k, s in suites.items()}
    result = {"benchmark": "suite_timing", "what": __doc__.splitlines()[0], "quickstart": quickstart,
              "suite": suites, "suite_quickstarts": ratios, "goal_quickstarts": GOALS,
              "met": {k: ratios[k] <= GOALS[k] and suites[k]["returncode"] == 0 for k in GOALS},
              "load_average_before": before, "load_average_after": loadavg(),
              "machine": record("fp32" if args.avx2 else "auto", env=env)}
    write_result(result, Path(__file__).resolve().parent / "results", args.name)


if __name__ == "__main__":
    main()
