"""Samplers: generators with one signature (see `common`), looked up by name in `noisecraft.registry.SAMPLERS`,
whose facts (sigma grid, network calls per step) the helpers below read."""
from __future__ import annotations

import torch

from noisecraft.registry import SAMPLERS
from noisecraft.samplers.common import (PerImageNoise, SamplerStep, discrete_timesteps, drain, flow_sigmas,
                                        karras_sigmas, timestep_sigmas)
from noisecraft.samplers.consistency import sample_consistency
from noisecraft.samplers.ddim import sample_ddim
from noisecraft.samplers.ddpm import sample_ddpm
from noisecraft.samplers.dpmpp_2m import sample_dpmpp_2m
from noisecraft.samplers.guidance import cfg_denoiser, describe_interval
from noisecraft.samplers.karras import sample_euler, sample_heun

KARRAS_SIGMA_MAX = 80.0  # Karras et al. 2022, Table 1
# A consistency draw's intermediate levels (after the first call, from the top): a Karras ramp between these, so
# 2 steps renoise to CONSISTENCY_SIGMAS[1] and more steps add lower levels (measured: benchmarks/fewstep.py).
CONSISTENCY_SIGMAS = (0.3, 2.0)  # (lowest, highest)


def get_sampler(name: str):
    """The sampler generator function registered as `name` (unknown names: a UserError listing the valid ones)."""
    return SAMPLERS.load(name)


def network_calls(sampler: str, steps: int) -> int:
    """Network evaluations (NFE) per image for `steps` steps ending at sigma = 0 (Heun: 2N - 1)."""
    e = SAMPLERS.get(sampler)
    return e.calls_per_step * (steps - 1) + e.final_step_calls


def get_sigmas(denoiser, sampler: str, steps: int) -> torch.Tensor:
    """The sigma grid (steps + 1 values ending in 0) that `sampler` walks for this denoiser.

    The consistency sampler's grid ("consistency") is the top level, then `steps - 1` levels from
    CONSISTENCY_SIGMAS: a consistency model maps any level to the image, so its levels are chosen, not walked.
    A rectified-flow model walks t = sigma / (1 + sigma) in equal steps from the top level to 0 (the flow's own
    grid: diffusers' FlowMatchEulerDiscreteScheduler without shift), whatever the sampler.
    Samplers whose grid is "timesteps" (DDPM, DDIM, DPM-Solver++) visit the training timesteps of a discrete
    schedule ("trailing" spacing, as diffusers' schedulers with timestep_spacing="trailing"): the network sees the
    integer noise labels it was trained on. The "karras" ones (Euler, Heun), and every sampler on a continuous
    (EDM) model, use the Karras et al. 2022 grid with rho = 7. On a discrete schedule that grid starts at
    sigma = 80 (EDM's choice for every model, Table 1) rather than at the table's last sigma (~157 linear, ~2e4
    cosine), where steps would be wasted on levels at which x is pure noise to many digits.
    """
    if SAMPLERS.get(sampler).grid == "consistency":
        top = denoiser.sigma_max if denoiser.schedule is None else float(timestep_sigmas(denoiser.schedule, 1)[0])
        middle = karras_sigmas(steps - 1, *CONSISTENCY_SIGMAS)[:-1] if steps > 1 else torch.zeros(0)
        return torch.cat([torch.tensor([top]), middle, torch.zeros(1)]).float()
    if denoiser.path == "flow":
        return flow_sigmas(steps, denoiser.sigma_max)
    if denoiser.schedule is None:
        return karras_sigmas(steps, denoiser.sigma_min, denoiser.sigma_max)
    if SAMPLERS.get(sampler).grid == "timesteps":
        return timestep_sigmas(denoiser.schedule, min(steps, denoiser.schedule.timesteps))
    return karras_sigmas(steps, denoiser.sigma_min, min(denoiser.sigma_max, KARRAS_SIGMA_MAX))


__all__ = ["CONSISTENCY_SIGMAS", "SAMPLERS", "PerImageNoise", "SamplerStep", "cfg_denoiser", "describe_interval",
           "discrete_timesteps", "drain", "flow_sigmas", "get_sampler", "get_sigmas", "karras_sigmas", "network_calls",
           "sample_consistency", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_euler", "sample_heun",
           "timestep_sigmas"]
