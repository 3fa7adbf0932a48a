"""Typed run configuration: dataclasses, presets, JSON load/save and `--key=value` overrides.

This module must not import torch: the CLI parses and validates a config before any heavy import.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisecraft.errors import UserError
from noisecraft.registry import (ARCHITECTURES, AUGMENTATIONS, BALANCES, BEST_METRICS, CAPTIONS, DATASETS,
                                 DISTILLATIONS, EMOJI_EXCLUDES, EMOJI_GROUPS, LORA_TARGETS, LOSS_WEIGHTINGS,
                                 LR_SCHEDULES, POSITIONS, PRECISIONS, PREDICTIONS, SAMPLERS, SCHEDULES, TASKS,
                                 TIME_DENSITIES, Entry, Registry)

# The largest sigma_rel of a power-function EMA profile with gamma >= 0 (the uniform average over all of training has
# sigma_rel = 1/sqrt(12)); beyond it the profile would weigh the earliest weights most.
POSTHOC_SIGMA_MAX = 12 ** -0.5


@dataclass
class DataConfig:
    """`data`: which images, and how they are loaded and held out."""

    dataset: str = "digits"  # a name in registry.DATASETS
    data_root: str | None = None  # torchvision root for mnist/cifar10, the image folder for `folder`
    download: bool = False  # only ever download when asked
    image_size: int | None = None  # resize to this square size; None keeps the native size
    hflip: bool = False  # random horizontal flip (on for CIFAR-10, off for digits)
    val_size: int = 500  # held-out images used for the validation loss
    max_memory_mb: int = 200  # a train split larger than this as uint8 (image folders only) streams from disk
    num_workers: int = 4  # DataLoader worker processes decoding a streamed folder
    captions: str = "auto"  # registry.CAPTIONS: auto | on | off; data with captions trains a text-to-image model
    # Non-leaking augmentation (Karras et al. 2020/2022): names in registry.AUGMENTATIONS, each applied to a training
    # image with probability augment_p and told to the network as conditioning that is zero at sampling. () = off.
    augment: tuple[str, ...] = ()
    augment_p: float = 0.12  # probability of each transform per image (EDM's CIFAR-10 setting)
    subset: int = 0  # train on the first N images of the train split (a fixed random order); 0 = all
    # Keep only the images of these classes (names, e.g. 0,1,2 for digits; sub-folder names for a folder), in both
    # splits; labels keep their numbering, so a class left out can be taught afterwards (`noisecraft finetune`).
    # () = every class
    classes: tuple[str, ...] = ()
    balance: str = "none"  # registry.BALANCES: none | colour (images of rare dominant colours drawn more often)
    background: str = "white"  # image folders: colour transparent pixels are composited on (a CSS name or #rrggbb)
    # The emoji dataset (noisecraft.emoji); data_root there is an optional folder of OpenMoji SVGs.
    emoji_label: str = "group"  # class of an emoji: its Unicode group (9 classes) | subgroup (about 100)
    emoji_groups: tuple[str, ...] = ()  # keep only these groups (registry.EMOJI_GROUPS, e.g. food-drink); () = all
    emoji_exclude: tuple[str, ...] = ("skin-tones",)  # leave these out (registry.EMOJI_EXCLUDES): flags, keycaps, ...
    emoji_background: str = "white"  # colour the transparent SVGs are composited on: a CSS name or #rrggbb
    emoji_synonyms: bool = False  # a caption naming the colour by another word too (captions.COLOUR_SYNONYMS)


@dataclass
class ModelConfig:
    """`model`: the network (a U-Net or a diffusion transformer) and its conditioning."""

    arch: str = "unet"  # registry.ARCHITECTURES: unet | dit (diffusion transformer, Peebles & Xie 2023)
    base_channels: int = 64  # channels of level 0; level i has base_channels * channel_mult[i]; dit: token width
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level; each level after the first halves H, W
    num_res_blocks: int = 2  # residual blocks per encoder level (the decoder has one more per level)
    attn_resolutions: tuple[int, ...] = (7,)  # feature-map sizes with self-attention after each residual block
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.1  # dropout inside the residual blocks
    scale_shift: bool = True  # embedding scales+shifts GroupNorm output (Improved DDPM); False: added bias (DDPM)
    # Side of the pixel patches folded into channels before the first convolution and unfolded after the last (space
    # to depth, as U-ViT and simple diffusion do): the U-Net's top level runs at image_size / patch_size.
    # arch=dit: the side of the pixel patch one token covers.
    patch_size: int = 1
    depth: int = 6  # arch=dit: transformer blocks
    mlp_ratio: float = 4.0  # arch=dit: hidden width of a block's MLP / token width
    pos_embed: str = "sincos"  # arch=dit: registry.POSITIONS: sincos (fixed 2D sin-cos) | learned
    conv_stem: int = 0  # arch=dit: channels of a 3x3 conv before patchify and after unpatchify; 0 = none
    # arch=dit: U-ViT's long skips (Bao et al. 2023): the first half of the blocks' outputs join the inputs of the
    # mirrored second half, concatenated and projected back to the token width.
    long_skip: bool = False
    # Text-to-image (data with captions): a frozen encoder's token embeddings feed cross-attention, its pooled
    # embedding joins the time embedding. A name in registry.TEXT_ENCODERS or a local sentence-transformers / Hugging
    # Face model directory; None: all-MiniLM-L6-v2 when the data has captions.
    text_encoder: str | None = None
    text_max_tokens: int = 32  # prompt tokens cross-attention reads (longer prompts are truncated with a warning)
    cross_attn_resolutions: tuple[int, ...] | None = None  # where blocks cross-attend (+ mid); None: attn_resolutions
    context_dim: int | None = None  # text-token width (filled in from the text encoder); None: no text
    # Filled in from the dataset when the run starts, so a checkpoint is self-describing.
    in_channels: int = 0  # channels of what the network sees: the images' (1 grey, 3 RGB), or the latents'
    image_size: int = 0  # side of the square inputs the network sees (images, or latents in latent diffusion)
    num_classes: int = 0  # 0 = unconditional
    augment_dim: int = 0  # width of the augment label (filled in from data.augment); 0 = no augment conditioning

    @property
    def conditioning(self) -> str:
        """What a request to this model names: "text" (prompts), "class" (labels) or "unconditional"."""
        if self.context_dim:
            return "text"
        return "class" if self.num_classes else "unconditional"


@dataclass
class DiffusionConfig:
    """`diffusion`: the noise schedule, what the network predicts and how the loss weighs noise levels."""

    schedule: str = "linear"  # registry.SCHEDULES: linear (Ho et al. 2020) | cosine (Nichol & Dhariwal 2021)
    timesteps: int = 1000  # T: steps of the discrete schedule the network is trained on
    beta_start: float = 1e-4  # the linear schedule's first beta (noise variance added at step 1)
    beta_end: float = 0.02  # the linear schedule's last beta
    prediction: str = "eps"  # registry.PREDICTIONS: eps | x0 | v | edm (Karras et al. 2022 preconditioning)
    loss_weighting: str = "none"  # registry.LOSS_WEIGHTINGS: none | min-snr (Hang et al. 2023)
    min_snr_gamma: float = 5.0  # min-SNR weighting clips the loss weight at SNR = gamma
    # EDM (prediction == "edm"):
    sigma_data: float = 0.5  # std of the data, which EDM's preconditioning scales for
    sigma_min: float = 0.002  # lowest noise level of the sampling grid
    sigma_max: float = 80.0  # highest noise level of the sampling grid (the prior's std)
    p_mean: float = -1.2  # training noise levels: ln(sigma) ~ N(p_mean, p_std^2)
    p_std: float = 1.2  # see p_mean
    # Rectified flow (prediction == "flow"): x_t = (1 - t) x0 + t eps, sigma = t / (1 - t) in the sigma view.
    time_sampling: str = "logit-normal"  # registry.TIME_DENSITIES: how training draws t (uniform | logit-normal)
    logit_mean: float = 0.0  # logit-normal t: logit(t) ~ N(logit_mean, logit_std^2) (Esser et al. 2024: 0, 1)
    logit_std: float = 1.0  # see logit_mean


@dataclass
class TrainConfig:
    """`train`: the optimizer, its schedule, precision, and the cadence of logs, checkpoints and pictures."""

    steps: int = 10_000  # total optimizer steps
    batch_size: int = 128  # images per optimizer step, over all processes
    lr: float = 2e-4  # AdamW learning rate after the warm-up
    warmup_steps: int = 500  # linear learning-rate warm-up from 0
    lr_schedule: str = "constant"  # after the warm-up: constant | cosine (decays to 0 at train.steps)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the gradient's global norm to this; 0 = off
    ema_decay: float = 0.999  # exponential moving average of the weights, which sampling uses
    # Classifier-free guidance: share of class labels replaced by the null class (captions: by the empty prompt).
    label_dropout: float = 0.1
    precision: str = "auto"  # registry.PRECISIONS: auto (bf16 autocast where the hardware has it) | fp32 | bf16
    seed: int = 0  # seeds weights, batches and noise: the same config trains the same run
    log_every: int = 50  # steps between `train` records in log.jsonl
    val_every: int = 500  # steps between validation losses (EMA weights)
    sample_every: int = 1000  # steps between sample grids in samples/
    ckpt_every: int = 500  # steps between checkpoints (last, best, step_N)
    keep_last: int = 2  # keep this many step checkpoints besides `last` and `best`
    compile: bool = False  # torch.compile the network
    max_nonfinite_steps: int = 10  # stop after this many steps in a row with a non-finite loss or gradient
    final_figures: bool = True  # loss.png, samples/final.png and the process figures when training ends
    channels_last: bool | None = None  # NHWC activations; None = auto: on for CUDA, off on CPU (slower there)
    num_threads: int = 0  # CPU intra-op threads; 0 = auto (OMP_NUM_THREADS, else cores / processes per machine)
    eval_every: int = 0  # offline metrics (classifier judge) every N steps; 0 = off
    eval_n: int = 500  # samples per evaluation during training
    eval_steps: int = 20  # DDIM steps for those samples
    best_metric: str = "val_loss"  # what picks `best`: a name in registry.BEST_METRICS
    device: str = "auto"  # auto (the first GPU, else the CPU) | cpu | cuda | cuda:N
    task: str = "diffusion"  # what the loop trains (noisecraft.registry.TASKS)
    # Post-hoc EMA (Karras et al. 2024): sigma_rel of the power-function EMA profiles kept besides ema_decay's EMA,
    # e.g. (0.05, 0.10); `noisecraft ema` reconstructs any other length from their snapshots. () = off.
    posthoc_ema: tuple[float, ...] = ()
    posthoc_every: int = 100  # steps between snapshots of those profiles (<run>/ema_snapshots/, fp16)


@dataclass
class SampleConfig:
    """`sample`: the run's sampling defaults (`sample`, `evaluate`, `serve` and the pipeline start from them)."""

    sampler: str = "ddim"  # a name in registry.SAMPLERS
    steps: int = 50  # sampler steps
    guidance: float = 0.0  # classifier-free guidance weight w (Ho & Salimans 2022); 0 = off
    # (sigma_lo, sigma_hi): guide only where sigma_lo < sigma <= sigma_hi (Kynkäänniemi et al. 2024); () = always;
    # sigma_hi may be inf. Steps outside the interval cost one network call instead of two.
    guidance_interval: tuple[float, ...] = ()
    clip_x0: bool = True  # clamp x0 predictions to the data range [-1, 1] (pixel space)
    precision: str = "auto"  # network calls: registry.PRECISIONS


