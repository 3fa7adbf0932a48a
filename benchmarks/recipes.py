"""Train digits-preset variants and judge each: the experiment behind the digits preset's recipe.

For every variant (config overrides on top of `--preset`), trains with `noisecraft train` in a subprocess (the
CPU emulated as AVX2 in fp32 with --avx2, as on most laptops), then samples 500 class-balanced images twice,
DDIM-50 and DPM-Solver++(2M) with 10 steps (the preset's guidance), scored by the offline digits judge, in a
second subprocess with the same environment (the same kernel cap). Prints a table and appends one JSON record per
variant to the output file (with the CPU, its flags, the kernel cap and OMP_NUM_THREADS of the children's
environment, and the load average).

    python benchmarks/recipes.py --avx2 --variants '{"base": {}, "c24": {"model.base_channels": 24}}'
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_info  # noqa: E402

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def child_env(args) -> dict:
    """The environment the training and judging children run in: this one's, with the AVX2 cap under --avx2."""
    return dict(os.environ, **(AVX2_ENV if args.avx2 else {}))


def train(name: str, overrides: dict, args) -> dict:
    run = Path(args.work) / name
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "noisecraft", "train", "--preset", args.preset, "--out", str(run), "--no-progress",
           "--train.final_figures=false", *(f"--{k}={v}" for k, v in overrides.items())]
    env = child_env(args)
    if args.avx2:
        cmd.append("--train.precision=fp32")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    return {"run": str(run), "train_wall_s": round(wall, 1), "train_loop_s": round(summary["train_seconds"], 1),
            "steps": summary["steps"], "params": summary["params"]}


JUDGE = """
import json, sys, time
from noisecraft.evaluate.classifier import classifier_accuracy
from noisecraft.pipeline import load_pipeline
run, n = sys.argv[1], int(sys.argv[2])
pipe = load_pipeline(run, "cpu")
n, labels = pipe.request(n)
out = {}
for key, sampler, steps in (("ddim50", "ddim", 50), ("dpmpp10", "dpmpp-2m", 10)):
    t0 = time.perf_counter()
    images = pipe.generate(n, labels=labels, sampler=sampler, steps=steps, seed=10_000, precision="fp32")
    out[f"{key}_accuracy"] = round(float(classifier_accuracy(images, labels, dataset="digits")), 4)
    out[f"{key}_sampling_s"] = round(time.perf_counter() - t0, 1)
print(json.dumps(out))
"""


def judge(run: str, n: int, env: dict | None = None) -> dict:
    """`n` class-balanced samples at DDIM-50 and DPM-Solver++(2M) 10 steps (the run's guidance), in fp32, judged by
    the offline digits classifier; sampled in a child process with `env` (default: this one's), so that the judge
    runs under the same kernel cap as the training it judges."""
    text = subprocess.run([sys.executable, "-c", JUDGE, run, str(n)], check=True, capture_output=True, text=True,
                          env=env).stdout
    return json.loads(text.strip().splitlines()[-1])


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
        env = child_env(args)
        info = cpu_info(env)  # the children's environment (kernel cap, OMP_NUM_THREADS), not this process's
        rec = {"variant": name, "preset": args.preset, "overrides": overrides, "avx2_fp32": args.avx2, **info,
               "judged_under_the_same_cap": True}
        rec.update(train(name, overrides, args))
        rec.update(judge(rec["run"], args.n, env))
        rec["load_average_after"] = os.getloadavg()[0]
        print(f"{name:24s} train {rec['train_wall_s']:6.1f} s  DDIM-50 {rec['ddim50_accuracy']:.3f}  "
              f"DPM++10 {rec['dpmpp10_accuracy']:.3f}  load {info['load_average_1_5_15'][0]:.1f}", flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
