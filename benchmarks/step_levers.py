"""Where a training step of the digits preset spends its time, and what the kernel-side levers give.

    python benchmarks/step_levers.py [--avx2] [--steps 30] [--out benchmarks/results]

One training step (the preset's network, denoiser loss, backward, AdamW) at the preset's batch size, timed in
steady state for each lever: eager NCHW (what training runs), eager channels-last (NHWC activations and
weights), and torch.compile (inductor; its compile seconds reported apart). Then a profile of the eager step,
split into convolutions forward, convolutions backward, matmuls and attention, and the rest (normalisation,
activations, adds, optimizer): the share that fusing elementwise chains could ever save. `--avx2` runs it as on
a CPU without AVX-512, in fp32 (the script re-executes itself with the kernel cap set before torch loads).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from common.machine import AVX2_ENV, capped_env, record
from common.results import write_result

# The network of the digits preset before issue 14 (a 28x28 U-Net, no patches), for the "previous_28x28" lever.
PREVIOUS_28X28 = {"patch_size": 1, "channel_mult": (1, 1, 2)}


def make_step(channels_last: bool, compiled: bool, precision: str, model: dict | None = None):
    import torch

    from noisecraft.config import preset
    from noisecraft.diffusion import Denoiser, diffusion_loss
    from noisecraft.models import build_model
    from noisecraft.precision import autocast_ctx

    cfg = preset("digits")
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 1, 28, 10
    for k, v in (model or {}).items():
        setattr(cfg.model, k, v)
    torch.manual_seed(0)
    net = build_model(cfg.model)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    den = Denoiser(torch.compile(net) if compiled else net, cfg.diffusion)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    b = cfg.train.batch_size
    x0 = (torch.rand(b, 1, 28, 28) * 2 - 1).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (b,))

    def step():
        with autocast_ctx(torch.device("cpu"), precision):
            loss = diffusion_loss(den, x0, {"class_labels": y}).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step.params = sum(p.numel() for p in net.parameters())
    return step, b


def time_lever(name: str, steps: int, precision: str) -> dict:
    step, b = make_step(channels_last=name == "channels_last", compiled=name == "compile", precision=precision,
                        model=PREVIOUS_28X28 if name == "previous_28x28" else None)
    t0 = time.perf_counter()
    for _ in range(3):  # warm-up; for compile, the compilation
        step()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - t0
    return {"lever": name, "img_per_s": round(steps * b / seconds, 1), "warmup_s": round(warm, 1),
            "params": step.params, "timed_steps": steps}


def profile_shares(precision: str, steps: int = 10) -> dict:
    from torch.profiler import profile

    step, _ = make_step(False, False, precision)
    for _ in range(3):
        step()
    with profile() as prof:
        for _ in range(steps):
            step()
    groups = {"conv_forward": 0.0, "conv_backward": 0.0, "matmul_attention": 0.0, "other": 0.0}
    for e in prof.key_averages():
        n, t = e.key, e.self_cpu_time_total
        if "convolution_backward" in n:
            groups["conv_backward"] += t
        elif "convolution" in n:
            groups["conv_forward"] += t
        elif any(k in n for k in ("aten::mm", "aten::addmm", "aten::bmm", "scaled_dot_product")):
            groups["matmul_attention"] += t
        else:
            groups["other"] += t
    total = sum(groups.values())
    return {k: round(v / total, 3) for k, v in groups.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--avx2", action="store_true", help="AVX2 kernels only, fp32 (as on a CPU without AVX-512)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per lever")
    ap.add_argument("--levers", default="eager,channels_last,compile",
                    help="comma-separated: eager (the first is the base of the ratios), channels_last, compile, "
                         "previous_28x28 (the digits preset's network before issue 14: 28x28, no patches)")
    ap.add_argument("--no-profile", action="store_true", help="skip the profile of the eager step")
    ap.add_argument("--name", default=None, help="the result file's name (default step_levers_avx2 / _native)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if args.avx2 and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], capped_env())


    from noisecraft.precision import use_bf16

    precision = "fp32" if args.avx2 or not use_bf16("cpu", "auto") else "bf16"
    rows = [time_lever(name, args.steps, precision) for name in args.levers.split(",")]
    base = rows[0]["img_per_s"]
    for r in rows:
        r["vs_eager"] = round(r["img_per_s"] / base, 3)
        print(f"{r['lever']:14s} {r['img_per_s']:7.1f} img/s  x{r['vs_eager']:.2f}  (warm-up {r['warmup_s']} s)",
              file=sys.stderr)
    result = {"machine": record(precision), "avx2_emulated": args.avx2, "batch": 64, "levers": rows,
              "eager_time_shares": None if args.no_profile else profile_shares(precision)}
    write_result(result, args.out, args.name or ("step_levers_avx2" if args.avx2 else "step_levers_native"))


if __name__ == "__main__":
    main()
