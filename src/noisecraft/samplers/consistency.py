"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1)."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from noisecraft.samplers.common import Denoise, NoiseFn, SamplerStep, default_noise


@torch.no_grad()
def sample_consistency(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
                       noise: NoiseFn | None = None) -> Iterator[SamplerStep]:
    """x0 = f(x, sigma_i), then x = x0 + sigma_{i+1} * z with fresh noise z: one network call a step.

    `denoiser` is a consistency model f, which maps a point of any noise level straight to the end of its ODE
    trajectory, so one step already lands on an image; each further step noises that image back to a lower level
    and maps it again, correcting what the jump got wrong. On a diffusion model (not distilled) this is a very
    coarse sampler.
    """
    noise = noise or default_noise
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        sigma_next = sigmas[i + 1]
        x = x0 + sigma_next * noise(x0) if sigma_next > 0 else x0
        yield SamplerStep(i, sigmas[i], x, x0)
