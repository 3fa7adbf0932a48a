"""Samplers against references: diffusers' schedulers (same model, same noise), closed-form Gaussian ODE
solutions, prediction-type conversions, classifier-free guidance, determinism, and the CLI end to end."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn as nn

from noisecraft.config import DiffusionConfig
from noisecraft.diffusion import Denoiser
from noisecraft.samplers import (SAMPLERS, cfg_denoiser, discrete_timesteps, drain, get_sampler, get_sigmas,
                                 karras_sigmas, network_calls, timestep_sigmas)

diffusers = pytest.importorskip("diffusers")

C, H = 2, 6  # tiny images: (B, 2, 6, 6)
NUM_CLASSES = 3


class ToyEps(nn.Module):
    """A fixed, smooth, deterministic eps-prediction network F(x_vp, t, class): a random 3x3 conv with a tanh,
    mixed with the input by t-dependent weights, plus a class offset (index NUM_CLASSES = null)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(C, C, 3, 3, generator=g) * 0.3, requires_grad=False)
        self.class_offset = nn.Parameter(torch.randn(NUM_CLASSES + 1, C, generator=g) * 0.2, requires_grad=False)
        self.calls = 0

    def forward(self, x, noise_label, class_labels=None):
        self.calls += 1
        tt = (torch.as_tensor(noise_label, dtype=torch.float32).reshape(-1) / 1000).view(-1, 1, 1, 1)
        h = torch.tanh(nn.functional.conv2d(x, self.weight, padding=1))
        out = (0.7 + 0.2 * torch.cos(math.pi * tt)) * x + 0.4 * (1 - tt) * h
        if class_labels is not None:
            out = out + self.class_offset[class_labels].view(-1, C, 1, 1)
        return out


def eps_denoiser(seed: int = 0, schedule: str = "linear", prediction: str = "eps") -> Denoiser:
    """Our denoiser around the toy network, read as predicting `prediction` (eps | x0 | v)."""
    return Denoiser(ToyEps(seed), DiffusionConfig(schedule=schedule, prediction=prediction)).eval()


# (our schedule, our prediction) -> diffusers' beta_schedule and prediction_type. "cosine" + "v" is the digits
# preset; diffusers' squaredcos_cap_v2 is the same Nichol & Dhariwal table (betas clipped at 0.999).
MODELS = [("linear", "eps"), ("cosine", "v"), ("linear", "x0")]
DIFFUSERS_NAMES = {"linear": "linear", "cosine": "squaredcos_cap_v2", "eps": "epsilon", "v": "v_prediction",
                   "x0": "sample"}


def vp(x: torch.Tensor, sigma) -> torch.Tensor:
    """Our sigma-view sample as the VP sample diffusers works with."""
    return x / math.sqrt(1 + float(sigma) ** 2)


def sample(name: str, *args, **kwargs) -> torch.Tensor:
    """Run sampler `name` to its end; its final x."""
    return drain(get_sampler(name)(*args, **kwargs))


def run_ours(name: str, steps: int, x_T: torch.Tensor, noise=None, model=("linear", "eps")):
    """Run our sampler from the VP sample x_T; returns the VP trajectory before each step, and the result."""
    den = eps_denoiser(0, *model)
    sigmas = get_sigmas(den, name, steps)
    x = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)
    traj = [vp(x, sigmas[0])]
    for step in get_sampler(name)(den, x, sigmas, noise=noise):  # step.x is x after step i, at sigmas[i + 1]
        assert step.sigma == sigmas[step.i] and step.i == len(traj) - 1
        traj.append(vp(step.x, sigmas[step.i + 1]))
    return traj[:-1], step.x


def run_diffusers(scheduler, steps: int, x_T: torch.Tensor, **step_kwargs):
    net = ToyEps()
    scheduler.set_timesteps(steps)
    x, traj = x_T.clone(), []
    for t in scheduler.timesteps:
        traj.append(x.clone())
        eps = net(x, torch.full((x.shape[0],), int(t)))
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return traj, x


def schedule_kwargs(model=("linear", "eps")):
    return dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule=DIFFUSERS_NAMES[model[0]],
                prediction_type=DIFFUSERS_NAMES[model[1]], timestep_spacing="trailing")


def x_T(seed=1):
    return torch.randn(2, C, H, H, generator=torch.Generator().manual_seed(seed))


def assert_trajectories_close(ours, theirs, atol=1e-4):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        err = (a - b).abs().max().item()
        assert err < atol, f"step {i}: max |ours - diffusers| = {err:.2e}"


# ---- the grid and the noise label ----------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 10, 20, 1000])
def test_discrete_grid_matches_diffusers_trailing_timesteps(steps):
    sched = diffusers.DDIMScheduler(**schedule_kwargs())
    sched.set_timesteps(steps)
    assert discrete_timesteps(steps, 1000).tolist() == sched.timesteps.tolist()


