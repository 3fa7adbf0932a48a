"""What streaming costs: `Pipeline.generate` vs `Pipeline.stream` with previews off and with a preview every step.

    python benchmarks/stream_overhead.py [--n 32] [--steps 20] [--rounds 5] [--device cpu] [--precision auto]

On the digits preset network (untrained weights: the speed is the architecture's), the three ways draw the same
images with the same settings (DDIM, the preset's guidance w = 1 above sigma 2), in interleaved rounds so load
from other processes hits all three alike; it reports the median seconds of each and their ratios to
`generate`. The goal: previews off cost nothing measurable, a preview every step (the x0 estimate decoded to
uint8 on the CPU) at most 10% more time. Prints a table and JSON, and writes `--out/stream_overhead.json` with
the machine record (common.machine: CPU model, ISA flags, threads) and the precision auto resolved to.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from noisecraft.config import preset
from noisecraft.diffusion import Denoiser
from noisecraft.models import build_model, count_parameters
from noisecraft.pipeline import Pipeline

from common.machine import describe, record
from common.results import write_result


def digits_pipeline(device: torch.device) -> Pipeline:
    cfg = preset("digits")
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 1, 28, 10
    torch.manual_seed(0)
    den = Denoiser(build_model(cfg.model), cfg.diffusion).to(device).eval()
    return Pipeline(denoiser=den, config=cfg, class_names=[str(i) for i in range(10)], device=device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ways(pipe: Pipeline, request: dict) -> dict:
    """name -> a function drawing the request's images, each as a user of that API would."""

    def stream(preview_every: int):
        def run():
            images = []
            for ev in pipe.stream(**request, preview_every=preview_every):
                if ev.kind == "images":
                    images.append(ev.images)
            return torch.cat(images)
        return run

    return {"generate": lambda: pipe.generate(**request), "stream, previews off": stream(0),
            "stream, preview every step": stream(1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32, help="images per call (32: one guided CPU batch)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    pipe = digits_pipeline(device)
    opts = pipe.resolve(sampler="ddim", steps=args.steps, seed=0, precision=args.precision)
    request = {"n": args.n, "options": opts}
    runs = ways(pipe, request)
    reference = runs["generate"]()
    for name, run in runs.items():  # warm-up, and the three must draw the very same images
        assert torch.equal(run(), reference), name
    seconds = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            sync(device)
            t0 = time.perf_counter()
            run()
            sync(device)
            seconds[name].append(time.perf_counter() - t0)

    median = {name: statistics.median(s) for name, s in seconds.items()}
    base = median["generate"]
    rows = [{"way": name, "median_s": round(median[name], 4), "ratio_to_generate": round(median[name] / base, 4),
             "images_per_s": round(args.n / median[name], 2), "seconds": [round(s, 4) for s in seconds[name]]}
            for name in runs]
    gpu = {"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}
    result = {"benchmark": "stream_overhead", "device": str(device), "machine": record(opts.precision, **gpu),
              "n": args.n, "steps": args.steps,
              "sampler": opts.sampler, "guidance": opts.guidance, "guidance_interval": list(opts.guidance_interval),
              "batch_size": opts.batch_size, "rounds": args.rounds, "params": count_parameters(pipe.denoiser.net),
              "rows": rows}
    where = result["machine"].get("gpu") or describe(result)
    print(f"{args.n} images, DDIM {args.steps} steps, w = {opts.guidance:g}, batch {opts.batch_size}, "
          f"{args.rounds} interleaved rounds on {where} ({device})")
    for r in rows:
        print(f"  {r['way']:28s} {r['median_s']:8.3f} s  {r['images_per_s']:8.2f} img/s  "
              f"x{r['ratio_to_generate']:.3f} of generate   rounds: {', '.join(f'{s:.3f}' for s in r['seconds'])}")
    write_result(result, args.out, "stream_overhead")
    return result


if __name__ == "__main__":
    main()
