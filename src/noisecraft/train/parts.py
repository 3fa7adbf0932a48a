"""A denoiser being trained, built from the config: the network and its preconditioning, its EMA (what sampling
uses), post-hoc EMA profiles, the optimiser, and the function the step calls (DDP and torch.compile wrap the network
for the step only; EMA and checkpoints use the plain module)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from noisecraft.config import Config
from noisecraft.diffusion import Denoiser
from noisecraft.models import build_model
from noisecraft.phema import PowerEMA
from noisecraft.train.task import EMA, TaskContext, adamw


@dataclass
class DenoiserParts:
    net: nn.Module  # the trained weights
    denoiser: Denoiser  # net with its preconditioning
    ema: EMA  # their exponential moving average
    ema_denoiser: Denoiser  # the EMA with its preconditioning: what validation, figures and sampling use
    phema: PowerEMA | None  # post-hoc EMA profiles (train.posthoc_ema), or None
    optimizer: torch.optim.Optimizer
    step_fn: Denoiser  # what the step calls: `denoiser`, or the same over the DDP/compile-wrapped network
    channels_last: bool  # NHWC activations (faster convs on tensor-core GPUs, measured slower on CPU)


def build_parts(cfg: Config, ctx: TaskContext, net: nn.Module | None = None) -> DenoiserParts:
    """The parts around `net` (default: the config's network, freshly initialised)."""
    tc, device = cfg.train, ctx.device
    net = (build_model(cfg.model) if net is None else net).to(device)
    channels_last = device.type == "cuda" if tc.channels_last is None else tc.channels_last
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    denoiser = Denoiser(net, cfg.diffusion).to(device)
    ema = EMA(net, tc.ema_decay)
    ema_denoiser = Denoiser(ema.module, cfg.diffusion).to(device).eval()
    phema = PowerEMA(net, tc.posthoc_ema) if tc.posthoc_ema else None
    step_net = ctx.wrap(net)
    step_fn = denoiser if step_net is net else Denoiser(step_net, cfg.diffusion)
    return DenoiserParts(net, denoiser, ema, ema_denoiser, phema, adamw(net, cfg, device), step_fn, channels_last)
