"""What every sampler shares: the call signature's types, the step record, noise sources and sigma grids.

Every sampler is a generator with one signature (the caller drives it, as in smalldiffusion)
    sample_x(denoiser, x, sigmas, cond=None, *, noise=None) -> Iterator[SamplerStep]
where `denoiser(x, sigma, cond)` returns x0_pred (`cond` a conditioning dict, or `StepConditions` when the
condition changes during sampling, which the denoiser's wrappers resolve by the noise level: the samplers only pass
it on), `x` is the starting noise already scaled to sigmas[0],
`sigmas` is a decreasing grid ending in 0, and `noise(x)` returns fresh standard noise shaped like x
(for ancestral steps). It yields one `SamplerStep` per step; the last one's x is the sample (`drain`).
Nothing runs until the caller asks for the next step, so closing the generator stops the network calls.
Samplers hold no state between calls.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from noisecraft.diffusion.denoiser import Denoise  # noqa: F401  (re-exported: the samplers name it from here)
from noisecraft.diffusion.schedules import flow_sigma, flow_t

NoiseFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SamplerStep:
    """One finished step i of a sampler: x has moved from sigmas[i] to sigmas[i + 1]."""

    i: int  # 0-based step index
    sigma: torch.Tensor  # sigmas[i], the level the x0 estimate was made at
    x: torch.Tensor  # (B, C, H, W) after the step, at noise level sigmas[i + 1]
    x0: torch.Tensor  # (B, C, H, W) the denoiser's estimate of the clean batch at sigma


@dataclass
class StepConditions:
    """A conditioning that changes during sampling (prompt editing, alternation): image b's conditioning at step
    i, the step that starts at noise level `levels[i]`, is row `rows[i, b]` of `table`. A call at a level of the
    grid takes the step starting there (Heun's second call of step i: step i + 1's), one between two levels the
    step starting at the next level down."""

    table: dict[str, torch.Tensor]  # the distinct conditionings, (U, ...) each
    rows: torch.Tensor  # (S, B) long: which row of the table each image takes at each step (B = 1: all images)
    levels: torch.Tensor  # (S,) the grid's levels where the steps start, decreasing

    def at(self, sigma: torch.Tensor | float) -> dict[str, torch.Tensor]:
        """The conditioning dict, (B, ...) tensors, for a call at noise level `sigma` (a scalar or (B,))."""
        sigma = torch.as_tensor(sigma, device=self.levels.device).reshape(-1, 1)  # (1 or B, 1)
        step = (self.levels[None] > sigma * (1 + 1e-4)).sum(1).clamp(max=len(self.levels) - 1)  # (1 or B,)
        if step.numel() == 1:
            rows = self.rows[step[0]]  # (B,)
        else:
            rows = self.rows[step, torch.arange(len(step), device=step.device) % self.rows.shape[1]]
        return {k: v[rows] for k, v in self.table.items()}


def at_level(cond: dict | StepConditions | None, sigma) -> dict | None:
    """The plain conditioning dict a network takes at noise level `sigma`: a dict (or None) as it is."""
    return cond.at(sigma) if isinstance(cond, StepConditions) else cond


def drain(steps: Iterator[SamplerStep]) -> torch.Tensor:
    """Run a sampler to its end and return the final x."""
    x = None
    for step in steps:
        x = step.x
    if x is None:
        raise ValueError("the sampler made no step (sigmas needs at least 2 values)")
    return x


def default_noise(x: torch.Tensor) -> torch.Tensor:
    return torch.randn_like(x)


class PerImageNoise:
    """Noise from one generator per image, seeded `seed + index`: image i is the same whatever the batch
    size or the number of images drawn (used both for the starting noise and ancestral steps)."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu"):
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        self.device = device

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        shape = like.shape[1:]
        z = torch.stack([torch.randn(shape, generator=g) for g in self.generators])
        return z.to(device=like.device, dtype=like.dtype)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Noise levels of Karras et al. 2022 (eq. 5): n levels from sigma_max to sigma_min, then 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def flow_sigmas(n: int, sigma_max: float) -> torch.Tensor:
    """Rectified flow's grid: t in n equal steps from t_max = sigma_max / (1 + sigma_max) down, as sigmas
    t / (1 - t), then 0."""
    t_max = flow_t(sigma_max)
    t = torch.linspace(t_max, 0, n + 1, dtype=torch.float64)[:-1]
    return torch.cat([flow_sigma(t), torch.zeros(1, dtype=torch.float64)]).float()


def discrete_timesteps(n: int, timesteps: int) -> torch.Tensor:
    """n timesteps of a T-step schedule, "trailing" spacing (Lin et al. 2024, Table 2): always starts at T-1,
    so few-step samplers begin from pure noise. Returned in decreasing order."""
    if not 1 <= n <= timesteps:
        raise ValueError(f"steps must be in 1..{timesteps}, got {n}")
    ts = torch.round(torch.arange(timesteps, 0, -timesteps / n, dtype=torch.float64)).long() - 1
    return ts


def timestep_sigmas(schedule, n: int) -> torch.Tensor:
    """Sigma grid for DDPM/DDIM on a discrete schedule: the table at the chosen timesteps, then 0."""
    sig = schedule.sigmas[discrete_timesteps(n, schedule.timesteps)]
    return torch.cat([sig, sig.new_zeros(1)]).float()
