"""The denoiser contract: D(x; sigma, cond) -> estimate of the clean x0.

Every network parameterisation is one preconditioning (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Table 1 / eq. 7):

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))

with x = x0 + sigma * eps. Noise (eps), x0 and v prediction on a discrete VP schedule, EDM's own preconditioning and
rectified flow differ only in the four coefficients below, so samplers, guidance and the trainer see one function
and any trained model works with any sampler.

Rectified flow (Liu et al. 2023; Lipman et al. 2023) interpolates x_t = (1 - t) x0 + t eps and learns the velocity
v = eps - x0. Its point is the same as x = x0 + sigma eps divided by 1 + sigma, with t = sigma / (1 + sigma), so a
flow network is one more preconditioning: c_in = 1 - t, c_skip = 1 - t, c_out = -t (x0 = x_t - t v), and the
loss's target (x0 - c_skip x) / c_out is exactly v. "flow-x0" walks the same path with a network that predicts x0
itself (c_skip = 0, c_out = 1; Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise"): it never
has to reproduce the noise in order to cancel it, which a small velocity network does imperfectly, leaving a faint
per-pixel speckle on flat backgrounds.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from noisecraft.config import DiffusionConfig
from noisecraft.diffusion.schedules import DiscreteSchedule, flow_t
from noisecraft.registry import PREDICTIONS

# The contract every sampler, guidance and the trainer speak: (x, sigma, cond) -> the estimate of the clean x0.
Denoise = Callable[[torch.Tensor, torch.Tensor, "dict | None"], torch.Tensor]
V_LOSS_T_MIN = 0.05  # flow-x0's velocity loss divides by t^2: floored, as Li & He 2025 do, so clean t stays finite


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


class Denoiser(nn.Module):
    """Wraps a network F(x, noise_label, class_labels=..., context=..., augment_labels=...) into D(x; sigma, cond);
    `cond` is passed to F as keywords (training adds augment_labels; sampling never does: F sees zeros)."""

    def __init__(self, net: nn.Module, cfg: DiffusionConfig):
        super().__init__()
        self.net, self.cfg, self.prediction = net, cfg, cfg.prediction
        self.path = PREDICTIONS.get(cfg.prediction, "diffusion.prediction").path  # "vp" | "edm" | "flow"
        # EDM and rectified flow are trained on continuous noise levels; the others on a T-step VP table.
        self.schedule = None if self.path != "vp" else DiscreteSchedule(
            cfg.schedule, cfg.timesteps, cfg.beta_start, cfg.beta_end)

    @property
    def sigma_min(self) -> float:
        return self.cfg.sigma_min if self.schedule is None else self.schedule.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.cfg.sigma_max if self.schedule is None else self.schedule.sigma_max

    def prior_std(self, sigma: float) -> float:
        """Std of x at the first noise level: VP models start from x_T ~ N(0, I) in the VP view, i.e.
        x = x_T / sqrt(alpha_bar), std sqrt(1 + sigma^2); EDM starts from N(0, sigma^2)."""
        return sigma if self.schedule is None else (1 + sigma**2) ** 0.5

    def precondition(self, sigma: torch.Tensor):
        """c_skip, c_out, c_in, c_noise for a batch of sigmas (B,)."""
        sigma = sigma.float()
        if self.path == "flow":
            t = flow_t(sigma)
            c_noise = 1000.0 * t  # t scaled to the timestep range the embedding is made for
            if self.prediction == "flow-x0":
                return torch.zeros_like(t), torch.ones_like(t), 1 - t, c_noise
            return 1 - t, -t, 1 - t, c_noise
        if self.prediction == "edm":
            sd = self.cfg.sigma_data
            c_skip = sd**2 / (sigma**2 + sd**2)
            c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
            c_in = 1 / (sigma**2 + sd**2).sqrt()
            c_noise = 250.0 * sigma.log()  # EDM's ln(sigma)/4, scaled to the sinusoidal embedding's range
            return c_skip, c_out, c_in, c_noise
        c_in = 1 / (sigma**2 + 1).sqrt()  # x / sqrt(1 + sigma^2) is the VP sample x_t
        c_noise = self.schedule.sigma_to_t(sigma)
        if self.prediction == "eps":  # x0 = x - sigma * eps
            return torch.ones_like(sigma), -sigma, c_in, c_noise
        if self.prediction == "x0":
            return torch.zeros_like(sigma), torch.ones_like(sigma), c_in, c_noise
        if self.prediction == "v":  # v = alpha eps - s x0  =>  x0 = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v
            return 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1).sqrt(), c_in, c_noise
        raise ValueError(f"unknown prediction {self.prediction}")

    def objective_weight(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """(B,) weight turning the network-space MSE ||F - F_target||^2 into this prediction's training objective,
        or None where they are the same: flow-x0 answers x0 but is trained on the velocity loss,
        ||v_pred - v||^2 = ||D - x0||^2 / t^2."""
        if self.prediction == "flow-x0":
            return flow_t(sigma.float()).clamp(min=V_LOSS_T_MIN) ** -2
        return None

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict | None, c_in: torch.Tensor,
            c_noise: torch.Tensor) -> torch.Tensor:
        """The network's own output F for the preconditioned input."""
        out = self.net(_bcast(c_in, x) * x, c_noise, **(cond or {}))
        return out.float()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: dict | None = None) -> torch.Tensor:
        """x: (B, C, H, W) at noise level sigma (scalar or (B,)); returns x0_pred (B, C, H, W) in fp32."""
        if not torch.is_tensor(sigma) or sigma.dim() == 0:
            sigma = torch.full((x.shape[0],), float(sigma), device=x.device)
        c_skip, c_out, c_in, c_noise = self.precondition(sigma)
        F = self.raw(x, sigma, cond, c_in, c_noise)
        return _bcast(c_skip, x) * x.float() + _bcast(c_out, x) * F
