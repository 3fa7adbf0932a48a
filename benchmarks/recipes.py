"""Train digits-preset variants and judge each: the experiment behind the digits preset's recipe.

For every variant (config overrides on top of `--preset`), trains with `noisecraft train` in a subprocess (the
CPU emulated as AVX2 in fp32 with --avx2, as on most laptops), then samples 500 class-balanced images twice,
DDIM-50 and DPM-Solver++(2M) with 10 steps (the preset's guidance), scored by the offline digits judge, in a
second subprocess with the same environment (the same kernel cap). Prints a table and appends one JSON record per
variant to the output file (with the CPU, its flags, the kernel cap and OMP_NUM_THREADS of the children's
environment, and the load average).

    python benchmarks/recipes.py --avx2 --variants '{"base": {}, "c24": {"model.unet.base_channels": 24}}'
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from common.cli import train_cli
from common.judge import judge_digits
from common.machine import capped_env, record
from common.results import append_record


def train(name: str, overrides: dict, args) -> dict:
    run = Path(args.work) / name
    shutil.rmtree(run, ignore_errors=True)
    flags = ["--train.final_figures=false", *(f"--{k}={v}" for k, v in overrides.items()),
             *(["--train.precision=fp32"] if args.avx2 else [])]
    rec = train_cli("train", args.preset, run, flags, capped_env(args.avx2))
    return {"run": str(run), "train_wall_s": rec["wall_s"], "train_loop_s": rec["train_loop_s"],
            "steps": rec["steps"], "params": rec["params"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", required=True, help='JSON {"name": {"section.field": value, ...}, ...}')
    ap.add_argument("--preset", default="digits")
    ap.add_argument("--avx2", action="store_true", help="train with AVX2 kernels only, in fp32")
    ap.add_argument("--n", type=int, default=500, help="judged samples per sampler")
    ap.add_argument("--work", default="/tmp/noisecraft-recipes")
    ap.add_argument("--out", default="benchmarks/results/recipes.jsonl")
    args = ap.parse_args()
    for name, overrides in json.loads(args.variants).items():
        env = capped_env(args.avx2)
        machine = record("fp32" if args.avx2 else "auto", env)  # the children's (kernel cap, OMP_NUM_THREADS)
        rec = {"variant": name, "preset": args.preset, "overrides": overrides, "avx2_fp32": args.avx2,
               "machine": machine, "judged_under_the_same_cap": True}
        rec.update(train(name, overrides, args))
        rec.update(judge_digits(rec["run"], args.n, env))
        rec["load_average_after"] = os.getloadavg()[0]
        print(f"{name:24s} train {rec['train_wall_s']:6.1f} s  DDIM-50 {rec['ddim50_accuracy']:.3f}  "
              f"DPM++10 {rec['dpmpp10_accuracy']:.3f}  load {machine['load_average_1_5_15'][0]:.1f}", flush=True)
        append_record(args.out, rec)


if __name__ == "__main__":
    main()
