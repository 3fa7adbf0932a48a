"""LPIPS (Zhang et al. 2018) for the autoencoder's loss, from torchmetrics: its linear heads ship inside the
torchmetrics package; the VGG16 backbone's ImageNet weights do not, and cannot be downloaded here, so they come
from a local file the user names (`--lpips-weights`, torchvision's vgg16-397923af.pth or a .safetensors of it).
Without that file the perceptual term is off, and the run's log says so."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from noisecraft.errors import UserError

# torchvision's VGG16 `features` indices that torchmetrics' Vgg16 slices hold (relu1_2 ... relu5_3).
_SLICES = {1: range(0, 4), 2: range(4, 9), 3: range(9, 16), 4: range(16, 23), 5: range(23, 30)}


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"LPIPS weights not found: {path} (torchvision's VGG16 ImageNet weights, e.g. "
                        f"vgg16-397923af.pth)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_lpips(path: str | Path, device: torch.device) -> nn.Module:
    """torchmetrics' LPIPS (VGG) with the backbone loaded from `path`; frozen, eval mode. Call it as
    lpips(x_rec, x) on images in [-1, 1] (B, C, H, W); grayscale is repeated to RGB. Returns (B,)."""
    from torchmetrics.functional.image.lpips import _LPIPS

    state = _read_state(Path(path))
    net = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)  # heads from torchmetrics, backbone random until loaded
    backbone = {}
    for s, indices in _SLICES.items():
        for i in indices:
            for name in ("weight", "bias"):
                if f"features.{i}.{name}" in state:
                    backbone[f"slice{s}.{i}.{name}"] = state[f"features.{i}.{name}"]
    expected = {k for k in net.net.state_dict()}
    if set(backbone) != expected:
        raise UserError(f"{path} does not hold torchvision VGG16 weights (features.N.weight/bias)")
    net.net.load_state_dict(backbone)
    return _GrayToRGB(net.eval().requires_grad_(False)).to(device)


class _GrayToRGB(nn.Module):
    def __init__(self, lpips: nn.Module):
        super().__init__()
        self.lpips = lpips

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return self.lpips(x, y, normalize=False).flatten()
