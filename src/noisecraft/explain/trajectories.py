"""The `trajectories` figure of `noisecraft explain`: how straight the sampling paths are. Rectified flow trains
toward straight lines between noise and image (Liu et al. 2023), which is why few steps suffice; a diffusion
model's probability-flow paths bend. Both are drawn in the flow's coordinates x_t = x / (1 + sigma), t = sigma /
(1 + sigma), where the straight line from noise to image is what rectified flow aims for."""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.samplers import PerImageNoise, get_sigmas, sample_euler

STEPS = 40  # Euler steps: fine enough that the drawn path is the ODE's, not the solver's


def path_straightness(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """points (K, B, D) along B paths -> straightness (B,) = |end - start| / path length (1 = a straight line), and
    the deviation (K, B) of each point from the chord, as a share of the chord's length."""
    chord = points[-1] - points[0]  # (B, D)
    length = (points[1:] - points[:-1]).norm(dim=-1).sum(0)  # (B,)
    rel = points - points[0]  # (K, B, D)
    along = (rel * chord).sum(-1, keepdim=True) / chord.pow(2).sum(-1, keepdim=True)
    deviation = (rel - along * chord).norm(dim=-1) / chord.norm(dim=-1)
    return chord.norm(dim=-1) / length, deviation


def trajectories_figure(ctx, path: Path) -> dict:
    """Per image (same seeds as the other figures): its path's deviation from the straight line against t."""
    from noisecraft.explain.process import pyplot

    pipe, o = ctx.pipe, ctx.options
    rows = ctx.rows(o.n)
    sigmas = get_sigmas(pipe.denoiser, "euler", STEPS).to(pipe.device)
    noise = PerImageNoise([o.seed + i for i in range(o.n)], pipe.device)
    x = noise(torch.empty(o.n, *pipe.sample_shape, device=pipe.device)) * pipe.denoiser.prior_std(float(sigmas[0]))
    d = pipe.denoise_fn(pipe.resolve(guidance=0))
    cond = pipe.condition(rows)
    points = [x / (1 + sigmas[0])]
    with torch.no_grad():
        for s in sample_euler(d, x, sigmas, cond):
            points.append(s.x / (1 + sigmas[s.i + 1]))
    pts = torch.stack(points).flatten(2).double()  # (K, B, D)
    straight, dev = path_straightness(pts)
    t = (sigmas / (1 + sigmas)).cpu()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for b, name in enumerate(ctx.row_names(rows)):
        ax.plot(t, dev[:, b], label=f"{name[:16]} (straightness {float(straight[b]):.3f})".strip())
    ax.invert_xaxis()
    ax.set_xlabel("t = sigma / (1 + sigma), noise (1) to image (0)")
    ax.set_ylabel("distance from the straight line\n(share of its length)")
    kind = pipe.config.diffusion.prediction
    ax.set_title(f"sampling paths of a {kind}-prediction model (Euler {STEPS}, unguided): mean straightness "
                 f"{float(straight.mean()):.3f}", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return {"prediction": kind, "steps": STEPS, "straightness": [round(float(v), 4) for v in straight],
            "mean_straightness": round(float(straight.mean()), 4)}
