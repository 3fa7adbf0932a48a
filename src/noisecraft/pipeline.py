"""The pipeline: a denoiser composed with a *conditioner* (none, class labels, text prompts: `conditioning`) and
a *codec* (identity, or an autoencoder's latent space: `autoencoder.codec`), turning a request (class or prompt,
sampler, steps, guidance, seeds) into images. Any conditioner goes with any codec: text-to-image in a latent space
is the same object as class-conditional pixels. `pipeline_for` composes one from a config and its parts;
`load_pipeline(path)` from a run directory; the trainer around its EMA denoiser.

    pipe = load_pipeline("runs/digits")
    images = pipe.generate(n=4, class_index=3, steps=10, seed=0)  # uint8 (4, 1, 28, 28)
    req = pipe.prepare(n=4, prompt="a bold seven", steps=20)      # a text run: resolved once, frozen
    for ev in pipe.stream(request=req, preview_every=5): ...      # one event per sampler step

A request is resolved once (`prepare`) into a frozen `Request` that every consumer reads: `stream` and
`generate`, the CLI, the server's batching and the PNG `parameters` writer.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from noisecraft.autoencoder.codec import IdentityCodec, run_codec
from noisecraft.checkpoint import load_checkpoint
from noisecraft.conditioning import conditioner_for, take
from noisecraft.config import Config
from noisecraft.data import to_model_range, to_uint8
from noisecraft.device import pick_device
from noisecraft.diffusion import Denoiser
from noisecraft.editing import (IMG2IMG_STRENGTH, INPAINT_JUMPS, VARIATIONS_STRENGTH, EditSource, edit_source,
                                known_region, paste_known, resampled, strength_grid)
from noisecraft.errors import UserError
from noisecraft.models import build_model
from noisecraft.precision import autocast_ctx, default_sampling_batch, sampling_channels_last, use_bf16
from noisecraft.registry import PRECISIONS, SAMPLERS
from noisecraft.rundir import RunDir, content_hash, run_root
from noisecraft.samplers import PerImageNoise, SamplerStep, cfg_denoiser, get_sampler, get_sigmas
from noisecraft.samplers.common import Denoise, StepConditions, at_level


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
    strength: float | None = None  # edits: how far down the noise levels the image is taken, (0, 1]; 1 = from noise
    jumps: int | None = None  # inpainting: RePaint resamplings of each step (None: editing.INPAINT_JUMPS)


@dataclass(frozen=True)
class Request:
    """A request resolved once (`Pipeline.prepare`): which images, with which conditions and seeds, and every
    sampling option filled in and checked. Everything that draws, batches or records images reads this."""

    conditions: torch.Tensor | tuple[str, ...] | None  # per image: class labels (n,), prompts, or None
    seeds: tuple[int, ...]  # image i's seed: options.seed + i unless given per image
    options: SamplingOptions  # resolved: no None left but negative_prompt
    source: EditSource | None = None  # edits: the images (and mask) to start from; None: drawn from noise
    loras: tuple[tuple[str, str, float], ...] = ()  # (name, sha256, scale) of each adapter loaded (`adapters`)
    guidance: tuple[tuple[float, float, float], ...] | None = None  # per image (w, lo, hi) where merged requests
    # differ in guidance weight or interval (guided where lo < sigma <= hi); None: every image as `options` says

    def guidance_of(self, i: int) -> tuple[float, float, float]:
        """Image i's guidance weight and interval (lo, hi): from `guidance`, else from the options."""
        if self.guidance is not None:
            return self.guidance[i]
        lo, hi = self.options.guidance_interval or (-math.inf, math.inf)
        return (float(self.options.guidance), float(lo), float(hi))

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def labels(self) -> torch.Tensor | list[str] | None:
        """The conditions as `take` and the conditioners handle them (prompts as a list)."""
        return list(self.conditions) if isinstance(self.conditions, tuple) else self.conditions

    def batch_key(self, per_image_guidance: bool = False) -> tuple:
        """Requests with equal keys may share a sampler call: everything but conditions, seeds and counts (and,
        with `per_image_guidance`, the guidance weight and interval, which `merged` then keeps per image)."""
        o = dataclasses.replace(self.options, seed=None, batch_size=None)
        if per_image_guidance:
            o = dataclasses.replace(o, guidance=None, guidance_interval=None)
        edit = None if self.source is None else self.source.inpainting
        return (*(tuple(v) if isinstance(v, list) else v for v in dataclasses.astuple(o)), edit, self.loras)

    @staticmethod
    def merged(requests: list["Request"]) -> "Request":
        """Several requests with one batch key as one, drawn in a single batch (each image keeps its seed, and its
        guidance where the requests differ in it: `batch_key(per_image_guidance=True)`)."""
        first, conds = requests[0], [r.conditions for r in requests]
        if first.conditions is None:
            merged = None
        elif torch.is_tensor(first.conditions):
            merged = torch.cat(conds)
        else:
            merged = tuple(p for c in conds for p in c)
        seeds = tuple(s for r in requests for s in r.seeds)
        source = None if first.source is None else EditSource.cat([r.source for r in requests])
        per_image = tuple(r.guidance_of(i) for r in requests for i in range(r.n))
        guidance = None if len(set(per_image)) == 1 else per_image
        return Request(merged, seeds, dataclasses.replace(first.options, batch_size=len(seeds)), source, first.loras,
                       guidance)


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
            return denoiser(x, sigma, at_level(cond, sigma)).float().contiguous()

    return d


