"""How long `noisecraft evaluate` takes as a user runs it: the whole command in a fresh process (interpreter
start-up, imports, loading the checkpoint and the judge, sampling, every metric that runs, the report).

    python benchmarks/evaluate_speed.py [--checkpoint runs/digits] [--n 2000] [--avx2] [--sampler S] [--steps K]
                                        [--guidance W] [--guidance-interval LO,HI] [--name evaluate_speed]

Runs `python -m noisecraft evaluate --checkpoint CKPT --n N --no-progress` in a subprocess and times it whole; the
report's own timing of each phase (sampling, offline metrics, Inception metrics) is recorded beside it, with
which metrics ran and which were skipped (and why: Inception-v3 weights cannot be downloaded here), and whether
the offline judge was already cached (when not, the command trained it, inside the timed wall). `--avx2` runs it
as on a CPU without AVX-512: kernels capped to AVX2 (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2), fp32. With
`--dry-run` and no checkpoint, it writes an untrained checkpoint of the digits preset (same network, so the same
speed; its accuracy means nothing) and times that instead; the JSON says so (`trained_checkpoint`).
After the clock stops, two independent judges that share nothing with noisecraft's classifier (an RBF-kernel SVM
on pixels from scikit-learn, which mlxtend already depends on, and a 5-NN vote on pixels), both fitted on the
training digits, classify the same saved samples; the gap between each judge's accuracy and the report's is given
in points, next to each judge's own held-out accuracy.
Prints JSON and writes it to `--out/NAME.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.machine import capped_env, record
from common.results import write_result

BUDGET_S = 300.0


def untrained_digits_checkpoint(root: Path) -> Path:
    """A digits-preset run of one optimizer step: the quickstart architecture, no training to speak of."""
    from noisecraft.config import apply_overrides, preset
    from noisecraft.train import train

    cfg = apply_overrides(preset("digits"), {"train.steps": "1", "train.batch_size": "8", "train.val_every": "1",
                                             "train.final_figures": "false", "data.val_size": "16"})
    train(cfg, root / "run", progress=False)
    return root / "run"


def independent_judges(images: torch.Tensor, labels: torch.Tensor, data_cfg) -> list[dict]:
    """Judges of the same samples that share nothing with noisecraft's classifier: an RBF-kernel SVM and a
    5-nearest-neighbour vote, both on raw pixels of the training split, each with its own held-out accuracy."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    from noisecraft.data import load_dataset

    train, val = load_dataset(data_cfg, "train"), load_dataset(data_cfg, "val")

    def pixels(x: torch.Tensor) -> np.ndarray:
        return x.flatten(1).float().numpy() / 255

    out = []
    for name, model in ((f"RBF SVM (C=10) on pixels, {len(train)} training images", SVC(C=10.0, gamma="scale")),
                        (f"5-NN on pixels, {len(train)} training images", KNeighborsClassifier(5))):
        model.fit(pixels(train.images), train.labels.numpy())
        out.append({"judge": name,  # score(): the share classified as the given label
                    "heldout_accuracy": round(float(model.score(pixels(val.images), val.labels.numpy())), 4),
                    "class_accuracy": round(float(model.score(pixels(images), labels.numpy())), 4)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="runs/digits")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--steps", type=int, default=None, help="default: the checkpoint's sample.steps")
    p.add_argument("--sampler", default=None, help="default: the checkpoint's sample.sampler")
    p.add_argument("--guidance", type=float, help="default: the checkpoint's sample.guidance")
    p.add_argument("--guidance-interval", help="LO,HI or 'all' (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the device's fastest")
    p.add_argument("--device", default="cpu")
    p.add_argument("--avx2", action="store_true", help="AVX2 kernels only, fp32 (as on a CPU without AVX-512)")
    p.add_argument("--dry-run", action="store_true", help="use an untrained digits-preset checkpoint if none exists")
    p.add_argument("--name", default="evaluate_speed", help="the result file's name (without .json)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)

    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.evaluate.classifier import classifier_path

    tmp = tempfile.TemporaryDirectory()
    ckpt, trained = Path(args.checkpoint), True
    if not ckpt.exists():
        if not args.dry_run:
            print(f"error: {ckpt} not found (train the quickstart first, or pass --dry-run)", file=sys.stderr)
            return 2
        ckpt, trained = untrained_digits_checkpoint(Path(tmp.name)), False
    cfg = load_checkpoint(ckpt).config
    judge_cached = classifier_path(cfg.data).is_file()

    env = capped_env(args.avx2)
    out = Path(tmp.name) / "eval"
    cmd = [sys.executable, "-m", "noisecraft", "evaluate", "--checkpoint", str(ckpt), "--n", str(args.n),
           "--device", args.device, "--out", str(out), "--no-progress"]
    for flag, value in (("--sampler", args.sampler), ("--steps", args.steps), ("--guidance", args.guidance),
                        ("--guidance-interval", args.guidance_interval), ("--batch-size", args.batch_size)):
        cmd += [flag, str(value)] if value is not None else []
    cmd += ["--precision", "fp32"] if args.avx2 else []
    machine = record("fp32" if args.avx2 else "auto", env,
                     pinned_cpus=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())

    off, inc = report.get("offline", {}), report.get("inception", {})
    ran = ([] if "skipped" in off else ["offline judge: class accuracy, FD-clf, precision/recall"]) + \
        ([] if "skipped" in inc or not inc else ["Inception: FID, KID, IS"]) + (["text alignment"] if "text" in report else [])
    skipped = {k: v["skipped"] for k, v in (("offline", off), ("inception", inc)) if isinstance(v, dict) and "skipped" in v}
    saved = np.load(out / "samples.npz")
    judges = (independent_judges(torch.from_numpy(saved["images"]), torch.from_numpy(saved["labels"]), cfg.data)
              if cfg.model.num_classes and "generated" in off else [])
    timing = report["timing"]
    result = {
        "benchmark": "evaluate_speed",
        "measures": "the whole `noisecraft evaluate` command in a fresh process, start-up and loading included",
        "command": " ".join(["noisecraft", *cmd[3:]]),
        "checkpoint": report["checkpoint"], "trained_checkpoint": trained,
        "n": args.n, "sampler": report["sampling"]["sampler"], "steps": report["sampling"]["steps"],
        "batch_size": args.batch_size, "device": args.device, "precision": report["sampling"]["precision"],
        "machine": machine,
        "whole_command_s": round(wall, 2), "budget_s": BUDGET_S, "within_budget": wall < BUDGET_S,
        "judge_cached_before": judge_cached,
        "metrics_ran": ran, "metrics_skipped": skipped,
        "report_timing_s": {k: v for k, v in timing.items() if k != "samples_per_s"},
        "samples_per_s": timing["samples_per_s"],
        "start_up_and_loading_s": round(wall - timing["total_s"], 2),
        "classifier_heldout_accuracy": off.get("classifier", {}).get("heldout_accuracy"),
        "class_accuracy": off.get("generated", {}).get("class_accuracy"),
        "fd_clf": off.get("generated", {}).get("fd"),
        "guidance": report["sampling"]["guidance"], "guidance_interval": report["sampling"].get("guidance_interval"),
        "independent_judges": [
            {**j, "gap_points": round(100 * abs(j["class_accuracy"] - off["generated"]["class_accuracy"]), 2)}
            for j in judges],
    }
    print(f"evaluate --n {args.n} ({result['sampler']} {result['steps']} steps), whole command: {wall:.1f} s "
          f"(sampling {timing['sampling_s']} s, metrics {timing['offline_metrics_s']} s, start-up and loading "
          f"{result['start_up_and_loading_s']} s; ran: {'; '.join(ran)}; skipped: {', '.join(skipped) or 'none'})",
          file=sys.stderr)
    write_result(result, args.out, args.name)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
