"""The diffusion task: a denoiser (U-Net + preconditioning) trained by denoising score matching, its EMA, label
dropout for classifier-free guidance, its validation loss and its pictures (sample grids, forward and reverse
process)."""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.conditioning import class_cond
from noisecraft.config import Config
from noisecraft.data import ImageData, to_model_range, to_uint8
from noisecraft.diffusion import Denoiser, diffusion_loss, sample_sigmas
from noisecraft.diffusion.schedules import alpha_bar_from_sigma
from noisecraft.models import build_model, count_parameters
from noisecraft.precision import autocast_ctx
from noisecraft.train.task import EMA, StepResult, Task, TaskContext, adamw, optimizer_step


def global_batch_draws(denoiser: Denoiser, x0: torch.Tensor, global_batch: int, rank: int):
    """Noise levels (B,), noise (B, C, H, W) and label-dropout uniforms (B,) drawn for the whole global batch
    from the step-seeded RNG, then sliced to this rank's share: N data-parallel processes draw exactly what one
    process with the same global batch draws (the slices are cheap next to the network)."""
    local = x0.shape[0]
    rows = slice(rank * local, (rank + 1) * local)
    sigma = sample_sigmas(denoiser, global_batch, x0.device)[rows]
    eps = torch.randn((global_batch, *x0.shape[1:]), device=x0.device)[rows]
    u = torch.rand(global_batch, device=x0.device)[rows]
    return sigma, eps, u