@dataclass
class AutoencoderConfig:
    # Latent diffusion (train.task=diffusion): the U-Net learns the latents of a frozen autoencoder.
    latent: bool = False  # diffuse in the autoencoder's latent space (needs `path`); False: pixel space
    path: str | None = None  # a noisecraft autoencoder run, or a diffusers AutoencoderKL folder (config.json + weights)
    copy_into_run: bool = True  # keep the autoencoder's weights in the diffusion run, so the run alone samples
    image_channels: int = 0  # channels of the decoded images (filled in from the autoencoder); 0: not recorded
    # The KL-regularised autoencoder itself (train.task=autoencoder; Rombach et al. 2022).
    downsample: int = 4  # spatial factor f of the latents (a power of 2: 4, or 8)
    latent_channels: int = 4  # channels of a latent (B, latent_channels, H/f, W/f)
    base_channels: int = 32  # width of the full-resolution blocks
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width per resolution (base_channels * mult): log2(f) + 1 entries
    num_res_blocks: int = 1  # residual blocks per resolution, in the encoder and in the decoder
    # Its loss: L1 + kl_weight * KL + lpips_weight * LPIPS + adaptive weight * disc_weight * hinge adversarial term.
    kl_weight: float = 1e-6  # the KL term keeps latents near N(0, I) without limiting reconstruction
    disc_weight: float = 0.5  # multiplies the adaptive weight (latent diffusion's `disc_weight`)
    disc_start: int = 0  # step from which the discriminator trains and its term counts; None of it before
    disc_channels: int = 64  # width of the PatchGAN discriminator's first layer (Isola et al. 2017)
    disc_layers: int = 3  # strided layers of the discriminator (its patch grows with them)
    disc_lr: float | None = None  # the discriminator's learning rate; None: train.lr
    lpips_weight: float = 1.0  # weight of the perceptual term, used only when lpips_weights is given
    lpips_weights: str | None = None  # torchvision VGG16 (ImageNet) weights for LPIPS; None: no perceptual term


