"""Euler and Heun solvers of the probability-flow ODE (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithm 1, deterministic), meant for the Karras sigma grid (eq. 5, rho = 7).

In the sigma view x = x0 + sigma * eps the ODE is dx/dsigma = (x - D(x; sigma)) / sigma.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from noisecraft.samplers.common import Denoise, NoiseFn, SamplerStep


@torch.no_grad()
def _ode_steps(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None,
               second_order: bool) -> Iterator[SamplerStep]:
    """Algorithm 1 of Karras et al. 2022: an Euler step, plus Heun's correction when `second_order`."""
    sigmas = sigmas.to(x.device)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        d = (x - x0) / sigma
        x_next = x + (sigma_next - sigma) * d
        if second_order and sigma_next != 0:  # at sigma = 0 the slope is undefined: the last step stays Euler
            d_next = (x_next - denoiser(x_next, sigma_next, cond)) / sigma_next
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2
        x = x_next
        yield SamplerStep(i, sigma, x, x0)


def sample_euler(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
                 noise: NoiseFn | None = None) -> Iterator[SamplerStep]:
    """Euler steps (Karras et al. 2022, Algorithm 1 without the 2nd-order correction): one call per step.

    Same update as DDIM (eta = 0) on the same grid; `noise` is unused.
    """
    yield from _ode_steps(denoiser, x, sigmas, cond, second_order=False)


def sample_heun(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
                noise: NoiseFn | None = None) -> Iterator[SamplerStep]:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1): an Euler step, then the trapezoidal
    correction with the slope at the step's end, except on the last step to sigma = 0 (where the slope is
    undefined) which stays Euler. N steps cost 2N - 1 network calls. `noise` is unused.
    """
    yield from _ode_steps(denoiser, x, sigmas, cond, second_order=True)
