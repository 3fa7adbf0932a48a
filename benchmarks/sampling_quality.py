"""Sampling quality against cost on one trained model: steps / NFE vs conditional accuracy and classifier
Fréchet distance, for DDPM 1000, DDIM 10/20/50/100, DPM-Solver++(2M) 10/20 and Heun 18 (EDM's 35 NFE), plus a
classifier-free guidance sweep. Guidance uses the checkpoint's weight and noise interval unless given. Every
row draws the same N images (same labels, same per-image seeds) in one run, so the speed ratios are measured side
by side.

    python benchmarks/sampling_quality.py --checkpoint runs/digits --n 1000

Quality is judged offline by the dataset's small classifier (`noisecraft.evaluate`): the share of samples
classified as the class they were drawn for, and the Fréchet distance between Gaussian fits of the samples' and
the real training images' classifier features (FID's formula in that feature space; like FID it is biased
upwards at small N, so compare rows at the same N only). Writes JSON and a PNG plot to --out.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from noisecraft.config import to_json
from noisecraft.device import pick_device
from noisecraft.pipeline import load_pipeline
from noisecraft.samplers import describe_interval, network_calls

from common.machine import record

ROWS = [("ddpm", 1000), ("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100), ("dpmpp-2m", 10),
        ("dpmpp-2m", 20), ("heun", 18)]
GUIDANCE_SWEEP = [0.0, 1.0, 2.0, 4.0]


def parse_rows(text: str) -> list[tuple[str, int]]:
    rows = []
    for item in text.split(","):
        name, _, steps = item.strip().partition(":")
        rows.append((name, int(steps)))
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="runs/digits", help="run directory or .safetensors file")
    p.add_argument("--n", type=int, default=1000, help="images per row (classes balanced)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the device's fastest")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance weight w for the sampler rows (default: the checkpoint's sample.guidance)")
    p.add_argument("--guidance-interval", default=None,
                   help="LO,HI: guide only where LO < sigma <= HI, 'all': every step (default: the checkpoint's)")
    p.add_argument("--rows", type=parse_rows, default=ROWS, help="sampler:steps,... (default: the issue's table)")
    p.add_argument("--sweep", default=",".join(str(w) for w in GUIDANCE_SWEEP),
                   help="guidance weights for the sweep ('' to skip)")
    p.add_argument("--sweep-sampler", default="dpmpp-2m:20", type=lambda s: parse_rows(s)[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)

    from noisecraft.cli import parse_guidance_interval
    from noisecraft.evaluate.classifier import get_classifier, reference_features
    from noisecraft.evaluate.frechet import frechet_distance_stats, gaussian_stats

    device = pick_device(args.device)
    pipe = load_pipeline(args.checkpoint, device)
    cfg = pipe.config
    opts = pipe.resolve(guidance=args.guidance, guidance_interval=parse_guidance_interval(args.guidance_interval))
    guidance, interval = opts.guidance, opts.guidance_interval
    clf = get_classifier(cfg.data, device=device)
    ref = reference_features(clf, cfg.data)
    real_stats = gaussian_stats(ref["train_features"])
    # The floor: real held-out images scored the same way, at the same N where the split is large enough.
    n_floor = min(args.n, len(ref["val_features"]))
    floor = {"n": n_floor, "frechet": round(frechet_distance_stats(gaussian_stats(ref["val_features"][:n_floor]),
                                                                     real_stats), 3),
             "accuracy": round((ref["val_logits"][:n_floor].argmax(1) == ref["val_labels"][:n_floor]).float()
                               .mean().item(), 4)}
    _, labels = pipe.request(args.n)  # class-balanced
    print(f"checkpoint {pipe.path} (step {pipe.step}), {cfg.diffusion.prediction}-prediction "
          f"{cfg.diffusion.schedule} schedule; N = {args.n}; device {device}, {torch.get_num_threads()} threads; "
          f"judge: {cfg.data.dataset} classifier, held-out accuracy {clf.heldout_accuracy:.4f}; "
          f"reference: {len(ref['train_features'])} real training images; real held-out images at N = {n_floor}: "
          f"accuracy {floor['accuracy']:.4f}, FD {floor['frechet']:.3f}", flush=True)

    def run(sampler: str, steps: int, w: float) -> dict:
        t0 = time.perf_counter()
        images = pipe.generate(args.n, labels=labels, sampler=sampler, steps=steps, guidance=w,
                               guidance_interval=interval, seed=args.seed, batch_size=args.batch_size,
                               precision="auto")
        wall = time.perf_counter() - t0
        row = {"sampler": sampler, "steps": steps, "nfe": network_calls(sampler, steps), "guidance": w,
               "wall_s": round(wall, 3), "images_per_s": round(args.n / wall, 3),
               "accuracy": round(clf.accuracy(images, labels) if labels is not None else float("nan"), 4),
               "frechet": round(frechet_distance_stats(gaussian_stats(clf.features(images)), real_stats), 3)}
        print(f"  {sampler:9s} {steps:5d} steps {row['nfe']:5d} NFE  w={w:g}  {wall:8.1f} s  "
              f"{row['images_per_s']:8.2f} img/s  acc {row['accuracy']:.4f}  FD {row['frechet']:.3f}", flush=True)
        return row

    print(f"samplers (guidance w = {guidance:g}{describe_interval(interval)}):", flush=True)
    rows = [run(name, steps, guidance) for name, steps in args.rows]
    sweep_name, sweep_steps = args.sweep_sampler
    weights = [float(w) for w in args.sweep.split(",") if w.strip()]
    sweep = []
    if weights:
        print(f"guidance sweep ({sweep_name}, {sweep_steps} steps):", flush=True)
        for w in weights:
            same = next((r for r in rows if (r["sampler"], r["steps"], r["guidance"]) == (sweep_name, sweep_steps, w)),
                        None)
            sweep.append(dict(same) if same is not None else run(sweep_name, sweep_steps, w))

    speedups = {}
    ddpm = next((r for r in rows if r["sampler"] == "ddpm" and r["steps"] == 1000), None)
    for r in rows:
        if ddpm is not None and r["sampler"] == "dpmpp-2m":
            speedups[f"dpmpp-2m-{r['steps']}_vs_ddpm-1000"] = {
                "speedup": round(ddpm["wall_s"] / r["wall_s"], 2),
                "accuracy_difference_points": round(100 * (r["accuracy"] - ddpm["accuracy"]), 2)}

    result = {"checkpoint": str(pipe.path), "checkpoint_step": pipe.step,
              "prediction": cfg.diffusion.prediction, "schedule": cfg.diffusion.schedule, "n": args.n,
              "seed": args.seed, "batch_size": args.batch_size, "device": str(device),
              "machine": record("auto"),
              "guidance": guidance, "guidance_interval": list(interval),
              "classifier_heldout_accuracy": clf.heldout_accuracy,
              "reference_images": len(ref["train_features"]), "real_heldout": floor,
              "notes": "nfe = network calls per image; with guidance w != 0 each call evaluates the conditional "
                       "and null halves in one batch of twice the size (inside the guidance interval, if any)",
              "rows": rows, "guidance_sweep": sweep, "vs_ddpm_1000": speedups}
    print_table(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampling_quality.json").write_text(to_json(result) + "\n")
    plot(result, out / "sampling_quality.png")
    print(f"wrote {out / 'sampling_quality.json'} and {out / 'sampling_quality.png'}")
    return result


def print_table(result: dict) -> None:
    print(f"\n| sampler | steps | NFE | w | wall s | images/s | cond. accuracy | classifier FD |   (N = {result['n']})")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"] + result["guidance_sweep"]:
        print(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['guidance']:g} | {r['wall_s']:.1f} | "
              f"{r['images_per_s']:.2f} | {r['accuracy']:.4f} | {r['frechet']:.3f} |")
    f = result["real_heldout"]
    print(f"| real held-out images (N = {f['n']}) | | | | | | {f['accuracy']:.4f} | {f['frechet']:.3f} |")
    for k, v in result["vs_ddpm_1000"].items():
        print(f"{k}: {v['speedup']:.1f}x faster, accuracy {v['accuracy_difference_points']:+.2f} points")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    by_sampler: dict[str, list[dict]] = {}
    for r in result["rows"]:
        by_sampler.setdefault(r["sampler"], []).append(r)
    for name, rs in by_sampler.items():
        rs = sorted(rs, key=lambda r: r["nfe"])
        for ax, key in zip(axes[:2], ("accuracy", "frechet")):
            ax.plot([r["nfe"] for r in rs], [r[key] for r in rs], "o-", label=name)
    nfes = sorted({r["nfe"] for r in result["rows"]})
    for ax, title in zip(axes[:2], ("conditional accuracy", "classifier Fréchet distance")):
        ax.set_xscale("log")
        ax.set_xticks(nfes, [str(n) for n in nfes], minor=False)
        ax.minorticks_off()
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_title(f"{title} (N = {result['n']}, w = {result['guidance']:g})")
        ax.grid(alpha=0.3)
        ax.legend()
    if result["guidance_sweep"]:
        s = result["guidance_sweep"]
        ax = axes[2]
        ax.plot([r["guidance"] for r in s], [r["accuracy"] for r in s], "o-", color="C0", label="accuracy")
        ax.set_xlabel("guidance weight w")
        ax.set_ylabel("conditional accuracy", color="C0")
        ax2 = ax.twinx()
        ax2.plot([r["guidance"] for r in s], [r["frechet"] for r in s], "s--", color="C3", label="Fréchet")
        ax2.set_ylabel("classifier Fréchet distance", color="C3")
        ax.set_title(f"guidance sweep ({s[0]['sampler']}, {s[0]['steps']} steps)")
        ax.grid(alpha=0.3)
    else:
        axes[2].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
