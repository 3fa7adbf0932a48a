"""Non-leaking augmentation (the `data` module's; Karras et al. 2020 "Training Generative Adversarial Networks with
Limited Data", used for diffusion in Karras et al. 2022 "Elucidating the Design Space of Diffusion-Based Generative
Models", Appendix F.2).

A small data set is memorised; augmenting it would teach the model to draw augmented images (rotated digits) —
the augmentation "leaks". EDM's remedy: transform each training image with probability p per transform and tell
the network what was done, as an augment label `(B, A)` (a flip flag, a shift, a log-scale, cos - 1 and sin of an
angle, ...) that is exactly zero when nothing was applied. The network learns p(x | transform); sampling passes no
label (zeros) and so draws the untransformed data. The augmented images only add to what the network learns about
shapes at every noise level.

Every transform is a function of a batch and its `Draws`; the label layout is registry.AUGMENTATIONS' order, so a
run's label means the same whatever order its config names the transforms in. Pixel moves (flips, integer shifts)
are exact; scale, rotation and stretch are composed into one affine warp per image (bilinear, mirrored at the
border — EDM also mirrors, and adds a wavelet up/down-sampling against aliasing that this omits); colour acts on
RGB only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from noisecraft.errors import UserError
from noisecraft.registry import AUGMENTATIONS

TRANSLATE_MAX = 0.125  # the largest shift, as a share of the side (EDM's translate_int_max)
SCALE_STD = 0.2  # log2 std of the isotropic zoom (EDM's scale_std)
ANISO_STD = 0.2  # log2 std of the anisotropic stretch (EDM's aniso_std)
BRIGHTNESS_STD, CONTRAST_STD, SATURATION_STD = 0.2, 0.5, 1.0  # EDM's colour settings (contrast, saturation: log2)
LUMA = torch.full((3,), 1 / math.sqrt(3))  # the grey axis of RGB: hue rotates about it, saturation scales off it


def augment_dim(names: tuple[str, ...] | list[str], channels: int) -> int:
    """Width A of the augment label of these transforms on `channels`-channel images; refuses colour on grey."""
    for name in names:
        entry = AUGMENTATIONS.get(name, "each of data.augment")
        if entry.rgb_only and channels != 3:
            raise UserError(f"data.augment={name} transforms RGB colours; these images have {channels} channel"
                            f"{'s' if channels != 1 else ''} (grey): drop {name}")
    return sum(AUGMENTATIONS.get(n).dims for n in names)


class Draws:
    """Random numbers for one step's global batch, drawn from a generator and sliced to this rank's rows, so N
    processes draw what one process with the same global batch draws."""

    def __init__(self, generator: torch.Generator, global_batch: int, rows: slice, device: torch.device):
        self.g, self.n, self.rows, self.device = generator, global_batch, rows, device

    def rand(self, *shape: int) -> torch.Tensor:  # U(0, 1), (B, *shape)
        return torch.rand((self.n, *shape), generator=self.g, device=self.device)[self.rows]

    def randn(self, *shape: int) -> torch.Tensor:  # N(0, 1), (B, *shape)
        return torch.randn((self.n, *shape), generator=self.g, device=self.device)[self.rows]

    def gate(self, p: float) -> torch.Tensor:  # (B,) bool: the transform is applied
        return self.rand() < p


def augment(x: torch.Tensor, names: tuple[str, ...], p: float, draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
    """Transform a batch x (B, C, H, W) in [-1, 1]; returns the images and the augment labels (B, A), zero in the
    rows of a transform not applied to an image. Every transform draws its numbers whether applied or not, so the
    draws of one transform do not depend on the others' probabilities."""
    chosen = [AUGMENTATIONS.get(n) for n in AUGMENTATIONS if n in names]  # registry order: a fixed label layout
    augment_dim(names, x.shape[1])
    labels, warp, warped = [], torch.eye(2, device=x.device).repeat(x.shape[0], 1, 1), None
    for entry in chosen:
        fn = entry.load()
        if entry.stage == "affine":  # composed into one warp, applied below
            m, lab, on = fn(draws, p)
            warp, warped = warp @ m, on if warped is None else warped | on
        elif entry.stage == "pixels" or warped is None:
            x, lab = fn(x, draws, p)
        else:  # colour after the geometry
            x, warped = _warp(x, warp, warped), None
            x, lab = fn(x, draws, p)
        labels.append(lab)
    if warped is not None:
        x = _warp(x, warp, warped)
    return x, torch.cat(labels, 1) if labels else x.new_zeros(x.shape[0], 0)


