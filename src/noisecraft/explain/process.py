"""The figures of `noisecraft explain` that run the model: schedules, the forward and reverse processes, samplers
and step counts, a guidance sweep, cross-attention and latents. Each takes the `ExplainContext` and the PNG path
and returns what the index should record about it (the settings it was drawn with)."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch

from noisecraft.data import to_model_range, to_uint8
from noisecraft.diffusion.schedules import DiscreteSchedule, alpha_bar_from_sigma, flow_sigma
from noisecraft.registry import SAMPLERS, SCHEDULES
from noisecraft.samplers import get_sigmas, network_calls
from noisecraft.viz import plot_process


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seen(x: torch.Tensor, sigma: float, flow: bool) -> torch.Tensor:
    """x = x0 + sigma eps as the network sees it (and in range): the VP view sqrt(alpha_bar) x, or a flow's
    x / (1 + sigma) = (1 - t) x0 + t eps."""
    return x / (1 + sigma) if flow else x * math.sqrt(float(alpha_bar_from_sigma(torch.tensor(sigma))))


def _flow_curves(axes, timesteps: int, grid: torch.Tensor, label: str) -> None:
    """A rectified flow's alpha_bar, SNR and sigma in the VP view, with t in [0, 1) drawn over the timestep axis,
    and the sampler's levels on it."""
    t = torch.linspace(0, 1, timesteps + 1)[1:-1]  # the ends: no noise, and sigma = inf
    sigma = flow_sigma(t)
    alpha_bar = alpha_bar_from_sigma(sigma)
    style = dict(label="rectified flow (this run)", lw=2.2, color="k")
    axes[0].plot(t * timesteps, alpha_bar, **style)
    axes[1].plot(t * timesteps, (alpha_bar / (1 - alpha_bar)).log10(), **style)
    axes[2].semilogy(t * timesteps, sigma, **style)
    axes[2].plot(grid / (1 + grid) * timesteps, grid, "k.", ms=4, label=label)


def schedules_figure(ctx, path: Path) -> dict:
    """alpha_bar, log10 SNR and sigma against the timestep for every registered schedule at the run's T; the run's
    own schedule is marked, with the noise levels its default sampler visits."""
    plt = pyplot()
    cfg, denoiser = ctx.pipe.config.diffusion, ctx.pipe.denoiser
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    sigma_max = {}
    for name in SCHEDULES.names():
        s = DiscreteSchedule(name, cfg.timesteps, cfg.beta_start, cfg.beta_end)
        t, own = torch.arange(cfg.timesteps), name == cfg.schedule and denoiser.schedule is not None
        label = f"{name} (this run)" if own else name
        style = dict(label=label, lw=2.2 if own else 1.2)
        axes[0].plot(t, s.alpha_bar, **style)
        axes[1].plot(t, (s.alpha_bar / (1 - s.alpha_bar)).log10(), **style)
        axes[2].semilogy(t, s.sigmas, **style)
        sigma_max[name] = float(s.sigma_max)
    sample = ctx.pipe.config.sample
    grid = get_sigmas(denoiser, sample.sampler, sample.steps)[:-1].cpu()  # the last level is 0
    flow = denoiser.path == "flow"
    if denoiser.schedule is not None:
        axes[2].plot(denoiser.schedule.sigma_to_t(grid), grid, "k.", ms=4,
                     label=f"{sample.sampler}, {sample.steps} steps")
    elif flow:
        _flow_curves(axes, cfg.timesteps, grid, f"{sample.sampler}, {sample.steps} steps")
    for ax, title in zip(axes, ("ᾱ_t (signal kept)", "log10 SNR = log10 ᾱ/(1-ᾱ)", "σ_t = sqrt((1-ᾱ)/ᾱ)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("timestep t" + (" (flow: t x T)" if flow else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    note = (" (this run is rectified flow: x_t = (1 - t) x_0 + t ε, σ = t / (1 - t), uniform grid in t)" if flow
            else " (this run is EDM: continuous σ, Karras grid)" if denoiser.schedule is None else "")
    fig.suptitle(f"noise schedules, T = {cfg.timesteps}{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"schedule": cfg.schedule, "prediction": cfg.prediction, "timesteps": cfg.timesteps,
            "sigma_max": sigma_max, "sampler_sigmas": [round(float(s), 4) for s in grid]}


def forward_figure(ctx, path: Path) -> dict:
    """Real held-out images noised with one fixed noise draw to growing sigma (the sampler's grid, reversed)."""
    pipe, o = ctx.pipe, ctx.options
    x0 = to_model_range(ctx.data.images[:o.n].to(pipe.device))  # (n, C, H, W)
    sigmas = get_sigmas(pipe.denoiser, "ddim", o.columns - 1).flip(0).tolist()  # 0, then growing
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(o.seed)).to(pipe.device)
    # Always pixels, also for a latent run: the process is the same, and pixels show it.
    flow = pipe.denoiser.path == "flow"
    rows = [[to_uint8(_seen(x0[r] + s * eps[r], s, flow)).cpu() for s in sigmas] for r in range(len(x0))]
    seen = "(1 - t) x_0 + t ε, t = σ / (1 + σ)" if flow else "sqrt(ᾱ) x"
    plot_process(rows, [f"σ={s:.2g}" for s in sigmas], f"forward process q(x_t | x_0): x_0 + σ ε, seen as {seen}",
                 path)
    return {"sigmas": [round(s, 4) for s in sigmas], "images": len(x0)}


