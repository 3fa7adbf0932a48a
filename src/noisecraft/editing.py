"""Editing: finishing a partly noised or partly known image with the same denoiser and samplers that draw from
noise. img2img / variations are SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with
Stochastic Differential Equations"): noise the image to the level that `strength` picks on the sampler's grid and
denoise from there. Inpainting is RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion
Probabilistic Models"): at every step the known region is the known image noised afresh to the current level,
optionally with `jumps` resamplings of each step.

This module holds the pieces `Pipeline.prepare` and `Pipeline.stream` use: reading images and masks at the model's
shape (`edit_source`), the shortened grid (`strength_grid`), the known-region denoiser (`known_region`), the
resampling sampler (`resampled`) and the paste of known pixels (`paste_known`).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from noisecraft.errors import UserError
from noisecraft.samplers.common import Denoise, NoiseFn, SamplerStep

MAX_PIXELS = 4096 * 4096  # larger inputs are refused before they are decoded (a 20,000 x 20,000 PNG is 1.2 GB)
HALVES = ("top", "bottom", "left", "right")  # the sides `half_mask` regenerates
IMG2IMG_STRENGTH = 0.6  # an edit without a mask: keeps the layout, redraws the details (a mask's default is 1)
VARIATIONS_STRENGTH = 0.3  # variations: the image kept, its details varied
INPAINT_JUMPS = 1  # RePaint resamplings per step when inpainting (benchmarks/editing.py measured the choice)


@dataclass(frozen=True)
class EditSource:
    """The images a request edits, at the model's image shape, and which of their pixels to regenerate."""

    images: torch.Tensor  # uint8 (n, C, H, W)
    mask: torch.Tensor | None  # bool (n, 1, H, W), True = regenerate; None: img2img (every pixel, from the image)
    sha256: tuple[str, ...]  # per image: sha256 of its uint8 pixels as edited (C, H, W), for the PNG parameters

    @property
    def inpainting(self) -> bool:
        return self.mask is not None

    def take(self, idx: list[int]) -> "EditSource":
        i = torch.as_tensor(idx, dtype=torch.long)
        return EditSource(self.images[i], None if self.mask is None else self.mask[i],
                          tuple(self.sha256[j] for j in idx))

    @staticmethod
    def cat(sources: list["EditSource"]) -> "EditSource":
        masks = [s.mask for s in sources]
        return EditSource(torch.cat([s.images for s in sources]), None if masks[0] is None else torch.cat(masks),
                          tuple(h for s in sources for h in s.sha256))


# ---------------------------------------------------------------- reading images and masks


def open_image(src: str | Path | bytes):
    """A path or encoded bytes -> a decoded single-frame PIL image, or a UserError saying what is wrong."""
    from PIL import Image, UnidentifiedImageError

    name = "the given data" if isinstance(src, bytes | bytearray) else str(src)
    try:
        im = Image.open(io.BytesIO(src) if isinstance(src, bytes | bytearray) else src)
    except FileNotFoundError:
        raise UserError(f"image not found: {name}") from None
    except UnidentifiedImageError:
        raise UserError(f"{name} is not an image (PNG, JPEG, WebP, BMP, ...)") from None
    except Image.DecompressionBombError:
        raise UserError(f"{name} is too large: at most {MAX_PIXELS:,} pixels") from None
    except OSError as e:
        raise UserError(f"cannot read {name}: {e}") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise UserError(f"{name} is {w}x{h}: too large, at most {MAX_PIXELS:,} pixels")
    if getattr(im, "n_frames", 1) > 1:
        raise UserError(f"{name} is animated ({im.n_frames} frames): give a single image")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise UserError(f"{name} is damaged: {e}") from None
    return im


