"""The colour presets' whole commands timed as multiples of the digits quickstart, one after the other on this machine.

A timing goal is a multiple of `noisecraft train --preset digits` timed on the same machine with the same settings
(machines differ, and capping kernels to AVX2 is not a real AVX2 laptop by a factor that differs per CPU). So this
runs the quickstart first, then each colour preset as a user types it, each whole command in a subprocess with
the same environment (by default kernels capped to AVX2 and fp32, as on most laptops), and writes each wall time
and its ratio to the quickstart's. Nothing else should run meanwhile. The runs are kept under --work, so
`colour_search.py --judge-only` can judge them afterwards.

    python benchmarks/colour_timing.py [--native] [--only emoji32-text,emoji64-ae]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.cli import train_cli
from common.machine import capped_env, record

HERE = Path(__file__).resolve().parent
# (preset, subcommand, the budget in quickstarts); emoji64-text-latent trains in the emoji64-ae run.
COMMANDS = (("digits", "train", None), ("emoji32-text", "train", 4), ("emoji32", "train", 4),
            ("emoji64-ae", "train-autoencoder", 2), ("emoji64-text-latent", "train", 4),
            ("emoji32-text-hq", "train", 20))


def timed(preset: str, sub: str, work: Path, env: dict, precision: str) -> dict:
    run = work / preset
    extra = ["--autoencoder", str(work / "emoji64-ae")] if preset.endswith("-latent") else []
    rec = train_cli(sub, preset, run, [*extra, "--overwrite", f"--train.precision={precision}"], env)
    return {"preset": preset, "command": rec["command"], "run": str(run), "wall_s": rec["wall_s"],
            "train_loop_s": rec["train_loop_s"], "steps": rec["steps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--native", action="store_true", help="native kernels and precision auto (default: AVX2, fp32)")
    ap.add_argument("--only", default="", help="comma-separated presets to time after the quickstart (default: all)")
    ap.add_argument("--work", default="/tmp/noisecraft-colour-timing")
    ap.add_argument("--name", default="colour_timing")
    args = ap.parse_args()
    env = capped_env(not args.native)
    precision = "auto" if args.native else "fp32"
    only = set(filter(None, args.only.split(",")))
    rows = []
    for preset, sub, budget in COMMANDS:
        if preset != "digits" and only and preset not in only:
            continue
        row = timed(preset, sub, Path(args.work), env, precision)
        row["budget_quickstarts"] = budget
        row["quickstarts"] = round(row["wall_s"] / rows[0]["wall_s"], 2) if rows else 1.0
        rows.append(row)
        print(json.dumps(row))
    result = {"benchmark": "colour_timing", "what": __doc__.splitlines()[0], "rows": rows,
              "machine": record(precision, env)}
    (HERE / "results" / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