def reverse_figure(ctx, path: Path) -> dict:
    """A sample emerging from noise: per image, x_t (top) and the denoiser's x0 estimate at that step (below)."""
    pipe, o = ctx.pipe, ctx.options
    rows = ctx.rows(o.n)
    keep = sorted(set(torch.linspace(1, o.steps, o.columns).round().long().tolist()))
    x_t, x0, sigmas = {}, {}, []
    flow = pipe.denoiser.path == "flow"
    for ev in pipe.stream(n=o.n, labels=rows, sampler=o.sampler, steps=o.steps, seed=o.seed):
        if ev.kind == "step" and ev.step in keep:
            sigmas.append(ev.sigma)
            x_t[ev.step], x0[ev.step] = pipe.decode(_seen(ev.x_t, ev.sigma, flow)), pipe.decode(ev.x0)
    names = ctx.row_names(rows)
    grid, row_labels = [], []
    for r in range(o.n):
        grid += [[x_t[k][r] for k in keep], [x0[k][r] for k in keep]]
        row_labels += [f"x_t ({names[r]})"[:18] if names[r] else "x_t", "x̂0 estimate"]
    plot_process(grid, [f"step {k}\nσ={s:.2g}" for k, s in zip(keep, sigmas)],
                 f"reverse process ({o.sampler}, {o.steps} steps): x_t and the x0 estimate", path, row_labels)
    return {"sampler": o.sampler, "steps": o.steps, "shown_steps": keep, "sigmas": [round(s, 4) for s in sigmas],
            "rows": names}


def samplers_figure(ctx, path: Path) -> dict:
    """One seed and condition under every sampler (rows) and step count (columns), titled with network calls."""
    pipe, o = ctx.pipe, ctx.options
    label = ctx.rows(1)
    grid, nfe = [], {}
    for name in SAMPLERS.names():
        grid.append([pipe.generate(n=1, labels=label, sampler=name, steps=k, seed=o.seed)[0]
                     for k in o.sampler_steps])
        nfe[name] = {k: network_calls(name, k) for k in o.sampler_steps}
    row_labels = [f"{name}\n{', '.join(str(v) for v in nfe[name].values())} calls" for name in SAMPLERS.names()]
    row = ctx.row_names(label)[0]
    what = ", ".join(filter(None, [f"seed {o.seed}", row and f"{pipe.conditioner.noun} {row}"]))
    plot_process(grid, [f"{k} steps" for k in o.sampler_steps], f"samplers and step counts ({what})\nnetwork calls "
                 "per image (x2 where guided)", path, row_labels)
    return {"samplers": list(SAMPLERS.names()), "steps": list(o.sampler_steps), "network_calls": nfe,
            "guidance": pipe.resolve().guidance, "row": row}


