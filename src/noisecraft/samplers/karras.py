"""Euler and Heun solvers of the probability-flow ODE (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithm 1, deterministic), meant for the Karras sigma grid (eq. 5, rho = 7).

In the sigma view x = x0 + sigma * eps the ODE is dx/dsigma = (x - D(x; sigma)) / sigma.
"""
from __future__ import annotations

import torch

from noisecraft.samplers.common import Callback, Denoise, NoiseFn


@torch.no_grad()
def sample_euler(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
                 noise: NoiseFn | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Euler steps (Karras et al. 2022, Algorithm 1 without the 2nd-order correction): one call per step.

    Same update as DDIM (eta = 0) on the same grid; `noise` is unused.
    """
    sigmas = sigmas.to(x.device)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "denoised": x0})
        d = (x - x0) / sigma
        x = x + (sigma_next - sigma) * d
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
                noise: NoiseFn | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1): an Euler step, then the trapezoidal
    correction with the slope at the step's end, except on the last step to sigma = 0 (where the slope is
    undefined) which stays Euler. N steps cost 2N - 1 network calls. `noise` is unused.
    """
    sigmas = sigmas.to(x.device)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "denoised": x0})
        d = (x - x0) / sigma
        x_euler = x + (sigma_next - sigma) * d
        if sigma_next == 0:
            x = x_euler
        else:
            d_next = (x_euler - denoiser(x_euler, sigma_next, cond)) / sigma_next
            x = x + (sigma_next - sigma) * (d + d_next) / 2
    return x