@dataclass
class DistillConfig:
    """`distill`: a student tuned from a trained run (train.task=distill, `noisecraft distill`) into a consistency
    model that samples in 1-4 network calls."""

    teacher: str | None = None  # the teacher's checkpoint file (set by `noisecraft distill`)
    teacher_sha256: str = ""  # of that file: a resumed distillation refuses a teacher that changed
    method: str = "cd"  # registry.DISTILLATIONS: cd (consistency distillation, guidance distilled)
    # The teacher's guidance, distilled into the student (its targets are the guided teacher's ODE steps), so the
    # student samples unguided: one network call a step.
    teacher_guidance: float = 0.0  # the teacher's classifier-free guidance weight w
    teacher_guidance_interval: tuple[float, ...] = ()  # (sigma_lo, sigma_hi) where the teacher guides; () = always
    grid_start: int = 10  # noise levels of the teacher's discretisation at the first step (coarse: big jumps) ...
    grid_end: int = 40  # ... growing geometrically to this many (fine: the ODE followed closely) ...
    grid_ramp_steps: int = 300  # ... over this many steps, then staying (`noisecraft distill`: its --steps)
    huber_c: float = 0.01  # pseudo-Huber distance sqrt(|d|^2 + (c sqrt(dim))^2) - c sqrt(dim) (Song & Dhariwal 2023)


