"""U-Net output shapes for every preset, and the parameter count of the paper-sized CIFAR-10 network."""
import pytest
import torch

from noisecraft.config import PRESETS, preset
from noisecraft.models import build_model, count_parameters

NATIVE = {"digits": (1, 28, 10), "mnist": (1, 28, 10), "cifar10": (3, 32, 10)}


@pytest.mark.parametrize("name", list(PRESETS))
def test_unet_output_shape_for_every_preset(name):
    cfg = preset(name)
    c, size, k = NATIVE[cfg.data.dataset]
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = c, size, k
    net = build_model(cfg.model).eval()
    x = torch.randn(2, c, size, size)
    with torch.no_grad():
        out = net(x, torch.tensor([3.0, 700.0]), torch.tensor([1, k]))  # a real class and the null class
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_cifar10_preset_is_the_ddpm_paper_size():
    cfg = preset("cifar10").model
    cfg.in_channels, cfg.image_size, cfg.num_classes = 3, 32, 10
    n = count_parameters(build_model(cfg))
    assert 34e6 < n < 37.5e6, n  # Ho et al. 2020 report 35.7M


@pytest.mark.parametrize("size", [28, 32, 64])
def test_unet_handles_resized_inputs_and_context(size):
    cfg = preset("digits").model
    cfg.in_channels, cfg.image_size, cfg.num_classes, cfg.context_dim = 3, size, 0, 16
    net = build_model(cfg).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = net(x, torch.tensor([10.0, 20.0]), None, context=torch.randn(2, 5, 16))
    assert out.shape == x.shape
