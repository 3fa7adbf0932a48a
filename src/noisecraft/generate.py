"""Sampling as a library: load a checkpoint's EMA denoiser and draw images with any sampler and guidance."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from noisecraft.checkpoint import load_checkpoint
from noisecraft.conditioning import class_cond, null_cond
from noisecraft.config import Config
from noisecraft.data import to_uint8
from noisecraft.diffusion import Denoiser
from noisecraft.errors import UserError
from noisecraft.models import build_model
from noisecraft.precision import autocast_ctx, default_sampling_batch, sampling_channels_last, use_bf16
from noisecraft.samplers import PerImageNoise, cfg_denoiser, get_sampler, get_sigmas


@dataclass
class LoadedModel:
    denoiser: Denoiser  # wraps the EMA weights, in eval mode
    config: Config
    meta: dict

    @property
    def num_classes(self) -> int:
        return self.config.model.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.meta.get("class_names", [])


def load_model(path: str | Path, device: torch.device | str = "cpu", prefer: str = "best") -> LoadedModel:
    ckpt = load_checkpoint(path, prefer)
    net = ckpt.load_module("unet_ema", build_model(ckpt.config.model))
    denoiser = Denoiser(net, ckpt.config.diffusion).to(device).eval()
    return LoadedModel(denoiser, ckpt.config, ckpt.meta)


def _with_precision(denoiser: Denoiser, device, precision: str):
    """The denoiser as the hardware runs it fastest: bf16 autocast per `precision`, and NHWC activations where
    measured faster (see `noisecraft.precision`). Only the network's input changes layout; weights stay as they are."""
    bf16 = use_bf16(device, precision)
    fmt = torch.channels_last if sampling_channels_last(device, bf16) else torch.contiguous_format

    def d(x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        x = x.contiguous(memory_format=fmt)
        with autocast_ctx(device, precision):
            return denoiser(x, sigma, cond).float().contiguous()

    return d


@torch.no_grad()
def generate(denoiser: Denoiser, *, n: int, labels: torch.Tensor | None, num_classes: int, shape: tuple[int, ...],
             sampler: str = "ddim", steps: int = 50, guidance: float = 0.0,
             guidance_interval: tuple[float, ...] = (), seed: int = 0, batch_size: int | None = None,
             clip_x0: bool = True, device: torch.device | str = "cpu", precision: str = "auto", progress: bool = False,
             callback=None) -> torch.Tensor:
    """Draw n images as uint8 (n, C, H, W). Image i uses seed + i for all its noise, so it does not depend on
    batch_size or n. `labels` (n,) picks classes; `guidance` is the classifier-free guidance weight w, applied
    where sigma_lo < sigma <= sigma_hi when `guidance_interval` = (sigma_lo, sigma_hi) is given.
    `precision` applies to the network only (see `noisecraft.precision`); the sampler's state stays fp32.
    `batch_size` None picks the device's fastest (`noisecraft.precision.default_sampling_batch`)."""
    fn = get_sampler(sampler)
    guided = labels is not None and num_classes > 0 and guidance != 0
    batch_size = batch_size or default_sampling_batch(device, guided)
    sigmas = get_sigmas(denoiser, sampler, steps).to(device)
    d = _with_precision(denoiser, device, precision)
    if guided:
        d = cfg_denoiser(d, guidance, null_cond(num_classes, device), tuple(guidance_interval) or None)
    if clip_x0:
        base = d
        d = lambda x, sigma, cond=None: base(x, sigma, cond).clamp_(-1, 1)  # noqa: E731
    out = []
    bar = tqdm(total=n, desc=f"sampling ({sampler}, {steps} steps)", unit="img", disable=not progress, leave=False)
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        noise = PerImageNoise([seed + i for i in idx], device)
        x = noise(torch.empty(len(idx), *shape, device=device)) * denoiser.prior_std(float(sigmas[0]))
        cond = class_cond(labels[idx].to(device)) if labels is not None else None
        x = fn(d, x, sigmas, cond, noise=noise, callback=callback)
        out.append(to_uint8(x).cpu())
        bar.update(len(idx))
    bar.close()
    return torch.cat(out)


def save_images(images: torch.Tensor, out_dir: str | Path, nrow: int | None = None) -> Path:
    """One PNG per image plus grid.png; returns the output directory."""
    from noisecraft.viz import save_grid, to_pil

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {out}: {e.strerror}") from None
    for i, img in enumerate(images):
        to_pil(img).save(out / f"{i:05d}.png")
    save_grid(images, out / "grid.png", nrow=nrow)
    return out