@dataclass
class FinetuneConfig:
    """`finetune`: a low-rank adapter (LoRA) trained on a frozen run (train.task=finetune, `noisecraft finetune`)."""

    base: str | None = None  # the base run's checkpoint file (set by `noisecraft finetune`); never written to
    base_sha256: str = ""  # of that file: the adapter records it, and refuses to load on another base
    rank: int = 8  # r of every adapted layer (W + alpha / r * B A); its file grows linearly with it
    alpha: float = 0.0  # LoRA's alpha; 0: the rank (a scale of 1 then adds B A as trained)
    targets: str = "attention"  # registry.LORA_TARGETS: attention | attention+blocks
    # Prior preservation (DreamBooth, Ruiz et al. 2023): images the base draws for these prompts (text runs) or
    # class names (class runs), drawn once at the start, join every batch with weight prior_weight, so the adapter
    # keeps what the base did. () = the base's own classes (text runs: a caption naming each); 0 images: off.
    prior_prompts: tuple[str, ...] = ()
    prior_images: int = 200  # images the base draws for prior preservation, cycled over prior_prompts
    prior_weight: float = 1.0  # weight of the prior images' loss against the new images'
    trigger: str = ""  # the prompt or class that calls the adapter up (recorded); "": the data's first caption
    licence: str = ""  # the training images' licence, recorded in the adapter ("" = unknown)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images a model of this config draws: what the network sees in pixel space, or the
        decoded images of a latent run (data.image_size; channels as recorded from its autoencoder, or 0 when a
        run from before that record did not say)."""
        m = self.model
        if not self.autoencoder.latent:
            return (m.in_channels, m.image_size, m.image_size)
        size = self.data.image_size or m.image_size
        return (self.autoencoder.image_channels, size, size)

    def to_dict(self) -> dict[str, Any]:
        """Every field, as strict JSON takes it (an open guidance interval's inf becomes "inf")."""
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        if not isinstance(d, dict):
            raise UserError("config must be a JSON object")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise UserError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        cfg = cls()
        for section, values in d.items():
            if not isinstance(values, dict):
                raise UserError(f"config section '{section}' must be an object")
            for key, value in values.items():
                _set_field(cfg, f"{section}.{key}", value)
        cfg.validate()
        return cfg

    def save(self, path: str | Path) -> None:
        # Write-then-rename: a run killed mid-save must not leave a torn config.json behind for --resume.
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(to_json(self.to_dict()) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise UserError(f"config file {path} is not valid JSON: {e}") from None

    def validate(self) -> None:
        DATASETS.get(self.data.dataset, "data.dataset")
        SCHEDULES.get(self.diffusion.schedule, "diffusion.schedule")
        PREDICTIONS.get(self.diffusion.prediction, "diffusion.prediction")
        LOSS_WEIGHTINGS.get(self.diffusion.loss_weighting, "diffusion.loss_weighting")
        TIME_DENSITIES.get(self.diffusion.time_sampling, "diffusion.time_sampling")
        SAMPLERS.get(self.sample.sampler, "sample.sampler")
        PRECISIONS.get(self.sample.precision, "sample.precision")
        gi = self.sample.guidance_interval
        if gi and not (len(gi) == 2 and 0 <= gi[0] < gi[1]):  # NaN fails both comparisons; lo = inf fails lo < hi
            raise UserError(f"sample.guidance_interval must be two noise levels 0 <= sigma_lo < sigma_hi (sigma_lo "
                            f"finite, sigma_hi may be inf), or empty; got {','.join(str(v) for v in gi)}")
        PRECISIONS.get(self.train.precision, "train.precision")
        CAPTIONS.get(self.data.captions, "data.captions")
        BALANCES.get(self.data.balance, "data.balance")
        self.data.classes = tuple(c.strip() for c in self.data.classes)
        if "" in self.data.classes or len(set(self.data.classes)) != len(self.data.classes):
            raise UserError(f"data.classes must be distinct non-empty class names, got {','.join(self.data.classes)}")
        if self.model.text_encoder and self.data.captions == "off":
            raise UserError("model.text_encoder needs captions: drop --data.captions=off")
        if self.model.text_max_tokens < 2:
            raise UserError(f"model.text_max_tokens must be >= 2 (the encoder's start and end tokens), got "
                            f"{self.model.text_max_tokens}")
        self._validate_emoji()
        self._validate_augment()
        TASKS.get(self.train.task, "train.task")
        DISTILLATIONS.get(self.distill.method, "distill.method")
        if not 2 <= self.distill.grid_start <= self.distill.grid_end:
            raise UserError(f"distill.grid_start and grid_end must satisfy 2 <= grid_start <= grid_end, got "
                            f"{self.distill.grid_start} and {self.distill.grid_end}")
        _positive("distill.grid_ramp_steps", self.distill.grid_ramp_steps)
        if not self.distill.huber_c > 0:
            raise UserError(f"distill.huber_c must be > 0, got {self.distill.huber_c}")
        self._validate_finetune()
        LR_SCHEDULES.get(self.train.lr_schedule, "train.lr_schedule")
        if BEST_METRICS.get(self.train.best_metric, "train.best_metric").needs_eval and self.train.eval_every <= 0:
            raise UserError(f"train.best_metric={self.train.best_metric} needs train.eval_every > 0")
        if self.train.eval_every < 0 or self.train.eval_n < 2 or self.train.eval_steps <= 0:
            raise UserError("train.eval_every must be >= 0, train.eval_n >= 2 and train.eval_steps > 0")
        ARCHITECTURES.get(self.model.arch, "model.arch")
        POSITIONS.get(self.model.pos_embed, "model.pos_embed")
        _positive("model.depth", self.model.depth)
        if self.model.conv_stem < 0:
            raise UserError(f"model.conv_stem must be >= 0, got {self.model.conv_stem}")
        if self.model.long_skip and (self.model.arch != "dit" or self.model.depth < 2):
            raise UserError(f"model.long_skip needs model.arch=dit and model.depth >= 2, got "
                            f"model.arch={self.model.arch} and model.depth={self.model.depth}")
        if not self.model.mlp_ratio > 0:
            raise UserError(f"model.mlp_ratio must be > 0, got {self.model.mlp_ratio}")
        _positive("train.steps", self.train.steps)
        _positive("train.batch_size", self.train.batch_size)
        for name in ("log_every", "val_every", "sample_every", "ckpt_every", "max_nonfinite_steps"):
            _positive(f"train.{name}", getattr(self.train, name))
        for name in ("keep_last", "warmup_steps", "weight_decay", "grad_clip"):
            if not getattr(self.train, name) >= 0:  # also catches NaN
                raise UserError(f"train.{name} must be >= 0, got {getattr(self.train, name)}")
        if self.data.val_size < 0:
            raise UserError(f"data.val_size must be >= 0, got {self.data.val_size}")
        _positive("model.head_channels", self.model.head_channels)
        _positive("sample.steps", self.sample.steps)
        _positive("model.base_channels", self.model.base_channels)
        _positive("model.patch_size", self.model.patch_size)
        _positive("diffusion.timesteps", self.diffusion.timesteps)
        if not self.model.channel_mult or any(m <= 0 for m in self.model.channel_mult):
            raise UserError("model.channel_mult must be a non-empty list of positive integers")
        if not 0 < self.train.lr <= 10:  # also catches NaN and inf
            raise UserError(f"train.lr must be in (0, 10], got {self.train.lr}")
        if not 0.0 <= self.train.label_dropout < 1.0:
            raise UserError(f"train.label_dropout must be in [0, 1), got {self.train.label_dropout}")
        if not 0.0 <= self.train.ema_decay < 1.0:
            raise UserError(f"train.ema_decay must be in [0, 1), got {self.train.ema_decay}")
        self._validate_posthoc()
        if not 0.0 <= self.model.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {self.model.dropout}")
        if self.data.image_size is not None and self.data.image_size < 8:
            raise UserError(f"data.image_size must be >= 8, got {self.data.image_size}")
        if not 0.0 < self.diffusion.beta_start < self.diffusion.beta_end < 1.0:
            raise UserError("diffusion betas must satisfy 0 < beta_start < beta_end < 1")
        self._validate_autoencoder()

    def _validate_finetune(self) -> None:
        f = self.finetune
        LORA_TARGETS.get(f.targets, "finetune.targets")
        _positive("finetune.rank", f.rank)
        if not f.alpha >= 0 or f.prior_images < 0 or not f.prior_weight >= 0:  # NaN fails too
            raise UserError(f"finetune.alpha, prior_images and prior_weight must be >= 0, got {f.alpha}, "
                            f"{f.prior_images} and {f.prior_weight}")
        f.prior_prompts = tuple(p.strip() for p in f.prior_prompts if p.strip())

    def _validate_posthoc(self) -> None:
        tc = self.train
        if not tc.posthoc_ema:
            return
        if tc.task != "diffusion":
            raise UserError(f"train.posthoc_ema is kept by train.task=diffusion only, not {tc.task}")
        bad = [s for s in tc.posthoc_ema if not 0 < s < POSTHOC_SIGMA_MAX]
        if bad or len(set(tc.posthoc_ema)) != len(tc.posthoc_ema):
            raise UserError(f"train.posthoc_ema must be distinct sigma_rel values in (0, {POSTHOC_SIGMA_MAX:.4f}), "
                            f"e.g. 0.05,0.10; got {','.join(str(s) for s in tc.posthoc_ema)}")
        _positive("train.posthoc_every", tc.posthoc_every)

    def _validate_emoji(self) -> None:
        d = self.data
        d.emoji_groups = tuple(g.strip().lower() for g in d.emoji_groups if g.strip())
        d.emoji_exclude = tuple(e.strip().lower() for e in d.emoji_exclude if e.strip())
        _choice("data.emoji_label", d.emoji_label, ("group", "subgroup"))
        for g in d.emoji_groups:
            EMOJI_GROUPS.get(g, "each of data.emoji_groups")
        for e in d.emoji_exclude:
            EMOJI_EXCLUDES.get(e, "each of data.emoji_exclude")
        if not d.emoji_background.strip():
            raise UserError("data.emoji_background must be a colour (a CSS name such as white, or #rrggbb)")

    def _validate_augment(self) -> None:
        d = self.data
        d.augment = tuple(a.strip().lower() for a in d.augment if a.strip())
        for a in d.augment:
            AUGMENTATIONS.get(a, "each of data.augment")
        if len(set(d.augment)) != len(d.augment):
            raise UserError(f"data.augment names a transform twice: {','.join(d.augment)}")
        if not 0.0 <= d.augment_p <= 1.0:  # also catches NaN
            raise UserError(f"data.augment_p must be in [0, 1], got {d.augment_p}")
        if d.subset < 0 or self.model.augment_dim < 0:
            raise UserError(f"data.subset and model.augment_dim must be >= 0, got {d.subset} and "
                            f"{self.model.augment_dim}")
        if d.augment and self.train.task == "autoencoder":
            raise UserError("data.augment conditions a diffusion model on its transforms; an autoencoder run has no "
                            "such conditioning: drop --data.augment")
        if d.augment and self.autoencoder.latent:
            raise UserError("data.augment transforms pixels, but latent diffusion trains on latents encoded once: "
                            "drop --data.augment or train in pixel space")

    def _validate_autoencoder(self) -> None:
        a = self.autoencoder
        if a.latent and not a.path:
            raise UserError("latent diffusion needs an autoencoder: pass --autoencoder PATH (a noisecraft autoencoder "
                            "run or a diffusers AutoencoderKL folder)")
        if a.path and not a.latent:
            raise UserError("autoencoder.path is set but autoencoder.latent is false: pass --autoencoder PATH")
        f = a.downsample
        if f < 1 or f & (f - 1):
            raise UserError(f"autoencoder.downsample must be a power of 2 (4, 8), got {f}")
        if len(a.channel_mult) != f.bit_length() or any(m <= 0 for m in a.channel_mult):
            raise UserError(f"autoencoder.channel_mult needs log2({f}) + 1 = {f.bit_length()} positive entries (one "
                            f"per resolution), got {','.join(map(str, a.channel_mult))}")
        for name in ("latent_channels", "base_channels", "num_res_blocks", "disc_channels", "disc_layers"):
            _positive(f"autoencoder.{name}", getattr(a, name))
        for name in ("kl_weight", "disc_weight", "disc_start", "lpips_weight"):
            if not getattr(a, name) >= 0:
                raise UserError(f"autoencoder.{name} must be >= 0, got {getattr(a, name)}")


def field_docs(section: type) -> dict[str, str]:
    """The documentation of each field of a config dataclass: the comment lines right above it, then the comment at
    the end of its line. Field comments are the config's documentation (the reference pages are generated from
    them, and a test requires one for every field), so they are read from the source rather than written twice."""
    import inspect
    import io
    import tokenize

    names, docs, above = {f.name for f in dataclasses.fields(section)}, {}, []
    for line in inspect.getsource(section).splitlines():
        code = line.strip()
        if code.startswith("#"):
            above.append(code.lstrip("#").strip())
            continue
        name = code.split(":", 1)[0]
        if name in names:
            tokens = tokenize.generate_tokens(io.StringIO(code + "\n").readline)
            trailing = [t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT]
            docs[name] = " ".join(above + trailing).strip()
        above = []
    return docs


def to_json(obj: Any) -> str:
    """Strict, indented JSON for every file and report noisecraft writes (see `json_safe`)."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False)


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats as the strings "inf", "-inf" and "nan", tuples as lists. Python's json writes
    them as Infinity and NaN, which strict parsers (JavaScript's JSON.parse, jq) reject; the config's typed loader
    and `float()` read the strings back."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got '{value}'")


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise UserError(f"{name} must be > 0, got {value}")


# ---------------------------------------------------------------- overrides


def _field_type(obj: Any, name: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    return hints[name]


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a JSON value or a command-line string to the field's declared type, or raise UserError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{name} expects a comma-separated list, got {value!r}")
        return tuple(_coerce(name, args[0], v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{name} expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{name} expects an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} expects an integer, got {value!r}") from None
        if f != int(f):
            raise UserError(f"{name} expects an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} expects a number, got {value!r}") from None
    if tp is str:
        return str(value)
    raise UserError(f"cannot set {name} of type {tp}")


def _set_field(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise UserError(f"config key must look like section.field, got '{dotted}'")
    section, key = parts
    sub = getattr(cfg, section, None)
    if sub is None or not dataclasses.is_dataclass(sub):
        raise UserError(f"unknown config section '{section}' in '{dotted}'")
    if key not in {f.name for f in dataclasses.fields(sub)}:
        raise UserError(f"unknown config key '{dotted}'")
    setattr(sub, key, _coerce(dotted, _field_type(sub, key), value))


def resolve_key(cfg: Config, key: str) -> str:
    """Accept `section.field` or a bare `field` when it is unique across sections."""
    if "." in key:
        return key
    owners = [f.name for f in dataclasses.fields(cfg) if key in {g.name for g in dataclasses.fields(getattr(cfg, f.name))}]
    if len(owners) == 1:
        return f"{owners[0]}.{key}"
    if not owners:
        raise UserError(f"unknown config key '{key}'")
    raise UserError(f"ambiguous config key '{key}': use one of {', '.join(o + '.' + key for o in owners)}")


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy of cfg with `{"train.lr": "1e-3", ...}` applied, type-checked, then validated."""
    cfg = dataclasses.replace(cfg, **{f.name: dataclasses.replace(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)})
    for key, value in overrides.items():
        _set_field(cfg, resolve_key(cfg, key.replace("-", "_")), value)
    cfg.validate()
    return cfg


# ---------------------------------------------------------------- presets


def _v_min_snr() -> DiffusionConfig:
    # The small presets' objective: v-prediction on a cosine schedule with min-SNR weighting (Hang et al. 2023).
    return DiffusionConfig(schedule="cosine", prediction="v", loss_weighting="min-snr")


def _preset_digits_v() -> Config:
    # The quickstart until issue 26, and the base of the other digits presets. Sized for any 2-core CPU, AVX2-only
    # laptops in fp32 included (issue 14): 700 steps of 64 images (~45k images, ~10 epochs). The U-Net folds 2x2
    # pixel patches into channels (patch_size 2) and runs at 14x14 and 7x7 with 32 and 64 channels: the 28x28 level
    # it used to have held most of the FLOPs, and digits lose nothing at 14x14 with 4 channels. lr 2e-3 suits the
    # short run. v-prediction with min-SNR weighting and guidance w=1 give class-faithful digits that early; guiding
    # only above sigma = 2 (Kynkaanniemi et al. 2024) keeps diversity and halves the cost of the low-noise steps.
    # Sampling defaults to DPM-Solver++(2M) with 15 steps: as accurate as DDIM-50 within noise, at a third of the
    # network calls. The experiments behind each choice: benchmarks/results/recipes.jsonl and
    # sampling_quality_digits.json.
    return Config(
        data=DataConfig(dataset="digits", val_size=500),
        model=ModelConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0,
                          patch_size=2),
        diffusion=_v_min_snr(),
        train=TrainConfig(steps=700, batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.995,
                          val_every=350, sample_every=350, ckpt_every=350),
        sample=SampleConfig(sampler="dpmpp-2m", steps=15, guidance=1.0, guidance_interval=(2.0, math.inf)),
    )


def _preset_digits() -> Config:
    # The quickstart (issue 26): digits-v's U-Net, data and sampler as rectified flow (digits-flow), on 650 steps of
    # 32 images. At equal wall-clock budgets of a 2-core CPU it was the one recipe of the comparison to pass 95%
    # judged right by a 120 s laptop budget; v-prediction with min-SNR needed twice the budget, and at 120 s flow on
    # batches of 64 and flow with a cosine lr fell short, a higher lr did about as well as batches of 32
    # (benchmarks/results/recipes_compare.json and recipes.jsonl).
    cfg = _preset_digits_flow()
    cfg.train = TrainConfig(steps=650, batch_size=32, lr=2e-3, warmup_steps=100, ema_decay=0.995,
                            val_every=325, sample_every=325, ckpt_every=325)
    return cfg


def _preset_digits_flow() -> Config:
    # digits-v as rectified flow (issue 26): the same U-Net, data and steps, the velocity objective with
    # logit-normal t (Esser et al. 2024), sampled by DPM-Solver++(2M) on the flow's uniform-t grid.
    cfg = _preset_digits_v()
    cfg.diffusion = DiffusionConfig(prediction="flow", loss_weighting="none")
    return cfg


def _preset_digits_dit() -> Config:
    # The digits on a diffusion transformer (issue 26): 4x4 pixel patches (49 tokens) with a 3x3 conv of 32 channels
    # before and after them, width 128, 4 blocks whose MLPs are twice the token width. A transformer learns the
    # digits' shapes more slowly than the U-Net's convolutions: the conv stem, rectified flow and the same images in
    # more, smaller steps (16 images) more than doubled what it drew right on the U-Net's recipe. Halving the MLPs
    # made each step cheaper at the same accuracy; a cosine lr and guidance w=2 at every step (not only above
    # sigma 2) brought it to the bar, at some cost in recall; U-ViT's long skips, lr 6e-3 and EMA 0.99 did
    # not help. A 16-channel stem was cheaper still in fp32 but trained far worse under bf16 autocast, so the stem
    # keeps 32. The variants, one thread under the AVX2 cap: benchmarks/results/dit_variants.jsonl,
    # dit_guidance.jsonl, dit_guidance_diversity.json; the stem in bf16: dit_stem_bf16.jsonl.
    cfg = _preset_digits_v()
    cfg.model = ModelConfig(arch="dit", base_channels=128, head_channels=32, patch_size=4, depth=4, dropout=0.0,
                            conv_stem=32, mlp_ratio=2.0)
    cfg.diffusion = DiffusionConfig(prediction="flow", loss_weighting="none")
    cfg.train = TrainConfig(steps=2800, batch_size=16, lr=4e-3, warmup_steps=400, lr_schedule="cosine",
                            ema_decay=0.995, val_every=1400, sample_every=1400, ckpt_every=1400)
    cfg.sample.guidance, cfg.sample.guidance_interval = 2.0, ()
    return cfg


def _preset_digits_edm() -> Config:
    cfg = _preset_digits_v()
    cfg.diffusion.prediction = "edm"
    cfg.diffusion.loss_weighting = "none"
    cfg.sample.sampler = "heun"
    cfg.sample.steps = 18
    return cfg


def _preset_digits_text() -> Config:
    # Text-to-image on the embedded digits (issue 15), sized for a 2-core laptop CPU without AVX-512 (fp32, issue
    # 22). Captions come from templates (digits as words and numerals) and from stroke thickness, slant and size
    # measured on the pixels, embedded once by all-MiniLM-L6-v2; the digits U-Net on 2x2 pixel patches (14x14 and 7x7,
    # 32 and 64 channels) with cross-attention to the prompt's tokens at both (and mid), and the pooled prompt added
    # to the time embedding. LayerNorm on the text embeddings (in the U-Net) took the slant pairs from 85% to 100%.
    # 1000 steps of 32 images at lr 2e-3: held-out paraphrases and attribute pairs stayed above their goals (90%,
    # 85%) where 500 steps of 64, 600 of 48 or 800 of 32 (constant or cosine lr) left the paraphrases below or at the
    # goal; 600 of 64 took longer. On both cores the network trains about as many images a second at 32 as at 64.
    # Sampling by DPM-Solver++(2M) 15 steps judges as DDIM 50 did, and with the sample grid only at the end it keeps
    # the whole command in its budget (benchmarks/results/preset_search.jsonl, benchmarks/text_to_image.py's judges).
    return Config(
        data=DataConfig(dataset="digits", val_size=500, captions="on"),
        model=ModelConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(7,),
                          cross_attn_resolutions=(14, 7), dropout=0.0, text_encoder="all-MiniLM-L6-v2",
                          text_max_tokens=16, patch_size=2),
        diffusion=_v_min_snr(),
        train=TrainConfig(steps=1000, batch_size=32, lr=2e-3, warmup_steps=100, ema_decay=0.995, val_every=500,
                          sample_every=1000, ckpt_every=500),
        sample=SampleConfig(sampler="dpmpp-2m", steps=15, guidance=2.0),
    )


