"""Consistency distillation (`noisecraft distill`): the sampler and the loss against closed forms, a student run
that samples on its own at one network call a step, resumes bit for bit like any run, and refuses teachers it
cannot use with one clear line."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from noisecraft.diffusion.consistency import consistency_distillation_loss, pseudo_huber
from noisecraft.samplers import sample_consistency as consistency


def test_consistency_sampling_lands_on_the_models_output_and_renoises_between_steps():
    x0 = torch.randn(2, 1, 4, 4)
    calls = []

    def f(x, sigma, cond=None):
        calls.append(float(sigma))
        return x0

    z = torch.randn(2, 1, 4, 4)
    steps = list(consistency(f, 80 * torch.randn(2, 1, 4, 4), torch.tensor([80.0, 2.0, 0.0]), noise=lambda x: z))
    assert calls == [80.0, 2.0] and len(steps) == 2  # one call a step
    torch.testing.assert_close(steps[0].x, x0 + 2.0 * z)  # noised back to the next level with fresh noise
    assert torch.equal(steps[-1].x, x0)  # the last step lands on f's output


def test_a_consistency_draw_starts_at_the_top_and_renoises_to_chosen_levels(tiny_runs):
    from noisecraft.config import preset
    from noisecraft.diffusion.denoiser import Denoiser
    from noisecraft.pipeline import load_pipeline
    from noisecraft.samplers import CONSISTENCY_SIGMAS, get_sigmas, karras_sigmas, timestep_sigmas

    den = load_pipeline(tiny_runs / "digits", "cpu").denoiser  # the quickstart: rectified flow, no discrete table
    assert den.schedule is None and den.prediction == "flow"
    v = Denoiser(torch.nn.Identity(), preset("digits-v").diffusion)  # a discrete schedule starts at its top timestep
    assert get_sigmas(v, "consistency", 2)[0] == float(timestep_sigmas(v.schedule, 1)[0])
    top = den.sigma_max
    lo, hi = CONSISTENCY_SIGMAS
    torch.testing.assert_close(get_sigmas(den, "consistency", 1), torch.tensor([top, 0.0]))
    torch.testing.assert_close(get_sigmas(den, "consistency", 2), torch.tensor([top, hi, 0.0]))
    four = get_sigmas(den, "consistency", 4)
    torch.testing.assert_close(four[1:-1], karras_sigmas(3, lo, hi)[:-1])
    assert four[0] == top and four[-1] == 0 and (four[:-1].diff() < 0).all()


def test_pseudo_huber_is_l2_near_zero_and_l1_far_out():
    d = torch.zeros(1, 1, 2, 2)
    assert pseudo_huber(d, 0.5).item() == 0
    small = torch.full((1, 1, 2, 2), 1e-3, dtype=torch.float64)
    c = 0.5 * 2  # c sqrt(dim), dim 4
    torch.testing.assert_close(pseudo_huber(small, 0.5), small.pow(2).sum().view(1) / (2 * c), rtol=1e-3, atol=0)
    big = torch.full((1, 1, 2, 2), 1e3, dtype=torch.float64)
    torch.testing.assert_close(pseudo_huber(big, 0.5), torch.tensor([2e3 - c], dtype=torch.float64), rtol=1e-4, atol=0)


def test_the_loss_is_zero_at_sigma_s_zero_when_the_student_is_the_teachers_x0_estimate():
    """At sigma_s = 0 the target is the teacher's ODE step to 0, i.e. its x0 estimate: a student equal to the
    teacher there has zero loss; one that is not pays for the difference."""
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    teacher = lambda x, s, c=None: 0.5 * x / (1 + s.view(-1, 1, 1, 1) ** 2) ** 0.5  # noqa: E731
    sigma_t, zero = torch.tensor([3.0, 1.0, 0.5]), torch.zeros(3)
    loss = consistency_distillation_loss(teacher, teacher, teacher, x0, None, sigma_t, zero, eps, 0.03)
    assert torch.allclose(loss, torch.zeros(3), atol=1e-6)
    other = lambda x, s, c=None: teacher(x, s) + 0.1  # noqa: E731
    assert (consistency_distillation_loss(other, teacher, teacher, x0, None, sigma_t, zero, eps, 0.03) > 0).all()


def test_the_target_above_sigma_s_zero_is_the_exact_ode_step_of_a_point_mass_teacher():
    """For data that is one point mu, the exact denoiser is D(x, sigma) = mu and the probability-flow ODE
    dx/dsigma = (x - D) / sigma has the closed form x(sigma_s) = mu + (sigma_s / sigma_t) (x_t - mu): the target
    (the EMA student at sigma_s, here the identity) must be exactly that, and a student off it pays the pseudo-Huber
    of its distance."""
    torch.manual_seed(0)
    mu, x0, eps = torch.randn(1, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    sigma_t, sigma_s = torch.tensor([3.0, 1.0, 0.5]), torch.tensor([1.5, 0.2, 0.4])
    st, ss = sigma_t.view(-1, 1, 1, 1), sigma_s.view(-1, 1, 1, 1)
    exact = mu + (ss / st) * ((x0 + st * eps) - mu)  # (3, 1, 4, 4)
    teacher = lambda x, s, c=None: mu.expand_as(x)  # noqa: E731
    levels = []

    def target(x, s, c=None):
        levels.append(s.clone())
        return x  # f(x, sigma_s) = x: the target is the teacher's step itself

    def student(x, s, c=None):
        return exact

    loss = consistency_distillation_loss(student, target, teacher, x0, None, sigma_t, sigma_s, eps, 0.03)
    torch.testing.assert_close(loss, torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(levels[0], sigma_s)  # the target is asked at sigma_s
    off = lambda x, s, c=None: exact + 0.1  # noqa: E731
    torch.testing.assert_close(consistency_distillation_loss(off, target, teacher, x0, None, sigma_t, sigma_s, eps,
                                                             0.03), pseudo_huber(torch.full_like(exact, 0.1), 0.03))


@pytest.fixture(scope="module")
def student(tiny_runs, tmp_path_factory):
    from noisecraft.cli import main

    out = tmp_path_factory.mktemp("student") / "digits-cd"
    assert main(["distill", "--checkpoint", str(tiny_runs / "digits"), "--out", str(out), "--steps", "4",
                 "--no-progress", "--train.num_threads=1"]) == 0
    return out


def test_a_student_samples_alone_at_one_network_call_a_step(student, tiny_runs, monkeypatch):
    from noisecraft.checkpoint import load_checkpoint
    from noisecraft.pipeline import load_pipeline
    from noisecraft.rundir import content_hash

    ckpt = load_checkpoint(student)
    teacher = ckpt.meta["teacher"]
    assert teacher["path"] == str(load_checkpoint(tiny_runs / "digits", "best").path)
    assert teacher["sha256"] == content_hash([load_checkpoint(tiny_runs / "digits", "best").path])
    cfg = json.loads((student / "config.json").read_text())
    assert cfg["sample"]["sampler"] == "consistency" and cfg["sample"]["guidance"] == 0
    import noisecraft.pipeline as pipeline_module

    loaded = []
    real_load = pipeline_module.load_checkpoint
    monkeypatch.setattr(pipeline_module, "load_checkpoint", lambda path, *a: loaded.append(path) or real_load(path, *a))
    pipe = load_pipeline(student, "cpu")
    assert loaded == [student]  # alone: the teacher is recorded, never loaded to sample
    rows = [0]
    pipe.denoiser.net.register_forward_hook(lambda m, a, out: rows.__setitem__(0, rows[0] + out.shape[0]))
    for steps in (1, 2, 4):
        rows[0] = 0
        images = pipe.generate(n=3, class_index=2, steps=steps, seed=0)
        assert images.shape == (3, 1, 28, 28) and rows[0] == 3 * steps  # unguided: one call a step
    assert (student / "fewstep.png").is_file() and (student / "samples" / "final.png").is_file()


def test_a_killed_distillation_resumes_bit_for_bit(student, tiny_runs, tmp_path, cli):
    from noisecraft.checkpoint import load_checkpoint

    half = tmp_path / "half"  # stopped at step 2 of the 4 the student fixture ran (the same grid schedule)
    assert cli("distill", "--checkpoint", tiny_runs / "digits", "--out", half, "--steps", 2, "--no-progress",
               "--train.num_threads=1", "--train.val_every=2", "--train.sample_every=2", "--train.ckpt_every=2",
               "--distill.grid_ramp_steps=4")[0] == 0
    code, _, err = cli("distill", "--out", half, "--resume", "--steps", 4, "--no-progress")
    assert code == 0, err
    a, b = load_checkpoint(student, "last"), load_checkpoint(half, "last")
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k


def test_teachers_that_cannot_be_distilled_are_refused(student, tiny_runs, tmp_path, cli):
    code, _, err = cli("distill", "--checkpoint", student, "--out", tmp_path / "s2")
    assert code == 2 and "already a distilled student" in err and err.count("\n") == 1
    code, _, err = cli("distill", "--checkpoint", tiny_runs / "digits", "--out", tmp_path / "s3", "--steps", 0)
    assert code == 2 and "--steps must be > 0" in err
    code, _, err = cli("distill", "--out", tmp_path / "nothing", "--resume")
    assert code == 2 and "no distillation to resume" in err
    # a teacher whose checkpoint changed since the distillation started: its resume is refused
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_runs / "digits", teacher)
    assert cli("distill", "--checkpoint", teacher, "--out", tmp_path / "s4", "--steps", 2, "--no-progress",
               "--train.num_threads=1")[0] == 0
    best = teacher / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:-1] + b"\x00")
    code, _, err = cli("distill", "--out", tmp_path / "s4", "--resume", "--steps", 4, "--no-progress")
    assert code == 2 and "changed since this distillation started" in err


def test_an_autoencoder_run_is_not_a_teacher(tmp_path, cli):
    from test_latent import TINY_AE

    ae = tmp_path / "ae"
    assert cli("train-autoencoder", "--out", ae, "--steps", 1, *TINY_AE)[0] == 0
    code, _, err = cli("distill", "--checkpoint", ae, "--out", tmp_path / "s")
    assert code == 2 and "is an autoencoder run" in err


def test_the_web_app_offers_a_student_as_a_few_step_model(student):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from serve_support import LiveServer

    from noisecraft.serve import ServeConfig

    with LiveServer(ServeConfig(runs=student.parent, device="cpu")) as live:
        models = httpx.get(live.url + "/api/models", timeout=30).json()["models"]
    (m,) = [m for m in models if m["name"] == student.name]
    assert m["few_step"] is True and m["defaults"] == {"sampler": "consistency", "steps": 2, "guidance": 0.0}


def test_a_student_trains_on_this_machines_threads_not_the_teachers(tiny_runs, monkeypatch):
    import noisecraft.checkpoint
    from noisecraft.train.distill import student_config

    ckpt = noisecraft.checkpoint.load_checkpoint(tiny_runs / "digits", "best")
    ckpt.config.train.num_threads = 1  # a teacher trained pinned to one thread
    monkeypatch.setattr(noisecraft.checkpoint, "load_checkpoint", lambda *a, **k: ckpt)
    assert student_config(tiny_runs / "digits").train.num_threads == 0
