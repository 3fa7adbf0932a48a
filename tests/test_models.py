"""U-Net output shapes for every preset, and the parameter count of the paper-sized CIFAR-10 network."""
import pytest
import torch

from noisecraft.config import PRESETS, preset
from noisecraft.models import build_model, count_parameters

NATIVE = {"digits": (1, 28, 10), "mnist": (1, 28, 10), "cifar10": (3, 32, 10), "emoji": (3, 32, 8)}


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


def test_nhwc_sampling_path_matches_nchw(monkeypatch):
    """generate() feeds the network NHWC activations on CPUs in fp32 (faster oneDNN convs); the images must be
    those of the plain NCHW network, with and without guidance, and not depend on the batch size."""
    import noisecraft.pipeline
    from noisecraft.config import DiffusionConfig
    from noisecraft.diffusion import Denoiser
    from conftest import bare_generate as generate
    from noisecraft.precision import sampling_channels_last

    assert sampling_channels_last("cpu", bf16=False) and not sampling_channels_last("cpu", bf16=True)
    torch.manual_seed(0)
    cfg = preset("digits").model
    cfg.in_channels, cfg.image_size, cfg.num_classes, cfg.unet.base_channels = 3, 16, 4, 16
    net = build_model(cfg).eval()
    for p in net.parameters():  # zero-initialised output layers would hide layout bugs
        p.data.normal_(0, 0.1)
    den = Denoiser(net, DiffusionConfig(schedule="cosine", prediction="v"))
    labels = torch.arange(6) % 4
    kw = dict(n=6, labels=labels, num_classes=4, shape=(3, 16, 16), steps=4, precision="fp32", clip_x0=False)
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        ref = den(x, torch.full((6,), 2.0), {"class_labels": labels})
        nhwc = den(x.contiguous(memory_format=torch.channels_last), torch.full((6,), 2.0), {"class_labels": labels})
    torch.testing.assert_close(nhwc, ref, rtol=1e-4, atol=1e-5)
    for w in (0.0, 1.5):
        a = generate(den, guidance=w, batch_size=6, **kw)
        b = generate(den, guidance=w, batch_size=4, **kw)
        with monkeypatch.context() as m:  # the same request through the plain NCHW network
            m.setattr(noisecraft.pipeline, "sampling_channels_last", lambda device, bf16: False)
            nchw = generate(den, guidance=w, batch_size=6, **kw)
        for other in (b, nchw):  # uint8 rounding of ~1e-6 float differences at most
            assert other.shape == a.shape and (a.int() - other.int()).abs().max() <= 1


def test_attention_runs_in_fp32_on_cpu_under_bf16_autocast():
    """Under bf16 autocast on CPU, attention upcasts (its bf16 backward is slow there), returns the input dtype,
    matches fp32 attention of the same bf16 inputs, and gives gradients to the bf16 inputs."""
    from noisecraft.models.unet import attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 49, 16).bfloat16().requires_grad_() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert out.dtype == torch.bfloat16
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in (q, k, v))


def test_patch_size_folds_pixels_into_channels():
    """patch_size=p is a U-Net on the space-to-depth image: the same weights in a p=1 network with p*p times the
    channels on pixel_unshuffle(x) give pixel_unshuffle of the output."""
    from noisecraft.errors import UserError

    torch.manual_seed(0)
    cfg = preset("digits").model
    cfg.in_channels, cfg.image_size, cfg.num_classes, cfg.patch_size, cfg.unet.channel_mult = 1, 28, 10, 2, (1, 2)
    net = build_model(cfg).eval()
    for p in net.parameters():  # zero-initialised output layers would hide a wrong fold
        p.data.normal_(0, 0.1)
    flat = build_model(type(cfg)(**{**vars(cfg), "in_channels": 4, "image_size": 14, "patch_size": 1})).eval()
    flat.load_state_dict(net.state_dict())
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([0.5, 5.0, 50.0]), torch.tensor([1, 7, 10])
    with torch.no_grad():
        torch.testing.assert_close(torch.nn.functional.pixel_unshuffle(net(x, t, y), 2),
                                   flat(torch.nn.functional.pixel_unshuffle(x, 2), t, y))
    cfg.patch_size = 3
    with pytest.raises(UserError, match="patch_size=3 must divide the image size 28"):
        build_model(cfg)


def test_unet_conv_stem_starts_at_zero_learns_and_leaves_old_checkpoints_alone():
    """model.conv_stem: a full-resolution 3x3 conv before the patches and after them. The output starts at zero,
    the stem learns once the zero-initialised head has, and a U-Net without it keeps its old checkpoint keys."""
    torch.manual_seed(0)
    cfg = preset("digits").model
    cfg.in_channels, cfg.image_size, cfg.num_classes, cfg.patch_size, cfg.unet.channel_mult = 3, 16, 0, 2, (1, 2)
    cfg.conv_stem = 8
    net = build_model(cfg)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 5.0])
    assert net(x, t).abs().max() == 0
    target = torch.randn_like(x)
    (net(x, t) - target).pow(2).sum().backward()  # zero output: only the head's last conv learns on the first step
    assert net.head[1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        net.head[1].weight.normal_(0, 0.1)
    net.zero_grad()
    (net(x, t) - target).pow(2).sum().backward()
    assert net.stem[0].weight.grad.abs().sum() > 0 and net.conv_out.weight.grad.abs().sum() > 0
    without = build_model(type(cfg)(**{**vars(cfg), "conv_stem": 0}))
    assert not any(k.startswith(("stem", "head")) for k in without.state_dict())  # old runs' checkpoints unchanged
