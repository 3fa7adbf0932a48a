"""The config's sections about training and sampling: `train`, `sample`, `autoencoder`, `distill`, `finetune`. Each
dataclass documents its fields by their comments and validates itself; checks across sections live in
`schema.Config`."""
from __future__ import annotations

from dataclasses import dataclass

from noisecraft.config.checks import in_unit_interval, non_negative, positive
from noisecraft.errors import UserError
from noisecraft.registry import BEST_METRICS, DISTILLATIONS, LORA_TARGETS, LR_SCHEDULES, PRECISIONS, SAMPLERS, TASKS

# The largest sigma_rel of a power-function EMA profile with gamma >= 0 (the uniform average over all of training has
# sigma_rel = 1/sqrt(12)); beyond it the profile would weigh the earliest weights most.
POSTHOC_SIGMA_MAX = 12 ** -0.5


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
    final_figures: bool = True  # loss.png, samples/final.png and (not a fine-tuning) the process figures at the end
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

    def validate(self) -> None:
        TASKS.get(self.task, "train.task")
        PRECISIONS.get(self.precision, "train.precision")
        LR_SCHEDULES.get(self.lr_schedule, "train.lr_schedule")
        for name in ("steps", "batch_size", "log_every", "val_every", "sample_every", "ckpt_every",
                     "max_nonfinite_steps"):
            positive(f"train.{name}", getattr(self, name))
        non_negative(self, "train", ("keep_last", "warmup_steps", "weight_decay", "grad_clip"))
        if not 0 < self.lr <= 10:  # also catches NaN and inf
            raise UserError(f"train.lr must be in (0, 10], got {self.lr}")
        in_unit_interval("train.label_dropout", self.label_dropout)
        in_unit_interval("train.ema_decay", self.ema_decay)
        if BEST_METRICS.get(self.best_metric, "train.best_metric").needs_eval and self.eval_every <= 0:
            raise UserError(f"train.best_metric={self.best_metric} needs train.eval_every > 0")
        if self.eval_every < 0 or self.eval_n < 2 or self.eval_steps <= 0:
            raise UserError("train.eval_every must be >= 0, train.eval_n >= 2 and train.eval_steps > 0")
        self._validate_posthoc()

    def _validate_posthoc(self) -> None:
        if not self.posthoc_ema:
            return
        if self.task != "diffusion":
            raise UserError(f"train.posthoc_ema is kept by train.task=diffusion only, not {self.task}")
        bad = [s for s in self.posthoc_ema if not 0 < s < POSTHOC_SIGMA_MAX]
        if bad or len(set(self.posthoc_ema)) != len(self.posthoc_ema):
            raise UserError(f"train.posthoc_ema must be distinct sigma_rel values in (0, {POSTHOC_SIGMA_MAX:.4f}), "
                            f"e.g. 0.05,0.10; got {','.join(str(s) for s in self.posthoc_ema)}")
        positive("train.posthoc_every", self.posthoc_every)


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

    def validate(self) -> None:
        SAMPLERS.get(self.sampler, "sample.sampler")
        PRECISIONS.get(self.precision, "sample.precision")
        positive("sample.steps", self.steps)
        gi = self.guidance_interval
        if gi and not (len(gi) == 2 and 0 <= gi[0] < gi[1]):  # NaN fails both comparisons; lo = inf fails lo < hi
            raise UserError(f"sample.guidance_interval must be two noise levels 0 <= sigma_lo < sigma_hi (sigma_lo "
                            f"finite, sigma_hi may be inf), or empty; got {','.join(str(v) for v in gi)}")


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

    def validate(self) -> None:
        if self.latent and not self.path:
            raise UserError("latent diffusion needs an autoencoder: pass --autoencoder PATH (a noisecraft autoencoder "
                            "run or a diffusers AutoencoderKL folder)")
        if self.path and not self.latent:
            raise UserError("autoencoder.path is set but autoencoder.latent is false: pass --autoencoder PATH")
        f = self.downsample
        if f < 1 or f & (f - 1):
            raise UserError(f"autoencoder.downsample must be a power of 2 (4, 8), got {f}")
        if len(self.channel_mult) != f.bit_length() or any(m <= 0 for m in self.channel_mult):
            raise UserError(f"autoencoder.channel_mult needs log2({f}) + 1 = {f.bit_length()} positive entries (one "
                            f"per resolution), got {','.join(map(str, self.channel_mult))}")
        for name in ("latent_channels", "base_channels", "num_res_blocks", "disc_channels", "disc_layers"):
            positive(f"autoencoder.{name}", getattr(self, name))
        non_negative(self, "autoencoder", ("kl_weight", "disc_weight", "disc_start", "lpips_weight"))


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

    def validate(self) -> None:
        DISTILLATIONS.get(self.method, "distill.method")
        if not 2 <= self.grid_start <= self.grid_end:
            raise UserError(f"distill.grid_start and grid_end must satisfy 2 <= grid_start <= grid_end, got "
                            f"{self.grid_start} and {self.grid_end}")
        positive("distill.grid_ramp_steps", self.grid_ramp_steps)
        if not self.huber_c > 0:
            raise UserError(f"distill.huber_c must be > 0, got {self.huber_c}")


@dataclass
class FinetuneConfig:
    """`finetune`: a low-rank adapter (LoRA) trained on a frozen run (train.task=finetune, `noisecraft finetune`)."""

    base: str | None = None  # the base run's checkpoint file (set by `noisecraft finetune`); never written to
    base_sha256: str = ""  # of that file: the adapter records it, and refuses to load on another base
    rank: int = 8  # r of every adapted layer (W + alpha / r * B A); its file grows linearly with it
    alpha: float = 0.0  # LoRA's alpha; 0: the rank (a scale of 1 then adds B A as trained)
    targets: str = "attention+blocks"  # registry.LORA_TARGETS: attention | blocks | attention+blocks
    # Prior preservation (DreamBooth, Ruiz et al. 2023): images the base draws for these prompts (text runs) or
    # class names (class runs), drawn once at the start, join every batch with weight prior_weight, so the adapter
    # keeps what the base did. () = the base's own classes (text runs: a caption naming each); 0 images: off. Those
    # the new images are themselves captioned or labelled with are left out (a style taught on the base's captions).
    prior_prompts: tuple[str, ...] = ()
    prior_images: int = 100  # images the base draws for prior preservation, cycled over prior_prompts
    prior_weight: float = 1.0  # weight of the prior images' loss against the new images'
    prior_batch: int = 4  # prior images in each batch beside train.batch_size new ones; 0: as many as those
    trigger: str = ""  # the prompt or class that calls the adapter up (recorded); "": the data's first caption
    licence: str = ""  # the training images' licence, recorded in the adapter ("" = unknown)

    def validate(self) -> None:
        LORA_TARGETS.get(self.targets, "finetune.targets")
        positive("finetune.rank", self.rank)
        if not self.alpha >= 0 or min(self.prior_images, self.prior_batch) < 0 or not self.prior_weight >= 0:  # NaN too
            raise UserError(f"finetune.alpha, prior_images, prior_batch and prior_weight must be >= 0, got "
                            f"{self.alpha}, {self.prior_images}, {self.prior_batch} and {self.prior_weight}")
        self.prior_prompts = tuple(p.strip() for p in self.prior_prompts if p.strip())
