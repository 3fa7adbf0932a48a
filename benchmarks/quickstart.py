"""Time the README's quickstart: `noisecraft train --preset digits`, end to end, on this machine.

Runs the command in a subprocess, as a user would, and prints and writes JSON with the wall time of the whole
command (interpreter start-up, imports, data loading, training, validation, checkpoints, final grid and figures),
the training-loop time, training throughput in images/s (from the run's log), the precision `auto` resolved to,
and the CPU (model, ISA flags, any kernel cap, load average).

    python benchmarks/quickstart.py [--avx2] [--judge] [--steps N] [--out benchmarks/results]
    python benchmarks/quickstart.py --avx2 --preset digits-v --name quickstart_v_avx2_xeon   # the quickstart of before

`--avx2` runs it as on a CPU without AVX-512 (most laptops): PyTorch and oneDNN capped to AVX2 kernels
(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2), in fp32. `--judge` also samples 500 class-balanced images
with DDIM-50 and with DPM-Solver++(2M) at 10 steps (the preset's guidance) and reports the share the offline
digits classifier recognises as the digit asked for: the quickstart's quality check. `--preset digits-v` times the
quickstart of before issue 26, the unit of the budgets benchmarks/recipes_compare.py ran. A timing goal is a
multiple of this command's whole wall timed on the same machine with the same settings; the walls on a real AVX2
CPU are in results/real_avx2.json.
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

from noisecraft.config import apply_overrides, preset  # noqa: E402

from common.machine import capped_env, record
from common.results import json_from_child, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--work", default="/tmp/noisecraft-quickstart", help="where the run directory goes")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's step count (default: as shipped)")
    ap.add_argument("--avx2", action="store_true", help="AVX2 kernels only, fp32 (as on a CPU without AVX-512)")
    ap.add_argument("--judge", action="store_true", help="also measure conditional accuracy of 500 samples")
    ap.add_argument("--preset", default="digits", help="the preset to time (default: the quickstart's)")
    ap.add_argument("--name", help="the result file's name (default: quickstart_avx2 or quickstart_native)")
    args = ap.parse_args()

    run = Path(args.work) / ("avx2" if args.avx2 else "native")
    shutil.rmtree(run, ignore_errors=True)
    cfg = preset(args.preset)
    if args.steps:
        cfg = apply_overrides(cfg, {"train.steps": args.steps})
    env = capped_env(args.avx2)
    # The command a user types, in a fresh process: the wall time includes interpreter start-up and imports.
    cmd = [sys.executable, "-m", "noisecraft", "train", "--preset", args.preset, "--out", str(run), "--no-progress"]
    cmd += ["--steps", str(args.steps)] if args.steps else []
    cmd += ["--train.precision=fp32"] if args.avx2 else []
    machine = record(None, env)  # the load average before the run; the precision the run resolved, below
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    machine["precision"] = summary["precision"]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    ips = [r["img_per_s"] for r in records if "img_per_s" in r]
    result = {
        "machine": machine, "avx2_emulated": args.avx2, "command": " ".join(cmd[2:]),
        "preset": args.preset, "steps": cfg.train.steps, "batch_size": cfg.train.batch_size,
        "precision": summary["precision"], "wall_seconds": round(wall, 1),
        "train_loop_seconds": round(summary["train_seconds"], 1),
        "train_images_per_s_median": round(statistics.median(ips), 1) if ips else None,
        "train_images_per_s_overall": round(cfg.train.steps * cfg.train.batch_size / summary["train_seconds"], 1),
        "params": summary["params"], "best_val_loss": summary["best_val_loss"],
    }
    if args.judge:
        result["judge"] = judge(run, env)
    write_result(result, args.out, args.name or ("quickstart_avx2" if args.avx2 else "quickstart_native"))


def judge(run: Path, env: dict, n: int = 500) -> dict:
    """Accuracy of `n` class-balanced samples at DDIM-50 and DPM-Solver++(2M) 10 steps, sampled in a subprocess
    under the same kernel cap and the precision `auto` gives there."""
    code = f"""
import json, time
from noisecraft.evaluate.classifier import classifier_accuracy
from noisecraft.pipeline import load_pipeline
pipe = load_pipeline({str(run)!r}, "cpu")
n, labels = pipe.request({n})
out = {{}}
for key, sampler, steps in (("ddim50", "ddim", 50), ("dpmpp10", "dpmpp-2m", 10)):
    opts = pipe.resolve(sampler=sampler, steps=steps, seed=10_000)  # the preset's guidance and interval
    t0 = time.perf_counter()
    images = pipe.generate(n, labels=labels, options=opts)
    out[key] = {{"accuracy": round(float(classifier_accuracy(images, labels, dataset="digits")), 4),
                "seconds": round(time.perf_counter() - t0, 1), "guidance": opts.guidance,
                "guidance_interval": list(opts.guidance_interval), "precision": opts.precision, "n": n}}
print(json.dumps(out))
"""
    return json_from_child(code, env=env)


if __name__ == "__main__":
    main()
