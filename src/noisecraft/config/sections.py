"""The config's sections about the images and the model: `data`, `model`, `diffusion`. Each dataclass documents its
fields by their comments (the reference pages are generated from them) and validates itself; checks across sections
live in `schema.Config`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from noisecraft.config.checks import choice, in_unit_interval, non_negative, positive
from noisecraft.errors import UserError
from noisecraft.registry import (ARCHITECTURES, AUGMENTATIONS, BALANCES, CAPTIONS, DATASETS, EMOJI_EXCLUDES,
                                 EMOJI_GROUPS, LOSS_WEIGHTINGS, POSITIONS, PREDICTIONS, SCHEDULES, TIME_DENSITIES)


MAX_RECOLOUR = 6  # copies per image under data.recolour: one per other chromatic colour word (captions.HUES)


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
    # Colour images: append up to this many copies of each training image with its hues turned to other colour words,
    # its captions' colour words rewritten to match (noisecraft.recolour); an autoencoder's (captions off) are plain
    # hue augmentation; 0 = off
    recolour: int = 0
    background: str = "white"  # image folders: colour transparent pixels are composited on (a CSS name or #rrggbb)
    # The emoji dataset (noisecraft.emoji); data_root there is an optional folder of OpenMoji SVGs.
    emoji_label: str = "group"  # class of an emoji: its Unicode group (9 classes) | subgroup (about 100)
    emoji_groups: tuple[str, ...] = ()  # keep only these groups (registry.EMOJI_GROUPS, e.g. food-drink); () = all
    emoji_exclude: tuple[str, ...] = ("skin-tones",)  # leave these out (registry.EMOJI_EXCLUDES): flags, keycaps, ...
    emoji_background: str = "white"  # colour the transparent SVGs are composited on: a CSS name or #rrggbb
    emoji_synonyms: bool = False  # a caption naming the colour by another word too (captions.COLOUR_SYNONYMS)

    def validate(self) -> None:
        DATASETS.get(self.dataset, "data.dataset")
        CAPTIONS.get(self.captions, "data.captions")
        BALANCES.get(self.balance, "data.balance")
        if self.val_size < 0 or self.subset < 0:
            raise UserError(f"data.val_size and data.subset must be >= 0, got {self.val_size} and {self.subset}")
        if not 0 <= self.recolour <= MAX_RECOLOUR:
            raise UserError(f"data.recolour must be between 0 and {MAX_RECOLOUR} (one copy per other colour word), "
                            f"got {self.recolour}")
        if self.image_size is not None and self.image_size < 8:
            raise UserError(f"data.image_size must be >= 8, got {self.image_size}")
        self.classes = tuple(c.strip() for c in self.classes)
        if "" in self.classes or len(set(self.classes)) != len(self.classes):
            raise UserError(f"data.classes must be distinct non-empty class names, got {','.join(self.classes)}")
        self._validate_emoji()
        self._validate_augment()

    def _validate_emoji(self) -> None:
        self.emoji_groups = tuple(g.strip().lower() for g in self.emoji_groups if g.strip())
        self.emoji_exclude = tuple(e.strip().lower() for e in self.emoji_exclude if e.strip())
        choice("data.emoji_label", self.emoji_label, ("group", "subgroup"))
        for g in self.emoji_groups:
            EMOJI_GROUPS.get(g, "each of data.emoji_groups")
        for e in self.emoji_exclude:
            EMOJI_EXCLUDES.get(e, "each of data.emoji_exclude")
        if not self.emoji_background.strip():
            raise UserError("data.emoji_background must be a colour (a CSS name such as white, or #rrggbb)")

    def _validate_augment(self) -> None:
        self.augment = tuple(a.strip().lower() for a in self.augment if a.strip())
        for a in self.augment:
            AUGMENTATIONS.get(a, "each of data.augment")
        if len(set(self.augment)) != len(self.augment):
            raise UserError(f"data.augment names a transform twice: {','.join(self.augment)}")
        if not 0.0 <= self.augment_p <= 1.0:  # also catches NaN
            raise UserError(f"data.augment_p must be in [0, 1], got {self.augment_p}")


@dataclass
class UNetConfig:
    """`model.unet`: the U-Net's shape (model.arch=unet)."""

    base_channels: int = 64  # channels of level 0; level i has base_channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level; each level after the first halves H, W
    num_res_blocks: int = 2  # residual blocks per encoder level (the decoder has one more per level)
    attn_resolutions: tuple[int, ...] = (7,)  # feature-map sizes with self-attention after each residual block
    scale_shift: bool = True  # embedding scales+shifts GroupNorm output (Improved DDPM); False: added bias (DDPM)
    cross_attn_resolutions: tuple[int, ...] | None = None  # where blocks cross-attend (+ mid); None: attn_resolutions

    @property
    def cross_resolutions(self) -> tuple[int, ...]:
        """The feature-map sizes whose blocks cross-attend to a prompt (besides the middle block)."""
        return self.attn_resolutions if self.cross_attn_resolutions is None else self.cross_attn_resolutions

    def validate(self) -> None:
        positive("model.unet.base_channels", self.base_channels)
        positive("model.unet.num_res_blocks", self.num_res_blocks)
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            raise UserError("model.unet.channel_mult must be a non-empty list of positive integers")


