"""uint8 image tensors as PNG bytes: a job's images (with their `parameters`) and its live preview strip."""
from __future__ import annotations

import base64
import io

import torch

from noisecraft.imageinfo import png_info
from noisecraft.viz import to_pil


def png_bytes(img: torch.Tensor, settings: dict | None = None) -> bytes:
    """uint8 (C, H, W) -> PNG, with the `parameters` text chunk when `settings` are given."""
    buf = io.BytesIO()
    to_pil(img).save(buf, format="PNG", pnginfo=png_info(settings) if settings else None)
    return buf.getvalue()


def strip_png(images: torch.Tensor, gap: int = 1) -> bytes:
    """uint8 (N, C, H, W) side by side (a `gap`-pixel white line between) as one PNG: a job's preview frame."""
    n, c, h, w = images.shape
    strip = torch.full((c, h, n * w + (n - 1) * gap), 255, dtype=torch.uint8)
    for i in range(n):
        strip[:, :, i * (w + gap):i * (w + gap) + w] = images[i]
    return png_bytes(strip)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
