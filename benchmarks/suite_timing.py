"""The README's second command, `python -m pytest -q`, timed as a multiple of the quickstart on the same machine.

Issue 38's goal: the suite within 5 minutes warm on a real 2-core AVX2 laptop, or within 2 quickstarts of the same
machine (3.2 cold). This trains the quickstart as a user types it (`noisecraft train --preset digits`, the machine's
own kernels and precision, as the suite runs), then runs the suite, one after the other, each a fresh process with the
same environment; "warm" means the caches (judges, emoji rasters) the suite builds are already there. Nothing else
should run meanwhile.

    python benchmarks/suite_timing.py [--avx2 (kernels capped to AVX2, fp32 quickstart)] [--name suite_timing]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.cli import train_cli
from common.machine import capped_env, record
from common.results import loadavg, write_result

WARM_GOAL = 2.0  # quickstarts (the cold goal, 3.2, needs a fresh machine: not this script)


def run_suite(env: dict) -> dict:
    """`python -m pytest -q` from the repository root: its wall, and its last line (passed, deselected)."""
    root = Path(__file__).resolve().parents[1]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    last = (p.stdout.strip().splitlines() or [""])[-1]
    return {"command": "python -m pytest -q", "wall_s": round(wall, 1), "returncode": p.returncode, "result": last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--avx2", action="store_true", help="kernels capped to AVX2 and an fp32 quickstart")
    ap.add_argument("--name", default="suite_timing")
    args = ap.parse_args()
    env = capped_env(avx2=args.avx2)
    before = loadavg()
    with tempfile.TemporaryDirectory() as work:
        flags = ["--train.precision=fp32"] if args.avx2 else []
        quickstart = train_cli("train", "digits", Path(work) / "digits", flags, env=env)
    suite = run_suite(env)
    ratio = round(suite["wall_s"] / quickstart["wall_s"], 2)
    result = {"benchmark": "suite_timing", "what": __doc__.splitlines()[0], "quickstart": quickstart, "suite": suite,
              "suite_quickstarts": ratio, "warm": True, "goal_quickstarts": WARM_GOAL, "met": ratio <= WARM_GOAL,
              "load_average_before": before, "load_average_after": loadavg(),
              "machine": record("fp32" if args.avx2 else "auto", env=env)}
    write_result(result, Path(__file__).resolve().parent / "results", args.name)


if __name__ == "__main__":
    main()
