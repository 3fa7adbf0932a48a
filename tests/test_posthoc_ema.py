"""Post-hoc EMA (Karras et al. 2024): the power-function profile's closed forms, the least-squares reconstruction
from snapshots, snapshots across a resume, `noisecraft ema` end to end, and its bad inputs."""
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import TINY
from noisecraft.phema import (PowerEMA, beta_at, gamma_of, profile_inner, profile_weights, read_snapshots,
                              reconstruct, sigma_rel_of, solve_coefficients)
from noisecraft.rundir import RunDir

PROFILES = ["--train.posthoc_ema=0.05,0.10", "--train.posthoc_every=2", "--train.final_figures=false",
            "--train.num_threads=1"]


@pytest.fixture(scope="module")
def phema_run(tmp_path_factory):
    """A tiny class-conditional digits run, 8 steps, keeping profiles 0.05 and 0.10 with a snapshot every 2 steps."""
    from noisecraft.cli import main

    out = tmp_path_factory.mktemp("phema") / "run"
    assert main(["train", "--preset", "digits", "--out", str(out), "--steps", "8", "--no-progress", *TINY,
                 *PROFILES]) == 0
    return out


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("sigma_rel", [0.02, 0.05, 0.10, 0.20])
def test_gamma_and_sigma_rel_are_inverse_and_match_the_tracked_weights(sigma_rel):
    gamma = gamma_of(sigma_rel)
    assert sigma_rel_of(gamma) == pytest.approx(sigma_rel, rel=1e-10)
    t = 20_000
    w = profile_weights(gamma, t)  # the weight of theta_1..theta_t in the EMA that beta_at tracks
    tau = np.arange(1, t + 1) / t
    mean = (w * tau).sum()
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.sqrt((w * (tau - mean) ** 2).sum()) == pytest.approx(sigma_rel, rel=2e-3)  # the definition


def test_the_beta_recursion_gives_the_profile_weights():
    gamma, t = gamma_of(0.1), 300
    theta = np.random.default_rng(0).normal(size=t)
    ema = 0.0
    for k in range(1, t + 1):
        b = beta_at(gamma, k)
        ema = b * ema + (1 - b) * theta[k - 1]
    assert ema == pytest.approx((profile_weights(gamma, t) * theta).sum(), rel=1e-10)


def test_profile_inner_product_matches_a_numerical_integral():
    ga, gb, ta, tb = gamma_of(0.05), gamma_of(0.12), 700.0, 400.0
    tau = np.linspace(0, ta, 2_000_001)
    pa = (ga + 1) * tau ** ga / ta ** (ga + 1)
    pb = np.where(tau <= tb, (gb + 1) * tau ** gb / tb ** (gb + 1), 0.0)
    numeric = np.trapezoid(pa * pb, tau) if hasattr(np, "trapezoid") else np.trapz(pa * pb, tau)
    assert profile_inner(ta, ga, tb, gb) == pytest.approx(numeric, rel=1e-4)
    assert profile_inner(tb, gb, ta, ga) == pytest.approx(profile_inner(ta, ga, tb, gb), rel=1e-12)  # symmetric


def test_a_stored_profile_is_reconstructed_by_itself():
    steps = [s for s in range(100, 1001, 100) for _ in range(2)]
    gammas = [gamma_of(s) for _ in range(10) for s in (0.05, 0.10)]
    x = solve_coefficients(steps, gammas, 1000, [gamma_of(0.10)])[:, 0]
    unit = np.zeros(len(steps))
    unit[-1] = 1.0
    np.testing.assert_allclose(x, unit, atol=1e-6)


# ---------------------------------------------------------------- reconstruction from snapshot files


def _train_trajectory(tmp_path, trajectory, sigma_rels=(0.05, 0.10), every=25, extra=()):
    """Run PowerEMA over `trajectory` (T, P) on a bias-only module, writing snapshots; returns the run and the
    profiles of `extra` sigma_rels tracked directly (what reconstruction should give)."""
    net = nn.Linear(1, trajectory.shape[1], bias=True)
    with torch.no_grad():
        net.weight.zero_()
    phema, direct = PowerEMA(net, sigma_rels), PowerEMA(net, extra) if extra else None
    run = RunDir(tmp_path)
    for step, theta in enumerate(trajectory):
        with torch.no_grad():
            net.bias.copy_(theta)
        phema.update(net, step)
        if direct is not None:
            direct.update(net, step)
        if (step + 1) % every == 0:
            phema.save_snapshot(run.snapshot(step + 1), step + 1)
    return run, direct


