"""The pipeline: a denoiser and everything needed to turn a request (class or prompt, sampler, steps, guidance,
seed) into images. `load_pipeline(path)` builds one from a run directory; the trainer builds one around its EMA
denoiser.

    pipe = load_pipeline("runs/digits")
    images = pipe.generate(n=4, class_index=3, steps=10, seed=0)  # uint8 (4, 1, 28, 28)
    for ev in pipe.stream(n=4, class_index=3, preview_every=5): ...  # one event per sampler step
    load_pipeline("runs/digits-text").generate(prompt=["a bold seven leaning right"], n=4)  # a `TextPipeline`

A request passes through separate steps that an extension may replace (text prompts, latent decoding):
`request` (which images, with which condition), `condition` (a batch's conditioning dict), `null_condition`
(the guidance token), the sampler on `denoise_fn` (precision, guidance, clipping), and `decode` (to uint8).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from noisecraft.checkpoint import load_checkpoint
from noisecraft.conditioning import class_cond, null_cond, sample_labels, take
from noisecraft.config import Config
from noisecraft.data import to_uint8
from noisecraft.device import pick_device
from noisecraft.diffusion import Denoiser
from noisecraft.errors import UserError
from noisecraft.models import build_model
from noisecraft.precision import autocast_ctx, default_sampling_batch, sampling_channels_last, use_bf16
from noisecraft.registry import PRECISIONS, SAMPLERS
from noisecraft.samplers import PerImageNoise, SamplerStep, cfg_denoiser, get_sampler, get_sigmas
from noisecraft.samplers.common import Denoise


@dataclass
class SamplingOptions:
    """How to draw images. None means "the checkpoint's default" (its `sample` config) until `Pipeline.resolve`
    fills it in: the one place where a run's defaults and a user's choices meet."""

    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None  # classifier-free guidance weight w (Ho & Salimans 2022); 0 = off
    guidance_interval: tuple[float, ...] | None = None  # (lo, hi): guide where lo < sigma <= hi; (): every step
    seed: int | None = None  # image i uses seed + i; None: 0
    batch_size: int | None = None  # None: the device's fastest (noisecraft.precision.default_sampling_batch)
    precision: str | None = None  # auto | fp32 | bf16 for the network; resolved to fp32 or bf16 on this device
    clip_x0: bool | None = None  # clamp x0 estimates to the data range [-1, 1]
    negative_prompt: str | None = None  # text models: guidance steers away from it; None: the empty prompt


@dataclass
class SampleEvent:
    """What `Pipeline.stream` yields: kind "step" after every sampler step, "images" when a batch is done."""

    kind: str  # "step" | "images"
    batch: int  # 0-based batch index
    batches: int
    indices: list[int]  # the request's images in this batch (image i is seeded seed + i)
    step: int  # 1-based sampler step; on "images" events, == total
    total: int  # sampler steps of this batch
    sigma: float  # noise level the step started at (where x0 was estimated); 0.0 on "images" events
    sigma_next: float  # noise level of x after the step
    x_t: torch.Tensor  # (B, C, H, W) fp32 sampler state the step started from, at sigma (a reference, not a copy)
    x: torch.Tensor  # (B, C, H, W) fp32 sampler state after the step, at sigma_next (a reference)
    x0: torch.Tensor  # (B, C, H, W) fp32 estimate of the clean batch at sigma (a reference)
    preview: torch.Tensor | None = None  # uint8 (B, C, H, W) decoded x0, every `preview_every` steps
    images: torch.Tensor | None = None  # uint8 (B, C, H, W), on "images" events


class CancelFlag(Protocol):  # threading.Event, or anything with is_set()
    def is_set(self) -> bool: ...


def _with_precision(denoiser: Denoiser, device: torch.device, precision: str) -> Denoise:
    """The denoiser as the hardware runs it fastest: bf16 autocast per `precision`, and NHWC activations where
    measured faster (see `noisecraft.precision`). Only the network's input changes layout; weights stay as they are."""
    fmt = torch.channels_last if sampling_channels_last(device, use_bf16(device, precision)) else torch.contiguous_format

    def d(x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        x = x.contiguous(memory_format=fmt)
        with autocast_ctx(device, precision):
            return denoiser(x, sigma, cond).float().contiguous()

    return d


class Pipeline:
    """A denoiser (EMA weights, eval mode) with its config, class names and metadata (step, path), turning
    requests into uint8 images with any sampler, guidance and precision."""

    def __init__(self, denoiser: Denoiser, config: Config, *, class_names: list[str] | None = None,
                 device: torch.device | str = "cpu", meta: dict | None = None):
        self.denoiser, self.config, self.device = denoiser, config, torch.device(device)
        self.meta = dict(meta or {})
        self.class_names = list(self.meta.get("class_names", []) if class_names is None else class_names)

    @property
    def num_classes(self) -> int:
        return self.config.model.num_classes

    @property
    def kind(self) -> str:
        """What a request names: "class" (class labels), "text" (prompts, cross-attention) or "unconditional"."""
        if self.config.model.context_dim:
            return "text"
        return "class" if self.num_classes else "unconditional"

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the sampler draws (a latent pipeline draws latents and decodes them)."""
        m = self.config.model
        return (m.in_channels, m.image_size, m.image_size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images `decode` returns (a latent pipeline's are larger than its samples)."""
        return self.sample_shape

    @property
    def step(self) -> int | None:
        return self.meta.get("step")

    @property
    def path(self) -> str | None:
        return self.meta.get("path")

    # ---- options

    def resolve(self, options: SamplingOptions | None = None, **overrides) -> SamplingOptions:
        """Every option filled in and checked: the user's where given, else the checkpoint's `sample` section."""
        o = dataclasses.replace(options or SamplingOptions(), **overrides)
        s = self.config.sample

        def pick(value, default):
            return default if value is None else value

        sampler = SAMPLERS.get(pick(o.sampler, s.sampler), "sampler").name
        steps, guidance = pick(o.steps, s.steps), float(pick(o.guidance, s.guidance))
        interval = tuple(pick(o.guidance_interval, s.guidance_interval))
        precision = PRECISIONS.get(pick(o.precision, s.precision), "precision").name
        guided = self.kind != "unconditional" and guidance != 0
        batch_size = pick(o.batch_size, default_sampling_batch(self.device, guided))
        if steps <= 0:
            raise UserError(f"steps must be > 0, got {steps}")
        if not math.isfinite(guidance):
            raise UserError(f"guidance must be a finite number, got {guidance}")
        if len(interval) not in (0, 2):
            raise UserError(f"guidance_interval must be (lo, hi) or () for every step, got {interval}")
        if batch_size <= 0:
            raise UserError(f"batch_size must be > 0, got {batch_size}")
        if o.negative_prompt is not None and self.kind != "text":
            raise UserError(f"this model is {self.kind}-conditional: a negative prompt needs a text-to-image model"
                            if self.kind == "class" else "this model is unconditional: it takes no negative prompt")
        return SamplingOptions(sampler, steps, guidance, interval, pick(o.seed, 0), batch_size,
                               "bf16" if use_bf16(self.device, precision) else "fp32", pick(o.clip_x0, s.clip_x0),
                               o.negative_prompt)

    # ---- conditioning and decoding: the steps a text or latent pipeline changes

    def request(self, n: int | None = None, class_index: int | list[int] | None = None,
                labels: torch.Tensor | None = None, prompt: str | list[str] | None = None
                ) -> tuple[int, torch.Tensor | None]:
        """The number of images and the class of each, (n,) or None for an unconditional model: `class_index`
        (one class, or a list cycled), `labels` (n,) as given, or neither: all classes in turn."""
        if prompt is not None:
            raise UserError("this model is class-conditional: it takes a class (--class), not a prompt"
                            if self.num_classes else "this model is unconditional: it takes no prompt")
        if labels is not None:
            if class_index is not None:
                raise UserError("give class_index or labels, not both")
            if self.num_classes == 0:
                raise UserError("this model is unconditional: it takes no class labels")
            labels = torch.as_tensor(labels)
            n = len(labels) if n is None else n
            if len(labels) != n or bool(((labels < 0) | (labels >= self.num_classes)).any()):
                raise UserError(f"labels must be {n} classes in 0..{self.num_classes - 1}, got {labels.tolist()}")
        n = 1 if n is None else n
        if n <= 0:
            raise UserError(f"n must be > 0, got {n}")
        if labels is None:
            labels = sample_labels(n, self.num_classes, class_index, self.class_names)
        return n, labels

    def condition(self, labels: torch.Tensor | None) -> dict | None:
        """The conditioning dict the network takes for one batch of requested labels (B,)."""
        return class_cond(None if labels is None else labels.to(self.device))

    def null_condition(self, negative_prompt: str | None = None) -> dict:
        """The 'no condition' the guided denoiser contrasts with (Ho & Salimans 2022); `negative_prompt` is for
        text pipelines."""
        return null_cond(self.num_classes, self.device)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Sampler output (B, C, H, W) in [-1, 1] -> uint8 images on the CPU."""
        return to_uint8(x).cpu()

    def denoise_fn(self, opts: SamplingOptions) -> Denoise:
        """The denoiser as the sampler calls it, for resolved options: at their precision, guided, x0 clipped."""
        d = _with_precision(self.denoiser, self.device, opts.precision)
        if self.kind != "unconditional" and opts.guidance != 0:
            d = cfg_denoiser(d, opts.guidance, self.null_condition(opts.negative_prompt),
                             tuple(opts.guidance_interval) or None)
        if opts.clip_x0:
            base = d
            d = lambda x, sigma, cond=None: base(x, sigma, cond).clamp_(-1, 1)
        return d

    # ---- sampling

    def stream(self, n: int | None = None, class_index: int | list[int] | None = None, *,
               labels: torch.Tensor | None = None, prompt: str | list[str] | None = None,
               seeds: list[int] | None = None, preview_every: int = 0, cancel: CancelFlag | None = None,
               options: SamplingOptions | None = None, **overrides) -> Iterator[SampleEvent]:
        """Draw n images batch by batch, yielding a "step" event after every sampler step (with a uint8 preview
        of the x0 estimate every `preview_every` steps) and an "images" event when a batch is done. Nothing runs
        between events: once the caller stops iterating (closes the generator) or sets `cancel`, no further
        network call is made. Options are `SamplingOptions` fields (None: the checkpoint's default). `seeds`
        gives image i its own seed instead of seed + i (the images of several requests drawn as one batch).
        A text model takes `prompt` (one, or a list cycled over the n images) instead of a class."""
        n, labels = self.request(n, class_index, labels, prompt)
        if seeds is not None and len(seeds) != n:
            raise UserError(f"seeds must give one seed per image ({n}), got {len(seeds)}")
        opts = self.resolve(options, **overrides)
        if preview_every < 0:
            raise UserError(f"preview_every must be >= 0, got {preview_every}")
        sigmas = get_sigmas(self.denoiser, opts.sampler, opts.steps).to(self.device)
        run = _BatchRun(self, get_sampler(opts.sampler), self.denoise_fn(opts), sigmas, opts, preview_every, cancel,
                        seeds)
        batches = math.ceil(n / opts.batch_size)
        for b, start in enumerate(range(0, n, opts.batch_size)):
            if run.cancelled():
                return
            idx = list(range(start, min(n, start + opts.batch_size)))
            yield from run.events(b, batches, idx, take(labels, idx))

    def generate(self, n: int | None = None, class_index: int | list[int] | None = None, *,
                 labels: torch.Tensor | None = None, prompt: str | list[str] | None = None,
                 options: SamplingOptions | None = None, progress: bool = False, **overrides) -> torch.Tensor:
        """Draw n images as uint8 (n, C, H, W): `stream` run to its end. Image i uses seed + i for all its noise,
        so it does not depend on the batch size or on n. Arguments as for `stream`."""
        from tqdm.auto import tqdm

        n, labels = self.request(n, class_index, labels, prompt)
        opts = self.resolve(options, **overrides)
        out = []
        with tqdm(total=n, desc=f"sampling ({opts.sampler}, {opts.steps} steps)", unit="img", disable=not progress,
                  leave=False) as bar:
            for ev in self.stream(n, labels=labels, options=opts):
                if ev.kind == "images":
                    out.append(ev.images)
                    bar.update(len(ev.indices))
        return torch.cat(out)


@dataclass
class _BatchRun:
    """One request's sampler, denoiser and grid, run over its batches (the body of `Pipeline.stream`)."""

    pipe: Pipeline
    sampler: Callable[..., Iterator[SamplerStep]]
    denoise: Denoise
    sigmas: torch.Tensor  # (steps + 1,) on the device
    opts: SamplingOptions
    preview_every: int
    cancel: CancelFlag | None
    seeds: list[int] | None = None  # per image of the request; None: opts.seed + i

    def __post_init__(self):
        self.levels = self.sigmas.tolist()  # a host copy: events read sigma without a device sync

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    @torch.no_grad()
    def events(self, b: int, batches: int, idx: list[int], labels: torch.Tensor | list[str] | None
               ) -> Iterator[SampleEvent]:
        pipe, total = self.pipe, len(self.levels) - 1
        noise = PerImageNoise([self.opts.seed + i if self.seeds is None else self.seeds[i] for i in idx], pipe.device)
        x = noise(torch.empty(len(idx), *pipe.sample_shape, device=pipe.device))  # (B, C, H, W)
        x = x * pipe.denoiser.prior_std(self.levels[0])
        steps = self.sampler(self.denoise, x, self.sigmas, pipe.condition(labels), noise=noise)
        try:
            for s in steps:  # each step's network calls run inside next()
                k = s.i + 1
                preview = pipe.decode(s.x0) if self.preview_every and k % self.preview_every == 0 else None
                yield SampleEvent("step", b, batches, idx, k, total, self.levels[s.i], self.levels[k], x, s.x, s.x0,
                                  preview)
                x = s.x
                if self.cancelled():
                    return
        finally:
            steps.close()  # a closed or cancelled stream leaves no sampler suspended mid-run
        yield SampleEvent("images", b, batches, idx, total, total, 0.0, 0.0, x, x, s.x0, images=pipe.decode(x))


class TextPipeline(Pipeline):
    """A text-to-image pipeline: a request names prompts, which a frozen text encoder embeds (each distinct prompt
    once; a run's training captions come from its cache file, see `conditioning.text`); guidance contrasts with the
    empty prompt or a negative prompt."""

    def __init__(self, denoiser: Denoiser, config: Config, *, text=None, **kwargs):
        super().__init__(denoiser, config, **kwargs)
        self._text = text

    @property
    def text(self):
        """The `TextEmbeddings` of this pipeline (the encoder itself loads at the first prompt not cached)."""
        if self._text is None:
            from noisecraft.conditioning.text import EMBEDDINGS_FILE, TextEmbeddings

            m = self.config.model
            cache = Path(self.path).parent.parent / EMBEDDINGS_FILE if self.path else None
            self._text = TextEmbeddings(m.text_encoder, m.text_max_tokens, self.device, cache)
        return self._text

    def request(self, n: int | None = None, class_index: int | list[int] | None = None,
                labels: list[str] | None = None, prompt: str | list[str] | None = None) -> tuple[int, list[str]]:
        """The number of images and the prompt of each: `prompt` (one, or a list cycled over n; n defaults to
        its length) or `labels` (one prompt per image)."""
        if class_index is not None or (labels is not None and not all(isinstance(p, str) for p in labels)):
            raise UserError("this model is text-to-image: it takes a prompt (--prompt or --prompt-file), not a class")
        if labels is not None and prompt is not None:
            raise UserError("give prompt or labels, not both")
        prompts = list(labels) if labels is not None else [prompt] if isinstance(prompt, str) else list(prompt or [])
        if not prompts:
            raise UserError("this text-to-image model needs a prompt (--prompt TEXT or --prompt-file FILE)")
        n = len(prompts) if n is None else n
        if n <= 0 or (labels is not None and len(labels) != n):
            raise UserError(f"n must be > 0 and match the {len(prompts)} prompts given as labels, got {n}")
        return n, [prompts[i % len(prompts)] for i in range(n)]

    def condition(self, prompts: list[str]) -> dict:
        """Token embeddings (B, L, D), padding mask (B, L) and pooled embedding (B, D) of a batch's prompts."""
        return self.text(prompts, self.device)

    def null_condition(self, negative_prompt: str | None = None) -> dict:
        """The empty prompt's embeddings (as caption dropout trained it), or a negative prompt's, (1, ...)."""
        return self.text([negative_prompt or ""], self.device)


class LatentPipeline(Pipeline):
    """Latent diffusion: the sampler draws latents (B, z, h, w) and `decode` turns them into images through the
    run's frozen autoencoder (`autoencoder.codec.LatentCodec`); previews decode the x0 estimate the same way.
    Clipping x0 to [-1, 1] is a rule of pixel space, so it is off here."""

    def __init__(self, denoiser: Denoiser, config: Config, *, codec, **kwargs):
        super().__init__(denoiser, config, **kwargs)
        self.codec = codec.to(self.device)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the decoded images."""
        _, h, w = self.sample_shape
        f = self.codec.downsample
        return (self.codec.image_channels, h * f, w * f)

    @property
    def autoencoder(self):
        """The frozen autoencoder (`LatentCodec`) between this run's latents and pixels."""
        return self.codec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> scaled latents (B, z, H/f, W/f): the space the sampler works in."""
        return self.codec.encode(x.to(self.device))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (B, z, h, w) -> uint8 images (B, C, h f, w f) on the CPU."""
        return to_uint8(self.codec.decode(x.to(self.device))).cpu()

    def denoise_fn(self, opts: SamplingOptions) -> Denoise:
        return super().denoise_fn(dataclasses.replace(opts, clip_x0=False))


def load_pipeline(path: str | Path, device: torch.device | str = "auto", prefer: str = "best") -> Pipeline:
    """A run directory or checkpoint file as a Pipeline over its EMA weights (part "unet_ema"); a `TextPipeline`
    for a text-to-image run, a `LatentPipeline` for a latent diffusion run. `device`: auto (the first GPU, else the
    CPU), cpu, cuda or cuda:N; `prefer`: which checkpoint of a run (best or last)."""
    device = pick_device(device) if isinstance(device, str) else device
    ckpt = load_checkpoint(path, prefer)
    net = ckpt.load_module("unet_ema", build_model(ckpt.config.model))
    denoiser = Denoiser(net, ckpt.config.diffusion).to(device).eval()
    if ckpt.config.autoencoder.latent:  # the run's copy of its autoencoder, else the one it recorded
        from noisecraft.autoencoder.codec import load_run_codec

        codec = load_run_codec(ckpt.path.parent.parent, ckpt.meta.get("autoencoder", {}), ckpt.config.autoencoder.path,
                               device)
        return LatentPipeline(denoiser, ckpt.config, codec=codec, device=device, meta=ckpt.meta)
    cls = TextPipeline if ckpt.config.model.context_dim else Pipeline
    return cls(denoiser, ckpt.config, device=device, meta=ckpt.meta)