def test_noise_label_is_the_training_timestep_at_table_sigmas():
    den = eps_denoiser()
    sigmas = timestep_sigmas(den.schedule, 1000)[:-1]  # float32, as samplers pass them
    t = den.schedule.sigma_to_t(sigmas).double()
    assert (t - discrete_timesteps(1000, 1000)).abs().max() < 1e-4


# ---- diffusers cross-checks: whole trajectories, every step compared ------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("steps", [1000, 50, 10])
def test_ddpm_matches_diffusers(steps, model):
    x = x_T()
    sched = diffusers.DDPMScheduler(**schedule_kwargs(model), clip_sample=False, variance_type="fixed_small")
    # diffusers keeps alpha_bar in float32, so its 1 - alpha_bar near t = 0 (~1e-4) carries ~1e-3 relative error
    # and 1000 ancestral steps drift ~1.3e-4 from the exact posterior; give it the float64 table that we use.
    sched.alphas_cumprod = eps_denoiser(0, *model).schedule.alpha_bar.clone()
    theirs, out_theirs = run_diffusers(sched, steps, x, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same noise draws, in the same order
    ours, out = run_ours("ddpm", steps, x, noise=lambda like: torch.randn(like.shape, generator=g), model=model)
    assert_trajectories_close(ours, theirs)
    assert (out - out_theirs).abs().max() < 1e-4


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("steps", [10, 20, 100, 1000])
def test_ddim_matches_diffusers(steps, model):
    x = x_T()
    sched = diffusers.DDIMScheduler(**schedule_kwargs(model), clip_sample=False, set_alpha_to_one=True)
    theirs, out_theirs = run_diffusers(sched, steps, x, eta=0.0)
    ours, out = run_ours("ddim", steps, x, model=model)
    assert_trajectories_close(ours, theirs)
    assert (out - out_theirs).abs().max() < 1e-4


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("steps", [5, 10, 20, 50])
def test_dpmpp_2m_matches_diffusers(steps, model):
    x = x_T()
    sched = diffusers.DPMSolverMultistepScheduler(**schedule_kwargs(model), algorithm_type="dpmsolver++",
                                                  solver_order=2, solver_type="midpoint", lower_order_final=True,
                                                  final_sigmas_type="zero")
    theirs, out_theirs = run_diffusers(sched, steps, x)
    ours, out = run_ours("dpmpp-2m", steps, x, model=model)
    assert_trajectories_close(ours, theirs)
    assert (out - out_theirs).abs().max() < 1e-4


# ---- closed form: Gaussian data, exact denoiser and exact ODE solution ----------------------------------------

MU, S = 0.3, 0.5


def gaussian_denoiser(x, sigma, cond=None):
    """E[x0 | x] for x0 ~ N(MU, S^2) per pixel and x = x0 + sigma * eps."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1))) if torch.is_tensor(sigma) \
        else sigma
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def exact_ode_end(x, sigma_start):
    """The probability-flow ODE scales x - MU by sqrt(S^2 + sigma^2): its value at sigma = 0."""
    return MU + (x - MU) * S / math.sqrt(S**2 + sigma_start**2)


def gaussian_error(name: str, steps: int) -> float:
    sigmas = karras_sigmas(steps, 0.002, 80.0).double()
    x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    out = sample(name, gaussian_denoiser, x, sigmas)
    return (out - exact_ode_end(x, 80.0)).abs().max().item()


@pytest.mark.parametrize("name", ["euler", "heun", "ddim", "dpmpp-2m"])
def test_ode_solvers_converge_to_the_exact_gaussian_solution(name):
    errors = [gaussian_error(name, n) for n in (8, 16, 32, 64, 128)]  # outputs are O(1): MU + S * z
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 5e-2, errors


def test_heun_and_dpmpp_are_second_order_euler_first_order():
    # Error ratio when the grid is refined 2x: ~2 for a first-order method, ~4 for a second-order one. The last
    # step to sigma = 0 is first order in all of them but costs only O(sigma_min^2) here.
    def ratio(name):
        return gaussian_error(name, 32) / gaussian_error(name, 64)
    assert 1.5 < ratio("euler") < 2.6
    assert ratio("heun") > 3.2
    assert ratio("dpmpp-2m") > 3.2
    # at the same cost, EDM's 18-step Heun (35 calls) beats 35 Euler steps
    assert gaussian_error("heun", 18) < 0.75 * gaussian_error("euler", 35)


def test_ddpm_samples_the_gaussian_data_distribution(steps=1000):
    # Ancestral sampling is stochastic: check the law of its output, N(MU, S^2), on 20,000 pixels. (On a coarse
    # grid the "fixed small" posterior ignores the uncertainty of x0_pred and under-disperses: std 0.44 at 50.)
    sigmas = timestep_sigmas(eps_denoiser().schedule, steps).double()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20_000, 1, 1, 1, generator=g, dtype=torch.float64) * math.sqrt(1 + float(sigmas[0]) ** 2)
    out = sample("ddpm", gaussian_denoiser, x, sigmas,
                 noise=lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype))
    assert abs(out.mean().item() - MU) < 0.02  # standard error 0.5 / sqrt(20000) = 0.0035
    assert abs(out.std().item() - S) < 0.02


def test_heun_costs_2n_minus_1_calls():
    calls = []

    def counting(x, sigma, cond=None):
        calls.append(1)
        return gaussian_denoiser(x, sigma)

    for name in SAMPLERS:
        calls.clear()
        steps = 10
        sigmas = karras_sigmas(steps, 0.002, 80.0)
        sample(name, counting, torch.zeros(1, 1, 2, 2), sigmas)
        assert len(calls) == network_calls(name, steps), name
    assert network_calls("heun", 18) == 35


# ---- prediction types, guidance, determinism ------------------------------------------------------------------

def as_x0_and_v_nets(eps_net: ToyEps, den: Denoiser):
    """Networks predicting x0 and v that are exactly equivalent to `eps_net` (VP input x_vp, label t)."""
    sched = den.schedule

    def coeffs(t, x):
        ab = 1 / (1 + sched.t_to_sigma(torch.as_tensor(t)).double() ** 2)
        a, s = ab.sqrt().float().view(-1, 1, 1, 1), (1 - ab).sqrt().float().view(-1, 1, 1, 1)
        return a, s

    class X0(nn.Module):
        def forward(self, x, t, class_labels=None):
            a, s = coeffs(t, x)
            return (x - s * eps_net(x, t, class_labels)) / a

    class V(nn.Module):
        def forward(self, x, t, class_labels=None):
            a, s = coeffs(t, x)
            eps = eps_net(x, t, class_labels)
            return a * eps - s * (x - s * eps) / a

    return X0(), V()


def test_x0_and_v_prediction_give_the_same_denoiser():
    den = eps_denoiser()
    x0_net, v_net = as_x0_and_v_nets(den.net, den)
    d_x0 = Denoiser(x0_net, DiffusionConfig(prediction="x0"))
    d_v = Denoiser(v_net, DiffusionConfig(prediction="v"))
    x = torch.randn(3, C, H, H, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2])
    for sigma in [0.02, 0.5, 3.0, 40.0]:  # off-table sigmas: fractional noise labels
        xs = x * sigma + 0.1
        ref = den(xs, sigma, {"class_labels": labels})
        for d in (d_x0, d_v):
            out = d(xs, sigma, {"class_labels": labels})
            assert torch.allclose(out, ref, atol=1e-4 * max(1.0, sigma)), (d.prediction, sigma)
    # ... so a whole DPM-Solver++ run agrees too
    sigmas = get_sigmas(den, "dpmpp-2m", 10)
    xT = x * float(sigmas[0])
    ref = sample("dpmpp-2m", den, xT, sigmas)
    for d in (d_x0, d_v):
        assert (sample("dpmpp-2m", d, xT, sigmas) - ref).abs().max() < 1e-3


def test_guidance_zero_is_the_conditional_denoiser_and_guided_is_one_call():
    den = eps_denoiser()
    null = {"class_labels": torch.tensor([NUM_CLASSES])}
    cond = {"class_labels": torch.tensor([0, 2])}
    x = torch.randn(2, C, H, H, generator=torch.Generator().manual_seed(4)) * 2
    assert cfg_denoiser(den, 0.0, null) is den
    w = 2.5
    guided = cfg_denoiser(den, w, null)
    den.net.calls = 0
    out = guided(x, torch.tensor(2.0), cond)
    assert den.net.calls == 1  # conditional and null halves in one batched call
    expected = (1 + w) * den(x, 2.0, cond) - w * den(x, 2.0, {"class_labels": torch.tensor([NUM_CLASSES] * 2)})
    assert torch.allclose(out, expected, atol=1e-5)
    # one call per step in a whole run, too
    den.net.calls = 0
    sample("dpmpp-2m", guided, x * 100, get_sigmas(den, "dpmpp-2m", 10), cond)
    assert den.net.calls == 10


def test_guidance_interval_guides_inside_and_costs_one_half_call_outside():
    den = eps_denoiser()
    null = {"class_labels": torch.tensor([NUM_CLASSES])}
    cond = {"class_labels": torch.tensor([0, 2])}
    x = torch.randn(2, C, H, H, generator=torch.Generator().manual_seed(5)) * 2
    w, interval = 2.0, (1.0, 10.0)
    limited, full = cfg_denoiser(den, w, null, interval), cfg_denoiser(den, w, null)
    assert torch.allclose(limited(x, torch.tensor(2.0), cond), full(x, torch.tensor(2.0), cond))  # inside
    assert torch.equal(limited(x, torch.tensor(10.0), cond), full(x, torch.tensor(10.0), cond))  # upper bound is in
    for outside in (0.5, 1.0, 20.0):
        assert torch.equal(limited(x, torch.tensor(outside), cond), den(x, outside, cond))
    # a sampling run pays the doubled batch only on the steps inside the interval
    sigmas = get_sigmas(den, "ddim", 20)
    rows = []
    den.net.forward = (lambda f: lambda x, *a, **k: rows.append(len(x)) or f(x, *a, **k))(den.net.forward)
    sample("ddim", limited, x * 100, sigmas, cond)
    inside = int(((sigmas[:-1] > 1.0) & (sigmas[:-1] <= 10.0)).sum())
    assert 0 < inside < 20 and sum(rows) == 2 * 20 + 2 * inside


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_same_images_whatever_the_batch_size(name):
    from conftest import bare_generate as generate

    den = eps_denoiser()
    kw = dict(labels=torch.tensor([0, 1, 2, 0]), num_classes=NUM_CLASSES, shape=(C, H, H), sampler=name,
              steps=5, guidance=1.0, seed=11)
    a = generate(den, n=4, batch_size=4, **kw)
    b = generate(den, n=4, batch_size=3, **kw)
    assert a.dtype == torch.uint8 and a.shape == (4, C, H, H)
    assert torch.equal(a, b)
    c = generate(den, n=4, batch_size=4, **{**kw, "seed": 12})
    assert not torch.equal(a, c)


def test_bf16_sampling_keeps_fp32_state_close_to_fp32_and_batch_independent():
    from conftest import bare_generate as generate

    den = eps_denoiser()
    kw = dict(labels=torch.tensor([0, 1, 2, 0]), num_classes=NUM_CLASSES, shape=(C, H, H), sampler="dpmpp-2m",
              steps=6, guidance=1.0, seed=3)
    fp32 = generate(den, n=4, batch_size=4, precision="fp32", **kw)
    bf16 = generate(den, n=4, batch_size=4, precision="bf16", **kw)
    assert bf16.dtype == torch.uint8 and not torch.equal(fp32, bf16)  # autocast really ran
    assert (fp32.int() - bf16.int()).abs().float().mean() < 3  # within a few of 255 levels on average
    assert torch.equal(bf16, generate(den, n=4, batch_size=3, precision="bf16", **kw))


def test_auto_precision_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch):
    import noisecraft.precision as prec

    flags = prec.cpu_bf16_flags()
    assert flags <= {"amx_bf16", "avx512_bf16"}  # read from this machine's /proc/cpuinfo, whatever it has
    for found, capped, expected in ((frozenset(), False, False), (frozenset({"avx512_bf16"}), False, True),
                                    (frozenset({"amx_bf16"}), False, True), (frozenset({"avx512_bf16"}), True, False)):
        monkeypatch.setattr(prec, "cpu_bf16_flags", lambda found=found: found)
        monkeypatch.setattr(prec, "kernels_capped_below_avx512", lambda capped=capped: capped)
        assert prec.use_bf16("cpu", "auto") is expected
        assert prec.use_bf16("cpu", "bf16") and not prec.use_bf16("cpu", "fp32")  # explicit choices win


def test_auto_precision_stays_fp32_when_the_kernels_are_capped_to_avx2():
    """Emulating an AVX2 laptop on an AVX-512 machine (the README's recipe): auto must not pick emulated bf16."""
    import subprocess
    import sys

    code = "import noisecraft.precision as p; print(p.use_bf16('cpu', 'auto'), p.kernels_capped_below_avx512())"
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


# ---- the CLI, end to end, on a tiny trained checkpoint --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from noisecraft.cli import main

    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--preset", "digits", "--out", str(out), "--steps", "2", "--no-progress", "--device", "cpu",
               "--model.unet.base_channels=8", "--train.sample_every=100000", "--train.val_every=100000",
               "--train.batch_size=8", "--train.final_figures=false"])
    assert rc == 0
    return out


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_works_through_the_cli(tiny_run, tmp_path, name):
    from noisecraft.cli import main

    out = tmp_path / name
    rc = main(["sample", "--checkpoint", str(tiny_run), "--sampler", name, "--steps", "3", "--n", "4",
               "--guidance", "1.5", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    assert len(list(out.glob("0*.png"))) == 4 and (out / "grid.png").exists()


def test_cli_rejects_unknown_sampler(tiny_run, tmp_path, capsys):
    from noisecraft.cli import main

    rc = main(["sample", "--checkpoint", str(tiny_run), "--sampler", "plms", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "error:" in capsys.readouterr().err
