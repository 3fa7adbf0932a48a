"""The diffusion task: a denoiser (network + preconditioning) trained by denoising score matching, with label (or
caption) dropout for classifier-free guidance, its validation loss and its pictures. It composes parts that own
their behaviour: the network, EMAs and optimiser (`train.parts`), what a batch's condition is
(`conditioning.training`: class labels, or captions embedded once by the frozen text encoder), and the space it
learns in (`autoencoder.codec`: pixels, or the latents of a frozen autoencoder, encoded once)."""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.autoencoder.codec import configure_codec, train_codec
from noisecraft.conditioning.training import configure_conditioning, training_conditioner
from noisecraft.config import Config
from noisecraft.data import ImageData
from noisecraft.diffusion import Denoiser, diffusion_loss, mean_held_out_loss, sample_sigmas
from noisecraft.models import build_model, count_parameters
from noisecraft.phema import maybe_snapshot
from noisecraft.precision import autocast_ctx
from noisecraft.rundir import RunDir
from noisecraft.train.parts import build_parts
from noisecraft.train.pictures import process_figures, sample_grid
from noisecraft.train.task import StepResult, Task, TaskContext, optimizer_step


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
    """Parts: `net` (trained weights), `net_ema` (their EMA: what sampling uses), with train.posthoc_ema also
    `net_phema0`, `net_phema1`, ... (post-hoc EMA profiles, `phema`); optimizer `net`.

    Latent diffusion (autoencoder.latent): the network learns the scaled latents of a frozen autoencoder, which
    encodes the whole training set (and its mirror images when flips are on) once into the run; the run keeps a
    copy of the autoencoder. Captions and latents combine: Stable Diffusion's composition."""

    name = "diffusion"

    def __init__(self, cfg: Config, ctx: TaskContext):
        super().__init__(cfg, ctx)
        self.class_names = list(ctx.class_names)
        run = RunDir(ctx.root) if ctx.root is not None else None
        self.codec = train_codec(cfg, ctx.root, self.device, ctx.dist.is_main)
        texts = self.caption_texts(ctx) if ctx.captions is not None else None
        self.cond = training_conditioner(cfg.model, ctx.captions, self.device, run and run.text_embeddings,
                                         save=ctx.dist.is_main, texts=texts)
        self.text = self.cond.text  # the prompt embeddings of a text model (None: labels)
        self.parts = build_parts(cfg, ctx, self.build_net())
        p = self.parts
        self.net, self.denoiser, self.ema, self.ema_denoiser = p.net, p.denoiser, p.ema, p.ema_denoiser
        self.optimizer, self.step_fn, self.phema = p.optimizer, p.step_fn, p.phema
        self._train_view, self._val_x0 = None, None

    def build_net(self) -> torch.nn.Module:
        """The network trained: freshly initialised from the config (a fine-tuning: the base's, with adapters)."""
        return build_model(self.cfg.model)

    def caption_texts(self, ctx: TaskContext) -> list[str]:
        """The texts embedded up front, whose rows a batch's caption ids index: the training captions."""
        return list(ctx.captions.texts)

    @classmethod
    def configure(cls, cfg: Config, data) -> Config:
        cfg.model.in_channels, cfg.model.image_size = data.channels, data.image_size
        if cfg.data.augment:  # the augment label's width (a distilled student keeps its teacher's, data.augment off)
            from noisecraft.augment import augment_dim

            cfg.model.augment_dim = augment_dim(cfg.data.augment, data.channels)
        configure_codec(cfg, data)
        configure_conditioning(cfg, data)
        return cfg

    def training_data(self):
        """Pixels as loaded, or (latent diffusion) the training set's latents, cached in the run."""
        if self._train_view is None:
            path = RunDir(self.ctx.root).latents if self.ctx.root is not None else None
            self._train_view = self.codec.training_view(self.ctx.train_data, self.device, self.cfg.data.hflip, path)
        return self._train_view

    def modules(self):
        parts = {"net": self.net, "net_ema": self.ema.module}
        return parts if self.phema is None else {**parts, **self.phema.parts("net")}

    def optimizers(self):
        return {"net": self.optimizer}

    def metadata(self):
        meta = {"class_names": self.class_names, "params": count_parameters(self.net), **self.cond.metadata()}
        if self.codec.record() is not None:  # which autoencoder the latents are of
            meta["autoencoder"] = self.codec.record()
        return meta

    def condition(self, y: torch.Tensor | None, drop: torch.Tensor | None = None) -> dict | None:
        """The network's conditioning for a batch's condition ids y (B,); `drop` (B,) marks the null ones."""
        return self.cond.batch(y, drop)

    def step(self, batch, step: int) -> StepResult:
        tc = self.cfg.train
        x0, y, *augment_labels = batch  # (B, C, H, W) in [-1, 1], (B,) labels or None[, (B, A) augment labels]
        if self.parts.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with autocast_ctx(self.device, tc.precision):
            loss = self.batch_loss(x0, y, step, *augment_labels)
        finite = optimizer_step(self.optimizer, loss, self.net.parameters(), tc.grad_clip,
                                check_loss=not self.ctx.dist.enabled)
        self.ema.update(self.net, step)
        if self.phema is not None:
            self.phema.update(self.net, step)
            maybe_snapshot(self.phema, self.ctx.root if self.ctx.dist.is_main else None, step + 1, tc.posthoc_every,
                           tc.steps)
        return StepResult({"loss": loss.detach()}, finite)

    def batch_loss(self, x0: torch.Tensor, y: torch.Tensor | None, step: int,
                   augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mean training loss of a batch (what `step` minimises): denoising score matching; an augmented
        batch's labels (B, A) condition the network (sampling gives none: zeros, the unaugmented images)."""
        sigma, eps, u = global_batch_draws(self.denoiser, x0, self.cfg.train.batch_size, self.ctx.dist.rank)
        cond = self.condition(y, u < self.cfg.train.label_dropout)  # dropout for classifier-free guidance
        if augment_labels is not None:
            cond = {**(cond or {}), "augment_labels": augment_labels}
        return diffusion_loss(self.step_fn, x0, cond, sigma=sigma, eps=eps).mean()

    def held_out_loss(self, x0: torch.Tensor, cond: dict | None, generator: torch.Generator) -> torch.Tensor:
        """Per-sample loss (B,) of the EMA model on held-out images, its randomness from `generator`."""
        return diffusion_loss(self.ema_denoiser, x0, cond, generator=generator)

    @torch.no_grad()
    def validation_loss(self, data: ImageData) -> float:
        """Mean `held_out_loss` on the held-out split with fixed randomness (the same every call)."""
        if self._val_x0 is None:  # pixels in [-1, 1], or latents, encoded at the first call
            self._val_x0 = self.codec.held_out(data.images, self.device)
        tc = self.cfg.train
        return mean_held_out_loss(self.held_out_loss, self._val_x0, lambda a, b: self.cond.held_out(data, a, b),
                                  tc.batch_size, self.device, tc.precision)

    def evaluate(self, step: int) -> dict[str, float] | None:
        if not self.cfg.train.eval_every:
            return None
        return self.ctx.hooks.metrics(self.pipeline())

    def pipeline(self):
        """The EMA denoiser composed with this run's conditioner and codec, as `load_pipeline` composes it."""
        from noisecraft.pipeline import pipeline_for

        return pipeline_for(self.cfg, self.ema_denoiser, device=self.device, class_names=self.class_names,
                            text=self.text, codec=self.codec, root=self.ctx.root)

    def grid_rows(self):
        """The rows of the sample grids: every class, or the preview prompts."""
        return self.cond.rows()

    def sample_grid(self, path: Path, steps: int | None = None) -> None:
        sample_grid(self.pipeline(), self.grid_rows(), path, steps=steps)

    def pictures(self, root: Path, step: int | None) -> None:
        run = RunDir(root)
        self.sample_grid(run.grid(step), steps=20 if step is not None else None)  # during training: a glance
        if step is None:
            self.final_pictures(run)

    def final_pictures(self, run: RunDir) -> None:
        """The figures drawn once, at the end, beside the final grid: the forward and reverse process and, for
        text models, cross-attention."""
        if self.codec.shows_x_t:
            process_figures(self.ctx.hooks.figure, self.pipeline(), run, self.cond.prompts(4))
        if self.cond.figure_prompt is not None:
            self.ctx.hooks.figure(self.pipeline(), "cross-attention", run.figure("cross_attention"),
                                  prompts=[self.cond.figure_prompt])
