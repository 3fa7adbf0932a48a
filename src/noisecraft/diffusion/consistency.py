"""Consistency distillation (Song et al. 2023, "Consistency Models", Algorithm 2), with the teacher's
classifier-free guidance distilled into the student (Luo et al. 2023, "Latent Consistency Models").

A consistency model f(x, sigma) maps every point of a probability-flow ODE trajectory to the trajectory's end, so
one call draws an image. Distillation teaches it that with adjacent levels sigma_t > sigma_s of a discretisation:
the teacher takes one ODE step x_t -> x_s (DDIM, i.e. Euler in the sigma view, with the guided teacher), and the
student's output at x_t is pulled towards the target network's output at x_s, which lies on the same trajectory.
At sigma_s = 0 the target is x_s itself (the boundary condition f(x, 0) = x), which anchors the chain.
"""
from __future__ import annotations

import math

import torch

from noisecraft.diffusion.denoiser import Denoise
from noisecraft.diffusion.schedules import ddim_step


def pseudo_huber(diff: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(|d|^2 + (c sqrt(dim))^2) - c sqrt(dim) per sample (B,) (Song & Dhariwal 2023, "Improved Techniques for
    Training Consistency Models"): L2 near 0, L1 far out, so a few bad targets do not dominate."""
    d = diff.flatten(1)
    c = c * math.sqrt(d.shape[1])
    return torch.sqrt(d.pow(2).sum(1) + c * c) - c


def consistency_distillation_loss(student: Denoise, target: Denoise, teacher: Denoise, x0: torch.Tensor,
                                  cond: dict | None, sigma_t: torch.Tensor, sigma_s: torch.Tensor, eps: torch.Tensor,
                                  huber_c: float) -> torch.Tensor:
    """Per-sample loss (B,): d(f_student(x_t, sigma_t), f_target(x_s, sigma_s)), x_t = x0 + sigma_t eps and x_s one
    guided teacher DDIM step from it. `teacher` is the guided teacher denoiser, `target` the EMA of the student;
    sigma_t > sigma_s >= 0 are (B,) levels of the teacher's grid."""
    st, ss = sigma_t.view(-1, 1, 1, 1), sigma_s.view(-1, 1, 1, 1)
    x_t = x0 + st * eps  # (B, C, H, W)
    with torch.no_grad():
        d = teacher(x_t, sigma_t, cond).float()
        x_s = ddim_step(x_t, d, st, ss)  # the teacher's ODE step
        f_s = target(x_s, sigma_s.clamp_min(1e-6), cond).float()
        f_s = torch.where(ss > 0, f_s, x_s)  # the boundary: f(x, 0) = x
    return pseudo_huber(student(x_t, sigma_t, cond).float() - f_s, huber_c)
