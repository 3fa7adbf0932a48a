"""The presets: `noisecraft train --preset NAME`. Each is one flat entry: a base (the defaults, or one other preset
named once) and the fields it sets, its reasons in a sentence or two with the result file that holds the
measurements (the search behind each is told on the docs' benchmarks page)."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from noisecraft.config.schema import Config
from noisecraft.config.sections import DataConfig, DiffusionConfig, DiTConfig, ModelConfig, UNetConfig
from noisecraft.config.training import AutoencoderConfig, SampleConfig, TrainConfig
from noisecraft.registry import Entry, Registry

V_MIN_SNR = dict(schedule="cosine", prediction="v", loss_weighting="min-snr")  # min-SNR: Hang et al. 2023
FLOW = dict(prediction="flow", loss_weighting="none")  # rectified flow, logit-normal t (Esser et al. 2024)


def small_unet(attn: tuple[int, ...], cross: tuple[int, ...] | None = None, **shared: Any) -> ModelConfig:
    """The small presets' U-Net: 2x2 pixel (or latent) patches folded into channels, two levels of 32 and 64
    channels, self-attention at the sizes `attn`, cross-attention at `cross`."""
    return ModelConfig(unet=UNetConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=attn,
                                       cross_attn_resolutions=cross), dropout=0.0, patch_size=2, **shared)


TEXT = dict(text_encoder="all-MiniLM-L6-v2", text_max_tokens=16)  # the frozen prompt encoder of the text presets
DPM_15 = dict(sampler="dpmpp-2m", steps=15)  # DPM-Solver++(2M), 15 steps
EMOJI_PRESET_EXCLUDE = ("flags", "keycaps", "text", "skin-tones")  # about 1,600 emoji that a small U-Net can draw


# Presets are config, so their registry lives here; each target builds a fresh Config.
PRESETS: Registry[Entry] = Registry("preset")


def register(name: str, help: str) -> Callable[[Callable[[], Config]], Callable[[], Config]]:
    """Register the function below as the preset `name` (the registry lists presets in the order they are defined)."""
    def add(build: Callable[[], Config]) -> Callable[[], Config]:
        PRESETS.register(name, f"{__name__}:{build.__name__}", help)
        return build
    return add


def derive(base: Config, **changes: Any) -> Config:
    """`base` with whole sections replaced (a section dataclass) or some of their fields set (a dict)."""
    sections = {}
    for name, change in changes.items():
        old = getattr(base, name)
        sections[name] = dataclasses.replace(old, **change) if isinstance(change, dict) else change
    return dataclasses.replace(base, **sections)


def emoji_data(captions: str, image_size: int = 32, recolour: int = 0) -> DataConfig:
    """The OpenMoji emoji on white, flags, keycaps, text-like symbols and skin tones left out."""
    return DataConfig(dataset="emoji", image_size=image_size, val_size=300, captions=captions,
                      emoji_exclude=EMOJI_PRESET_EXCLUDE, recolour=recolour)


# ---------------------------------------------------------------- the digits


@register("digits", "the embedded digits, 0.76M-parameter U-Net on 2x2 patches, rectified flow, 650 steps of 32 "
                    "(minutes on a laptop CPU)")
def digits() -> Config:
    # The quickstart: digits-v as rectified flow on 650 steps of 32, the one recipe of the equal-budget comparison
    # to pass its bar in a laptop's budget, one run a cell (benchmarks/results/recipes_compare.json, recipes.jsonl).
    return derive(digits_v(), diffusion=DiffusionConfig(**FLOW), train=TrainConfig(
        steps=650, batch_size=32, lr=2e-3, warmup_steps=100, ema_decay=0.995, val_every=325, sample_every=325,
        ckpt_every=325))


@register("digits-v", "the previous quickstart: v-prediction with min-SNR on the cosine schedule, 700 steps of 64")
def digits_v() -> Config:
    # The previous quickstart, sized for a 2-core AVX2 laptop in fp32: v-prediction with min-SNR, guidance only above
    # sigma 2 (Kynkaanniemi et al. 2024), DPM-Solver++(2M) 15 steps (benchmarks/results/recipes.jsonl,
    # sampling_quality_digits.json).
    return Config(
        data=DataConfig(dataset="digits", val_size=500),
        model=small_unet((7,)),
        diffusion=DiffusionConfig(**V_MIN_SNR),
        train=TrainConfig(steps=700, batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.995,
                          val_every=350, sample_every=350, ckpt_every=350),
        sample=SampleConfig(**DPM_15, guidance=1.0, guidance_interval=(2.0, math.inf)),
    )


@register("digits-flow", "digits as rectified flow: the velocity on x_t = (1 - t) x0 + t eps, logit-normal t")
def digits_flow() -> Config:
    # digits-v as rectified flow: the same U-Net, data, steps and sampler.
    return derive(digits_v(), diffusion=DiffusionConfig(**FLOW))


@register("digits-dit", "digits on a diffusion transformer (DiT, adaLN-zero) over 4x4 pixel patches, as rectified flow")
def digits_dit() -> Config:
    # A diffusion transformer on 4x4 pixel patches with a 32-channel conv stem, as rectified flow on more, smaller
    # steps, a cosine lr and guidance w = 2 at every step (benchmarks/results/dit_variants.jsonl, dit_guidance.jsonl,
    # dit_stem_bf16.jsonl).
    return derive(
        digits_v(),
        model=ModelConfig(arch="dit", dit=DiTConfig(width=128, depth=4, mlp_ratio=2.0), head_channels=32,
                          patch_size=4, dropout=0.0, conv_stem=32),
        diffusion=DiffusionConfig(**FLOW),
        train=TrainConfig(steps=2800, batch_size=16, lr=4e-3, warmup_steps=400, lr_schedule="cosine",
                          ema_decay=0.995, val_every=1400, sample_every=1400, ckpt_every=1400),
        sample={"guidance": 2.0, "guidance_interval": ()})


@register("digits-edm", "digits with EDM preconditioning (Karras et al. 2022) and the Heun sampler")
def digits_edm() -> Config:
    # digits-v with EDM's preconditioning (Karras et al. 2022) and its Heun sampler.
    return derive(digits_v(), diffusion={"prediction": "edm", "loss_weighting": "none"},
                  sample={"sampler": "heun", "steps": 18})


@register("digits-text", "text-to-image on the embedded digits: prompts like 'a bold seven leaning right' through "
                         "all-MiniLM-L6-v2 and cross-attention (pip install -e \".[text]\"; minutes on a laptop CPU)")
def digits_text() -> Config:
    # The digits U-Net cross-attending at both levels to all-MiniLM-L6-v2's tokens of captions, 1000 steps of 32 as
    # rectified flow at guidance 1.5: as close to its captions' images as the class run to its own, where
    # v-prediction drew twice as far (benchmarks/results/text_vs_class_fd_digits.json, preset_search.jsonl).
    return Config(
        data=DataConfig(dataset="digits", val_size=500, captions="on"),
        model=small_unet((7,), (14, 7), **TEXT),
        diffusion=DiffusionConfig(**FLOW),
        train=TrainConfig(steps=1000, batch_size=32, lr=2e-3, warmup_steps=100, ema_decay=0.995, val_every=500,
                          sample_every=1000, ckpt_every=500),
        sample=SampleConfig(**DPM_15, guidance=1.5),
    )


@register("digits64", "the embedded digits upscaled to 64x64, diffused in pixel space")
def digits64() -> Config:
    # The digits upscaled to 64x64 in pixel space, one more level: the baseline latent diffusion is set against.
    return derive(digits_v(), data={"image_size": 64}, train={"lr": 1e-3}, model=ModelConfig(unet=UNetConfig(
        base_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(16,)), dropout=0.0))


@register("digits64-ae", "a KL autoencoder (f = 4, 16x16x4 latents) with a PatchGAN discriminator for the 64x64 digits"
                         " (noisecraft train-autoencoder)")
def digits64_ae() -> Config:
    # Latent diffusion's first stage for the 64x64 digits: f = 4 (16x16x4 latents), 8 channels at full resolution,
    # the discriminator for the last 300 steps at a low weight (benchmarks/results/preset_search.jsonl).
    return Config(
        data=DataConfig(dataset="digits", image_size=64, val_size=500),
        train=TrainConfig(task="autoencoder", steps=1000, batch_size=16, lr=2e-3, warmup_steps=50, grad_clip=0.0,
                          lr_schedule="cosine", ema_decay=0.99, val_every=500, sample_every=500, ckpt_every=500),
        autoencoder=AutoencoderConfig(downsample=4, latent_channels=4, base_channels=8, channel_mult=(1, 2, 4),
                                      num_res_blocks=1, disc_start=700, disc_weight=0.1, disc_channels=16,
                                      disc_layers=3),
    )


@register("digits64-latent", "latent diffusion on the 64x64 digits in the latents of --autoencoder (a digits64-ae run)")
def digits64_latent() -> Config:
    # The digits recipe on the 16x16x4 latents of a digits64-ae run (--autoencoder), 1500 steps
    # (benchmarks/results/preset_search.jsonl); samples decode to 64x64.
    return derive(digits_v(), data={"image_size": 64}, model=small_unet((4,)),
                  train={"steps": 1500, "val_every": 750, "sample_every": 750, "ckpt_every": 750},
                  autoencoder=AutoencoderConfig(latent=True))


@register("digits64-text-latent", "text-to-image in the latents of --autoencoder (a digits64-ae run): the digits-text "
                                  "captions, cross-attention at the latent resolutions (Stable Diffusion's "
                                  "composition; pip install -e \".[text]\")")
def digits64_text_latent() -> Config:
    # Stable Diffusion's composition on the 64x64 digits: digits-text's captions, encoder and sampling in
    # digits64-latent's latents, cross-attending at 4x4 and mid only (benchmarks/results/preset_search.jsonl,
    # text_to_image_latent.json).
    return derive(digits64_latent(), data={"captions": "on"}, model=small_unet((4,), (4,), **TEXT),
                  sample=SampleConfig(**DPM_15, guidance=2.0))


# ---------------------------------------------------------------- the emoji


@register("emoji32", "the OpenMoji colour emoji at 32x32, class-conditional by Unicode group (pip install -e "
                     "\".[emoji]\"; minutes on a laptop CPU)")
def emoji32() -> Config:
    # The emoji at 32x32 by Unicode group: the digits' U-Net as rectified flow, 1500 steps of 32, guidance w = 2 at
    # every step (benchmarks/results/colour_search.jsonl, rows e32-*, emoji32-fp32*).
    return Config(
        data=emoji_data(captions="off"),
        model=small_unet((8,)),
        diffusion=DiffusionConfig(**FLOW),
        train=TrainConfig(steps=1500, batch_size=32, lr=2e-3, warmup_steps=100, ema_decay=0.995, val_every=750,
                          sample_every=1500, ckpt_every=750),
        sample=SampleConfig(**DPM_15, guidance=2.0),
    )


@register("emoji32-text", "text-to-image on the emoji: prompts like 'a red heart' or 'a yellow grinning face' (pip "
                          "install -e \".[emoji,text]\")")
def emoji32_text() -> Config:
    # emoji32 from captions (name, subgroup, group and measured main colours), cross-attending at 16x16, 8x8 and mid;
    # each coloured image also recoloured to three other colour words, so every colour is learnt on every shape;
    # guided only above sigma 1, which leaves a cleaner background; batches of 64 at half emoji32's learning rate,
    # training t drawn nearer the noise (logit mean 1), where an outline is decided; the network predicts x0, not
    # the velocity, which leaves the white background clean (benchmarks/results/colour_search.jsonl, recolour*,
    # lr*, b64-*, x0-*).
    return derive(emoji32(), data={"captions": "on", "recolour": 3}, model=small_unet((8,), (16, 8), **TEXT),
                  diffusion={"prediction": "flow-x0", "logit_mean": 1.0},
                  train={"batch_size": 64, "steps": 850, "lr": 1e-3, "warmup_steps": 50, "val_every": 425,
                         "sample_every": 850, "ckpt_every": 425},
                  sample={"guidance_interval": (1.0, math.inf)})


@register("emoji32-text-hq", "emoji32-text trained about four times as long, for users who can wait (pip "
                             "install -e \".[emoji,text]\")")
def emoji32_text_hq() -> Config:
    # emoji32-text for users who can wait: four times emoji32's steps of 32 at its t density and velocity
    # prediction, a cosine lr and a slower EMA (benchmarks/results/colour_search.jsonl, hq-6000, hq-recolour).
    return derive(emoji32_text(), diffusion={"prediction": "flow", "logit_mean": 0.0}, train=TrainConfig(
        steps=6000, batch_size=32, lr=2e-3, warmup_steps=200, lr_schedule="cosine", ema_decay=0.998, val_every=1500,
        sample_every=6000, ckpt_every=1500))


@register("emoji64-ae", "the emoji at 64x64: a KL autoencoder (f = 4) for emoji64-text-latent (train-autoencoder)")
def emoji64_ae() -> Config:
    # digits64-ae's autoencoder on the emoji at 64x64 RGB, each image also hue-turned to two other colour words, so
    # green and purple decode as themselves (benchmarks/results/emoji_presets.json, colour_search.jsonl, ae-*).
    return derive(digits64_ae(), data=emoji_data(captions="off", image_size=64, recolour=2))


@register("emoji64-text-latent", "text-to-image on the emoji in the latent space of an emoji64-ae run (--autoencoder)")
def emoji64_text_latent() -> Config:
    # Text-to-image on the emoji in the latents of an emoji64-ae run (--autoencoder): digits64-text-latent's U-Net,
    # captions and sampling as rectified flow, recoloured as emoji32-text (benchmarks/results/colour_search.jsonl,
    # latent-*).
    return Config(
        data=emoji_data(captions="on", image_size=64, recolour=3),
        model=small_unet((4,), (4,), **TEXT),
        diffusion=DiffusionConfig(**FLOW),
        train=TrainConfig(steps=1500, batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.995, val_every=750,
                          sample_every=750, ckpt_every=750),
        autoencoder=AutoencoderConfig(latent=True),
        sample=SampleConfig(**DPM_15, guidance=2.0),
    )


# ---------------------------------------------------------------- MNIST and CIFAR-10 (GPU-sized)


@register("mnist", "MNIST (torchvision), 50k steps")
def mnist() -> Config:
    # MNIST through torchvision on the default U-Net (64 channels, mult (1, 2, 2), attention at 7x7).
    return Config(
        data=DataConfig(dataset="mnist", val_size=2000),
        model=ModelConfig(),
        diffusion=DiffusionConfig(**V_MIN_SNR),
        train=TrainConfig(steps=50_000, batch_size=128, lr=5e-4, warmup_steps=1000, ema_decay=0.9995,
                          val_every=2000, sample_every=5000, ckpt_every=2000),
    )


@register("cifar10", "CIFAR-10 on the DDPM paper's 35.7M-parameter network, 800k steps")
def cifar10() -> Config:
    # Ho et al. 2020's CIFAR-10 network: ch=128, mult (1,2,2,2), 2 res blocks, attention at 16x16 (~35.7M params).
    return Config(
        data=DataConfig(dataset="cifar10", hflip=True, val_size=2000),
        model=ModelConfig(unet=UNetConfig(base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                                          attn_resolutions=(16,), scale_shift=False), head_channels=128, dropout=0.1),
        diffusion=DiffusionConfig(schedule="linear", prediction="eps"),
        train=TrainConfig(steps=800_000, batch_size=128, lr=2e-4, warmup_steps=5000, ema_decay=0.9999,
                          val_every=5000, sample_every=10_000, ckpt_every=5000),
    )


@register("cifar10-small", "CIFAR-10 on a smaller U-Net, v-prediction with min-SNR weighting, 100k steps")
def cifar10_small() -> Config:
    # A smaller U-Net with v-prediction and min-SNR, 100k steps.
    return derive(cifar10(), diffusion=DiffusionConfig(**V_MIN_SNR), train={"steps": 100_000, "ema_decay": 0.9995},
                  model=ModelConfig(unet=UNetConfig(attn_resolutions=(16,)), head_channels=64))


@register("cifar10-ae", "a KL autoencoder (f = 4) with a PatchGAN discriminator for CIFAR-10 at 64x64")
def cifar10_ae() -> Config:
    # CIFAR-10 at 64x64: latent diffusion's KL-f4 shape, the discriminator once reconstructions are good; lr is
    # latent diffusion's 4.5e-6 per image of the batch.
    return Config(
        data=DataConfig(dataset="cifar10", image_size=64, hflip=True, val_size=2000),
        train=TrainConfig(task="autoencoder", steps=100_000, batch_size=64, lr=4.5e-6 * 64, warmup_steps=1000,
                          grad_clip=0.0, ema_decay=0.999, val_every=5000, sample_every=5000, ckpt_every=5000),
        autoencoder=AutoencoderConfig(downsample=4, latent_channels=4, base_channels=64, channel_mult=(1, 2, 4),
                                      num_res_blocks=2, disc_start=50_001, disc_channels=64, disc_layers=3),
    )


@register("cifar10-latent", "latent diffusion on CIFAR-10 at 64x64 in the latents of --autoencoder (a cifar10-ae run "
                            "or a diffusers AutoencoderKL folder)")
def cifar10_latent() -> Config:
    # cifar10-small's training on 16x16x4 latents (a cifar10-ae run, or Stable Diffusion's VAE at f = 8: 8x8x4),
    # flips encoded once into the latent cache.
    return derive(cifar10_small(), data={"image_size": 64}, autoencoder=AutoencoderConfig(latent=True),
                  model=ModelConfig(unet=UNetConfig(base_channels=128, attn_resolutions=(8,)), head_channels=64))


@register("cifar10-edm", "CIFAR-10 on the DDPM network with EDM preconditioning and the Heun sampler")
def cifar10_edm() -> Config:
    # The DDPM network with EDM's preconditioning and Heun sampler.
    return derive(cifar10(), diffusion=DiffusionConfig(prediction="edm"), sample=SampleConfig(sampler="heun", steps=18))


def preset(name: str) -> Config:
    """A fresh Config of the preset `name`; an unknown name raises a UserError listing the presets."""
    return PRESETS.get(name, "preset").load()()
