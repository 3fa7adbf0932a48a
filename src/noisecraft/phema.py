"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", EDM2),
and the EMA update every average of weights shares. Below `train` and `evaluate`, which both use it: training
tracks the profiles and writes snapshots, the post-hoc sweep reconstructs and scores them.

A power-function EMA averages the weights theta_tau of steps tau <= t with weight proportional to tau^gamma: its
width relative to the training length, sigma_rel (the standard deviation of tau / t under those weights), does not
depend on t, unlike a fixed decay's. Training keeps two such profiles (`train.posthoc_ema`, e.g. 0.05 and 0.10) and
writes snapshots of both every `train.posthoc_every` steps. Each snapshot is a known weighting of the training
trajectory, so a weighted sum of snapshots is too: least squares in the space of weightings (the inner products of
power functions have a closed form) finds the sum whose weighting is nearest to the profile of any other sigma_rel,
and the same sum of the snapshots' weights is that EMA, reconstructed after training.

    gamma -> sigma_rel:  sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3))
    sigma_rel -> gamma:  the largest root of gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s), s = sigma_rel^-2
    tracking, step t:    ema <- beta_t ema + (1 - beta_t) theta_t,  beta_t = (1 - 1/t)^(gamma + 1)
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from noisecraft.config import POSTHOC_SIGMA_MAX
from noisecraft.errors import UserError
from noisecraft.rundir import EMA_SNAPSHOTS, RunDir, atomic_write_bytes, run_root

SNAPSHOT_FORMAT = "noisecraft-posthoc-ema"  # the key of a snapshot's metadata in its safetensors header
MIN_SNAPSHOTS = 2  # snapshot steps a reconstruction needs (fewer: no trajectory to weigh)


# ---------------------------------------------------------------- updates (the fixed EMA's too)


def ema_decay_at(decay: float, step: int) -> float:
    """(1 + step) / (10 + step), capped at `decay`: early averages forget the initialisation."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    torch._foreach_lerp_([p for p in ema.parameters()], [p.detach() for p in model.parameters()], 1.0 - decay)


# ---------------------------------------------------------------- the power-function profile


def sigma_rel_of(gamma: float) -> float:
    """The relative standard deviation of the profile tau^gamma on [0, t] (EDM2 eq. 123)."""
    return float(np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))))


def gamma_of(sigma_rel: float) -> float:
    """The exponent whose profile has relative width sigma_rel: the largest real root of the cubic above."""
    if not 0 < sigma_rel < POSTHOC_SIGMA_MAX:
        raise UserError(f"sigma_rel must be in (0, {POSTHOC_SIGMA_MAX:.4f}) (the widest profile with gamma >= 0 is the "
                        f"uniform average), got {sigma_rel}")
    s = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def beta_at(gamma: float, t: int) -> float:
    """The decay of the update that follows training step t (1-based; t = 1 copies the weights)."""
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


def profile_weights(gamma: float, t: int) -> np.ndarray:
    """The weight of each step's weights theta_1..theta_t in the tracked EMA at step t: (1 - beta_k) (k/t)^(gamma+1),
    which sums to 1 exactly (telescoping)."""
    k = np.arange(1, t + 1, dtype=np.float64)
    return (k ** (gamma + 1) - (k - 1) ** (gamma + 1)) / float(t) ** (gamma + 1)


def profile_inner(t_a, gamma_a, t_b, gamma_b):
    """<p_a, p_b> of two profiles p(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t] (densities that integrate
    to 1): (g_a + 1)(g_b + 1) / ((g_a + g_b + 1) t_max) * (t_min / t_max)^(gamma of the longer one). Broadcasts."""
    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    a_first = t_a <= t_b
    t_max, t_min = np.maximum(t_a, t_b), np.minimum(t_a, t_b)
    g_long = np.where(a_first, gamma_b, gamma_a)
    return (gamma_a + 1) * (gamma_b + 1) / ((gamma_a + gamma_b + 1) * t_max) * (t_min / t_max) ** g_long


def solve_coefficients(steps, gammas, target_step: int, target_gammas) -> np.ndarray:
    """(N, M) weights of N stored profiles (at `steps`, exponents `gammas`) whose sums best match each of M target
    profiles at `target_step` in L2 (the normal equations of the least-squares fit), normalised to sum to 1 so
    that constant weights are kept exactly."""
    steps, gammas = np.asarray(steps, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
    target = np.asarray(target_gammas, dtype=np.float64)
    gram = profile_inner(steps[:, None], gammas[:, None], steps[None, :], gammas[None, :])  # (N, N)
    rhs = profile_inner(steps[:, None], gammas[:, None], float(target_step), target[None, :])  # (N, M)
    x = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return x / x.sum(axis=0, keepdims=True)


# ---------------------------------------------------------------- tracking during training


class PowerEMA:
    """Power-function EMAs of a module's weights, one per sigma_rel, and their snapshots in the run directory."""

    def __init__(self, module: nn.Module, sigma_rels: tuple[float, ...]):
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = [gamma_of(s) for s in self.sigma_rels]
        self.modules = [copy.deepcopy(module).requires_grad_(False).eval() for _ in self.sigma_rels]

    def parts(self, name: str) -> dict[str, nn.Module]:
        """Checkpoint parts `<name>_phema0`, `<name>_phema1`, ... (so a resume continues every profile exactly)."""
        return {f"{name}_phema{i}": m for i, m in enumerate(self.modules)}

    def update(self, module: nn.Module, step: int) -> None:
        """After the optimizer step of 0-based `step`, i.e. training step t = step + 1."""
        for gamma, ema in zip(self.gammas, self.modules):
            ema_update(ema, module, beta_at(gamma, step + 1))

    def save_snapshot(self, path: Path, step: int) -> None:
        """Every profile's parameters (fp16) at training step `step`, written atomically."""
        from safetensors.torch import save

        tensors = {f"profile{i}.{k}": p.detach().to(torch.float16).cpu().contiguous()
                   for i, m in enumerate(self.modules) for k, p in m.named_parameters()}
        meta = {"step": int(step), "sigma_rels": list(self.sigma_rels), "gammas": self.gammas}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, save(tensors, metadata={SNAPSHOT_FORMAT: json.dumps(meta)}))


def maybe_snapshot(phema: PowerEMA, root: Path | None, done: int, every: int, total: int) -> None:
    """A snapshot after step `done` when it is due: every `every` steps and at the end of training."""
    if root is not None and (done % every == 0 or done == total):
        phema.save_snapshot(RunDir(root).snapshot(done), done)


# ---------------------------------------------------------------- reconstruction after training


@dataclass
class Snapshot:
    step: int
    path: Path
    sigma_rels: list[float]
    gammas: list[float]


def read_snapshots(root: Path, upto: int | None = None) -> list[Snapshot]:
    """The run's post-hoc EMA snapshots (those at or before step `upto`), checked to be of one set of profiles."""
    from safetensors import safe_open

    run = RunDir(root)
    found = []
    for step, path in run.snapshots():
        if upto is not None and step > upto:
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})[SNAPSHOT_FORMAT])
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"{path} is not a readable post-hoc EMA snapshot ({e})") from None
        found.append(Snapshot(step, path, meta["sigma_rels"], meta["gammas"]))
    if len({tuple(s.sigma_rels) for s in found}) > 1:
        raise UserError(f"the snapshots in {run.snapshot_dir} are of different profiles; remove the stray ones")
    return found


def reconstruct(snapshots: list[Snapshot], sigma_rels: list[float],
                target_step: int | None = None) -> tuple[list[dict[str, torch.Tensor]], np.ndarray]:
    """The parameters of the EMA of each sigma_rel at `target_step` (default: the last snapshot's), as float32
    state-dict fragments, and the (N, M) coefficients of the N = snapshots x profiles stored EMAs. Streams the
    snapshot files, one at a time."""
    from safetensors.torch import load_file

    if len(snapshots) < MIN_SNAPSHOTS:
        raise UserError(f"post-hoc EMA needs at least {MIN_SNAPSHOTS} snapshots, this run has {len(snapshots)}; "
                        f"train longer or with a smaller --train.posthoc_every")
    target_step = target_step or snapshots[-1].step
    gammas = [gamma_of(s) for s in sigma_rels]
    steps = [s.step for s in snapshots for _ in s.gammas]
    coeffs = solve_coefficients(steps, [g for s in snapshots for g in s.gammas], target_step, gammas)
    out: list[dict[str, torch.Tensor]] = [{} for _ in sigma_rels]
    row = 0
    for snap in snapshots:
        tensors = load_file(str(snap.path))
        for i in range(len(snap.gammas)):
            prefix = f"profile{i}."
            for key, value in tensors.items():
                if not key.startswith(prefix):
                    continue
                name, v = key[len(prefix):], value.float()
                for m, acc in enumerate(out):
                    c = float(coeffs[row, m])
                    acc[name] = acc[name].add_(v, alpha=c) if name in acc else v * c
            row += 1
    return out, coeffs