def guidance_figure(ctx, path: Path) -> dict:
    """The same seeds and conditions (rows) drawn at growing classifier-free guidance weight (columns), guided at
    every step."""
    pipe, o = ctx.pipe, ctx.options
    rows = ctx.rows(o.n)
    columns = [pipe.generate(n=o.n, labels=rows, sampler=o.sampler, steps=o.steps, guidance=w, guidance_interval=(),
                             seed=o.seed) for w in o.guidance]
    grid = [[col[r] for col in columns] for r in range(o.n)]
    names = [textwrap.fill(n, 16) for n in ctx.row_names(rows)]  # prompts wrap beside their row
    plot_process(grid, [f"w = {w:g}" for w in o.guidance], f"classifier-free guidance ({o.sampler}, {o.steps} "
                 "steps, every step guided)", path, names)
    return {"guidance": list(o.guidance), "sampler": o.sampler, "steps": o.steps, "rows": ctx.row_names(rows)}


def _channels(z: torch.Tensor) -> list[torch.Tensor]:
    """Each channel of a latent (c, h, w) as a uint8 grey image, scaled to its own range."""
    lo, hi = z.amin(dim=(1, 2), keepdim=True), z.amax(dim=(1, 2), keepdim=True)
    return list(((z - lo) / (hi - lo).clamp_min(1e-8) * 255).round().to(torch.uint8).cpu()[:, None])


def _colour_fidelity(real: torch.Tensor, decoded: torch.Tensor) -> dict:
    """Colour runs: PSNR and CIEDE2000 of the real images' decodings, as `evaluate-autoencoder` reports them over
    the whole held-out split (ΔE2000 weighs a colour error as the eye sees it, PSNR every channel alike). Grey runs:
    nothing (no colour to get wrong)."""
    if real.shape[1] != 3:
        return {}
    from noisecraft.evaluate.autoencoder import colour_error, reconstruction_quality

    de = colour_error(real, decoded)
    return {"psnr_db": reconstruction_quality(real, decoded)["psnr_db"],
            "delta_e2000": {"mean": de["mean"], "p95": de["p95"]}}


def latents_figure(ctx, path: Path) -> dict:
    """Latent runs: real images, their latents (one column per channel) and the latents decoded; then sampled
    latents and their decodings. Uses the latent pipeline's `encode` (images in [-1, 1] -> latents) and
    `decode` (latents -> uint8 images). Colour runs' titles give the decodings' PSNR and mean ΔE2000."""
    pipe, o = ctx.pipe, ctx.options
    real = ctx.data.images[:o.n]
    z = pipe.encode(to_model_range(real.to(pipe.device)))  # (n, c, h, w)
    decoded = pipe.decode(z)
    sampled = pipe.stream(n=o.n, labels=ctx.rows(o.n), sampler=o.sampler, steps=o.steps, seed=o.seed)
    final = next(ev for ev in sampled if ev.kind == "images")
    c = z.shape[1]
    blank = torch.full_like(real[0], 255)
    grid = [[real[r], *_channels(z[r]), decoded[r]] for r in range(o.n)]
    grid += [[blank, *_channels(final.x[r]), final.images[r]] for r in range(o.n)]
    row_labels = ["real"] * o.n + ["sampled"] * o.n
    fidelity = _colour_fidelity(real, decoded.cpu())
    title = f"latents {tuple(z.shape[1:])} of images {tuple(real.shape[1:])} and their decodings"
    if fidelity:
        title += (f"\nreal images decoded: PSNR {fidelity['psnr_db']:.1f} dB, "
                  f"mean ΔE2000 {fidelity['delta_e2000']['mean']:.2f}")
    plot_process(grid, ["image"] + [f"latent ch {i}" for i in range(c)] + ["decoded"], title, path, row_labels)
    return {"latent_shape": list(z.shape[1:]), "image_shape": list(real.shape[1:]), **fidelity}
