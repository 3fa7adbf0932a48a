"""Discrete noise schedules and the forward process, in both the VP (alpha_bar) and the sigma view.

A VP schedule gives alpha_bar_t for t = 0..T-1, with x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.
Dividing by sqrt(alpha_bar_t) gives the variance-exploding form every sampler here works in:
    x = x0 + sigma * eps,   sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)      (Karras et al. 2022, eq. 1)
"""
from __future__ import annotations

import math

import torch


def flow_t(sigma):
    """Rectified flow's time of noise level sigma: x / (1 + sigma) = (1 - t) x0 + t eps with t = sigma / (1 + sigma)."""
    return sigma / (1 + sigma)


def flow_sigma(t):
    """The noise level of rectified flow's time t (the inverse of `flow_t`)."""
    return t / (1 - t)


def ddim_step(x: torch.Tensor, x0: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One deterministic DDIM step (Song et al. 2021) in the sigma view: x keeps its noise direction (x - x0) / sigma
    at the level sigma_next (an Euler step of the probability-flow ODE)."""
    return x0 + (sigma_next / sigma) * (x - x0)


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear beta schedule of Ho et al. 2020 (DDPM), scaled as in the paper for T = 1000."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021 (Improved DDPM, eq. 17), betas clipped at 0.999."""
    def f(t):
        return math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def make_betas(schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    if schedule == "linear":
        return linear_betas(timesteps, beta_start, beta_end)
    if schedule == "cosine":
        return cosine_betas(timesteps)
    raise ValueError(f"unknown schedule {schedule}")


def alpha_bar_from_betas(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1.0 - betas, dim=0)


def sigma_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def alpha_bar_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + sigma**2)


def q_sample(x0: torch.Tensor, alpha_bar_t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x0) in the VP form; alpha_bar_t has shape (B,)."""
    a = alpha_bar_t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


class DiscreteSchedule:
    """The sigma table of a T-step VP schedule, with sigma <-> continuous timestep conversion.

    Networks trained on discrete timesteps see `t` as their noise label; samplers that visit sigmas off the
    table (Karras grids, DPM-Solver) use the fractional t found by interpolating log-sigma, as k-diffusion does.
    """

    def __init__(self, schedule: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02):
        self.timesteps = timesteps
        self.betas = make_betas(schedule, timesteps, beta_start, beta_end)  # (T,) float64
        self.alpha_bar = alpha_bar_from_betas(self.betas)
        self.sigmas = sigma_from_alpha_bar(self.alpha_bar)  # increasing in t
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose sigma is `sigma` (piecewise-linear in log sigma)."""
        log_sigma = sigma.double().clamp_min(1e-12).log()
        log_sigmas = self.log_sigmas.to(sigma.device)
        low = torch.searchsorted(log_sigmas, log_sigma, right=True).clamp(1, self.timesteps - 1) - 1
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return (low + w).to(torch.float32)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double().clamp(0, self.timesteps - 1)
        low = t.floor().long()
        high = (low + 1).clamp_max(self.timesteps - 1)
        w = t - low
        log_sigmas = self.log_sigmas.to(t.device)
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp().float()
