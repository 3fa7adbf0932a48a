"""How long `noisecraft evaluate` takes: 2,000 digit samples with the run's sampling defaults, plus all the metrics.

    python benchmarks/evaluate_speed.py [--checkpoint runs/digits] [--n 2000] [--sampler S] [--steps K]
                                        [--guidance W] [--guidance-interval LO,HI] [--out benchmarks/results]

Runs the library function behind `noisecraft evaluate` (`evaluate_checkpoint`) on the quickstart checkpoint
and prints samples/s of the sampling, the seconds of each phase and the total, against the issue's budget of
5 minutes. The dataset classifier is loaded (or trained and cached) before the clock starts and its time is
reported apart: it is a one-off per machine. With `--dry-run` and no checkpoint, it writes an untrained
checkpoint of the digits preset (same network, so the same speed) and times that instead.
After the clock stops, two independent judges that share nothing with noisecraft's classifier (an RBF-kernel SVM
on pixels from scikit-learn, which mlxtend already depends on, and a 5-NN vote on pixels), both fitted on the
training digits, classify the same saved samples; the gap between each judge's accuracy and the report's is given
in points, next to each judge's own held-out accuracy.
Prints JSON and writes it to `--out/evaluate_speed.json`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_info, write_result  # noqa: E402

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
    p.add_argument("--dry-run", action="store_true", help="use an untrained digits-preset checkpoint if none exists")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)

    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.evaluate.classifier import get_classifier
    from noisecraft.evaluate.report import EvalOptions, evaluate_checkpoint
    from noisecraft.pipeline import SamplingOptions

    tmp = tempfile.TemporaryDirectory()
    ckpt, trained = Path(args.checkpoint), True
    if not ckpt.exists():
        if not args.dry_run:
            print(f"error: {ckpt} not found (train the quickstart first, or pass --dry-run)", file=sys.stderr)
            return 2
        ckpt, trained = untrained_digits_checkpoint(Path(tmp.name)), False

    cfg = load_checkpoint(ckpt).config
    t0 = time.perf_counter()
    clf = get_classifier(cfg.data, device=args.device, progress=False)
    classifier_s = time.perf_counter() - t0

    from noisecraft.cli import parse_guidance_interval

    sampling = SamplingOptions(sampler=args.sampler, steps=args.steps, batch_size=args.batch_size,
                               guidance=args.guidance, guidance_interval=parse_guidance_interval(args.guidance_interval))
    opts = EvalOptions(n=args.n, sampling=sampling, device=args.device, progress=False)
    t1 = time.perf_counter()
    report = evaluate_checkpoint(ckpt, Path(tmp.name) / "eval", opts)
    total = time.perf_counter() - t1

    off = report.get("offline", {})
    saved = np.load(Path(report["out"]) / "samples.npz")
    judges = (independent_judges(torch.from_numpy(saved["images"]), torch.from_numpy(saved["labels"]), cfg.data)
              if cfg.model.num_classes else [])
    result = {
        "benchmark": "evaluate_speed",
        "checkpoint": report["checkpoint"], "trained_checkpoint": trained,
        "n": args.n, "sampler": report["sampling"]["sampler"], "steps": report["sampling"]["steps"],
        "batch_size": args.batch_size, "device": args.device, "torch_threads": torch.get_num_threads(),
        "machine": cpu_info(),
        "samples_per_s": round(args.n / report["timing"]["sampling_s"], 2),
        "sampling_s": report["timing"]["sampling_s"],
        "offline_metrics_s": report["timing"]["offline_metrics_s"],
        "inception_metrics_s": report["timing"]["inception_metrics_s"],
        "inception": "skipped (no weights)" if "skipped" in report.get("inception", {}) else "computed",
        "total_s": round(total, 2), "budget_s": BUDGET_S, "within_budget": total < BUDGET_S,
        "classifier_load_or_train_s": round(classifier_s, 2),
        "classifier_heldout_accuracy": clf.heldout_accuracy,
        "class_accuracy": off.get("generated", {}).get("class_accuracy"),
        "fd_clf": off.get("generated", {}).get("fd"),
        "guidance": report["sampling"]["guidance"], "guidance_interval": report["sampling"].get("guidance_interval"),
        "precision": report["sampling"]["precision"],
        "independent_judges": [
            {**j, "gap_points": round(100 * abs(j["class_accuracy"] - off["generated"]["class_accuracy"]), 2)
             if "generated" in off else None} for j in judges],
    }
    print(f"evaluate: {args.n} samples, {result['sampler']} {result['steps']} steps: {result['samples_per_s']} samples/s, "
          f"sampling {result['sampling_s']} s, metrics {result['offline_metrics_s']} s, total {result['total_s']} s "
          f"(budget {BUDGET_S:.0f} s: {'OK' if result['within_budget'] else 'OVER'})")
    write_result(result, args.out, "evaluate_speed")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
