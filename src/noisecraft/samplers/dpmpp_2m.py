"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", Algorithm 2: multistep second-order solver in the data-prediction form)."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from noisecraft.samplers.common import Denoise, NoiseFn, SamplerStep


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
                    noise: NoiseFn | None = None) -> Iterator[SamplerStep]:
    """One network call per step; the second-order term reuses the previous step's x0 prediction.

    Written in the sigma view x = x0 + sigma * eps, where the half log-SNR is lambda = -log(sigma) and the
    exact solution of the probability-flow ODE over [lambda_s, lambda_t] with h = lambda_t - lambda_s is
        x_t = (sigma_t / sigma_s) x_s + (1 - e^{-h}) D,
    D being x0_pred integrated over the step. The first step and the final step to sigma = 0 use D = x0_pred
    (first order, DPM-Solver++(1) = DDIM); the others use the multistep estimate
        D = (1 + 1 / (2 r)) x0_pred_i - 1 / (2 r) x0_pred_{i-1},  r = h_{i-1} / h_i,
    which is diffusers' `DPMSolverMultistepScheduler(solver_order=2, solver_type="midpoint",
    algorithm_type="dpmsolver++")` and k-diffusion's `sample_dpmpp_2m`. Dividing by sqrt(1 + sigma^2) gives the
    VP form of the paper (alpha_t = 1 / sqrt(1 + sigma_t^2)). `noise` is unused (deterministic).
    """
    sigmas = sigmas.to(x.device)
    old_x0, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma, cond)
        if sigma_next == 0:  # lambda_t = inf: the exact first-order step lands on x0_pred
            yield SamplerStep(i, sigma, x0, x0)
            return
        s, t = sigma.double(), sigma_next.double()  # float64 coefficients
        h = s.log() - t.log()  # lambda_t - lambda_s > 0
        if old_x0 is None:
            d = x0
        else:
            r = h_last / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
        x = (t / s).float() * x - torch.expm1(-h).float() * d
        old_x0, h_last = x0, h
        yield SamplerStep(i, sigma, x, x0)
