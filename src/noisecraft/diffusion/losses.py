"""Training objective: denoising score matching in the network's own output space, with loss weighting.

With D = c_skip x + c_out F, the loss lambda(sigma) ||D - x0||^2 equals lambda c_out^2 ||F - F_target||^2 with
F_target = (x0 - c_skip x) / c_out (Karras et al. 2022, eq. 8). For eps, x0 and v prediction, and for EDM
(whose lambda = 1 / c_out^2), the unweighted loss is a plain MSE on F. Min-SNR-gamma (Hang et al. 2023,
"Efficient Diffusion Training via Min-SNR Weighting Strategy") weights the x0-space loss by min(SNR, gamma).
The held-out loss (`held_out_losses`) is the same loss over a held-out split with fixed randomness.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from noisecraft.diffusion.denoiser import Denoiser, _bcast
from noisecraft.diffusion.schedules import flow_sigma
from noisecraft.precision import autocast_ctx

HELD_OUT_SEED = 12345  # the held-out loss's noise levels and noise: the same every call


def sample_sigmas(denoiser: Denoiser, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training noise levels: uniform timesteps on a discrete schedule, log-normal for EDM; for rectified flow
    t = sigma / (1 + sigma) uniform or logit-normal (Esser et al. 2024, SD3), whose mass sits mid-path."""
    cfg = denoiser.cfg
    if denoiser.path == "flow":
        if cfg.time_sampling == "uniform":
            t = torch.rand(batch, device=device, generator=generator)
        else:
            t = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(batch, device=device, generator=generator))
        t = t.clamp(1e-4, 1 - 1e-4)
        return flow_sigma(t)
    if denoiser.schedule is None:
        log_sigma = cfg.p_mean + cfg.p_std * torch.randn(batch, device=device, generator=generator)
        return log_sigma.exp()
    t = torch.randint(0, denoiser.schedule.timesteps, (batch,), device=device, generator=generator)
    return denoiser.schedule.sigmas.to(device=device, dtype=torch.float32)[t]


def diffusion_loss(denoiser: Denoiser, x0: torch.Tensor, cond: dict | None = None,
                   generator: torch.Generator | None = None, sigma: torch.Tensor | None = None,
                   eps: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample loss (B,) for clean images x0 (B, C, H, W) in [-1, 1]. `sigma` (B,) and `eps` (like x0) are
    drawn here unless given (a distributed rank passes its slice of the global batch's draws)."""
    if sigma is None:
        sigma = sample_sigmas(denoiser, x0.shape[0], x0.device, generator)
    if eps is None:
        eps = torch.randn(x0.shape, device=x0.device, generator=generator)
    x = x0 + _bcast(sigma, x0) * eps  # (B, C, H, W)
    c_skip, c_out, c_in, c_noise = denoiser.precondition(sigma)
    F = denoiser.raw(x, sigma, cond, c_in, c_noise)
    target = (x0 - _bcast(c_skip, x0) * x) / _bcast(c_out, x0)
    mse = (F - target).pow(2).flatten(1).mean(1)  # (B,)
    weight = denoiser.objective_weight(sigma)  # a prediction trained on another space's loss (flow-x0)
    if weight is not None:
        mse = mse * weight
    if denoiser.cfg.loss_weighting == "min-snr":
        snr = 1 / sigma**2
        mse = mse * snr.clamp(max=denoiser.cfg.min_snr_gamma) * c_out**2
    return mse


@torch.no_grad()
def held_out_losses(loss: Callable, x0: torch.Tensor, conditions: Callable[[int, int], dict | None],
                    batch_size: int, device: torch.device, precision: str) -> Iterator[torch.Tensor]:
    """`loss(x0, cond, generator)` per sample (B,) (e.g. `diffusion_loss` of an EMA denoiser) over held-out x0
    (N, C, H, W), batch by batch, `conditions(start, stop)` giving a batch's conditioning, with fixed randomness:
    successive calls differ only by the weights (training's validation, the post-hoc EMA sweep)."""
    g = torch.Generator(device).manual_seed(HELD_OUT_SEED)
    for start in range(0, len(x0), batch_size):
        batch = x0[start:start + batch_size].to(device)
        with autocast_ctx(device, precision):
            out = loss(batch, conditions(start, start + batch_size), g)
        yield out


def mean_held_out_loss(loss: Callable, x0: torch.Tensor, conditions: Callable[[int, int], dict | None],
                       batch_size: int, device: torch.device, precision: str) -> float:
    """The mean of `held_out_losses` over the held-out split."""
    total = sum(float(b.sum()) for b in held_out_losses(loss, x0, conditions, batch_size, device, precision))
    return total / max(1, len(x0))
