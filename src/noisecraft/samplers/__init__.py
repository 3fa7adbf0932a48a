"""Samplers: plain functions with one signature (see `common`), looked up by their CLI name."""
from __future__ import annotations

import torch

from noisecraft.samplers.common import PerImageNoise, discrete_timesteps, karras_sigmas, timestep_sigmas
from noisecraft.samplers.ddim import sample_ddim
from noisecraft.samplers.ddpm import sample_ddpm
from noisecraft.samplers.dpmpp_2m import sample_dpmpp_2m
from noisecraft.samplers.guidance import cfg_denoiser, describe_interval
from noisecraft.samplers.karras import sample_euler, sample_heun

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "euler": sample_euler,
    "heun": sample_heun,
}


KARRAS_SIGMA_MAX = 80.0  # Karras et al. 2022, Table 1


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise KeyError(name)
    return SAMPLERS[name]


def network_calls(sampler: str, steps: int) -> int:
    """Network evaluations (NFE) per image for `steps` steps ending at sigma = 0; Heun's last step is Euler."""
    return 2 * steps - 1 if sampler == "heun" else steps


def get_sigmas(denoiser, sampler: str, steps: int) -> torch.Tensor:
    """The sigma grid (steps + 1 values ending in 0) that `sampler` walks for this denoiser.

    DDPM, DDIM and DPM-Solver++ visit the training timesteps of a discrete schedule ("trailing" spacing, as
    diffusers' schedulers with timestep_spacing="trailing"): the network sees the integer noise labels it was
    trained on. Euler and Heun, and every sampler on a continuous (EDM) model, use the Karras et al. 2022 grid
    with rho = 7. On a discrete schedule that grid starts at sigma = 80 (EDM's choice for every model, Table 1)
    rather than at the table's last sigma (~157 linear, ~2e4 cosine), where steps would be wasted on levels at
    which x is pure noise to many digits.
    """
    if denoiser.schedule is None:
        return karras_sigmas(steps, denoiser.sigma_min, denoiser.sigma_max)
    if sampler in ("ddpm", "ddim", "dpmpp-2m"):
        return timestep_sigmas(denoiser.schedule, min(steps, denoiser.schedule.timesteps))
    return karras_sigmas(steps, denoiser.sigma_min, min(denoiser.sigma_max, KARRAS_SIGMA_MAX))


__all__ = ["SAMPLERS", "PerImageNoise", "cfg_denoiser", "describe_interval", "discrete_timesteps", "get_sampler",
           "get_sigmas", "karras_sigmas", "network_calls", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_euler",
           "sample_heun", "timestep_sigmas"]