@dataclass
class DiTConfig:
    """`model.dit`: the diffusion transformer's shape (model.arch=dit, Peebles & Xie 2023)."""

    width: int = 64  # D: the width of a token (one p x p patch), of the blocks and of the conditioning vector
    depth: int = 6  # transformer blocks
    mlp_ratio: float = 4.0  # hidden width of a block's MLP / width
    pos_embed: str = "sincos"  # registry.POSITIONS: sincos (fixed 2D sin-cos) | learned
    # U-ViT's long skips (Bao et al. 2023): the first half of the blocks' outputs join the inputs of the mirrored
    # second half, concatenated and projected back to the width.
    long_skip: bool = False

    def validate(self) -> None:
        POSITIONS.get(self.pos_embed, "model.dit.pos_embed")
        positive("model.dit.width", self.width)
        positive("model.dit.depth", self.depth)
        if self.long_skip and self.depth < 2:
            raise UserError(f"model.dit.long_skip needs model.dit.depth >= 2, got {self.depth}")
        if not self.mlp_ratio > 0:
            raise UserError(f"model.dit.mlp_ratio must be > 0, got {self.mlp_ratio}")


# The settings of each architecture (registry.ARCHITECTURES), held as model.NAME; only the chosen one is set.
ARCH_SETTINGS: dict[str, type] = {"unet": UNetConfig, "dit": DiTConfig}


@dataclass
class ModelConfig:
    """`model`: the network, what every architecture shares, its conditioning, and the settings of the architecture
    chosen (`model.unet` or `model.dit`; the other is None, and left out of a saved config)."""

    arch: str = "unet"  # registry.ARCHITECTURES: unet | dit (diffusion transformer, Peebles & Xie 2023)
    unet: UNetConfig | None = None  # arch=unet: the U-Net's settings (its defaults when arch=unet and none are given)
    dit: DiTConfig | None = None  # arch=dit: the transformer's settings (its defaults when arch=dit and none given)
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.1  # dropout inside the residual blocks (U-Net) or the blocks' MLPs (DiT)
    # Side of the pixel patches folded into channels before the first convolution and unfolded after the last (space
    # to depth, as U-ViT and simple diffusion do): the U-Net's top level runs at image_size / patch_size.
    # arch=dit: the side of the pixel patch one token covers.
    patch_size: int = 1
    conv_stem: int = 0  # channels of a 3x3 conv at full resolution before patchify and after unpatchify; 0 = none
    # Text-to-image (data with captions): a frozen encoder's token embeddings feed cross-attention, its pooled
    # embedding joins the time embedding. A name in registry.TEXT_ENCODERS or a local sentence-transformers / Hugging
    # Face model directory; None: all-MiniLM-L6-v2 when the data has captions.
    text_encoder: str | None = None
    text_max_tokens: int = 32  # prompt tokens cross-attention reads (longer prompts are truncated with a warning)
    context_dim: int | None = None  # text-token width (filled in from the text encoder); None: no text
    # Filled in from the dataset when the run starts, so a checkpoint is self-describing.
    in_channels: int = 0  # channels of what the network sees: the images' (1 grey, 3 RGB), or the latents'
    image_size: int = 0  # side of the square inputs the network sees (images, or latents in latent diffusion)
    num_classes: int = 0  # 0 = unconditional
    augment_dim: int = 0  # width of the augment label (filled in from data.augment); 0 = no augment conditioning

    def __post_init__(self) -> None:
        self._default_settings()

    def _default_settings(self) -> None:
        """The chosen architecture's settings at their defaults when none are given."""
        if self.arch in ARCH_SETTINGS and getattr(self, self.arch) is None:
            setattr(self, self.arch, ARCH_SETTINGS[self.arch]())

    @property
    def conditioning(self) -> str:
        """What a request to this model names: "text" (prompts), "class" (labels) or "unconditional"."""
        if self.context_dim:
            return "text"
        return "class" if self.num_classes else "unconditional"

    def use_arch(self, arch: str) -> None:
        """Switch to `arch`: its default settings replace the other architecture's (kept when it is the same)."""
        ARCHITECTURES.get(arch, "model.arch")
        if arch != self.arch:
            for name, settings in ARCH_SETTINGS.items():
                setattr(self, name, settings() if name == arch else None)
            self.arch = arch

    def validate(self) -> None:
        ARCHITECTURES.get(self.arch, "model.arch")
        for name in ARCH_SETTINGS:
            if name != self.arch and getattr(self, name) is not None:
                raise UserError(other_arch_error(f"model.{name}", self.arch))
        self._default_settings()
        getattr(self, self.arch).validate()
        positive("model.head_channels", self.head_channels)
        positive("model.patch_size", self.patch_size)
        non_negative(self, "model", ("conv_stem", "augment_dim"))
        if self.text_max_tokens < 2:
            raise UserError(f"model.text_max_tokens must be >= 2 (the encoder's start and end tokens), got "
                            f"{self.text_max_tokens}")
        in_unit_interval("model.dropout", self.dropout)


