"""Training and sampling throughput of noisecraft vs a diffusers reference, side by side in one run.

    python benchmarks/throughput.py [--device cpu|cuda] [--rounds 3] [--steps 8] [--out benchmarks/results]

On the digits preset (28x28x1, 10 classes, batch 64) and on this machine, it measures:
  * training images/s of noisecraft's own loop (`noisecraft.train.train`, the code the CLI runs; throughput from
    its log) vs the diffusers-style loop in `common/diffusers_reference.py` (a UNet2DModel within 10% of our
    parameter count, per-image torchvision transforms in a DataLoader, DDPMScheduler.add_noise, AdamW, EMAModel), in
    fp32 and, where bf16 is native (GPUs, AMX or AVX512-BF16 CPUs), in bf16 autocast, and the ratios. The headline is
    the same-precision ratio at noisecraft's default precision (`auto`: bf16 where native, else fp32), so a
    faster number format never passes for a faster loop; each side at its own default is reported beside it;
  * sampling images/s at 20 network evaluations (DDIM, no guidance) vs diffusers' DDIMScheduler loop;
  * FLOPs of one training step (torch.utils.flop_counter: matmuls, convolutions, attention), the achieved
    FLOP/s, and its share of the best dense-matmul rate measured in the same run for each precision (the best of
    several sizes: a measured rate, not the hardware's ceiling, so a share can reach or pass 1).
The two networks are not the same size: the reference has the same widths but about 7% fewer parameters (and
nearly the same training FLOPs an image) and it decodes and transforms every image with PIL in its DataLoader, as
diffusers' example script does; the ratio of images/s is reported with the ratio of FLOP/s (per unit of work).

Measurements alternate ours / reference in `--rounds` rounds and report medians, so load from other processes
hits both sides alike. Prints JSON and writes it to `--out/NAME.json`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from noisecraft.config import apply_overrides, preset  # noqa: E402
from noisecraft.data import load_dataset  # noqa: E402
from noisecraft.diffusion import Denoiser, diffusion_loss  # noqa: E402
from noisecraft.models import build_model, count_parameters  # noqa: E402
from noisecraft.pipeline import Pipeline  # noqa: E402
from noisecraft.precision import use_bf16  # noqa: E402
from noisecraft.train import train  # noqa: E402

from common.diffusers_reference import ReferenceTrainer, ddim_sample, reference_unet
from common.machine import record


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> dict:
    """The best FLOP/s of square dense matmuls over several sizes (CPU: 512 to 4096; GPU: 2048 to 16384), each
    timed repeatedly for `seconds` / sizes: {"flops": best, "n": its size, "by_n": {size: best}}. A measured rate
    at this thread count, not the hardware's ceiling: a training step can come close to it or pass it (its
    convolutions may use kernels that run faster than these matmuls)."""
    sizes = (2048, 4096, 8192, 16384) if device.type == "cuda" else (512, 1024, 2048, 4096)
    by_n = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        sync(device)
        best, t_end = 0.0, time.perf_counter() + seconds / len(sizes)
        while True:
            t0 = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
            if time.perf_counter() > t_end:
                break
        by_n[n] = best
    n = max(by_n, key=by_n.get)
    return {"flops": by_n[n], "n": n, "by_n": by_n}


def step_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def ours_train_flops(cfg, data, device, batch: int) -> int:
    net = build_model(cfg.model).to(device)
    den = Denoiser(net, cfg.diffusion)
    x0 = torch.rand(batch, data.channels, data.image_size, data.image_size, device=device) * 2 - 1
    y = torch.randint(0, data.num_classes, (batch,), device=device)
    return step_flops(lambda: diffusion_loss(den, x0, {"class_labels": y}).mean().backward())


def reference_train_flops(cfg, data, device, batch: int) -> int:
    model = reference_unet(cfg.model, data.image_size, data.channels, data.num_classes).to(device)
    x = torch.randn(batch, data.channels, data.image_size, data.image_size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    y = torch.randint(0, data.num_classes, (batch,), device=device)
    return step_flops(lambda: (model(x, t, class_labels=y).sample - x).pow(2).mean().backward())


def ours_train_ips(cfg, device: torch.device, precision: str, steps: int, workdir: Path) -> float:
    """Run the real training loop for 2 x `steps` steps with one log record per `steps`; the second record's
    images/s is the measurement (the first pays for warm-up)."""
    run = workdir / f"ours-{precision}"
    shutil.rmtree(run, ignore_errors=True)
    c = apply_overrides(cfg, {"train.steps": 2 * steps, "train.log_every": steps, "train.precision": precision,
                              "train.val_every": 10**9, "train.ckpt_every": 10**9, "train.sample_every": 10**9,
                              "train.final_figures": False, "train.device": str(device)})
    train(c, run, progress=False)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if "img_per_s" in r][-1]["img_per_s"]


def reference_train_ips(trainer: ReferenceTrainer, steps: int, batch: int, device: torch.device) -> float:
    trainer.run(steps)  # warm-up
    sync(device)
    seconds = trainer.run(steps)  # ends with loss.item(): synchronised
    return steps * batch / seconds


def ours_sample_ips(net, cfg, device, precision: str, n: int, nfe: int) -> float:
    pipe = Pipeline(Denoiser(net, cfg.diffusion).eval(), cfg, device=device)
    labels = torch.arange(n) % cfg.model.num_classes
    # generate() applies the precision itself (autocast around the network only); "auto" would pick bf16 on
    # hardware with native bf16 and make the fp32 row a bf16 one.
    kw = dict(labels=labels, sampler="ddim", guidance=0.0, batch_size=n, precision=precision, clip_x0=True)
    pipe.generate(n, steps=2, **kw)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    pipe.generate(n, steps=nfe, **kw)
    sync(device)
    return n / (time.perf_counter() - t0)


def reference_sample_ips(model, cfg, device, precision: str, n: int, nfe: int) -> float:
    labels = torch.arange(n) % cfg.model.num_classes
    shape = (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    ddim_sample(model, n, labels, cfg.model.num_classes, shape, steps=2, device=device, precision=precision)
    sync(device)
    t0 = time.perf_counter()
    ddim_sample(model, n, labels, cfg.model.num_classes, shape, steps=nfe, device=device, precision=precision)
    sync(device)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=3, help="alternating ours/reference rounds (medians reported)")
    ap.add_argument("--steps", type=int, default=8, help="timed training steps per round (after as many warm-up)")
    ap.add_argument("--sample-n", type=int, default=64, help="images per timed sampling run")
    ap.add_argument("--nfe", type=int, default=20)
    ap.add_argument("--precisions", default=None,
                    help="comma-separated (default: fp32, plus bf16 where it is native; emulated bf16 is slow)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--name", default="throughput", help="the result file's name (without .json)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    default_precision = "bf16" if use_bf16(device, "auto") else "fp32"
    precisions = [p for p in (args.precisions or ",".join(dict.fromkeys(["fp32", default_precision]))).split(",")
                  if p]

    cfg = preset("digits")
    data = load_dataset(cfg.data, "train")
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = data.channels, data.image_size, data.num_classes
    batch = cfg.train.batch_size
    ours_params = count_parameters(build_model(cfg.model))
    ref_params = count_parameters(reference_unet(cfg.model, data.image_size, data.channels, data.num_classes))

    print(f"peak: timing dense matmuls on {device} ...", file=sys.stderr)
    best_matmul = {p: matmul_peak(device, torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    peaks = {p: best_matmul[p]["flops"] for p in precisions}
    flops_ours = ours_train_flops(cfg, data, device, batch)
    flops_ref = reference_train_flops(cfg, data, device, batch)

    train_ips = {p: {"ours": [], "reference": []} for p in precisions}
    sample_ips = {p: {"ours": [], "reference": []} for p in precisions}
    trainers = {p: ReferenceTrainer(data, cfg, device, precision=p) for p in precisions}
    torch.manual_seed(0)
    sample_net = build_model(cfg.model).to(device).eval()
    sample_ref = reference_unet(cfg.model, data.image_size, data.channels, data.num_classes).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for p in precisions:
                print(f"round {r + 1}/{args.rounds} {p}: training ...", file=sys.stderr)
                train_ips[p]["ours"].append(ours_train_ips(cfg, device, p, args.steps, Path(tmp)))
                train_ips[p]["reference"].append(reference_train_ips(trainers[p], args.steps, batch, device))
                print(f"round {r + 1}/{args.rounds} {p}: sampling ...", file=sys.stderr)
                sample_ips[p]["ours"].append(ours_sample_ips(sample_net, cfg, device, p, args.sample_n, args.nfe))
                sample_ips[p]["reference"].append(
                    reference_sample_ips(sample_ref, cfg, device, p, args.sample_n, args.nfe))

    med = statistics.median
    result = {
        "machine": record(device=str(device),  # with the load average: others sharing the cores
                          gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None),
        "setup": {"preset": "digits", "image": [data.channels, data.image_size, data.image_size], "batch": batch,
                  "params_ours": ours_params, "params_reference": ref_params,
                  "params_ratio": ref_params / ours_params, "rounds": args.rounds, "timed_steps": args.steps,
                  "default_precision_ours": default_precision, "default_precision_reference": "fp32"},
        "matmul_peak_flops": peaks,  # the best matmul rate measured in this run (see matmul_peak), not a ceiling
        "matmul_best": best_matmul,
        "train_flops_per_image": {"ours": flops_ours / batch, "reference": flops_ref / batch},
        "train": {}, "sample": {},
    }
    for p in precisions:
        ours, ref = med(train_ips[p]["ours"]), med(train_ips[p]["reference"])
        achieved = ours * flops_ours / batch
        result["train"][p] = {
            "ours_img_per_s": ours, "reference_img_per_s": ref, "ratio": ours / ref,
            # the networks differ a little in size: the ratio of FLOP/s is the one per unit of work
            "ratio_per_flop": (ours * flops_ours) / (ref * flops_ref),
            "ours_flops_per_s": achieved, "ours_fraction_of_peak": achieved / peaks[p],
            "reference_flops_per_s": ref * flops_ref / batch,
            "reference_fraction_of_peak": ref * flops_ref / batch / peaks[p],
            "rounds_ours": train_ips[p]["ours"], "rounds_reference": train_ips[p]["reference"]}
        s_ours, s_ref = med(sample_ips[p]["ours"]), med(sample_ips[p]["reference"])
        result["sample"][p] = {"nfe": args.nfe, "ours_img_per_s": s_ours, "reference_img_per_s": s_ref,
                               "ratio": s_ours / s_ref, "rounds_ours": sample_ips[p]["ours"],
                               "rounds_reference": sample_ips[p]["reference"]}
    if default_precision in result["train"]:
        t, smp = result["train"][default_precision], result["sample"][default_precision]
        result["headline"] = {"precision": default_precision, "train_ratio_same_precision": t["ratio"],
                              "sample_ratio_same_precision": smp["ratio"],
                              "ours_fraction_of_peak": t["ours_fraction_of_peak"],
                              "reference_fraction_of_peak": t["reference_fraction_of_peak"],
                              "train_ratio_each_at_its_default": t["ours_img_per_s"]
                              / result["train"].get("fp32", t)["reference_img_per_s"]}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    (out / f"{args.name}.json").write_text(text + "\n")
    print(text)
    for p in precisions:
        t, smp = result["train"][p], result["sample"][p]
        print(f"{p}: train {t['ours_img_per_s']:.0f} vs {t['reference_img_per_s']:.0f} img/s ({t['ratio']:.2f}x), "
              f"{t['ours_fraction_of_peak']:.0%} vs {t['reference_fraction_of_peak']:.0%} of the best matmul rate measured; sample "
              f"at {args.nfe} NFE {smp['ratio']:.2f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
