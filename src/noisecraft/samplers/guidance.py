"""Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", eq. 6)."""
from __future__ import annotations

import torch

from noisecraft.samplers.common import Denoise


def cfg_denoiser(denoiser: Denoise, guidance: float, null_cond: dict) -> Denoise:
    """D_w(x) = (1 + w) D(x | c) - w D(x | null), with the conditional and null halves in one batched call.

    Guidance on x0 equals guidance on eps: both are affine in D at a fixed (x, sigma). w = 0 returns the
    plain conditional denoiser (one half the cost).
    """
    if guidance == 0:
        return denoiser

    def guided(x: torch.Tensor, sigma, cond: dict | None = None) -> torch.Tensor:
        if cond is None:
            return denoiser(x, sigma, cond)
        sigma = sigma if torch.is_tensor(sigma) and sigma.dim() else torch.full((x.shape[0],), float(sigma), device=x.device)
        both = {k: torch.cat([v, null_cond[k].expand_as(v)]) for k, v in cond.items()}
        x0_cond, x0_null = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        return x0_cond + guidance * (x0_cond - x0_null)

    return guided
