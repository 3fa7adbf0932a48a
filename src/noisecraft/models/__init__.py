"""Networks, one architecture a file. `build_model` is the only entry point the rest of the code uses."""
from __future__ import annotations

import torch.nn as nn

from noisecraft.config import AutoencoderConfig, ModelConfig
from noisecraft.registry import ARCHITECTURES


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.in_channels <= 0 or cfg.image_size <= 0:
        raise ValueError("model config needs in_channels and image_size (filled in from the dataset)")
    return ARCHITECTURES.load(cfg.arch)(cfg)


def build_autoencoder(cfg: AutoencoderConfig, image_channels: int) -> nn.Module:
    from noisecraft.models.autoencoder import Autoencoder

    return Autoencoder(cfg, image_channels)


def build_discriminator(cfg: AutoencoderConfig, image_channels: int) -> nn.Module:
    from noisecraft.models.discriminator import PatchDiscriminator

    return PatchDiscriminator(image_channels, cfg.disc_channels, cfg.disc_layers)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