def _preset_mnist() -> Config:
    return Config(
        data=DataConfig(dataset="mnist", val_size=2000),
        model=ModelConfig(),  # the defaults: 64 channels, mult (1, 2, 2), 2 res blocks, attention at 7x7, dropout 0.1
        diffusion=_v_min_snr(),
        train=TrainConfig(steps=50_000, batch_size=128, lr=5e-4, warmup_steps=1000, ema_decay=0.9995,
                          val_every=2000, sample_every=5000, ckpt_every=2000),
    )


def _preset_cifar10() -> Config:
    # Ho et al. 2020's CIFAR-10 network: ch=128, mult (1,2,2,2), 2 res blocks, attention at 16x16 (~35.7M params).
    return Config(
        data=DataConfig(dataset="cifar10", hflip=True, val_size=2000),
        model=ModelConfig(base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                          head_channels=128, dropout=0.1, scale_shift=False),
        diffusion=DiffusionConfig(schedule="linear", prediction="eps"),
        train=TrainConfig(steps=800_000, batch_size=128, lr=2e-4, warmup_steps=5000, ema_decay=0.9999,
                          val_every=5000, sample_every=10_000, ckpt_every=5000),
    )


def _preset_cifar10_small() -> Config:
    cfg = _preset_cifar10()
    cfg.model = ModelConfig(base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                            head_channels=64, dropout=0.1)
    cfg.diffusion = _v_min_snr()
    cfg.train.steps = 100_000
    cfg.train.ema_decay = 0.9995
    return cfg


