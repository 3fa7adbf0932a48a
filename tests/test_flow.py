"""Rectified flow through the denoiser contract: the preconditioning's loss target is the velocity, training draws
logit-normal t, the flow's grid is uniform in t, and Euler on it is diffusers' FlowMatchEulerDiscreteScheduler on
the project's own network; a flow run trains and samples through the same CLI. "flow-x0" walks the same path with a
network that predicts x0, trained on the velocity loss (Li & He 2025)."""
from __future__ import annotations

import pytest
import torch

from noisecraft.config import DiffusionConfig, ModelConfig, UNetConfig
from noisecraft.diffusion import Denoiser
from noisecraft.diffusion.denoiser import V_LOSS_T_MIN
from noisecraft.diffusion.losses import diffusion_loss, sample_sigmas
from noisecraft.models import build_model
from noisecraft.samplers import flow_sigmas, get_sigmas, sample_euler
from noisecraft.samplers.common import drain


def _flow_denoiser(seed: int = 0, prediction: str = "flow") -> Denoiser:
    torch.manual_seed(seed)
    m = ModelConfig(in_channels=1, image_size=8, head_channels=8, num_classes=0,
                    unet=UNetConfig(base_channels=8, channel_mult=(1,), attn_resolutions=()))
    return Denoiser(build_model(m), DiffusionConfig(prediction=prediction)).eval()


def test_the_flow_preconditioning_learns_the_velocity_and_recovers_x0():
    den = _flow_denoiser()
    x0, eps, sigma = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.tensor([0.3, 1.0, 9.0])
    t = (sigma / (1 + sigma)).view(-1, 1, 1, 1)
    x = x0 + sigma.view(-1, 1, 1, 1) * eps  # the sigma view; x (1 - t) is the flow's x_t = (1 - t) x0 + t eps
    torch.testing.assert_close(x * (1 - t), (1 - t) * x0 + t * eps)
    c_skip, c_out, c_in, c_noise = den.precondition(sigma)
    target = (x0 - c_skip.view(-1, 1, 1, 1) * x) / c_out.view(-1, 1, 1, 1)
    torch.testing.assert_close(target, eps - x0)  # the loss regresses the velocity
    torch.testing.assert_close(c_noise, 1000 * t.flatten())


def test_flow_x0_predicts_the_clean_image_and_is_trained_on_the_velocity_loss():
    den = _flow_denoiser(prediction="flow-x0")
    x0, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    sigma = torch.tensor([0.01, 0.3, 1.0, 9.0])  # the first below the floor of t
    t = (sigma / (1 + sigma)).view(-1, 1, 1, 1)
    x = x0 + sigma.view(-1, 1, 1, 1) * eps
    with torch.no_grad():
        x0_pred = den(x, sigma)
        F = den.net((1 - t) * x, 1000 * t.flatten())  # the network sees the flow's x_t and answers x0 itself
        loss = diffusion_loss(den, x0, sigma=sigma, eps=eps)
    torch.testing.assert_close(x0_pred, F)
    v_pred = ((1 - t) * x - x0_pred) / t  # x_t = (1 - t) x0 + t eps, so v = eps - x0 = (x_t - x0) / t
    by_hand = (v_pred - (eps - x0)).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(loss[1:], by_hand[1:])
    torch.testing.assert_close(loss[0], (x0_pred - x0)[0].pow(2).mean() / V_LOSS_T_MIN**2)  # floored t
    flow = _flow_denoiser(prediction="flow")  # the same path: grid, noise at the top and training t
    torch.testing.assert_close(get_sigmas(den, "dpmpp-2m", 5), get_sigmas(flow, "dpmpp-2m", 5))
    g = torch.Generator()
    torch.testing.assert_close(sample_sigmas(den, 64, "cpu", g.manual_seed(1)),
                               sample_sigmas(flow, 64, "cpu", g.manual_seed(1)))
    assert den.schedule is None and den.prior_std(80.0) == 80.0


