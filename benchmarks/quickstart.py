"""Time the README's quickstart: `noisecraft train --preset digits`, end to end, on this machine.

Runs the command in a subprocess, as a user would, and prints and writes JSON with the wall time of the whole
command (interpreter start-up, imports, data loading, training, validation, checkpoints,
final grid and figures), the training-loop time, and training throughput in images/s (from the run's log).

    python benchmarks/quickstart.py --out benchmarks/results/quickstart [--steps N] [--judge]

`--judge` also samples 500 images (DDIM, the preset's steps and guidance) and reports the share classified as the
requested digit by the offline digits classifier (noisecraft.evaluate), i.e. the quickstart's quality check.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from noisecraft.config import apply_overrides, preset, to_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/quickstart")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's step count (default: as shipped)")
    ap.add_argument("--judge", action="store_true", help="also measure conditional accuracy of 500 samples")
    args = ap.parse_args()

    out = Path(args.out)
    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    cfg = preset("digits")
    if args.steps:
        cfg = apply_overrides(cfg, {"train.steps": args.steps})

    # The command a user types, in a fresh process: the wall time includes interpreter start-up and imports.
    cmd = [sys.executable, "-m", "noisecraft", "train", "--preset", "digits", "--out", str(run)]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    ips = [r["img_per_s"] for r in records if "img_per_s" in r]
    result = {
        "preset": "digits", "steps": cfg.train.steps, "batch_size": cfg.train.batch_size,
        "wall_seconds": round(wall, 1), "train_loop_seconds": round(summary["train_seconds"], 1),
        "train_images_per_s_median": round(statistics.median(ips), 1) if ips else None,
        "train_images_per_s_overall": round(cfg.train.steps * cfg.train.batch_size / summary["train_seconds"], 1),
        "params": summary["params"], "best_val_loss": summary["best_val_loss"],
    }
    if args.judge:
        result.update(judge(run))
    text = to_json(result)
    print(text)
    (out / "quickstart.json").write_text(text + "\n")


def judge(run: Path, n: int = 500) -> dict:
    from noisecraft.evaluate.classifier import classifier_accuracy
    from noisecraft.pipeline import load_pipeline

    pipe = load_pipeline(run, "cpu")
    n, labels = pipe.request(n)  # class-balanced
    opts = pipe.resolve(sampler="ddim", steps=50, seed=10_000)  # the preset's guidance, interval and precision
    t0 = time.perf_counter()
    images = pipe.generate(n, labels=labels, options=opts, progress=True)
    return {"judge_n": n, "judge_sampler": "ddim-50", "judge_guidance": opts.guidance,
            "judge_guidance_interval": list(opts.guidance_interval),
            "precision": opts.precision,  # what auto resolved to
            "sampling_seconds": round(time.perf_counter() - t0, 1),
            "conditional_accuracy": round(float(classifier_accuracy(images, labels, dataset="digits")), 4)}


if __name__ == "__main__":
    main()