def _preset_cifar10_edm() -> Config:
    cfg = _preset_cifar10()
    cfg.diffusion = DiffusionConfig(prediction="edm")
    cfg.sample = SampleConfig(sampler="heun", steps=18)
    return cfg


def _preset_digits64() -> Config:
    # The digits upscaled to 64x64 (the seed's "MNIST transformed to 64x64"), diffused in pixel space: the digits
    # recipe with one more resolution (64, 32, 16; attention at 16x16). The baseline latent diffusion is set against.
    cfg = _preset_digits_v()
    cfg.data.image_size = 64
    cfg.model = ModelConfig(base_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(16,),
                            dropout=0.0)
    cfg.train.lr = 1e-3  # the rate its figures (and digits64-latent's) were measured with
    return cfg


def _preset_digits64_ae() -> Config:
    # Latent diffusion's first stage for the 64x64 digits: f = 4 (16x16x4 latents), sized for a 2-core laptop CPU in
    # fp32 (issue 22): 8 channels at full resolution (16 took twice the time for no reconstruction the judge tells
    # apart), 1000 steps of 16 images at lr 2e-3 (more and smaller steps reconstructed better than 600 of 32 in less
    # time). The discriminator (16 channels) joins for the last 300 steps, once L1 has shaped the digits, with a
    # lower disc_weight than latent diffusion's 0.5: a fresh discriminator's gradients at that weight undid the
    # reconstruction. The variants measured (whole command, PSNR, judge accuracy of reconstructions):
    # benchmarks/results/preset_search.jsonl.
    return Config(
        data=DataConfig(dataset="digits", image_size=64, val_size=500),
        train=TrainConfig(task="autoencoder", steps=1000, batch_size=16, lr=2e-3, warmup_steps=50, grad_clip=0.0,
                          lr_schedule="cosine", ema_decay=0.99, val_every=500, sample_every=500, ckpt_every=500),
        autoencoder=AutoencoderConfig(downsample=4, latent_channels=4, base_channels=8, channel_mult=(1, 2, 4),
                                      num_res_blocks=1, disc_start=700, disc_weight=0.1, disc_channels=16,
                                      disc_layers=3),
    )


