"""What a person sees first in colour samples, measured on the pixels: a clean background, and the shape asked for.

* `frame_offwhite_share`: the share of pixels in a thin frame round each image that are off the background colour.
  Real emoji on white leave that frame almost untouched; samples with a faint coloured checker or blotches do not.
* `ShapeJudge`: an image's foreground (every pixel off the background) compared by IoU with the outlines of real
  images of each shape (the mean mask of, say, every "{colour} heart" emoji); an image is drawn in the shape whose
  outline it overlaps most, when that overlap reaches `min_iou`.

Both take RGB uint8 (N, 3, H, W), as samples are saved, and know nothing about diffusion.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

WHITE = (255, 255, 255)


def offwhite(images: torch.Tensor, background=WHITE, tol: int = 8) -> torch.Tensor:
    """(N, H, W) bool: pixels whose largest channel difference from `background` exceeds `tol` levels."""
    bg = torch.tensor(background, dtype=torch.int16).view(1, 3, 1, 1)
    return (images.to(torch.int16) - bg).abs().amax(1) > tol


def frame_offwhite_share(images: torch.Tensor, width: int = 3, background=WHITE, tol: int = 8) -> float:
    """Share of the pixels within `width` of the border, over all images, more than `tol` levels off background."""
    off = offwhite(images, background, tol)  # (N, H, W)
    frame = torch.ones_like(off[0])
    frame[width:-width, width:-width] = False
    return off[:, frame].float().mean().item()


def foreground(images: torch.Tensor, background=WHITE, tol: int = 32) -> torch.Tensor:
    """(N, H, W) bool: what is drawn. The tolerance is wider than the frame's, so a faint tint is not a shape."""
    return offwhite(images, background, tol)


def iou(masks: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """(N,) intersection over union of bool masks (N, H, W) with one bool template (H, W)."""
    inter = (masks & template).flatten(1).sum(1).float()
    union = (masks | template).flatten(1).sum(1).float().clamp(min=1)
    return inter / union


@dataclass
class ShapeJudge:
    """Names the shape an image is drawn in, by the real outline its foreground overlaps most."""

    names: tuple[str, ...]  # the shapes, e.g. ("heart", "circle", "square")
    templates: torch.Tensor  # (S, H, W) bool: each shape's outline
    min_iou: float = 0.7  # below this overlap with every outline, an image is drawn in no shape

    @classmethod
    def from_examples(cls, examples: dict[str, torch.Tensor], min_iou: float = 0.7) -> "ShapeJudge":
        """Outlines from real images of each shape (RGB uint8 (n, 3, H, W) each): pixels drawn in most of them."""
        templates = torch.stack([foreground(x).float().mean(0) >= 0.5 for x in examples.values()])
        return cls(tuple(examples), templates, min_iou)

    def overlaps(self, images: torch.Tensor) -> torch.Tensor:
        """(N, S) IoU of each image's foreground with each shape's outline."""
        masks = foreground(images)
        return torch.stack([iou(masks, t) for t in self.templates], 1)

    def judge(self, images: torch.Tensor) -> list[str | None]:
        """The shape each image is drawn in, or None when it overlaps no outline by `min_iou`."""
        best, which = self.overlaps(images).max(1)
        return [self.names[i] if b >= self.min_iou else None for b, i in zip(best.tolist(), which.tolist())]