class Pipeline:
    """A denoiser (EMA weights, eval mode) with its config, a conditioner and a codec, and metadata (step, path):
    turns requests into uint8 images with any sampler, guidance and precision."""

    def __init__(self, denoiser: Denoiser, config: Config, *, codec=None, class_names: list[str] | None = None,
                 text=None, text_cache: Path | None = None, device: torch.device | str = "cpu",
                 meta: dict | None = None):
        self.denoiser, self.config, self.device = denoiser, config, torch.device(device)
        self.meta = dict(meta or {})
        names = list(self.meta.get("class_names", []) if class_names is None else class_names)
        self.conditioner = conditioner_for(config.model, names, text=text, text_cache=text_cache, device=self.device)
        if codec is None and config.autoencoder.latent:
            raise ValueError("a latent run's pipeline needs its codec: build it with pipeline_for or load_pipeline")
        self.codec = (codec or IdentityCodec()).to(self.device)
        self._adapters = None

    @property
    def kind(self) -> str:
        """What a request names: "class" (class labels), "text" (prompts, cross-attention) or "unconditional"."""
        return self.conditioner.kind

    @property
    def num_classes(self) -> int:
        return self.conditioner.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.conditioner.class_names

    @property
    def text(self):
        """A text pipeline's `TextEmbeddings` (prompts -> conditioning), None for other kinds."""
        return getattr(self.conditioner, "text", None)

    @property
    def autoencoder(self):
        """A latent pipeline's frozen autoencoder (`LatentCodec`), None in pixel space."""
        return self.codec.autoencoder

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the sampler draws (latents, in a latent pipeline)."""
        m = self.config.model
        return (m.in_channels, m.image_size, m.image_size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images `decode` returns."""
        return self.codec.image_shape(self.sample_shape)

    @property
    def step(self) -> int | None:
        return self.meta.get("step")

    @property
    def path(self) -> str | None:
        return self.meta.get("path")

    # ---- low-rank adapters (`noisecraft.adapters`), merged into the network's weights while they draw

    @property
    def adapters(self):
        """The adapters loaded on this pipeline's network (`adapters.Adapters`)."""
        if self._adapters is None:
            from noisecraft.adapters import Adapters

            sha: dict[str, str | None] = {}

            def base_sha256() -> str | None:  # hashed once, when the first adapter is loaded
                if "base" not in sha:
                    sha["base"] = content_hash([Path(self.path)]) if self.path and Path(self.path).is_file() else None
                return sha["base"]

            self._adapters = Adapters(self.denoiser.net, base_sha256)
        return self._adapters

    @property
    def loras(self) -> tuple[tuple[str, str, float], ...]:
        """(name, sha256, scale) of every loaded adapter at its scale; () without any (none loaded, nothing built)."""
        return self._adapters.active() if self._adapters is not None else ()

    def load_lora(self, path: str | Path, name: str | None = None, scale: float = 1.0) -> str:
        """Load a LoRA adapter (a peft folder or a finetune run) at `scale`; returns its name (default: the
        folder's). Refused when it was trained on another base (sha256) or does not fit the network."""
        return self.adapters.load(path, name, scale)

    def set_loras(self, scales: dict[str, float]) -> None:
        """The scales of loaded adapters by name, e.g. {"nines": 1.0, "slant": 0.5}; each in [-2, 2]."""
        self.adapters.set_scales(scales)

    def unload_lora(self, name: str | None = None) -> None:
        """Unload one adapter, or all: the network draws with the base's weights again."""
        self.adapters.unload(name)

    def _lora_tags(self, prompt):
        """Prompts without their `<lora:name:w>` tags, and the tags' scales (one weight per name)."""
        from noisecraft.adapters import prompt_loras

        if prompt is None or not self.conditioner.takes_prompts:
            return prompt, {}
        clean, scales = [], {}
        for p in [prompt] if isinstance(prompt, str) else list(prompt):
            text, tags = prompt_loras(p) if isinstance(p, str) else (p, {})
            for name, scale in tags.items():
                if scales.setdefault(name, scale) != scale:
                    raise UserError(f"<lora:{name}> is given two weights ({scales[name]:g} and {scale:g})")
            clean.append(text)
        return (clean[0] if isinstance(prompt, str) else clean), scales

    # ---- resolving a request, once

    def resolve(self, options: SamplingOptions | None = None, *, edit: EditSource | None = None, **overrides
                ) -> SamplingOptions:
        """Every option filled in and checked: the user's where given, else the checkpoint's `sample` section.
        An `edit` at strength s < 1 runs s times the checkpoint's steps unless `steps` says how many to run, and
        guides at every step unless given an interval: a limited interval (Kynkäänniemi et al. 2024) is a rule for
        drawing from pure noise, and edits that start lower follow the asked class far less under it
        (benchmarks/editing.py)."""
        o = dataclasses.replace(options or SamplingOptions(), **overrides)
        s = self.config.sample

        def pick(value, default):
            return default if value is None else value

        sampler = SAMPLERS.get(pick(o.sampler, s.sampler), "sampler").name
        inpainting = edit is not None and edit.inpainting
        strength = float(pick(o.strength, IMG2IMG_STRENGTH if edit is not None and not inpainting else 1.0))
        jumps = pick(o.jumps, INPAINT_JUMPS if inpainting else 0)
        _check_edit_options(strength, jumps)
        steps, guidance = pick(o.steps, max(1, math.ceil(strength * s.steps))), float(pick(o.guidance, s.guidance))
        from_noise = edit is None or strength == 1
        interval = tuple(float(v) for v in pick(o.guidance_interval, s.guidance_interval if from_noise else ()))
        precision = PRECISIONS.get(pick(o.precision, s.precision), "precision").name
        guided = self.conditioner.guidable and guidance != 0
        batch_size = pick(o.batch_size, default_sampling_batch(self.device, guided))
        _check_options(steps, guidance, interval, batch_size)
        if o.negative_prompt is not None:
            self.conditioner.check_negative(o.negative_prompt)
        return SamplingOptions(sampler, steps, guidance, interval, pick(o.seed, 0), batch_size,
                               "bf16" if use_bf16(self.device, precision) else "fp32", pick(o.clip_x0, s.clip_x0),
                               o.negative_prompt, strength, int(jumps))

    def request(self, n: int | None = None, class_index: int | list[int] | None = None,
                labels: torch.Tensor | list[str] | None = None, prompt: str | list[str] | None = None
                ) -> tuple[int, torch.Tensor | list[str] | None]:
        """The number of images and the condition of each, by the conditioner's rules: classes (n,), prompts,
        or None for an unconditional model."""
        return self.conditioner.request(n, class_index, labels, prompt)

    def prepare(self, n: int | None = None, class_index: int | list[int] | None = None, *,
                labels: torch.Tensor | list[str] | None = None, prompt: str | list[str] | None = None,
                seeds: list[int] | None = None, image=None, mask=None, options: SamplingOptions | None = None,
                lora_scales: dict[str, float] | None = None, **overrides) -> Request:
        """User options + the run's defaults -> one frozen `Request`. `class_index` (one class or a list cycled),
        `labels` (one condition per image) or, for a text model, `prompt` (one, or a list cycled); `seeds` gives
        image i its own seed instead of seed + i; `lora_scales` the scales of loaded adapters for this request
        (others: their `set_loras` scale; `<lora:name:w>` tags in prompts win); the rest are `SamplingOptions`
        fields.

        Edits start from `image` (uint8 (N, C, H, W) or (C, H, W), a PIL image or a path; one image is repeated
        n times) and, for inpainting, `mask` (True or white = regenerate). A class model asked for no class edits
        with its null class (guidance off): the image keeps what it shows."""
        prompt, tags = self._lora_tags(prompt)
        labels, more = self._lora_tags(labels) if isinstance(labels, list) else (labels, {})
        asked = {**(lora_scales or {}), **tags, **more}
        loras = self.adapters.active(asked) if self._adapters is not None or asked else ()
        source = None
        if image is not None:
            source, n = edit_source(image, mask, shape=self.image_shape, n=n)
        elif mask is not None:
            raise UserError("a mask needs the image it applies to")
        unasked = self.conditioner.unasked(n) if source is not None and class_index is None and labels is None else None
        if unasked is not None:
            conditions = unasked
            overrides.setdefault("guidance", 0.0)
        else:
            n, conditions = self.request(n, class_index, labels, prompt)
        opts = self.resolve(options, edit=source, **overrides)
        if source is None and (opts.strength != 1 or opts.jumps):
            raise UserError("strength and jumps apply to edits: give an image (and a mask for jumps)")
        self.conditioner.check_steps(conditions, opts.negative_prompt, opts.steps)
        if seeds is not None and len(seeds) != n:
            raise UserError(f"seeds must give one seed per image ({n}), got {len(seeds)}")
        seeds = tuple(int(s) for s in seeds) if seeds is not None else tuple(opts.seed + i for i in range(n))
        return Request(tuple(conditions) if isinstance(conditions, list) else conditions, seeds, opts, source, loras)

    # ---- the steps between a request and images

    def condition(self, conditions: torch.Tensor | list[str] | None, sigmas: torch.Tensor | None = None
                  ) -> dict | StepConditions | None:
        """The conditioning dict the network takes for one batch of requested conditions; prompts that change
        during sampling (prompt editing) give `StepConditions` over the grid `sigmas`."""
        return None if conditions is None else self.conditioner.condition(conditions, self.device, sigmas)

    def null_condition(self, negative_prompt: str | None = None, sigmas: torch.Tensor | None = None
                       ) -> dict | StepConditions | None:
        """The 'no condition' the guided denoiser contrasts with (Ho & Salimans 2022)."""
        return self.conditioner.null(negative_prompt, self.device, sigmas)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> the space the sampler works in (scaled latents, or the images)."""
        return self.codec.encode(x.to(self.device))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Sampler output (B, C, h, w) -> uint8 images (B, C, H, W) on the CPU."""
        return to_uint8(self.codec.decode(x.to(self.device))).cpu()

    def denoise_fn(self, opts: SamplingOptions, sigmas: torch.Tensor | None = None,
                   per_image: list[tuple[float, float, float]] | None = None) -> Denoise:
        """The denoiser as the sampler calls it, for resolved options: at their precision, guided, x0 clipped
        (pixel space only). `sigmas`: the grid, where a negative prompt changes during sampling; `per_image`: each
        image's (w, lo, hi) instead of the options' guidance (one batch of a grid's cells)."""
        d = _with_precision(self.denoiser, self.device, opts.precision)
        guidable = self.conditioner.guidable
        if guidable and per_image is not None and any(w != 0 for w, _, _ in per_image):
            w, lo, hi = torch.tensor(per_image, dtype=torch.float32, device=self.device).unbind(1)  # (B,) each
            d = cfg_denoiser(d, w, self.null_condition(opts.negative_prompt, sigmas), (lo, hi))
        elif guidable and per_image is None and opts.guidance != 0:
            d = cfg_denoiser(d, opts.guidance, self.null_condition(opts.negative_prompt, sigmas),
                             tuple(opts.guidance_interval) or None)
        if opts.clip_x0 and self.codec.clip_x0:
            base = d
            d = lambda x, sigma, cond=None: base(x, sigma, cond).clamp_(-1, 1)
        return d

    # ---- sampling

    def stream(self, *args, request: Request | None = None, preview_every: int = 0, cancel: CancelFlag | None = None,
               **kwargs) -> Iterator[SampleEvent]:
        """Draw a request's images batch by batch, yielding a "step" event after every sampler step (with a uint8
        preview of the x0 estimate every `preview_every` steps) and an "images" event when a batch is done.
        Nothing runs between events: once the caller stops iterating (closes the generator) or sets `cancel`, no
        further network call is made. Give a prepared `request`, or `prepare`'s arguments."""
        req = request if request is not None else self.prepare(*args, **kwargs)
        if preview_every < 0:
            raise UserError(f"preview_every must be >= 0, got {preview_every}")
        opts = req.options
        if self._adapters is not None or req.loras:
            self.adapters.apply(req.loras)
        sigmas = strength_grid(lambda k: get_sigmas(self.denoiser, opts.sampler, k), opts.steps, opts.strength)
        sampler = get_sampler(opts.sampler)
        if opts.jumps:
            sampler = resampled(sampler, opts.jumps)
        sigmas = sigmas.to(self.device)
        run = _BatchRun(self, sampler, self.denoise_fn(opts, sigmas), sigmas, req, preview_every, cancel)
        batches, labels = math.ceil(req.n / opts.batch_size), req.labels
        for b, start in enumerate(range(0, req.n, opts.batch_size)):
            if run.cancelled():
                return
            idx = list(range(start, min(req.n, start + opts.batch_size)))
            yield from run.events(b, batches, idx, take(labels, idx))

    def generate(self, *args, request: Request | None = None, progress: bool = False, **kwargs) -> torch.Tensor:
        """Draw a request's images as uint8 (n, C, H, W): `stream` run to its end. Image i uses its own seed for
        all its noise, so it does not depend on the batch size or on n. Arguments as for `stream`."""
        from tqdm.auto import tqdm

        req = request if request is not None else self.prepare(*args, **kwargs)
        out = []
        with tqdm(total=req.n, desc=f"sampling ({req.options.sampler}, {req.options.steps} steps)", unit="img",
                  disable=not progress, leave=False) as bar:
            for ev in self.stream(request=req):
                if ev.kind == "images":
                    out.append(ev.images)
                    bar.update(len(ev.indices))
        return torch.cat(out)

    # ---- editing: the same stream, started from given images (`noisecraft.editing`)

    def img2img(self, image, strength: float = IMG2IMG_STRENGTH, **kwargs) -> torch.Tensor:
        """SDEdit (Meng et al. 2022): `image` noised to the level `strength` picks (1 = from pure noise) and
        denoised under the asked class or prompt; `steps` counts the steps run (default: strength x the run's
        steps). uint8 (n, C, H, W); other arguments as for `generate` (`stream(image=..., strength=...)` streams)."""
        return self.generate(image=image, strength=strength, **kwargs)

    def inpaint(self, image, mask, strength: float = 1.0, **kwargs) -> torch.Tensor:
        """RePaint (Lugmayr et al. 2022): regenerate where `mask` is True (bool (N or 1, 1, H, W), or a mask
        image: white = regenerate), keeping the rest; pixel runs return the known pixels exactly, latent runs
        paste them back with a feathered edge. `jumps` resamples each step."""
        return self.generate(image=image, mask=mask, strength=strength, **kwargs)

    def variations(self, image, strength: float = VARIATIONS_STRENGTH, n: int = 8, **kwargs) -> torch.Tensor:
        """n images like `image`: img2img at a low strength, image i with its own seed (seed + i)."""
        return self.generate(n=n, image=image, strength=strength, **kwargs)


