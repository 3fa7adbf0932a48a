"""PatchGAN discriminator (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks"),
as taming-transformers' `NLayerDiscriminator` that the latent diffusion autoencoders train against.

It scores overlapping patches rather than whole images: a stack of 4x4 convolutions, stride 2 for the first
`layers`, gives one logit per patch (B, 1, h, w), so it judges local texture and sharpness, which L1 blurs.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class PatchDiscriminator(nn.Module):
    """conv(stride 2) + LeakyReLU, then `layers - 1` conv(stride 2) + BatchNorm + LeakyReLU with doubling widths
    (capped at 8x), one stride-1 block, and a stride-1 conv to one logit per patch."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            blocks += [nn.Conv2d(channels * prev, channels * mult, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        blocks.append(nn.Conv2d(channels * mult, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*blocks)
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1] -> (B, 1, h, w) logits
        return self.net(x)


def _init(m: nn.Module) -> None:
    # DCGAN's initialisation (Radford et al. 2016), as taming-transformers' weights_init.
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