def _preset_digits64_latent() -> Config:
    # The digits recipe on the 16x16x4 latents of a digits64-ae run (--autoencoder): as in pixel space, the U-Net
    # folds 2x2 latent patches into channels and runs at 8x8 and 4x4 (32 and 64 channels, attention at 4x4), four
    # times cheaper a step than at 16x16 with 64 channels, so 1500 steps at lr 2e-3 fit a laptop's budget; 1000
    # steps left too many samples judged wrong (benchmarks/results/preset_search.jsonl). Samples decode to 64x64.
    cfg = _preset_digits_v()
    cfg.data.image_size = 64
    cfg.model = ModelConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                            dropout=0.0, patch_size=2)
    cfg.train.steps = 1500
    cfg.train.val_every = cfg.train.sample_every = cfg.train.ckpt_every = 750
    cfg.autoencoder = AutoencoderConfig(latent=True)
    return cfg


def _preset_digits64_text_latent() -> Config:
    # Stable Diffusion's composition on the 64x64 digits: the digits-text captions and frozen all-MiniLM-L6-v2,
    # cross-attending at the 4x4 level (on 2x2 latent patches) and in the middle block of the digits64-latent U-Net,
    # in the 16x16x4 latents of a digits64-ae run (--autoencoder). Sampling as digits-text: DPM-Solver++(2M) 15 steps
    # with guidance w = 2.
    # digits64-latent's 1500 steps of 64 keep paraphrases and attribute pairs well above their goals; 32 images a step
    # saved a third of the time but left the paraphrases near the goal (benchmarks/results/preset_search.jsonl).
    # Cross-attention at 4x4 (and mid) only: at 8x8 too, the text step of this small U-Net cost more than 1.3x its
    # class-conditional twin's (benchmarks/results/text_to_image_latent.json).
    cfg = _preset_digits64_latent()
    text = _preset_digits_text()
    cfg.data.captions = "on"
    cfg.model.cross_attn_resolutions = (4,)
    cfg.model.text_encoder, cfg.model.text_max_tokens = text.model.text_encoder, text.model.text_max_tokens
    cfg.sample = text.sample
    return cfg


def _preset_cifar10_ae() -> Config:
    # CIFAR-10 upscaled to 64x64 (seed documents); f = 4 and 4 latent channels (latent diffusion's KL-f4 shape),
    # the discriminator switched on once reconstructions are good (as latent diffusion's disc_start).
    return Config(
        data=DataConfig(dataset="cifar10", image_size=64, hflip=True, val_size=2000),
        # lr: latent diffusion's base rate of 4.5e-6 per image of the batch.
        train=TrainConfig(task="autoencoder", steps=100_000, batch_size=64, lr=4.5e-6 * 64, warmup_steps=1000,
                          grad_clip=0.0, ema_decay=0.999, val_every=5000, sample_every=5000, ckpt_every=5000),
        autoencoder=AutoencoderConfig(downsample=4, latent_channels=4, base_channels=64, channel_mult=(1, 2, 4),
                                      num_res_blocks=2, disc_start=50_001, disc_channels=64, disc_layers=3),
    )


def _preset_cifar10_latent() -> Config:
    # A cifar10-small-sized U-Net on 16x16x4 latents (of a cifar10-ae run, or Stable Diffusion's VAE at f = 8:
    # 8x8x4), with flips encoded once into the latent cache.
    cfg = _preset_cifar10_small()
    cfg.data.image_size = 64
    cfg.model = ModelConfig(base_channels=128, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,),
                            head_channels=64, dropout=0.1)
    cfg.autoencoder = AutoencoderConfig(latent=True)
    return cfg


EMOJI_PRESET_EXCLUDE = ("flags", "keycaps", "text", "skin-tones")  # about 1,600 emoji that a small U-Net can draw


def _emoji32_data(captions: str) -> DataConfig:
    # The OpenMoji emoji at 32x32 on white; flags, keycaps, text-like symbols and skin tones left out (about 1,600).
    return DataConfig(dataset="emoji", image_size=32, val_size=300, captions=captions,
                      emoji_exclude=EMOJI_PRESET_EXCLUDE)


def _preset_emoji32() -> Config:
    # Class-conditional by Unicode group (8 classes), no flips (arrows and faces have a side). The digits' U-Net on
    # 2x2 pixel patches (16x16 and 8x8, 32 and 64 channels), 1500 steps of 32, as rectified flow: on the emoji
    # flow drew the shape asked far more often than v-prediction with min-SNR at the same steps, where a third
    # level, 4x4 patches or batches of 16 did worse. Guidance w = 2 at every step took the samples judged as the group
    # asked up to real held-out emoji's share, where w = 1 above sigma 2 left them well below (three runs: two seeds,
    # bf16 and fp32: benchmarks/results/colour_search.jsonl, rows e32-*, emoji32-fp32*).
    return Config(
        data=_emoji32_data(captions="off"),
        model=ModelConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0,
                          patch_size=2),
        diffusion=DiffusionConfig(prediction="flow", loss_weighting="none"),
        train=TrainConfig(steps=1500, batch_size=32, lr=2e-3, warmup_steps=100, ema_decay=0.995, val_every=750,
                          sample_every=1500, ckpt_every=750),
        sample=SampleConfig(sampler="dpmpp-2m", steps=15, guidance=2.0),
    )


def _preset_emoji32_text() -> Config:
    # Text-to-image on the emoji of emoji32, with its network, steps and sampling: captions from each emoji's name,
    # its subgroup and group words and its main colours measured on the pixels ("a red heart", "a red and blue tram
    # car"), through all-MiniLM-L6-v2, cross-attending at 16x16, 8x8 and mid. The search on colour data (colour
    # words, shapes, backgrounds): benchmarks/results/colour_search.jsonl.
    cfg = _preset_emoji32()
    return dataclasses.replace(cfg, data=_emoji32_data(captions="on"), model=dataclasses.replace(
        cfg.model, cross_attn_resolutions=(16, 8), text_encoder="all-MiniLM-L6-v2", text_max_tokens=16))


def _preset_emoji32_text_hq() -> Config:
    # emoji32-text for users who can wait: four times the steps, with a cosine learning rate and a slower EMA for
    # the longer run. Twice emoji32-text's steps already raised its colour words, shapes and clean backgrounds
    # (benchmarks/results/colour_search.jsonl, flow-steps3000; this recipe: hq-6000).
    cfg = _preset_emoji32_text()
    cfg.train = TrainConfig(steps=6000, batch_size=32, lr=2e-3, warmup_steps=200, lr_schedule="cosine",
                            ema_decay=0.998, val_every=1500, sample_every=6000, ckpt_every=1500)
    return cfg


