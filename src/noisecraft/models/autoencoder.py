"""KL-regularised convolutional autoencoder (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models"), the first stage of latent diffusion.

Read top to bottom: the residual block, the diagonal Gaussian posterior, the encoder, the decoder, then the
autoencoder that joins them. The encoder maps an image (B, C, H, W) in [-1, 1] to the mean and log-variance of a
diagonal Gaussian over latents (B, z, H/f, W/f); the decoder maps a latent back to an image. f = 2 ** (levels - 1),
one stride-2 convolution between resolutions.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisecraft.config import AutoencoderConfig
from noisecraft.models.unet import group_norm


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus a skip (no time embedding: an autoencoder sees no noise level)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(exp(logvar))), the encoder's posterior."""

    def __init__(self, moments: torch.Tensor):  # (B, 2 z, h, w): mean and log-variance stacked on channels
        self.mean, logvar = moments.float().chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # as latent diffusion: exp() stays finite
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps (the reparameterisation trick, Kingma & Welling 2014)."""
        eps = torch.randn(self.mean.shape, device=self.mean.device, generator=generator)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample (B,): 1/2 sum(mean^2 + var - 1 - logvar) over the latent's elements."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


def _widths(cfg: AutoencoderConfig) -> list[int]:
    return [cfg.base_channels * m for m in cfg.channel_mult]


class Encoder(nn.Module):
    """conv_in -> per resolution: res blocks, then a stride-2 conv (not after the last) -> res block ->
    norm, SiLU, conv to 2 z channels (mean and log-variance)."""

    def __init__(self, cfg: AutoencoderConfig, in_channels: int):
        super().__init__()
        widths = _widths(cfg)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        blocks, ch = [], widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, width))
                ch = width
            if level < len(widths) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # H -> H/2
        self.blocks = nn.Sequential(*blocks)
        self.mid = ResBlock(ch, ch)
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 2 z, H/f, W/f)
        h = self.mid(self.blocks(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """The encoder mirrored: conv_in from z -> res block -> per resolution (coarsest first): res blocks, then
    nearest 2x upsampling and a conv -> norm, SiLU, conv_out to the image's channels."""

    def __init__(self, cfg: AutoencoderConfig, out_channels: int):
        super().__init__()
        widths = _widths(cfg)[::-1]
        ch = widths[0]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        self.mid = ResBlock(ch, ch)
        blocks = []
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, width))
                ch = width
            if level < len(widths) - 1:
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)  # the "last layer" of the adaptive GAN weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, z, h, w) -> (B, C, h f, w f)
        h = self.blocks(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder(nn.Module):
    """encode(x) -> DiagonalGaussian over latents; decode(z) -> image. `downsample` is f."""

    def __init__(self, cfg: AutoencoderConfig, image_channels: int):
        super().__init__()
        self.downsample, self.latent_channels = cfg.downsample, cfg.latent_channels
        self.encoder = Encoder(cfg, image_channels)
        self.decoder = Decoder(cfg, image_channels)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def last_layer(self) -> torch.Tensor:
        """The decoder's output weight: where the reconstruction and adversarial gradients are compared."""
        return self.decoder.conv_out.weight

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruction from a posterior sample, and the posterior: ((B, C, H, W), DiagonalGaussian)."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior
