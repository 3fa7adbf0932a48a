"""The post-hoc EMA sweep (`noisecraft ema --sweep`): EMAs of many lengths reconstructed from one run's snapshots
(`phema`), each scored like the run's own EMA: the validation loss on the held-out split (as training
computes it) and, for class-conditional runs, the offline judge's accuracy and Frechet distance on samples drawn
with the run's own sampler. The run's fixed EMA (`train.ema_decay`) is scored the same way, for comparison."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from noisecraft.diffusion import diffusion_loss, held_out_losses, mean_held_out_loss
from noisecraft.errors import UserError
from noisecraft.phema import ema_decay_at, gamma_of, load_params, posthoc_source, reconstruct
from noisecraft.rundir import RunDir, run_root

DEFAULT_SIGMA_RELS = (0.02, 0.03, 0.05, 0.07, 0.10, 0.13, 0.16, 0.20, 0.25)
SWEEP_JSON = "sweep.json"  # beside sweep.png, in <run>/posthoc_ema/ or the folder given


@dataclass
class SweepOptions:
    sigma_rels: tuple[float, ...] = DEFAULT_SIGMA_RELS  # the EMA lengths reconstructed and scored
    n: int = 500  # samples judged per EMA (class-conditional runs); 0: validation loss only
    device: str = "auto"
    seed: int = 0  # sample i uses seed + i, the same for every EMA


class Scorer:
    """The run's EMA network as its pipeline samples with it, scoring any weights put in it: the validation loss
    on the held-out split as training computes it (`diffusion.held_out_losses`, conditions as training gives
    them), and the offline judge's metrics of samples."""

    def __init__(self, ckpt, device: torch.device):
        from noisecraft.conditioning.training import training_conditioner
        from noisecraft.data import load_dataset, load_train_data
        from noisecraft.pipeline import load_pipeline

        cfg = ckpt.config
        self.pipe = load_pipeline(ckpt.path, device)
        train = load_train_data(cfg.data)
        self.val = load_dataset(cfg.data, "val")
        self.cond = training_conditioner(cfg.model, train.captions, self.pipe.device,
                                         RunDir(run_root(ckpt.path)).text_embeddings, save=False)
        with torch.no_grad():
            self.x0 = self.pipe.codec.held_out(self.val.images, self.pipe.device)  # pixels, or latents
        self.fixed = {k: v.clone() for k, v in self.pipe.denoiser.net.named_parameters()}

    def _held_out(self) -> tuple:
        """The arguments of `diffusion.held_out_losses` as training's validation gives them, for the EMA network."""
        tc, denoiser = self.pipe.config.train, self.pipe.denoiser
        return (lambda x0, cond, g: diffusion_loss(denoiser, x0, cond, generator=g), self.x0,
                lambda a, b: self.cond.held_out(self.val, a, b), tc.batch_size, self.pipe.device, tc.precision)

    def held_out_losses(self):
        """The loss of each held-out image (B,), batch by batch."""
        return held_out_losses(*self._held_out())

    def val_loss(self) -> float:
        return mean_held_out_loss(*self._held_out())

    @torch.no_grad()
    def score(self, params: dict[str, torch.Tensor] | None, n: int, seed: int) -> dict:
        """Validation loss (and, for a model asked for classes, judge metrics of n samples) of `params` (None: the
        run's fixed EMA)."""
        from noisecraft.evaluate.report import classifier_metrics

        t0, pipe = time.perf_counter(), self.pipe
        load_params(pipe.denoiser.net, self.fixed if params is None else params)
        out = {"val_loss": self.val_loss()}
        if n and pipe.num_classes:
            req = pipe.prepare(n, seed=seed)  # the run's sampler, steps and guidance; classes i % K
            images = pipe.generate(request=req)
            m = classifier_metrics(images, req.labels, pipe.config.data, pipe.device, perfect=False)["generated"]
            out.update(class_accuracy=m["class_accuracy"], fd_clf=m["fd"])
        out["seconds"] = time.perf_counter() - t0
        return out


def fixed_ema_sigma_rel(decay: float, steps: int) -> float:
    """The relative width of the trainer's fixed EMA (decay warmed up as phema.ema_decay_at) after `steps`
    steps: the standard deviation of tau / steps under its weights on theta_0..theta_steps."""
    w = np.zeros(steps + 1)
    w[0] = 1.0
    for step in range(steps):
        d = ema_decay_at(decay, step)
        w *= d
        w[step + 1] = 1.0 - d
    tau = np.arange(steps + 1) / steps
    mean = float((w * tau).sum())
    return float(np.sqrt((w * (tau - mean) ** 2).sum()))


def sweep(checkpoint: str | Path, options: SweepOptions | None = None, out: str | Path | None = None) -> dict:
    """Reconstruct and score every sigma_rel of `options`, beside the fixed EMA; writes sweep.json and sweep.png
    into `out` (default <run>/posthoc_ema/) and returns the result."""
    from noisecraft.device import pick_device

    o = options or SweepOptions()
    for s in o.sigma_rels:
        gamma_of(s)  # the range, before anything is loaded
    if o.n < 0:
        raise UserError(f"--n must be >= 0, got {o.n}")
    ckpt, snaps = posthoc_source(checkpoint)
    if ckpt.config.train.task != "diffusion":
        raise UserError(f"{ckpt.path} is a {ckpt.config.train.task} run; post-hoc EMA sweeps diffusion runs")
    params, _ = reconstruct(snaps, list(o.sigma_rels))
    scorer = Scorer(ckpt, pick_device(o.device))
    tc = ckpt.config.train
    fixed = scorer.score(None, o.n, o.seed)
    rows = [{"sigma_rel": s, **scorer.score(p, o.n, o.seed)} for s, p in zip(o.sigma_rels, params)]
    # `step`: the fixed EMA's (the checkpoint's); the reconstructions are at the last snapshot's, the same step
    # unless the run stopped between snapshots.
    result = {"checkpoint": str(ckpt.path), "step": ckpt.step, "snapshot_steps": [s.step for s in snaps],
              "profiles": list(tc.posthoc_ema), "n": o.n if "class_accuracy" in fixed else 0, "seed": o.seed,
              "sampler": f"{ckpt.config.sample.sampler} {ckpt.config.sample.steps}",
              "fixed_ema": {"ema_decay": tc.ema_decay, "sigma_rel": fixed_ema_sigma_rel(tc.ema_decay, ckpt.step),
                            **fixed},
              "reconstructed": rows, "best": best_of(rows, fixed)}
    out = Path(out) if out is not None else RunDir(run_root(ckpt.path)).posthoc_ema
    out.mkdir(parents=True, exist_ok=True)
    (out / SWEEP_JSON).write_text(json.dumps(result, indent=2) + "\n")
    plot_sweep(result, out / "sweep.png")
    result["out"] = str(out)
    return result


def best_of(rows: list[dict], fixed: dict) -> dict:
    """Per metric: the best sigma_rel, its value, the fixed EMA's, and whether the reconstruction beats it."""
    best = {}
    for metric, up in (("val_loss", False), ("class_accuracy", True), ("fd_clf", False)):
        if metric not in fixed:
            continue
        row = (max if up else min)(rows, key=lambda r: r[metric])
        beats = row[metric] > fixed[metric] if up else row[metric] < fixed[metric]
        best[metric] = {"sigma_rel": row["sigma_rel"], "value": row[metric], "fixed_ema": fixed[metric],
                        "beats_fixed": bool(beats)}
    return best


METRIC_TITLES = {"val_loss": "validation loss (lower is better)",
                 "class_accuracy": "judged as the digit asked for (higher is better)",
                 "fd_clf": "Frechet distance, judge features (lower is better)"}


def plot_sweep(result: dict, path: str | Path) -> None:
    """One panel per metric: the reconstructed EMAs against sigma_rel, the fixed EMA as a horizontal line (and its
    own width as a grey tick), the stored profiles as dotted verticals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRIC_TITLES if m in result["fixed_ema"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
    xs = [r["sigma_rel"] for r in result["reconstructed"]]
    fixed = result["fixed_ema"]
    for ax, m in zip(axes[0], metrics):
        ax.plot(xs, [r[m] for r in result["reconstructed"]], marker="o", ms=4, label="post-hoc EMA")
        ax.axhline(fixed[m], color="C3", ls="--", lw=1, label=f"fixed EMA (decay {fixed['ema_decay']})")
        for s in result["profiles"]:
            ax.axvline(s, color="0.6", ls=":", lw=1)
        if xs[0] <= fixed["sigma_rel"] <= xs[-1]:
            ax.axvline(fixed["sigma_rel"], color="C3", ls=":", lw=1, alpha=0.6, label="fixed EMA's own sigma_rel")
        ax.set_xscale("log")
        ticks = xs[:1]
        for x in xs[1:]:  # labels far enough apart on the log axis not to overlap
            if x / ticks[-1] >= 1.35:
                ticks.append(x)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{x:g}" for x in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("sigma_rel (EMA length / training length)")
        ax.set_title(METRIC_TITLES[m], fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    judged = f", {result['n']} samples judged ({result['sampler']})" if result["n"] else ""
    fig.suptitle(f"post-hoc EMA at step {result['step']}: dotted = stored profiles {result['profiles']}{judged}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