def _preset_emoji64_ae() -> Config:
    # Latent diffusion's first stage for the emoji at 64x64 RGB: digits64-ae's autoencoder (f = 4, 16x16x4 latents,
    # 8 channels at full resolution, the discriminator for the last 300 of 1000 steps) on the emoji of emoji32.
    # Measured once: benchmarks/results/emoji_presets.json.
    cfg = _preset_digits64_ae()
    cfg.data = dataclasses.replace(_emoji32_data(captions="off"), image_size=64)
    return cfg


def _preset_emoji64_text_latent() -> Config:
    # Stable Diffusion's composition on the emoji: text-to-image in the 16x16x4 latents of an emoji64-ae run
    # (--autoencoder), on the emoji of emoji32-text; digits64-text-latent's U-Net (2x2 latent patches at 8x8 and
    # 4x4, cross-attention at 4x4 and mid), captions and sampling, as rectified flow: flow drew the shape asked far
    # more often than v-prediction at the same steps (benchmarks/results/colour_search.jsonl, latent-*). Green comes
    # out wrong because the autoencoder shifts it most (its ΔE2000 per hue, emoji64-ae-fp32).
    return Config(
        data=dataclasses.replace(_emoji32_data(captions="on"), image_size=64),
        model=ModelConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
                          patch_size=2, cross_attn_resolutions=(4,), text_encoder="all-MiniLM-L6-v2",
                          text_max_tokens=16),
        diffusion=DiffusionConfig(prediction="flow", loss_weighting="none"),
        train=TrainConfig(steps=1500, batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.995, val_every=750,
                          sample_every=750, ckpt_every=750),
        autoencoder=AutoencoderConfig(latent=True),
        sample=SampleConfig(sampler="dpmpp-2m", steps=15, guidance=2.0),
    )


# Presets are config, so their registry lives here; each target builds a fresh Config.
PRESETS: Registry[Entry] = Registry("preset")
PRESETS.register("digits", "noisecraft.config:_preset_digits",
                 "the embedded digits, 0.76M-parameter U-Net on 2x2 patches, rectified flow, 650 steps of 32 (minutes "
                 "on a laptop CPU)")
PRESETS.register("digits-v", "noisecraft.config:_preset_digits_v",
                 "the previous quickstart: v-prediction with min-SNR on the cosine schedule, 700 steps of 64")
PRESETS.register("digits-flow", "noisecraft.config:_preset_digits_flow",
                 "digits as rectified flow: the velocity on x_t = (1 - t) x0 + t eps, logit-normal t")
PRESETS.register("digits-dit", "noisecraft.config:_preset_digits_dit",
                 "digits on a diffusion transformer (DiT, adaLN-zero) over 4x4 pixel patches, as rectified flow")
PRESETS.register("digits-edm", "noisecraft.config:_preset_digits_edm",
                 "digits with EDM preconditioning (Karras et al. 2022) and the Heun sampler")
PRESETS.register("digits-text", "noisecraft.config:_preset_digits_text",
                 "text-to-image on the embedded digits: prompts like 'a bold seven leaning right' through "
                 "all-MiniLM-L6-v2 and cross-attention (pip install -e \".[text]\"; minutes on a laptop CPU)")
PRESETS.register("digits64", "noisecraft.config:_preset_digits64",
                 "the embedded digits upscaled to 64x64, diffused in pixel space")
PRESETS.register("digits64-ae", "noisecraft.config:_preset_digits64_ae",
                 "a KL autoencoder (f = 4, 16x16x4 latents) with a PatchGAN discriminator for the 64x64 digits "
                 "(noisecraft train-autoencoder)")
PRESETS.register("digits64-latent", "noisecraft.config:_preset_digits64_latent",
                 "latent diffusion on the 64x64 digits in the latents of --autoencoder (a digits64-ae run)")
PRESETS.register("digits64-text-latent", "noisecraft.config:_preset_digits64_text_latent",
                 "text-to-image in the latents of --autoencoder (a digits64-ae run): the digits-text captions, "
                 "cross-attention at the latent resolutions (Stable Diffusion's composition; pip install -e \".[text]\")")
PRESETS.register("emoji32", "noisecraft.config:_preset_emoji32",
                 "the OpenMoji colour emoji at 32x32, class-conditional by Unicode group (pip install -e \".[emoji]\"; "
                 "minutes on a laptop CPU)")
PRESETS.register("emoji32-text", "noisecraft.config:_preset_emoji32_text",
                 "text-to-image on the emoji: prompts like 'a red heart' or 'a yellow grinning face' (pip install -e "
                 "\".[emoji,text]\")")
PRESETS.register("emoji32-text-hq", "noisecraft.config:_preset_emoji32_text_hq",
                 "emoji32-text trained four times as long, for users who can wait (pip install -e \".[emoji,text]\")")
PRESETS.register("emoji64-ae", "noisecraft.config:_preset_emoji64_ae",
                 "the emoji at 64x64: a KL autoencoder (f = 4) for emoji64-text-latent (train-autoencoder)")
PRESETS.register("emoji64-text-latent", "noisecraft.config:_preset_emoji64_text_latent",
                 "text-to-image on the emoji in the latent space of an emoji64-ae run (--autoencoder)")
PRESETS.register("mnist", "noisecraft.config:_preset_mnist", "MNIST (torchvision), 50k steps")
PRESETS.register("cifar10", "noisecraft.config:_preset_cifar10",
                 "CIFAR-10 on the DDPM paper's 35.7M-parameter network, 800k steps")
PRESETS.register("cifar10-small", "noisecraft.config:_preset_cifar10_small",
                 "CIFAR-10 on a smaller U-Net, v-prediction with min-SNR weighting, 100k steps")
PRESETS.register("cifar10-ae", "noisecraft.config:_preset_cifar10_ae",
                 "a KL autoencoder (f = 4) with a PatchGAN discriminator for CIFAR-10 at 64x64")
PRESETS.register("cifar10-latent", "noisecraft.config:_preset_cifar10_latent",
                 "latent diffusion on CIFAR-10 at 64x64 in the latents of --autoencoder (a cifar10-ae run or a "
                 "diffusers AutoencoderKL folder)")
PRESETS.register("cifar10-edm", "noisecraft.config:_preset_cifar10_edm",
                 "CIFAR-10 on the DDPM network with EDM preconditioning and the Heun sampler")


def preset(name: str) -> Config:
    """A fresh Config of the preset `name`; an unknown name raises a UserError listing the presets."""
    return PRESETS.get(name, "preset").load()()