NO_PROFILES = "this run kept no post-hoc EMA profiles; train with --train.posthoc_ema=0.05,0.10"


def posthoc_source(checkpoint: str | Path):
    """The run's `last` checkpoint (or the file given) and its snapshots up to that checkpoint's step."""
    from noisecraft.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint, "last")
    if "posthoc_ema" in ckpt.meta:  # a reconstruction: go back to the checkpoint it was made from
        ckpt = load_checkpoint(ckpt.meta["posthoc_ema"]["from"], "last")
    if not ckpt.config.train.posthoc_ema:
        raise UserError(NO_PROFILES)
    snaps = read_snapshots(run_root(ckpt.path), upto=ckpt.step)
    if len(snaps) < MIN_SNAPSHOTS:
        raise UserError(f"post-hoc EMA needs at least {MIN_SNAPSHOTS} snapshots up to step {ckpt.step}, "
                        f"{run_root(ckpt.path) / EMA_SNAPSHOTS} has {len(snaps)}; train longer or with a smaller "
                        f"--train.posthoc_every")
    if snaps[-1].step != ckpt.step:  # stopped between snapshots
        warnings.warn(f"the last post-hoc EMA snapshot is of step {snaps[-1].step}, the checkpoint of step "
                      f"{ckpt.step}: the reconstruction is of step {snaps[-1].step}", stacklevel=2)
    return ckpt, snaps


def posthoc_path(ckpt, sigma_rel: float) -> Path:
    """Where a reconstruction goes by default: beside the run's checkpoints, so its run directory is the run's."""
    return ckpt.path.parent / f"posthoc_ema_{sigma_rel:.3f}.safetensors"


def write_posthoc_checkpoint(checkpoint: str | Path, sigma_rel: float, out: str | Path | None = None) -> Path:
    """Reconstruct the EMA of `sigma_rel` at the last snapshot and write it as a checkpoint whose `net_ema` is that
    EMA (`unet`: the run's trained weights): `noisecraft sample/evaluate/explain --checkpoint` take it. It holds
    no optimizer state, so it is not resumed from."""
    from noisecraft.checkpoint import save_checkpoint
    from noisecraft.models import build_model

    gamma_of(sigma_rel)  # checks the range before any file is read
    ckpt, snaps = posthoc_source(checkpoint)
    (params,), coeffs = reconstruct(snaps, [sigma_rel])
    path = Path(out) if out is not None else posthoc_path(ckpt, sigma_rel)
    net = ckpt.load_module("net", build_model(ckpt.config.model))
    ema = load_params(copy.deepcopy(net), params)
    keep = {k: v for k, v in ckpt.meta.items() if k not in ("format", "version", "step", "config", "modules",
                                                            "optimizers", "path", "log_state")}
    record = {"sigma_rel": sigma_rel, "gamma": gamma_of(sigma_rel), "from": str(ckpt.path),
              "snapshot_steps": [s.step for s in snaps], "profiles": snaps[-1].sigma_rels,
              "coefficients": coeffs[:, 0].round(6).tolist()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, modules={"net": net, "net_ema": ema}, optimizers={}, config=ckpt.config,
                    step=snaps[-1].step, **{**keep, "posthoc_ema": record})
    return path


def load_params(module: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """`module` with its parameters replaced by `params` (its buffers kept)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])
    return module
