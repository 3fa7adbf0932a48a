"""DDPM ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2)."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from noisecraft.samplers.common import Denoise, NoiseFn, SamplerStep, default_noise


@torch.no_grad()
def sample_ddpm(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
                noise: NoiseFn | None = None) -> Iterator[SamplerStep]:
    """Draw x_s ~ q(x_s | x_t, x0_pred) for each step t -> s of the sigma grid.

    The posterior is taken in the VP view (x_vp = x / sqrt(1 + sigma^2)) with alpha_t = alpha_bar_t /
    alpha_bar_s, so on the full 1000-step grid it is exactly Algorithm 2 with the "fixed small" variance
    beta_tilde, and on a shorter grid it is the same posterior over the skipped steps (DDIM with eta = 1).
    """
    noise = noise or default_noise
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i].double(), sigmas[i + 1].double()  # float64 coefficients
        x0 = denoiser(x, sigma.float(), cond)
        ab_t, ab_s = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        alpha_t = ab_t / ab_s
        beta_t = 1 - alpha_t
        x_t = x * ab_t.sqrt()  # VP sample
        mean = (ab_s.sqrt() * beta_t / (1 - ab_t)) * x0 + (alpha_t.sqrt() * (1 - ab_s) / (1 - ab_t)) * x_t
        if sigma_next > 0:
            var = (1 - ab_s) / (1 - ab_t) * beta_t
            x_s = mean + var.clamp_min(1e-20).sqrt() * noise(x)
        else:
            x_s = mean
        x = x_s / ab_s.sqrt()  # back to x = x0 + sigma * eps
        yield SamplerStep(i, sigmas[i], x, x0)
