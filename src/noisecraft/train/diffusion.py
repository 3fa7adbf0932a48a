"""The diffusion task: a denoiser (U-Net + preconditioning) trained by denoising score matching, its EMA, label
(or caption) dropout for classifier-free guidance, its validation loss and its pictures (sample grids, forward and
reverse process, and for text models the cross-attention figure).

Data with captions trains a text-to-image model: the captions' embeddings come from a frozen text encoder once,
before the first step (`conditioning.text.TextEmbeddings`, cached in the run directory), and a step only gathers
the rows of its batch's captions."""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.conditioning import class_cond, take
from noisecraft.conditioning.prompt_syntax import literal
from noisecraft.config import Config
from noisecraft.data import ImageData, encode_images, latent_cache, to_model_range
from noisecraft.diffusion import Denoiser, diffusion_loss, sample_sigmas
from noisecraft.errors import UserError
from noisecraft.models import build_model, count_parameters
from noisecraft.precision import autocast_ctx
from noisecraft.train.phema import PowerEMA, maybe_snapshot
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
    """Parts: `unet` (trained weights), `unet_ema` (their EMA: what sampling uses), with train.posthoc_ema also
    `unet_phema0`, `unet_phema1`, ... (post-hoc EMA profiles, `train.phema`); optimizer `unet`.

    Latent diffusion (autoencoder.latent): the U-Net learns the scaled latents of a frozen autoencoder
    (`autoencoder.codec`), which encodes the whole training set (and its mirror images when flips are on) once
    into `<run>/latents.safetensors`; the run keeps a copy of the autoencoder in `<run>/autoencoder/`. Captions
    and latents combine: a text-to-image model in a latent space (Stable Diffusion's composition)."""

    name = "diffusion"

    def __init__(self, cfg: Config, ctx: TaskContext):
        super().__init__(cfg, ctx)
        self.class_names = list(ctx.class_names)
        self.text, self._val_texts = None, None
        self.codec = self._latent_codec(ctx) if cfg.autoencoder.latent else None
        self._latents, self._val_latents = None, None
        if cfg.model.context_dim:  # text-to-image: every training caption embedded once, up front
            self.text, self.caption_table = self._embed_captions(ctx)
            # captions read as they are written when drawn as prompts (brackets in a folder's captions: no syntax)
            self.preview_prompts = [literal(c) for c in ctx.captions.examples(10)]  # the rows of the sample grids
            self.figure_prompt = literal(max(ctx.captions.texts[:200], key=len))  # digits: naming all 3 attributes
        self.net = build_model(cfg.model).to(self.device)
        tc = cfg.train
        self.channels_last = self.device.type == "cuda" if tc.channels_last is None else tc.channels_last
        if self.channels_last:  # NHWC: faster convs on tensor-core GPUs (measured slower on CPU, hence off there)
            self.net = self.net.to(memory_format=torch.channels_last)
        self.denoiser = Denoiser(self.net, cfg.diffusion).to(self.device)
        self.ema = EMA(self.net, tc.ema_decay)
        self.ema_denoiser = Denoiser(self.ema.module, cfg.diffusion).to(self.device).eval()
        self.phema = PowerEMA(self.net, tc.posthoc_ema) if tc.posthoc_ema else None  # post-hoc EMA profiles
        self.optimizer = adamw(self.net, cfg, self.device)
        # DDP and torch.compile wrap the network for the step only; EMA and checkpoints use the plain module.
        step_net = ctx.wrap(self.net)
        self.step_fn = self.denoiser if step_net is self.net else Denoiser(step_net, cfg.diffusion)

    @classmethod
    def configure(cls, cfg: Config, data) -> Config:
        cfg.model.in_channels, cfg.model.image_size = data.channels, data.image_size
        if cfg.data.augment:  # the augment label's width (a distilled student keeps its teacher's, data.augment off)
            from noisecraft.augment import augment_dim

            cfg.model.augment_dim = augment_dim(cfg.data.augment, data.channels)
        if cfg.autoencoder.latent:
            cls._configure_latent(cfg, data)
        if data.captions is None:
            if cfg.model.text_encoder:
                raise UserError(f"model.text_encoder is set but the {cfg.data.dataset} data has no captions: add "
                                f"--data.captions=on")
            cfg.model.num_classes = data.num_classes
            return cfg
        from noisecraft.conditioning.text import default_text_encoder, encoder_spec

        cfg.model.text_encoder = cfg.model.text_encoder or default_text_encoder()
        cfg.model.context_dim = encoder_spec(cfg.model.text_encoder)["dim"]
        cfg.model.num_classes = 0  # the captions condition the model, not the classes
        return cfg

    @staticmethod
    def _configure_latent(cfg: Config, data) -> None:
        """The U-Net's input is the autoencoder's latent: its channels and size; the decoded images' channels
        are recorded (what the run draws)."""
        from noisecraft.autoencoder.codec import load_codec

        codec = load_codec(cfg.autoencoder.path)
        if codec.image_channels != data.channels:
            raise UserError(f"the autoencoder at {cfg.autoencoder.path} takes {codec.image_channels}-channel images, "
                            f"the {cfg.data.dataset} data has {data.channels}")
        if codec.image_size and codec.image_size != data.image_size:
            raise UserError(f"the autoencoder at {cfg.autoencoder.path} was trained on {codec.image_size}x"
                            f"{codec.image_size} images, the {cfg.data.dataset} data here are {data.image_size}x"
                            f"{data.image_size}: pass --image-size {codec.image_size} or train one for this size")
        cfg.model.in_channels, cfg.model.image_size, _ = codec.latent_shape(data.image_size)
        cfg.autoencoder.image_channels = codec.image_channels

    def _latent_codec(self, ctx: TaskContext):
        """The frozen autoencoder: the run's own copy when it has one (a resumed run), else autoencoder.path,
        copied into the run (main process) unless autoencoder.copy_into_run is off."""
        from noisecraft.autoencoder.codec import RUN_COPY, load_codec

        copy = ctx.root / RUN_COPY if ctx.root is not None else None
        if copy is not None and copy.is_dir():
            codec = load_codec(copy, self.device)
            codec.source = self.cfg.autoencoder.path
            return codec
        codec = load_codec(self.cfg.autoencoder.path, self.device)
        if copy is not None and self.cfg.autoencoder.copy_into_run and ctx.dist.is_main:
            codec.copy_into(ctx.root)
        return codec

    def training_data(self):
        """Pixels, or (latent diffusion) the training set's latents, encoded once and cached in the run."""
        if self.codec is None:
            return self.ctx.train_data
        if self._latents is None:
            data = self.ctx.train_data
            if not isinstance(data, ImageData):
                raise UserError("latent diffusion encodes the training set in memory: this image folder is larger "
                                "than data.max_memory_mb; raise it")
            key = f"{self.codec.sha256}:{self.codec.scale!r}:{len(data)}:{data.image_size}:{self.cfg.data.hflip}"
            path = self.ctx.root / "latents.safetensors" if self.ctx.root is not None else None
            self._latents = latent_cache(data, self.codec.encode, self.device, self.cfg.data.hflip, path, key)
        return self._latents

    def _embed_captions(self, ctx: TaskContext):
        """The text embeddings (loaded from the run directory's cache, the rest encoded now and saved there) and
        the training captions' rows on the device: (T, L, D) tokens, (T, L) mask, (T, D) pooled."""
        from noisecraft.conditioning.text import EMBEDDINGS_FILE, TextEmbeddings

        m = self.cfg.model
        file = ctx.root / EMBEDDINGS_FILE if ctx.root is not None else None
        text = TextEmbeddings(m.text_encoder, m.text_max_tokens, self.device, file)
        cached = len(text)
        table = text(ctx.captions.texts, self.device)
        if file is not None and len(text) > cached and ctx.dist.is_main:
            text.save(file)
        return text, table

    def modules(self):
        parts = {"unet": self.net, "unet_ema": self.ema.module}
        return parts if self.phema is None else {**parts, **self.phema.parts("unet")}

    def optimizers(self):
        return {"unet": self.optimizer}

    def metadata(self):
        meta = {"class_names": self.class_names, "params": count_parameters(self.net)}
        if self.codec is not None:  # which autoencoder the latents are of
            meta["autoencoder"] = self.codec.record()
        if self.text is not None:  # what evaluation measures generated digits against
            meta["attribute_thresholds"] = self.ctx.captions.thresholds
        return meta

    def condition(self, y: torch.Tensor | None, drop: torch.Tensor | None = None) -> dict | None:
        """The network's conditioning for a batch's condition ids y (B,): class labels, or (text) indices of the
        training captions; `drop` (B,) marks those replaced by the null class or the empty prompt (caption 0)."""
        if y is None:
            return None
        if self.text is None:
            null = self.cfg.model.num_classes
            return class_cond(y if drop is None else torch.where(drop, torch.full_like(y, null), y))
        ids = y if drop is None else torch.where(drop, torch.zeros_like(y), y)
        return {k: v[ids] for k, v in self.caption_table.items()}

    def step(self, batch, step: int) -> StepResult:
        tc = self.cfg.train
        x0, y, *augment_labels = batch  # (B, C, H, W) in [-1, 1], (B,) labels or None[, (B, A) augment labels]
        if self.channels_last:
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
        g = torch.Generator(self.device).manual_seed(12345)
        bs, total = self.cfg.train.batch_size, 0.0
        for start in range(0, len(data), bs):
            x0 = self._val_x0(data, start, start + bs)
            with autocast_ctx(self.device, self.cfg.train.precision):
                cond = self._val_condition(data, start, start + bs)
                total += float(self.held_out_loss(x0, cond, g).sum())
        return total / max(1, len(data))

    def _val_x0(self, data: ImageData, start: int, stop: int) -> torch.Tensor:
        """Held-out images in [-1, 1], or (latent diffusion) their latents, encoded at the first call."""
        if self.codec is None:
            return to_model_range(data.images[start:stop].to(self.device))
        if self._val_latents is None:
            self._val_latents = encode_images(data.images, self.codec.encode, self.device)
        return self._val_latents[start:stop].to(self.device)

    def _val_condition(self, data: ImageData, start: int, stop: int) -> dict | None:
        """Held-out images' conditioning: their labels, or (text) one caption each, the same every call."""
        if self.text is None:
            return class_cond(data.labels[start:stop].to(self.device) if data.labels is not None else None)
        if self._val_texts is None:
            caps, n = data.captions, len(data)
            ids = caps.draw(torch.arange(n), torch.rand(n, generator=torch.Generator().manual_seed(54321)))
            self._val_texts = [caps.texts[i] for i in ids.tolist()]
        return self.text(self._val_texts[start:stop], self.device)

    def evaluate(self, step: int) -> dict[str, float] | None:
        if not self.cfg.train.eval_every:
            return None
        return self.ctx.hooks.metrics(self.pipeline())

    def pipeline(self):
        """The EMA denoiser composed with this run's conditioner and codec, as `load_pipeline` composes it."""
        from noisecraft.pipeline import pipeline_for

        return pipeline_for(self.cfg, self.ema_denoiser, device=self.device, class_names=self.class_names,
                            text=self.text, codec=self.codec, root=self.ctx.root)

    def pictures(self, root: Path, step: int | None) -> None:
        if step is not None:
            self.sample_grid(root / "samples" / f"step_{step:08d}.png", steps=20)
            return
        self.sample_grid(root / "samples" / "final.png")
        if self.codec is None:  # the figures show pixels being noised; a latent run's noise is in latent space
            self.process_figures(root)
        if self.text is not None:
            self.ctx.hooks.figure(self.pipeline(), "cross-attention", root / "cross_attention.png",
                                  prompts=[self.figure_prompt])

    def rows(self, n: int | None = None) -> torch.Tensor | list[str] | None:
        """What the figures' rows show: every class (labels), preview prompts (text), or None (unconditional)."""
        if self.text is not None:
            return self.preview_prompts[:n]
        k = self.cfg.model.num_classes
        return torch.arange(k)[:n] if k else None

    def sample_grid(self, path: Path, per_class: int = 8, steps: int | None = None) -> None:
        """One row per class or preview prompt (or 8 x 8 unconditional samples), fixed seeds so rows compare over
        time."""
        from noisecraft.viz import save_grid

        rows = self.rows()
        n = per_class * len(rows) if rows is not None else 64
        labels = take(rows, [i // per_class for i in range(n)])
        images = self.pipeline().generate(n=n, labels=labels, steps=steps, seed=0)
        save_grid(images, path, nrow=per_class if rows is not None else 8)

    def process_figures(self, root: Path) -> None:
        """forward_process.png and reverse_process.png: `noisecraft explain`'s forward and reverse figures of this
        model (4 images, 8 columns, DDIM 50; x_t in the VP view sqrt(alpha_bar) x that the network sees)."""
        prompts = list(self.preview_prompts[:4]) if self.text is not None else []
        pipe = self.pipeline()
        for name, file in (("forward", "forward_process.png"), ("reverse", "reverse_process.png")):
            self.ctx.hooks.figure(pipe, name, root / file, n=4, columns=8, steps=50, prompts=prompts)
