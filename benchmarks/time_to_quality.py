"""Time to quality: training wall-clock until the digits model's samples reach a conditional accuracy, noisecraft
vs the diffusers-style reference loop (`common/diffusers_reference.py`), same data, batch, budget and judge.

    python benchmarks/time_to_quality.py [--budget 300] [--chunk-steps 250] [--target 0.9] [--n 100]

Both sides train in chunks of `--chunk-steps` optimizer steps, alternating (so load from other processes hits
both alike), until their samples reach `--target` or their training time passes `--budget` seconds. After each
chunk the EMA weights draw `--n` samples (an equal number per digit; DDIM, 20 steps, the preset's guidance
weight, for both sides) and the offline digits classifier (`noisecraft.evaluate`) reports the share that are the
digit asked for. Both sides train and sample at the same precision (`--precision`, default auto: bf16 where
native), unless `--reference-precision` says otherwise; the JSON records both. Only training time counts
towards the budget (ours: the loop time the trainer reports, which
includes its validation pass at the end of each chunk; reference: its `run` time); sampling and judging do not.
noisecraft trains through `noisecraft.train.train` resumed chunk by chunk, which continues exactly (batches and
noise are functions of the step). Prints JSON and writes `--out/time_to_quality.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from noisecraft.config import apply_overrides, preset  # noqa: E402
from noisecraft.data import load_dataset  # noqa: E402
from noisecraft.evaluate.classifier import classifier_accuracy  # noqa: E402
from noisecraft.pipeline import load_pipeline  # noqa: E402
from noisecraft.train import train  # noqa: E402

from common.diffusers_reference import ReferenceTrainer, ddim_sample
from common.machine import record


class Ours:
    name = "noisecraft"

    def __init__(self, cfg, run: Path, device: torch.device):
        self.cfg, self.run, self.device, self.steps, self.seconds = cfg, run, device, 0, 0.0

    def train_chunk(self, steps: int) -> None:
        self.steps += steps
        cfg = apply_overrides(self.cfg, {"train.steps": self.steps})
        summary = train(cfg, self.run, resume=self.steps > steps, progress=False)
        self.seconds = summary["train_seconds"]  # cumulative loop time over the resumed chunks

    def sample(self, labels: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:
        pipe = load_pipeline(self.run, self.device, prefer="last")
        # guided at every step and in the precision it trained in, as the reference side samples
        return pipe.generate(labels=labels, sampler="ddim", steps=steps, guidance=guidance, guidance_interval=(),
                             precision=self.cfg.train.precision, seed=0)


class Reference:
    name = "diffusers-reference"

    def __init__(self, cfg, data, device: torch.device, precision: str):
        self.trainer = ReferenceTrainer(data, cfg, device, precision=precision, seed=cfg.train.seed)
        self.data, self.device, self.precision, self.steps, self.seconds = data, device, precision, 0, 0.0

    def train_chunk(self, steps: int) -> None:
        self.steps += steps
        self.seconds += self.trainer.run(steps)

    def sample(self, labels: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:
        d = self.data
        return ddim_sample(self.trainer.ema_model(), len(labels), labels, d.num_classes,
                           (d.channels, d.image_size, d.image_size), steps=steps, guidance=guidance, seed=0,
                           device=self.device, precision=self.precision)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per side")
    ap.add_argument("--chunk-steps", type=int, default=250, help="optimizer steps between evaluations")
    ap.add_argument("--target", type=float, default=0.9, help="conditional accuracy to reach")
    ap.add_argument("--n", type=int, default=100, help="samples per evaluation (equal per class)")
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="auto", help="both sides' training and sampling precision (auto: bf16 "
                    "where native, else fp32, as noisecraft resolves it)")
    ap.add_argument("--reference-precision", default=None,
                    help="the reference side's, when it should differ (the diffusers script's default is fp32); "
                         "default: the same as --precision, so the comparison is of loops, not number formats")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    device = torch.device(args.device)
    from noisecraft.precision import use_bf16

    precision = args.precision if args.precision != "auto" else ("bf16" if use_bf16(device, "auto") else "fp32")
    reference_precision = args.reference_precision or precision

    cfg = apply_overrides(preset("digits"), {"train.device": str(device), "train.final_figures": False,
                                             "train.precision": precision,
                                             "train.val_every": 10**9, "train.sample_every": 10**9})
    data = load_dataset(cfg.data, "train")
    guidance = cfg.sample.guidance
    labels = torch.arange(args.n) % data.num_classes
    classifier_accuracy(torch.zeros(1, data.channels, data.image_size, data.image_size, dtype=torch.uint8),
                        torch.zeros(1, dtype=torch.long))  # load (or train and cache) the judge up front

    with tempfile.TemporaryDirectory() as tmp:
        sides = [Ours(cfg, Path(tmp) / "ours", device), Reference(cfg, data, device, reference_precision)]
        history = {s.name: [] for s in sides}
        reached = {s.name: None for s in sides}
        active = list(sides)
        while active:
            for side in list(active):
                side.train_chunk(args.chunk_steps)
                t0 = time.perf_counter()
                acc = classifier_accuracy(side.sample(labels, args.sample_steps, guidance), labels)
                rec = {"step": side.steps, "train_seconds": side.seconds, "accuracy": acc,
                       "eval_seconds": time.perf_counter() - t0}
                history[side.name].append(rec)
                print(f"{side.name}: step {side.steps}, {side.seconds:.0f} s, accuracy {acc:.3f}", file=sys.stderr)
                if acc >= args.target and reached[side.name] is None:
                    reached[side.name] = rec
                if reached[side.name] is not None or side.seconds >= args.budget:
                    active.remove(side)

    result = {
        "machine": record(precision),  # with the load average: other processes sharing the cores
        "setup": {"preset": "digits", "device": str(device), "batch": cfg.train.batch_size,
                  "budget_seconds": args.budget, "target_accuracy": args.target,
                  "chunk_steps": args.chunk_steps, "samples_per_eval": args.n,
                  "sampler": f"ddim {args.sample_steps} steps, guidance {guidance}",
                  "reference_precision": reference_precision, "ours_precision": precision,
                  "same_precision": reference_precision == precision},
        "seconds_to_target": {k: (v["train_seconds"] if v else None) for k, v in reached.items()},
        "best_accuracy": {k: max(r["accuracy"] for r in h) for k, h in history.items()},
        "history": history,
    }
    a, b = result["seconds_to_target"].values()
    result["speedup"] = b / a if a and b else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    (out / "time_to_quality.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
