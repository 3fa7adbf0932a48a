"""The autoencoder task: a KL autoencoder (latent diffusion's first stage) trained against a PatchGAN
discriminator, two optimizers, an EMA of the autoencoder, its validation loss and its pictures (reconstructions
next to originals; the discriminator's and generator's losses over steps).

Every checkpoint carries the latent scale, 1 / std of the EMA encoder's latents over a fixed sample of the training
set (`SCALE_SAMPLE` images spaced evenly, so a checkpoint costs the same whatever the set's size), which a latent
diffusion run multiplies latents by so the U-Net sees unit variance (Rombach et al. 2022, sec. G)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from noisecraft.autoencoder.loss import AutoencoderLoss, discriminator_on, hinge_d_loss
from noisecraft.config import Config
from noisecraft.data import ImageData, encode_images, load_dataset, to_model_range, to_uint8
from noisecraft.errors import UserError
from noisecraft.models import build_autoencoder, build_discriminator, count_parameters
from noisecraft.precision import autocast_ctx
from noisecraft.rundir import RunDir, read_log
from noisecraft.train.task import EMA, StepResult, Task, TaskContext, optimizer_step

GAN_BETAS = (0.5, 0.9)  # Adam's betas for both players, as latent diffusion's autoencoders
SCALE_SAMPLE = 512  # training images the latent scale is measured on, at every checkpoint


def latent_scale(ae, data, device: torch.device, n: int = SCALE_SAMPLE) -> float:
    """1 / std of the latents (posterior means) of n training images spaced evenly over the set (the same n every
    checkpoint, whatever the set's size; a folder streamed from disk decodes just those n)."""
    idx = torch.linspace(0, len(data) - 1, min(n, len(data))).round().long().unique()
    images = data.images[idx] if isinstance(data, ImageData) else torch.stack([data[i][0] for i in idx.tolist()])
    return float(1.0 / encode_images(images, lambda x: ae.encode(x).mode(), device).std())


class AutoencoderTask(Task):
    """Parts: `autoencoder`, `autoencoder_ema` (what latent diffusion uses), `discriminator`; optimizers
    `autoencoder` and `discriminator`."""

    name = "autoencoder"

    def __init__(self, cfg: Config, ctx: TaskContext):
        super().__init__(cfg, ctx)
        a, c, tc = cfg.autoencoder, cfg.model.in_channels, cfg.train
        self.ae = build_autoencoder(a, c).to(self.device)
        self.disc = build_discriminator(a, c).to(self.device)
        self.ema = EMA(self.ae, tc.ema_decay)
        fused = self.device.type in ("cuda", "cpu") or None  # as train.task.adamw: skips bad steps without a sync
        self.opt_ae = torch.optim.AdamW(self.ae.parameters(), lr=tc.lr, betas=GAN_BETAS, weight_decay=tc.weight_decay,
                                        fused=fused)
        self.opt_disc = torch.optim.AdamW(self.disc.parameters(), lr=a.disc_lr or tc.lr, betas=GAN_BETAS,
                                          weight_decay=tc.weight_decay, fused=fused)
        self.loss = AutoencoderLoss(a, self._perceptual())
        self.step_ae, self.step_disc = ctx.wrap(self.ae), ctx.wrap(self.disc)

    def _perceptual(self):
        a = self.cfg.autoencoder
        if a.lpips_weights is None:
            warnings.warn("no --lpips-weights: the autoencoder trains without the perceptual (LPIPS) term",
                          stacklevel=3)
            return None
        from noisecraft.autoencoder.perceptual import load_lpips

        return load_lpips(a.lpips_weights, self.device)

    @classmethod
    def configure(cls, cfg: Config, data) -> Config:
        f = cfg.autoencoder.downsample
        if data.image_size % f:
            raise UserError(f"the autoencoder's downsampling factor {f} must divide the image size "
                            f"{data.image_size}: pick --image-size a multiple of {f}")
        cfg.model.in_channels, cfg.model.image_size = data.channels, data.image_size
        cfg.model.num_classes = data.num_classes
        return cfg

    def modules(self):
        return {"autoencoder": self.ae, "autoencoder_ema": self.ema.module, "discriminator": self.disc}

    def optimizers(self):
        return {"autoencoder": self.opt_ae, "discriminator": self.opt_disc}

    def metadata(self):
        meta = {"params": count_parameters(self.ae), "discriminator_params": count_parameters(self.disc),
                "lpips": self.cfg.autoencoder.lpips_weights is not None}
        if self.ctx.train_data is not None:
            meta["latent_scale"] = latent_scale(self.ema.module, self.ctx.train_data, self.device)
        return meta

    def step(self, batch, step: int) -> StepResult:
        a, tc = self.cfg.autoencoder, self.cfg.train
        x, _ = batch  # (B, C, H, W) in [-1, 1]
        adversarial = discriminator_on(step, a)
        self.disc.requires_grad_(False)  # the generator's step only needs gradients through D, not into it
        with autocast_ctx(self.device, tc.precision):
            x_rec, posterior = self.step_ae(x)
            logits_fake = self.step_disc(x_rec) if adversarial else None
            g = self.loss(x, x_rec, posterior, logits_fake, self.ae.last_layer())
        finite = optimizer_step(self.opt_ae, g.total, self.ae.parameters(), tc.grad_clip,
                                check_loss=not self.ctx.dist.enabled)
        losses = g.terms
        if adversarial:
            self.disc.requires_grad_(True)
            with autocast_ctx(self.device, tc.precision):
                d_loss = hinge_d_loss(self.step_disc(x).float(), self.step_disc(x_rec.detach()).float())
            finite &= optimizer_step(self.opt_disc, d_loss, self.disc.parameters(), tc.grad_clip,
                                     check_loss=not self.ctx.dist.enabled)
            losses["disc"] = d_loss.detach()
        self.ema.update(self.ae, step)
        return StepResult(losses, finite)

    @torch.no_grad()
    def validation_loss(self, data: ImageData) -> float:
        """Mean |x - decode(mean of q(z | x))| per pixel of the EMA autoencoder on the held-out split."""
        total = 0.0
        for chunk in data.images.split(self.cfg.train.batch_size):
            x = to_model_range(chunk.to(self.device))
            with autocast_ctx(self.device, self.cfg.train.precision):
                x_rec = self.ema.module.decode(self.ema.module.encode(x).mode()).float()
            total += float((x - x_rec).abs().flatten(1).mean(1).sum())
        return total / max(1, len(data))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 reconstructions (B, C, H, W) by the EMA autoencoder of uint8 images."""
        ae = self.ema.module
        return to_uint8(ae.decode(ae.encode(to_model_range(x.to(self.device))).mode()).float()).cpu()

    def pictures(self, root: Path, step: int | None) -> None:
        from noisecraft.viz import plot_gan_losses, save_grid

        val = load_dataset(self.cfg.data, "val")
        x = val.images[:32]
        rec = self.reconstruct(x)
        pairs = torch.stack([x.view(4, 8, *x.shape[1:]), rec.view(4, 8, *x.shape[1:])], 1)  # originals over recs
        run = RunDir(root)
        save_grid(pairs.flatten(0, 2), run.grid(step), nrow=8)
        if step is None:
            save_grid(pairs.flatten(0, 2), run.figure("reconstructions"), nrow=8)
            plot_gan_losses(read_log(run.log_path, "train"), run.figure("gan_losses"))