def _as_pil_list(image) -> list:
    """uint8 (N, C, H, W) / (C, H, W), a PIL image, a path or bytes -> PIL images (tensors must be uint8)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return [image]
    if isinstance(image, str | Path | bytes | bytearray):
        return [open_image(image)]
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not torch.is_tensor(image):
        raise UserError(f"an image must be a uint8 tensor, a PIL image or a path, got {type(image).__name__}")
    if image.dtype != torch.uint8:
        raise UserError(f"image tensors must be uint8 (N, C, H, W) or (C, H, W) as generate returns, got {image.dtype}")
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[1] not in (1, 3, 4) or image.shape[0] == 0:
        raise UserError(f"an image tensor must be (N, C, H, W) or (C, H, W) with C 1, 3 or 4, got {tuple(image.shape)}")
    arrays = image.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]


def _as_mask_list(mask, n: int) -> list[np.ndarray]:
    """A bool tensor (N or 1, 1, H, W) / (H, W), a PIL image, a path or bytes -> bool (H, W) arrays. In an image
    mask, white (or, with transparency, opaque) pixels are regenerated."""
    from PIL import Image

    if isinstance(mask, str | Path | bytes | bytearray):
        mask = open_image(mask)
    if isinstance(mask, Image.Image):
        if mask.mode in ("RGBA", "LA", "PA") and mask.getextrema()[-1][0] < 255:
            return [np.asarray(mask.getchannel("A")) > 127]
        return [np.asarray(mask.convert("L")) > 127]
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise UserError(f"mask tensors must be bool (True = regenerate), got {mask.dtype}")
    while mask.dim() < 4:
        mask = mask[None]
    if mask.shape[1] != 1 or mask.shape[0] not in (1, n):
        raise UserError(f"a mask must be (1 or {n}, 1, H, W), got {tuple(mask.shape)}")
    return [m[0].cpu().numpy() for m in mask]


def _fit(im, shape: tuple[int, int, int], resample):
    """`im` at the model's (C, H, W), as the run's data were made: resized and center-cropped, grey or RGB."""
    from noisecraft.data import square_image, to_8bit

    c, size, _ = shape
    mode = "L" if c == 1 else "RGB"
    im = to_8bit(im)
    return square_image(im if im.mode == mode else im.convert(mode), size, resample)


def edit_source(image, mask=None, *, shape: tuple[int, int, int], n: int | None = None) -> tuple[EditSource, int]:
    """The images (and mask) a request edits, converted to the model's image shape (C, H, W) as its data were,
    with a warning naming what changed; and the number of images (`n`; a single image is repeated n times)."""
    pil = _as_pil_list(image)
    count = len(pil) if n is None else n
    if len(pil) not in (1, count):
        raise UserError(f"give one image or {count} images, got {len(pil)}")
    c, size, _ = shape
    changed = _changes(pil[0], c, size)
    if changed:
        warnings.warn(f"the image was converted to what the model draws: {', '.join(changed)}", stacklevel=3)
    from PIL import Image

    arrays = [np.asarray(_fit(im, shape, Image.Resampling.BICUBIC), dtype=np.uint8) for im in pil]
    images = torch.from_numpy(np.stack([a[..., None] if a.ndim == 2 else a for a in arrays])).permute(0, 3, 1, 2)
    images = images.contiguous().expand(count, -1, -1, -1).clone() if len(pil) == 1 else images.contiguous()
    sha = tuple(hashlib.sha256(images[i].numpy().tobytes()).hexdigest() for i in range(count))
    return EditSource(images, _mask_tensor(mask, pil[0].size, shape, count), sha), count


def _changes(im, channels: int, size: int) -> list[str]:
    out = []
    if im.size != (size, size):
        out.append(f"{im.size[0]}x{im.size[1]} -> {size}x{size}")
    mode = "L" if channels == 1 else "RGB"
    if im.mode != mode:
        out.append(f"mode {im.mode} -> {'grey' if channels == 1 else 'RGB'}")
    return out


def _mask_tensor(mask, image_size: tuple[int, int], shape: tuple[int, int, int], n: int) -> torch.Tensor | None:
    """bool (n, 1, H, W) at the model's size from a mask of the given image's size; all-False is refused and
    all-True (= generation from noise) is said in a warning."""
    if mask is None:
        return None
    from PIL import Image

    arrays = _as_mask_list(mask, n)
    w, h = image_size
    if arrays[0].shape != (h, w):
        raise UserError(f"the mask is {arrays[0].shape[1]}x{arrays[0].shape[0]} but the image is {w}x{h}: "
                        f"give a mask of the image's size")
    fitted = [np.asarray(_fit(Image.fromarray(a.astype(np.uint8) * 255), (1, *shape[1:]), Image.Resampling.NEAREST))
              > 127 for a in arrays]
    m = torch.from_numpy(np.stack(fitted))[:, None].expand(n, -1, -1, -1).clone()
    if not bool(m.any()):
        raise UserError("the mask selects no pixel to regenerate (white = regenerate): nothing would change")
    if bool(m.all()):
        warnings.warn("the mask selects every pixel: this is generation from noise, the image is not used",
                      stacklevel=3)
    return m


def _wh(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def rect_mask(x: int, y: int, w: int, h: int, size: int | tuple[int, int]) -> torch.Tensor:
    """bool (1, 1, H, W) for an image of `size` (S or (W, H)): True inside the rectangle at (x, y) of w x h
    pixels (clipped to the image)."""
    if w <= 0 or h <= 0:
        raise UserError(f"a mask rectangle needs a positive width and height, got {w}x{h}")
    width, height = _wh(size)
    m = torch.zeros(1, 1, height, width, dtype=torch.bool)
    m[..., max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = True
    return m


def half_mask(side: str, size: int | tuple[int, int]) -> torch.Tensor:
    """bool (1, 1, H, W): True on the `side` half (top, bottom, left, right) of an image of `size`."""
    if side not in HALVES:
        raise UserError(f"unknown half '{side}': choose from {', '.join(HALVES)}")
    w, h = _wh(size)
    x, y, rw, rh = {"top": (0, 0, w, h // 2), "bottom": (0, h // 2, w, h - h // 2),
                    "left": (0, 0, w // 2, h), "right": (w // 2, 0, w - w // 2, h)}[side]
    return rect_mask(x, y, rw, rh, (w, h))


def describe_mask(mask: torch.Tensor) -> str:
    """A mask (1, H, W) in a few words for the PNG parameters: "rect X,Y,W,H" when it is one rectangle (a half is
    one), else its pixel count and the sha256 of its bits."""
    m = mask.reshape(mask.shape[-2:])
    rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
    y, x = int(rows[0]), int(cols[0])
    h, w = int(rows[-1]) - y + 1, int(cols[-1]) - x + 1
    if int(m.sum()) == h * w:
        return f"rect {x},{y},{w},{h}"
    digest = hashlib.sha256(np.packbits(m.cpu().numpy()).tobytes()).hexdigest()[:16]
    return f"{int(m.sum())} pixels, sha256 {digest}"


# ---------------------------------------------------------------- the sampling side


def strength_grid(grid_for: Callable[[int], torch.Tensor], steps: int, strength: float) -> torch.Tensor:
    """The last `steps` steps of the grid of a generation of about steps / strength steps: an edit at strength s
    starts at the level a fraction s of the way down that grid from its top (s = 1: from pure noise), and
    `steps` counts the steps actually run."""
    full = grid_for(max(steps, round(steps / strength)))
    return full[-(steps + 1):]


def known_region(denoise: Denoise, x0_known: torch.Tensor, keep: torch.Tensor, noise: NoiseFn) -> Denoise:
    """RePaint's known-region step for any sampler: the network sees the known pixels (`keep` True) noised afresh
    to the current level, x_known = x0 + sigma * eps, and its x0 estimate there is replaced by the known image, so
    every sampler's update keeps the known region on the forward process's marginals."""
    def d(x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        s = sigma if torch.is_tensor(sigma) else torch.tensor(float(sigma), device=x.device)
        s = s.reshape(-1, *([1] * (x.dim() - 1))) if s.dim() else s
        x = torch.where(keep, x0_known + s * noise(x), x)
        return torch.where(keep, x0_known, denoise(x, sigma, cond))

    return d


def resampled(sampler, jumps: int):
    """RePaint's resampling (Lugmayr et al. 2022, Algorithm 1 with jump length 1) around any sampler: after each
    step from sigma to sigma' > 0, noise x back to sigma (adding variance sigma^2 - sigma'^2) and take the step
    again, `jumps` times, so the generated region harmonises with the known one. Each step runs alone, so a
    multistep solver is first order here."""
    def sample(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, cond: dict | None = None, *,
               noise: NoiseFn | None = None) -> Iterator[SamplerStep]:
        for i in range(len(sigmas) - 1):
            grid = sigmas[i:i + 2]
            step = _one_step(sampler, denoiser, x, grid, cond, noise)
            for _ in range(jumps if float(grid[1]) > 0 else 0):
                x_back = step.x + (grid[0] ** 2 - grid[1] ** 2).sqrt() * noise(step.x)  # back to sigma
                step = _one_step(sampler, denoiser, x_back, grid, cond, noise)
            x = step.x
            yield SamplerStep(i, sigmas[i], x, step.x0)

    return sample


def _one_step(sampler, denoiser, x, grid, cond, noise) -> SamplerStep:
    *_, step = sampler(denoiser, x, grid, cond, noise=noise)
    return step


def paste_known(generated: torch.Tensor, source: EditSource, feather: int = 0) -> torch.Tensor:
    """The known pixels of the source put back into generated uint8 (n, C, H, W): exactly where the mask is False,
    and with `feather` > 0 blended into the generated side over about that many pixels of the masked region."""
    mask = source.mask.to(generated.device)
    if feather <= 0:
        return torch.where(mask, generated, source.images.to(generated.device))
    k = 2 * feather + 1
    w = F.avg_pool2d(mask.float(), k, stride=1, padding=feather, count_include_pad=False)
    w = torch.where(mask, (2 * w - 1).clamp(0, 1), 0.0)  # 0 at the edge, 1 once the box lies inside the mask
    out = w * generated.float() + (1 - w) * source.images.to(generated.device).float()
    return out.round().clamp(0, 255).to(torch.uint8)