def other_arch_error(key: str, arch: str) -> str:
    """The error for a setting `key` that model.arch=`arch` does not have: it names the architecture's own."""
    own = ", ".join(f.name for f in dataclasses.fields(ARCH_SETTINGS[arch]))
    return f"{key} is not a setting of model.arch={arch}; its own are model.{arch}.{{{own}}} (or set model.arch)"


@dataclass
class DiffusionConfig:
    """`diffusion`: the noise schedule, what the network predicts and how the loss weighs noise levels."""

    schedule: str = "linear"  # registry.SCHEDULES: linear (Ho et al. 2020) | cosine (Nichol & Dhariwal 2021)
    timesteps: int = 1000  # T: steps of the discrete schedule the network is trained on
    beta_start: float = 1e-4  # the linear schedule's first beta (noise variance added at step 1)
    beta_end: float = 0.02  # the linear schedule's last beta
    prediction: str = "eps"  # registry.PREDICTIONS: eps | x0 | v | edm (Karras et al. 2022) | flow | flow-x0
    loss_weighting: str = "none"  # registry.LOSS_WEIGHTINGS: none | min-snr (Hang et al. 2023)
    min_snr_gamma: float = 5.0  # min-SNR weighting clips the loss weight at SNR = gamma
    # EDM (prediction == "edm"):
    sigma_data: float = 0.5  # std of the data, which EDM's preconditioning scales for
    sigma_min: float = 0.002  # lowest noise level of the sampling grid
    sigma_max: float = 80.0  # highest noise level of the sampling grid (the prior's std)
    p_mean: float = -1.2  # training noise levels: ln(sigma) ~ N(p_mean, p_std^2)
    p_std: float = 1.2  # see p_mean
    # Rectified flow (prediction flow or flow-x0): x_t = (1 - t) x0 + t eps, sigma = t / (1 - t) in the sigma view.
    time_sampling: str = "logit-normal"  # registry.TIME_DENSITIES: how training draws t (uniform | logit-normal)
    logit_mean: float = 0.0  # logit-normal t: logit(t) ~ N(logit_mean, logit_std^2) (Esser et al. 2024: 0, 1)
    logit_std: float = 1.0  # see logit_mean

    def validate(self) -> None:
        SCHEDULES.get(self.schedule, "diffusion.schedule")
        PREDICTIONS.get(self.prediction, "diffusion.prediction")
        LOSS_WEIGHTINGS.get(self.loss_weighting, "diffusion.loss_weighting")
        TIME_DENSITIES.get(self.time_sampling, "diffusion.time_sampling")
        positive("diffusion.timesteps", self.timesteps)
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise UserError("diffusion betas must satisfy 0 < beta_start < beta_end < 1")