class DiffusionTask(Task):
    """Parts: `unet` (trained weights), `unet_ema` (their EMA: what sampling uses); optimizer `unet`."""

    name = "diffusion"

    def __init__(self, cfg: Config, ctx: TaskContext):
        super().__init__(cfg, ctx)
        self.class_names = list(ctx.class_names)
        self.net = build_model(cfg.model).to(self.device)
        tc = cfg.train
        self.channels_last = self.device.type == "cuda" if tc.channels_last is None else tc.channels_last
        if self.channels_last:  # NHWC: faster convs on tensor-core GPUs (measured slower on CPU, hence off there)
            self.net = self.net.to(memory_format=torch.channels_last)
        self.denoiser = Denoiser(self.net, cfg.diffusion).to(self.device)
        self.ema = EMA(self.net, tc.ema_decay)
        self.ema_denoiser = Denoiser(self.ema.module, cfg.diffusion).to(self.device).eval()
        self.optimizer = adamw(self.net, cfg, self.device)
        # DDP and torch.compile wrap the network for the step only; EMA and checkpoints use the plain module.
        step_net = ctx.wrap(self.net)
        self.step_fn = self.denoiser if step_net is self.net else Denoiser(step_net, cfg.diffusion)

    @classmethod
    def configure(cls, cfg: Config, data) -> Config:
        cfg.model.in_channels, cfg.model.image_size = data.channels, data.image_size
        cfg.model.num_classes = data.num_classes
        return cfg

    def modules(self):
        return {"unet": self.net, "unet_ema": self.ema.module}

    def optimizers(self):
        return {"unet": self.optimizer}

    def metadata(self):
        return {"class_names": self.class_names, "params": count_parameters(self.net)}

    def step(self, batch, step: int) -> StepResult:
        tc = self.cfg.train
        x0, y = batch  # (B, C, H, W) in [-1, 1], (B,) labels or None
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        sigma, eps, u = global_batch_draws(self.denoiser, x0, tc.batch_size, self.ctx.dist.rank)
        if y is not None:  # label dropout for classifier-free guidance: the null class replaces a share of labels
            y = torch.where(u < tc.label_dropout, torch.full_like(y, self.cfg.model.num_classes), y)
        with autocast_ctx(self.device, tc.precision):
            loss = diffusion_loss(self.step_fn, x0, class_cond(y), sigma=sigma, eps=eps).mean()
        finite = optimizer_step(self.optimizer, loss, self.net.parameters(), tc.grad_clip,
                                check_loss=not self.ctx.dist.enabled)
        self.ema.update(self.net, step)
        return StepResult({"loss": loss.detach()}, finite)

    @torch.no_grad()
    def validation_loss(self, data: ImageData) -> float:
        """Mean loss of the EMA denoiser on the held-out split with fixed noise (the same every call)."""
        g = torch.Generator(self.device).manual_seed(12345)
        bs, total = self.cfg.train.batch_size, 0.0
        for start in range(0, len(data), bs):
            x0 = to_model_range(data.images[start:start + bs].to(self.device))
            y = data.labels[start:start + bs].to(self.device) if data.labels is not None else None
            with autocast_ctx(self.device, self.cfg.train.precision):
                total += float(diffusion_loss(self.ema_denoiser, x0, class_cond(y), generator=g).sum())
        return total / max(1, len(data))

    def evaluate(self, step: int) -> dict[str, float] | None:
        if not self.cfg.train.eval_every:
            return None
        from noisecraft.evaluate.during_training import training_metrics

        return training_metrics(self.ema_denoiser, self.cfg, self.device)

    def pipeline(self):
        from noisecraft.pipeline import Pipeline

        return Pipeline(denoiser=self.ema_denoiser, config=self.cfg, class_names=self.class_names,
                        device=self.device)

    def pictures(self, root: Path, step: int | None) -> None:
        if step is not None:
            self.sample_grid(root / "samples" / f"step_{step:08d}.png", steps=20)
            return
        self.sample_grid(root / "samples" / "final.png")
        self.process_figures(root)

    def sample_grid(self, path: Path, per_class: int = 8, steps: int | None = None) -> None:
        """One row per class (or 8 x 8 unconditional samples), fixed seeds so rows compare over time."""
        from noisecraft.viz import save_grid

        k = self.cfg.model.num_classes
        labels = torch.arange(k).repeat_interleave(per_class) if k else None
        images = self.pipeline().generate(n=per_class * k if k else 64, labels=labels, steps=steps, seed=0)
        save_grid(images, path, nrow=per_class if k else 8)

    def process_figures(self, root: Path, data: ImageData | None = None) -> None:
        """forward_process.png (real images noised to growing sigma) and reverse_process.png (x_t while
        sampling), both in the VP view sqrt(alpha_bar) x that the network sees."""
        from noisecraft.data import load_dataset
        from noisecraft.samplers import get_sigmas
        from noisecraft.viz import plot_process

        n_rows, n_cols = 4, 8
        data = data or load_dataset(self.cfg.data, "val")
        x0 = to_model_range(data.images[:n_rows].to(self.device))
        sigmas = get_sigmas(self.ema_denoiser, "ddim", n_cols - 1).flip(0).to(self.device)  # 0, then growing
        eps = torch.randn(x0.shape, generator=torch.Generator(self.device).manual_seed(0), device=self.device)
        rows = [[to_uint8((x0[r] + s * eps[r]) * alpha_bar_from_sigma(s).sqrt()).cpu() for s in sigmas]
                for r in range(n_rows)]
        plot_process(rows, [f"σ={float(s):.2g}" for s in sigmas], "forward process q(x_t | x_0)",
                     root / "forward_process.png")

        steps, k = 50, self.cfg.model.num_classes
        keep = set(torch.linspace(1, steps, n_cols - 1).round().long().tolist())
        snaps, final = [], None
        for ev in self.pipeline().stream(n=n_rows, labels=torch.arange(n_rows) % k if k else None,
                                         sampler="ddim", steps=steps, seed=0):
            if ev.kind == "step" and ev.step in keep:  # x_t as the step saw it
                snaps.append((ev.sigma, ev.x_t * alpha_bar_from_sigma(torch.tensor(ev.sigma)).sqrt()))
            elif ev.kind == "images":
                final = ev.images
        rows = [[to_uint8(x[r]).cpu() for _, x in snaps] + [final[r]] for r in range(n_rows)]
        plot_process(rows, [f"σ={s:.2g}" for s, _ in snaps] + ["x0"], f"reverse process (DDIM, {steps} steps)",
                     root / "reverse_process.png")
