"""DDIM, deterministic (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 with eta = 0)."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from noisecraft.diffusion.schedules import ddim_step
from noisecraft.samplers.common import Denoise, NoiseFn, SamplerStep


@torch.no_grad()
def sample_ddim(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
                noise: NoiseFn | None = None) -> Iterator[SamplerStep]:
    """x_s = x0_pred + sigma_s * eps_pred, eps_pred = (x_t - x0_pred) / sigma_t.

    In the sigma view DDIM is an Euler step of the probability-flow ODE dx/dsigma = (x - D(x)) / sigma
    (Karras et al. 2022, Sec. 4), so it runs on any grid with any number of steps. `noise` is unused.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        x = ddim_step(x, x0, sigma, sigma_next)
        yield SamplerStep(i, sigma, x, x0)
