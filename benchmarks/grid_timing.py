"""A 3 x 4 comparison grid (12 cells of 16 images) on the quickstart run, timed as a multiple of the quickstart.

A timing goal is a multiple of `noisecraft train --preset digits` timed on the same machine with the same settings
(see colour_timing.py), so this trains the quickstart, then runs the grid command on that run as a user types it,
each whole command in a subprocess with the same environment (by default kernels capped to AVX2 and fp32), one
after the other, and writes both wall times, their ratio, and the grid's network calls against those of the same
cells drawn one at a time (the batching across cells). Nothing else should run meanwhile. Issue 37's goal: the grid
within 0.5 quickstarts.

    python benchmarks/grid_timing.py [--native] [--run DIR (skip training: time the grid on a trained run only)]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from common.machine import capped_env, record
from common.results import write_result

AXES = ("--x", "steps=5,10,20", "--y", "guidance=1-4 [4]")  # the 3 x 4
N = 16
BUDGET = 0.5  # quickstarts


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t0, 1)


def network_calls(run: Path, precision: str) -> dict:
    """Network calls of the grid as drawn (cells sharing sampler and steps batched) and of its cells drawn alone."""
    from noisecraft.grid import GridSpec, parse_axis, plan_grid
    from noisecraft.pipeline import SamplingOptions, load_pipeline
    from noisecraft.samplers import network_calls as calls_per_image

    pipe = load_pipeline(run, "cpu")
    spec = GridSpec(str(run), x=parse_axis(AXES[1]), y=parse_axis(AXES[3]), n=N,
                    options=SamplingOptions(precision=precision))
    plan = plan_grid(spec, lambda _: pipe)
    def calls(cells: list, batch_size: int) -> int:  # the guided and unguided halves share a call
        o = cells[0].request.options
        return math.ceil(sum(c.request.n for c in cells) / batch_size) * calls_per_image(o.sampler, o.steps)

    batched = sum(calls([plan.cells[i] for i in g], plan.batch_size(g)) for g in plan.groups)
    alone = sum(calls([c], c.request.options.batch_size) for c in plan.cells)
    return {"cells": len(plan.cells), "images_per_cell": N, "groups": len(plan.groups), "calls_batched": batched,
            "calls_cells_alone": alone}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native", action="store_true", help="native kernels and precision auto (default: AVX2, fp32)")
    ap.add_argument("--work", default="/tmp/noisecraft-grid-timing")
    ap.add_argument("--run", help="a trained quickstart run: time only the grid (no ratio)")
    ap.add_argument("--name", default="grid_timing")
    args = ap.parse_args()
    env = capped_env(avx2=not args.native)
    precision = "auto" if args.native else "fp32"
    work, row = Path(args.work), {}
    run = Path(args.run) if args.run else work / "digits"
    noisecraft = [sys.executable, "-m", "noisecraft"]
    if not args.run:
        train = [*noisecraft, "train", "--preset", "digits", "--out", str(run), "--overwrite", "--no-progress",
                 f"--train.precision={precision}"]
        row["quickstart_command"] = " ".join(["noisecraft", *train[3:]])
        row["quickstart_s"] = timed(train, env)
    grid = [*noisecraft, "grid", "--checkpoint", str(run), *AXES, "--n", str(N), "--precision", precision,
            "--out", str(work / "grid")]
    row["grid_command"] = " ".join(["noisecraft", *grid[3:]])
    row["grid_s"] = timed(grid, env)
    if "quickstart_s" in row:
        row["grid_quickstarts"] = round(row["grid_s"] / row["quickstart_s"], 3)
        row["budget_quickstarts"], row["met"] = BUDGET, row["grid_quickstarts"] <= BUDGET
    row.update(network_calls(run, precision))
    print(json.dumps(row))
    result = {"benchmark": "grid_timing", "what": __doc__.splitlines()[0], "row": row,
              "machine": record(precision, env=env)}
    write_result(result, Path(__file__).resolve().parent / "results", args.name)


if __name__ == "__main__":
    main()