def test_reconstruction_of_a_stored_profile_returns_its_weights(tmp_path):
    traj = torch.cumsum(torch.randn(400, 64, generator=torch.Generator().manual_seed(0)), 0) * 0.01
    run, direct = _train_trajectory(tmp_path, traj, extra=(0.10,))
    (params,), _ = reconstruct(read_snapshots(run.root), [0.10])
    torch.testing.assert_close(params["bias"], direct.modules[0].bias, atol=2e-3, rtol=1e-3)  # fp16 snapshots


def test_reconstruction_of_an_unstored_length_is_close_to_tracking_it(tmp_path):
    traj = torch.cumsum(torch.randn(600, 256, generator=torch.Generator().manual_seed(1)), 0) * 0.01
    run, direct = _train_trajectory(tmp_path, traj, every=20, extra=(0.07, 0.15))
    params, _ = reconstruct(read_snapshots(run.root), [0.07, 0.15])
    for p, m in zip(params, direct.modules):
        err = (p["bias"] - m.bias).norm() / (m.bias - traj[-1]).norm()  # against how far the EMA is from the end
        assert err < 0.05, float(err)


def test_constant_weights_are_reconstructed_exactly(tmp_path):
    traj = torch.tensor([[0.5, -1.25, 3.0, 0.0]]).repeat(200, 1)  # representable in fp16
    run, _ = _train_trajectory(tmp_path, traj)
    for p in reconstruct(read_snapshots(run.root), [0.02, 0.06, 0.25])[0]:
        torch.testing.assert_close(p["bias"], traj[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- training, resume, CLI


def test_training_keeps_the_profiles_in_checkpoints_and_snapshots(phema_run):
    meta = json.loads((phema_run / "checkpoints" / "last.json").read_text())
    assert {"net", "net_ema", "net_phema0", "net_phema1"} <= set(meta["modules"])
    assert [s for s, _ in RunDir(phema_run).snapshots()] == [2, 4, 6, 8]


def test_profiles_change_nothing_that_is_trained(phema_run, tiny_runs):
    from noisecraft.checkpoint import load_checkpoint

    with_profiles = load_checkpoint(phema_run, "last")
    plain_out = phema_run.parent / "plain"
    from noisecraft.cli import main

    assert main(["train", "--preset", "digits", "--out", str(plain_out), "--steps", "8", "--no-progress", *TINY,
                 *PROFILES[2:]]) == 0
    plain = load_checkpoint(plain_out, "last")
    for key, value in plain.tensors.items():
        if key.startswith(("net.", "net_ema.")):
            assert torch.equal(value, with_profiles.tensors[key]), key


def test_resume_continues_the_snapshots_exactly(phema_run, tmp_path, cli):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    base = ["train", "--preset", "digits", "--out", out, "--no-progress", *TINY, *PROFILES]
    assert cli(*base, "--steps", "4")[0] == 0
    shutil.copyfile(out / "ema_snapshots" / "step_00000002.safetensors", out / "ema_snapshots" / "step_00000006"
                    ".safetensors")  # a crash after a snapshot, before its checkpoint: must not survive the resume
    assert cli("train", "--out", out, "--resume", "--steps", "8", "--no-progress")[0] == 0
    got, want = RunDir(out).snapshots(), RunDir(phema_run).snapshots()
    assert [s for s, _ in got] == [s for s, _ in want]
    for (_, a), (_, b) in zip(got, want):
        ta, tb = load_file(a), load_file(b)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_ema_writes_a_checkpoint_that_samples(phema_run, tmp_path, cli):
    from noisecraft.checkpoint import load_checkpoint

    code, out, err = cli("ema", "--checkpoint", phema_run, "--sigma-rel", "0.07")
    assert code == 0, err
    path = phema_run / "checkpoints" / "posthoc_ema_0.070.safetensors"
    ckpt = load_checkpoint(path)
    assert ckpt.meta["posthoc_ema"]["sigma_rel"] == 0.07 and ckpt.step == 8
    fixed = load_checkpoint(phema_run, "last").tensors
    ema_keys = [k for k in ckpt.tensors if k.startswith("net_ema.")]
    assert ema_keys and any(not torch.equal(ckpt.tensors[k], fixed[k]) for k in ema_keys)  # not the fixed EMA
    code, _, err = cli("sample", "--checkpoint", path, "--n", "4", "--out", tmp_path / "s", "--device", "cpu")
    assert code == 0, err
    assert len(list((tmp_path / "s").glob("*.png"))) >= 4


def test_sweep_scores_each_length_beside_the_fixed_ema(phema_run, tmp_path, cli):
    code, out, err = cli("ema", "--checkpoint", phema_run, "--sweep", "--sigma-rels", "0.05,0.1", "--n", "10",
                         "--out", tmp_path / "sweep", "--device", "cpu")
    assert code == 0, err
    result = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    rows, fixed = result["reconstructed"], result["fixed_ema"]
    assert [r["sigma_rel"] for r in rows] == [0.05, 0.1]
    # the fixed EMA scored as training validated it: the run's own last validation loss, to float precision
    last_val = [json.loads(line) for line in (phema_run / "log.jsonl").read_text().splitlines()
                if json.loads(line)["kind"] == "val"][-1]
    assert last_val["step"] == result["step"] == 8
    assert fixed["val_loss"] == pytest.approx(last_val["val_loss"], rel=1e-5)
    assert rows[0]["val_loss"] != rows[1]["val_loss"] != fixed["val_loss"]  # each length its own weights
    for r in rows + [fixed]:  # the share of 10 judged samples
        assert r["class_accuracy"] * 10 == pytest.approx(round(r["class_accuracy"] * 10))
    best = min(rows, key=lambda r: r["val_loss"])
    assert result["best"]["val_loss"] == {"sigma_rel": best["sigma_rel"], "value": best["val_loss"],
                                          "fixed_ema": fixed["val_loss"],
                                          "beats_fixed": best["val_loss"] < fixed["val_loss"]}
    assert fixed["ema_decay"] == 0.995
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000


def test_explain_draws_the_posthoc_figure_only_for_runs_with_profiles(phema_run, tiny_runs, tmp_path):
    from noisecraft.explain import ExplainContext, ExplainOptions, explain
    from noisecraft.pipeline import load_pipeline

    index = explain(phema_run, tmp_path, ExplainOptions(figures=("posthoc-ema",)), device="cpu")
    assert index["figures"][0]["name"] == "posthoc-ema" and (tmp_path / "posthoc-ema.png").is_file()
    assert not ExplainContext(load_pipeline(tiny_runs / "digits", "cpu"), ExplainOptions()).supports("posthoc")


# ---------------------------------------------------------------- bad input


def test_a_run_without_profiles_is_one_error_line(tiny_runs, cli):
    code, _, err = cli("ema", "--checkpoint", tiny_runs / "digits", "--sigma-rel", "0.05")
    assert code == 2
    assert err.strip() == ("error: this run kept no post-hoc EMA profiles; train with "
                           "--train.posthoc_ema=0.05,0.10")


@pytest.mark.parametrize("args, needle", [
    (["--sigma-rel", "0.5"], "sigma_rel must be in (0, 0.2887)"),
    (["--sigma-rel", "0"], "sigma_rel must be in (0, 0.2887)"),
    (["--sweep", "--sigma-rels", "0.05,0.4"], "sigma_rel must be in (0, 0.2887)"),
    (["--sweep", "--sigma-rels", "0.05,x"], "--sigma-rels takes comma-separated numbers"),
    ([], "pass --sigma-rel S"),
    (["--sigma-rel", "0.05", "--sweep"], "pass --sigma-rel S"),
])
def test_bad_ema_arguments_are_one_error_line(phema_run, cli, args, needle):
    code, _, err = cli("ema", "--checkpoint", phema_run, *args)
    assert code == 2 and err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1


def test_too_few_snapshots_is_an_error(tmp_path, cli):
    out = tmp_path / "run"
    assert cli("train", "--preset", "digits", "--out", out, "--steps", "2", "--no-progress", *TINY,
               *PROFILES[:1], "--train.posthoc_every=100", *PROFILES[2:])[0] == 0
    code, _, err = cli("ema", "--checkpoint", out, "--sigma-rel", "0.05")
    assert code == 2 and "needs at least 2 snapshots" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["0.5", "0.05,0.05", "-0.1"])
def test_bad_profiles_are_refused_before_training(tmp_path, cli, value):
    code, _, err = cli("train", "--preset", "digits", "--out", tmp_path / "r", "--steps", "2", *TINY,
                       f"--train.posthoc_ema={value}")
    assert code == 2 and "train.posthoc_ema must be distinct sigma_rel values" in err
