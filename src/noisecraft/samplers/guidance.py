"""Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", eq. 6), optionally applied
only in a limited interval of noise levels (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval
Improves Sample and Distribution Quality in Diffusion Models")."""
from __future__ import annotations

import torch

from noisecraft.samplers.common import Denoise, StepConditions, at_level


def describe_interval(interval: tuple[float, ...] | list[float] | None) -> str:
    """' where LO < sigma <= HI' for a guidance interval, '' for guidance at every step (for reports and logs)."""
    return f" where {interval[0]:g} < sigma <= {interval[1]:g}" if interval else ""


def cfg_denoiser(denoiser: Denoise, guidance: float | torch.Tensor, null_cond: dict | StepConditions,
                 interval: tuple[float, float] | tuple[torch.Tensor, torch.Tensor] | None = None) -> Denoise:
    """D_w(x) = (1 + w) D(x | c) - w D(x | null), with the conditional and null halves in one batched call.

    Guidance on x0 equals guidance on eps: both are affine in D at a fixed (x, sigma). w = 0 returns the
    plain conditional denoiser (one half the cost). With `interval` = (sigma_lo, sigma_hi), guidance applies only
    where sigma_lo < sigma <= sigma_hi; elsewhere the step is the plain conditional call, so each step outside
    the interval costs half as much. `cond` and `null_cond` may change during sampling (`StepConditions`: prompt
    editing in a prompt or a negative prompt); each call takes the ones of its noise level. `guidance` and the
    interval's ends may be tensors (B,): one per image of the batch (a comparison grid's cells drawn together).
    """
    if not torch.is_tensor(guidance) and guidance == 0:
        return denoiser
    lo, hi = interval if interval else (float("-inf"), float("inf"))

    def guided(x: torch.Tensor, sigma, cond: dict | None = None) -> torch.Tensor:
        if cond is None:
            return denoiser(x, sigma, cond)
        sigma = sigma if torch.is_tensor(sigma) and sigma.dim() else torch.full((x.shape[0],), float(sigma), device=x.device)
        inside = (sigma > lo) & (sigma <= hi)
        cond = at_level(cond, sigma)
        if not bool(inside.any()):
            return denoiser(x, sigma, cond)
        null = at_level(null_cond, sigma)
        both = {k: torch.cat([v, null[k].expand_as(v)]) for k, v in cond.items()}
        x0_cond, x0_null = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        w = torch.where(inside, guidance, 0.0).to(x0_cond.dtype).view(-1, *([1] * (x.dim() - 1)))
        return x0_cond + w * (x0_cond - x0_null)

    return guided