def test_training_draws_logit_normal_t_and_the_grid_is_uniform_in_t():
    den = _flow_denoiser()
    sigma = sample_sigmas(den, 20_000, "cpu", torch.Generator().manual_seed(0))
    logit_t = torch.logit(sigma / (1 + sigma))
    assert abs(logit_t.mean().item()) < 0.05 and abs(logit_t.std().item() - 1) < 0.05
    grid = get_sigmas(den, "dpmpp-2m", 4)
    t = grid / (1 + grid)
    torch.testing.assert_close(t[:-1].diff(), torch.full((3,), -float(t[0]) / 4))
    assert grid[0] == pytest.approx(80.0) and grid[-1] == 0
    torch.testing.assert_close(grid, flow_sigmas(4, 80.0))


def test_euler_on_the_flow_grid_is_diffusers_flow_match_euler():
    """diffusers integrates x_t = (1 - t) x0 + t eps with v = F(x_t, 1000 t); ours walks x = x_t / (1 - t) with
    D = x - sigma (x - D) ... on the same t: the same numbers."""
    diffusers = pytest.importorskip("diffusers")
    den = _flow_denoiser(seed=1)
    sigmas = flow_sigmas(6, 80.0)
    t = (sigmas / (1 + sigmas))[:-1]  # diffusers' sigmas are t
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = drain(sample_euler(den, noise / float(1 - t[0]), sigmas))  # the same start, in the sigma view
    sched = diffusers.FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=t.tolist())
    x = noise.clone()
    with torch.no_grad():
        for i, ts in enumerate(sched.timesteps):
            v = den.net(x, torch.full((x.shape[0],), 1000 * float(t[i])))
            x = sched.step(v, ts, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction", ["flow", "flow-x0"])
def test_a_flow_run_trains_and_samples_through_the_cli(cli, tiny_args, tmp_path, prediction):
    out = tmp_path / "flow"
    code, _, err = cli("train", "--preset", "digits-flow", "--out", out, "--steps", 2, "--no-progress", *tiny_args,
                       "--train.num_threads=1", f"--diffusion.prediction={prediction}")
    assert code == 0, err
    code, _, err = cli("sample", "--checkpoint", out, "--class", 3, "--n", 2, "--out", tmp_path / "s", "--device",
                       "cpu")
    assert code == 0, err
    code, _, err = cli("train", "--preset", "digits-flow", "--out", tmp_path / "bad", "--diffusion.time_sampling=x")
    assert code == 2 and "uniform, logit-normal" in err


def test_straightness_is_one_for_a_line_and_the_chord_over_the_length_otherwise():
    from noisecraft.explain.trajectories import path_straightness

    line = torch.linspace(0, 1, 5).view(5, 1, 1) * torch.tensor([[3.0, 4.0]])  # (K, B=1, D=2)
    s, dev = path_straightness(line.double())
    assert s.item() == pytest.approx(1.0) and dev.abs().max().item() < 1e-12
    corner = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]], dtype=torch.float64)  # two unit legs
    s, dev = path_straightness(corner)
    assert s.item() == pytest.approx(2 ** 0.5 / 2) and dev[1].item() == pytest.approx(0.5)


def test_explain_shows_a_flow_run_in_the_flows_own_coordinates():
    # x0 + sigma eps over (1 + sigma) is the flow's x_t = (1 - t) x0 + t eps at t = sigma / (1 + sigma): the forward
    # and reverse figures of a flow run show what its network reads, not the VP view.
    from noisecraft.explain.process import _seen

    x0, eps, sigma = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), 3.0
    t = sigma / (1 + sigma)
    torch.testing.assert_close(_seen(x0 + sigma * eps, sigma, flow=True), (1 - t) * x0 + t * eps)
    torch.testing.assert_close(_seen(x0 + sigma * eps, sigma, flow=False), (x0 + sigma * eps) / (1 + sigma**2) ** 0.5)