def _check_edit_options(strength: float, jumps: int) -> None:
    if not 0 < strength <= 1:
        raise UserError(f"strength must be in (0, 1] (1 = from pure noise), got {strength}")
    if jumps < 0 or int(jumps) != jumps:
        raise UserError(f"jumps must be a whole number >= 0, got {jumps}")


def _check_options(steps: int, guidance: float, interval: tuple[float, ...], batch_size: int) -> None:
    if steps <= 0:
        raise UserError(f"steps must be > 0, got {steps}")
    if not math.isfinite(guidance):
        raise UserError(f"guidance must be a finite number, got {guidance}")
    if len(interval) not in (0, 2):
        raise UserError(f"guidance_interval must be (lo, hi) or () for every step, got {interval}")
    if interval and not (0 <= interval[0] < interval[1]):
        raise UserError(f"guidance_interval (lo, hi) must have 0 <= lo < hi (it guides where lo < sigma <= hi), "
                        f"got {interval}: no step would be guided")
    if batch_size <= 0:
        raise UserError(f"batch_size must be > 0, got {batch_size}")


@dataclass
class _BatchRun:
    """One request's sampler, denoiser and grid, run over its batches (the body of `Pipeline.stream`)."""

    pipe: Pipeline
    sampler: Callable[..., Iterator[SamplerStep]]
    denoise: Denoise
    sigmas: torch.Tensor  # (steps + 1,) on the device
    request: Request
    preview_every: int
    cancel: CancelFlag | None

    def __post_init__(self):
        self.levels = self.sigmas.tolist()  # a host copy: events read sigma without a device sync

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    @torch.no_grad()
    def events(self, b: int, batches: int, idx: list[int], labels: torch.Tensor | list[str] | None
               ) -> Iterator[SampleEvent]:
        pipe, total = self.pipe, len(self.levels) - 1
        req = self.request
        noise = PerImageNoise([req.seeds[i] for i in idx], pipe.device)
        x = noise(torch.empty(len(idx), *pipe.sample_shape, device=pipe.device))  # (B, C, H, W)
        source = None if req.source is None else req.source.take(idx)
        denoise = self.denoise if req.guidance is None else pipe.denoise_fn(req.options, self.sigmas,
                                                                              [req.guidance[i] for i in idx])
        x, denoise = self.start(x, source, noise, denoise)
        steps = self.sampler(denoise, x, self.sigmas, pipe.condition(labels, self.sigmas), noise=noise)
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
        images = pipe.decode(x)
        if source is not None and source.inpainting:
            images = paste_known(images, source, feather=pipe.codec.feather)
        yield SampleEvent("images", b, batches, idx, total, total, 0.0, 0.0, x, x, s.x0, images=images)

    def start(self, eps: torch.Tensor, source: EditSource | None, noise: PerImageNoise, denoise: Denoise
              ) -> tuple[torch.Tensor, Denoise]:
        """The sampler's first x and its denoiser: pure noise at the grid's top, or an edit's images noised to
        the level its strength picked (SDEdit), with the known region held by RePaint's step when inpainting."""
        pipe, sigma = self.pipe, self.levels[0]
        if source is None:
            return eps * pipe.denoiser.prior_std(sigma), denoise
        x0_known = pipe.encode(to_model_range(source.images))  # (B, c, h, w) in the sampler's space
        if not source.inpainting:
            return x0_known + sigma * eps, denoise
        keep = pipe.codec.keep_mask(source.mask, x0_known.shape[-2:])
        return x0_known + sigma * eps, known_region(denoise, x0_known, keep.to(pipe.device), noise)