def _warp(x: torch.Tensor, inverse: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """Resample each image at inverse (B, 2, 2) @ (output coordinates about the centre); the images with `on`
    False are kept bit for bit."""
    theta = torch.cat([inverse, inverse.new_zeros(inverse.shape[0], 2, 1)], 2).to(x.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return torch.where(on[:, None, None, None], out, x)


# ---------------------------------------------------------------- pixel moves


def _flip(x: torch.Tensor, draws: Draws, p: float, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    on = draws.gate(p)
    return torch.where(on[:, None, None, None], x.flip(dim), x), on.float()[:, None]


def xflip(x: torch.Tensor, draws: Draws, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right with probability p; label (B, 1): 1 where flipped."""
    return _flip(x, draws, p, -1)


def yflip(x: torch.Tensor, draws: Draws, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror top-bottom with probability p; label (B, 1): 1 where flipped."""
    return _flip(x, draws, p, -2)


def mirror_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Index i folded into 0..n-1 by mirroring at the borders (..., 2, 1, 0, 1, 2, ..., n-2, n-1, n-2, ...)."""
    period = 2 * n - 2
    return n - 1 - (n - 1 - i % period).abs()


def translate(x: torch.Tensor, draws: Draws, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift by whole pixels (dx, dy), each uniform in [-m, m] with m = TRANSLATE_MAX of the side, probability p;
    what moves in from outside is the image mirrored at its border. Label (B, 2): (dx, dy) / m."""
    b, c, h, w = x.shape
    m = max(1, round(TRANSLATE_MAX * max(h, w)))
    shift = (draws.rand(2) * (2 * m + 1)).floor().clamp(max=2 * m) - m  # (B, 2) integers in [-m, m]
    shift = shift * draws.gate(p)[:, None]
    dx, dy = shift[:, 0].long(), shift[:, 1].long()
    cols = mirror_index(torch.arange(w, device=x.device)[None] - dx[:, None], w)  # (B, W): source column
    rows = mirror_index(torch.arange(h, device=x.device)[None] - dy[:, None], h)  # (B, H): source row
    x = x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return x, shift / m


# ---------------------------------------------------------------- the affine warp: each gives (inverse, label, on)


def _rotation(angle: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, 2, 2)
    c, s = angle.cos(), angle.sin()
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def scale(draws: Draws, p: float):
    """Zoom by s = 2^(SCALE_STD w), w ~ N(0, 1), probability p; label (B, 1): w."""
    w, on = draws.randn(), draws.gate(p)
    w = w * on
    s = torch.exp2(SCALE_STD * w)
    return torch.diag_embed(torch.stack([1 / s, 1 / s], -1)), w[:, None], on


def rotate(draws: Draws, p: float):
    """Rotate by an angle a uniform in (-pi, pi), probability p; label (B, 2): (cos a - 1, sin a)."""
    a, on = (draws.rand() * 2 - 1) * math.pi, draws.gate(p)
    a = a * on
    return _rotation(-a), torch.stack([a.cos() - 1, a.sin()], 1), on


def aniso(draws: Draws, p: float):
    """Stretch by 2^(ANISO_STD w) along the axis at angle r and by its inverse across it (area kept), w ~ N(0, 1),
    r uniform in (-pi, pi), probability p; label (B, 2): (w cos r, w sin r)."""
    w, r, on = draws.randn(), (draws.rand() * 2 - 1) * math.pi, draws.gate(p)
    w = w * on
    s = torch.exp2(ANISO_STD * w)
    stretch_inv = torch.diag_embed(torch.stack([1 / s, s], -1))
    return _rotation(r) @ stretch_inv @ _rotation(-r), torch.stack([w * r.cos(), w * r.sin()], 1), on


# ---------------------------------------------------------------- colour (RGB)


def color(x: torch.Tensor, draws: Draws, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness (add BRIGHTNESS_STD w), contrast (times 2^(CONTRAST_STD w)), hue (rotate about the grey axis by
    a uniform in (-pi, pi)) and saturation (the part off the grey axis times 2^(SATURATION_STD w)), each with
    probability p, all about mid-grey 0; label (B, 5): (w_b, w_c, cos a - 1, sin a, w_s)."""
    b_, c_ = draws.randn() * draws.gate(p), draws.randn() * draws.gate(p)
    a = (draws.rand() * 2 - 1) * math.pi * draws.gate(p)
    s_ = draws.randn() * draws.gate(p)
    u = LUMA.to(x.device)
    grey = torch.outer(u, u)  # projection onto the grey axis
    cross = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]], device=x.device)
    eye = torch.eye(3, device=x.device)
    cos, sin = a.cos()[:, None, None], a.sin()[:, None, None]
    hue = cos * eye + sin * cross + (1 - cos) * grey  # Rodrigues' rotation about u, (B, 3, 3)
    sat = grey + (eye - grey) * torch.exp2(SATURATION_STD * s_)[:, None, None]
    m = torch.exp2(CONTRAST_STD * c_)[:, None, None] * (sat @ hue)  # (B, 3, 3)
    bsz, ch, h, w = x.shape
    out = m @ x.reshape(bsz, ch, h * w) + (BRIGHTNESS_STD * b_)[:, None, None]
    return out.reshape(bsz, ch, h, w), torch.stack([b_, c_, a.cos() - 1, a.sin(), s_], 1)
