"""Schedules, the forward process and the preconditioned denoiser."""
import math

import pytest
import torch

from noisecraft.config import DiffusionConfig
from noisecraft.diffusion import Denoiser, DiscreteSchedule, diffusion_loss, q_sample
from noisecraft.diffusion.schedules import cosine_betas, linear_betas


def test_linear_schedule_matches_ho_et_al():
    betas = linear_betas(1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    ab = torch.cumprod(1 - betas, 0)
    # Ho et al. 2020: alpha_bar_T ~ 4e-5, so x_T is almost pure noise.
    assert 3e-5 < ab[-1] < 5e-5


def test_cosine_schedule_follows_closed_form():
    T, s = 1000, 0.008
    ab = torch.cumprod(1 - cosine_betas(T), 0)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert ab[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-6)


def test_schedules_match_diffusers():
    from diffusers import DDPMScheduler

    for ours, theirs in (("linear", "linear"), ("cosine", "squaredcos_cap_v2")):
        ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
        sched = DiscreteSchedule(ours, 1000)
        torch.testing.assert_close(sched.alpha_bar.float(), ref.alphas_cumprod.float(), rtol=1e-5, atol=1e-7)


def test_sigma_timestep_round_trip():
    sched = DiscreteSchedule("linear", 1000)
    t = torch.tensor([0.0, 1.0, 10.0, 499.0, 998.0, 999.0])
    torch.testing.assert_close(sched.sigma_to_t(sched.sigmas[t.long()].float()), t, atol=1e-3, rtol=0)
    frac = torch.tensor([3.25, 700.5])
    torch.testing.assert_close(sched.sigma_to_t(sched.t_to_sigma(frac)), frac, atol=1e-3, rtol=0)


def test_forward_process_statistics():
    torch.manual_seed(0)
    x0 = torch.full((20000, 1), 0.7)
    ab = torch.full((20000,), 0.3)
    xt = q_sample(x0, ab, torch.randn_like(x0))
    assert xt.mean().item() == pytest.approx(math.sqrt(0.3) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(0.7, abs=0.02)


class _Oracle(torch.nn.Module):
    """A 'network' that outputs the exact target of its parameterisation for a known x0, eps."""

    def __init__(self, x0, eps, prediction, sched):
        super().__init__()
        self.x0, self.eps, self.prediction, self.sched = x0, eps, prediction, sched

    def forward(self, x, t, **cond):
        ab = self.sched.alpha_bar[t.round().long()].float().view(-1, 1, 1, 1)
        if self.prediction == "eps":
            return self.eps
        if self.prediction == "x0":
            return self.x0
        return ab.sqrt() * self.eps - (1 - ab).sqrt() * self.x0  # v


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_every_parameterisation_recovers_x0(prediction):
    """If the network predicts its target exactly, D(x; sigma) returns x0: the conversions are consistent."""
    torch.manual_seed(0)
    cfg = DiffusionConfig(prediction=prediction)
    x0, eps = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    d = Denoiser(_Oracle(x0, eps, prediction, DiscreteSchedule()), cfg)
    sigma = d.schedule.sigmas[torch.tensor([5, 100, 500, 900])].float()
    x = x0 + sigma.view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(d(x, sigma), x0, atol=1e-4, rtol=1e-4)
    # the network is fed the timestep the oracle was built for (c_noise = t on this grid) ...
    assert d.precondition(sigma)[3].tolist() == pytest.approx([5, 100, 500, 900], abs=1e-3)
    # ... and the training loss of the oracle, at those noise levels and that noise, is zero
    loss = diffusion_loss(d, x0, None, sigma=sigma, eps=eps)
    assert loss.shape == (4,) and loss.max().item() < 1e-8
    # while an oracle that is off by 0.1 in every pixel is not
    off = Denoiser(_Oracle(x0 + 0.1, eps + 0.1, prediction, DiscreteSchedule()), cfg)
    assert diffusion_loss(off, x0, None, sigma=sigma, eps=eps).min().item() > 1e-4


def test_loss_falls_on_real_digits():
    """Twenty steps on 32 real digits reduce the loss on 64 held-out digits (and min-SNR weighting keeps it
    finite). A narrow network (8 channels) keeps it a few seconds; the cut is the same as with 16 channels, 40 steps
    of 64."""
    from noisecraft.config import DataConfig, ModelConfig, UNetConfig
    from noisecraft.data import load_dataset, to_model_range
    from noisecraft.models import build_model

    torch.manual_seed(0)
    data, val = load_dataset(DataConfig(), "train"), load_dataset(DataConfig(), "val")
    x = to_model_range(data.images[:32])
    x_val, y_val = to_model_range(val.images[:64]), val.labels[:64]  # digits the steps never see
    net = build_model(ModelConfig(unet=UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                                  attn_resolutions=()), in_channels=1, image_size=28, num_classes=10, dropout=0.0))
    d = Denoiser(net, DiffusionConfig(schedule="cosine", prediction="v", loss_weighting="min-snr"))
    opt = torch.optim.AdamW(net.parameters(), lr=4e-3)
    g = torch.Generator().manual_seed(0)

    def held_out_loss():  # the same noise levels and noise every time
        return diffusion_loss(d, x_val, {"class_labels": y_val}, generator=g.manual_seed(1)).mean().item()

    before = held_out_loss()
    for _ in range(20):
        loss = diffusion_loss(d, x, {"class_labels": data.labels[:32]}).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out_loss() < 0.7 * before