def pipeline_for(config: Config, denoiser: Denoiser, *, device: torch.device | str = "cpu", meta: dict | None = None,
                 root: Path | None = None, class_names: list[str] | None = None, text=None, codec=None) -> Pipeline:
    """The pipeline a config asks for, composed of its parts: the conditioner (`conditioning.conditioner_for`;
    a text model's embeddings are `text`, or the run's cache in `root`) and the codec (`codec`, or for a latent run
    the autoencoder copy in `root` / the recorded source, checked by sha256)."""
    cache = None
    if text is None and root is not None:
        cache = RunDir(root).text_embeddings
    if codec is None:
        codec = run_codec(config, root, (meta or {}).get("autoencoder", {}), device)
    return Pipeline(denoiser, config, codec=codec, class_names=class_names, text=text, text_cache=cache,
                    device=device, meta=meta)


def load_pipeline(path: str | Path, device: torch.device | str = "auto", prefer: str = "best",
                  loras: list[tuple[str, float]] | tuple = ()) -> Pipeline:
    """A run directory or checkpoint file as a Pipeline over its EMA weights (part "net_ema"), composed by
    `pipeline_for` (text prompts, latent decoding as the run's config says). `device`: auto (the first GPU, else
    the CPU), cpu, cuda or cuda:N; `prefer`: which checkpoint of a run (best or last); `loras`: (path, scale) of
    adapters to load. A fine-tuning run is its base with its adapter loaded."""
    device = pick_device(device) if isinstance(device, str) else device
    ckpt = load_checkpoint(path, prefer)
    if ckpt.config.train.task == "finetune":
        from noisecraft.adapters import ADAPTER_DIR

        if not (run_root(ckpt.path) / ADAPTER_DIR).is_dir():
            raise UserError(f"{path} is a fine-tuning that has not finished (no {ADAPTER_DIR}/): finish it with "
                            f"noisecraft finetune --resume --out {run_root(ckpt.path)}")
        return load_pipeline(ckpt.config.finetune.base, device, loras=[(run_root(ckpt.path), 1.0), *loras])
    pipe = _load_base_pipeline(ckpt, device)
    for lora, scale in loras:
        pipe.load_lora(lora, scale=scale)
    if loras:  # merged now, so figures that call the network directly draw with them too
        pipe.adapters.apply(pipe.adapters.active())
    return pipe


def _load_base_pipeline(ckpt, device: torch.device) -> Pipeline:
    net = ckpt.load_module("net_ema", build_model(ckpt.config.model))
    denoiser = Denoiser(net, ckpt.config.diffusion).to(device).eval()
    return pipeline_for(ckpt.config, denoiser, device=device, meta=ckpt.meta, root=run_root(ckpt.path))
