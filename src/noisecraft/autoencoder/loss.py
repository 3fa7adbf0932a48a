"""The autoencoder's loss, as latent diffusion's `LPIPSWithDiscriminator` (CompVis/latent-diffusion,
ldm/modules/losses/contperceptual.py) computes it:

    generator:      nll + kl_weight * KL + d_weight * g_adv,     nll = sum |x - x_rec| (+ lpips_weight * LPIPS) / B
    discriminator:  1/2 (mean relu(1 - D(x)) + mean relu(1 + D(x_rec)))   (hinge loss)

with g_adv = -mean D(x_rec) and d_weight = disc_weight * ||grad nll|| / ||grad g_adv|| at the decoder's last layer
(Esser et al. 2021, "Taming Transformers"), so the adversarial term never swamps reconstruction. Before
`disc_start` the adversarial terms are off and the discriminator does not train.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisecraft.config import AutoencoderConfig


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll: torch.Tensor, g_adv: torch.Tensor, last_layer: torch.Tensor, disc_weight: float,
                    eps: float = 1e-4) -> torch.Tensor:
    """disc_weight * ||d nll / d w|| / (||d g_adv / d w|| + eps) at the last layer's weight w, clamped to
    [0, 1e4] and detached (a weight, not a path for gradients)."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_adv, last_layer, retain_graph=True)[0]
    return (g_nll.norm() / (g_adv.norm() + eps)).clamp(0.0, 1e4).detach() * disc_weight


def discriminator_on(step: int, cfg: AutoencoderConfig) -> bool:
    """Whether the adversarial terms count (and the discriminator trains) at `step` (0-based)."""
    return step >= cfg.disc_start


@dataclass
class GeneratorLoss:
    total: torch.Tensor  # what the autoencoder's optimizer minimises
    terms: dict[str, torch.Tensor]  # detached parts, for the log


class AutoencoderLoss(nn.Module):
    """The generator side of the loss (the discriminator's is `hinge_d_loss`); `perceptual` is an LPIPS module
    or None."""

    def __init__(self, cfg: AutoencoderConfig, perceptual: nn.Module | None = None):
        super().__init__()
        self.cfg, self.perceptual = cfg, perceptual

    def reconstruction(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
        """Per-pixel |x - x_rec| (B, C, H, W), plus the per-image LPIPS distance broadcast over pixels."""
        rec = (x.float() - x_rec.float()).abs()
        if self.perceptual is not None:
            rec = rec + self.cfg.lpips_weight * self.perceptual(x_rec.float(), x.float()).view(-1, 1, 1, 1)
        return rec

    def forward(self, x: torch.Tensor, x_rec: torch.Tensor, posterior, logits_fake: torch.Tensor | None,
                last_layer: torch.Tensor) -> GeneratorLoss:
        b = x.shape[0]
        rec = self.reconstruction(x, x_rec)
        nll = rec.sum() / b
        kl = posterior.kl().mean()
        total = nll + self.cfg.kl_weight * kl
        terms = {"l1": (x.float() - x_rec.float()).abs().mean().detach(), "kl": kl.detach()}
        if logits_fake is not None:
            g_adv = -logits_fake.float().mean()
            d_weight = adaptive_weight(nll, g_adv, last_layer, self.cfg.disc_weight)
            total = total + d_weight * g_adv
            terms.update(g_adv=g_adv.detach(), d_weight=d_weight)
        return GeneratorLoss(total, {"loss": total.detach(), **terms})
