"""Networks, one architecture a file. `build_model` is the only entry point the rest of the code uses."""
from __future__ import annotations

import torch.nn as nn

from noisecraft.config import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.in_channels <= 0 or cfg.image_size <= 0:
        raise ValueError("model config needs in_channels and image_size (filled in from the dataset)")
    if cfg.arch == "unet":
        from noisecraft.models.unet import UNet

        return UNet(cfg)
    raise ValueError(f"unknown architecture {cfg.arch}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
