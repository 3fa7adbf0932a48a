"""Samplers: plain functions with one signature (see `common`), looked up by their CLI name."""
from __future__ import annotations

import torch

from noisecraft.samplers.common import PerImageNoise, discrete_timesteps, karras_sigmas, timestep_sigmas
from noisecraft.samplers.ddim import sample_ddim
from noisecraft.samplers.ddpm import sample_ddpm
from noisecraft.samplers.guidance import cfg_denoiser

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise KeyError(name)
    return SAMPLERS[name]


def get_sigmas(denoiser, sampler: str, steps: int) -> torch.Tensor:
    """The sigma grid (steps + 1 values ending in 0) that `sampler` walks for this denoiser.

    DDPM and DDIM visit the training timesteps of a discrete schedule; the ODE solvers, and every sampler on a
    continuous (EDM) model, use the Karras et al. 2022 grid with rho = 7.
    """
    if sampler in ("ddpm", "ddim") and denoiser.schedule is not None:
        return timestep_sigmas(denoiser.schedule, min(steps, denoiser.schedule.timesteps))
    return karras_sigmas(steps, denoiser.sigma_min, denoiser.sigma_max)


__all__ = ["SAMPLERS", "PerImageNoise", "cfg_denoiser", "discrete_timesteps", "get_sampler", "get_sigmas",
           "karras_sigmas", "sample_ddim", "sample_ddpm", "timestep_sigmas"]
