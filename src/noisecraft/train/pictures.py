"""The pictures a diffusion task draws of its model: sample grids (one row per class or preview prompt, fixed seeds
so rows compare over time) and, at the end, `noisecraft explain`'s forward and reverse figures and, for text
models, the cross-attention figure."""
from __future__ import annotations

from pathlib import Path

import torch

from noisecraft.conditioning import take


def sample_grid(pipe, rows: torch.Tensor | list[str] | None, path: Path, per_class: int = 8,
                steps: int | None = None) -> None:
    """`per_class` samples of each row (or 8 x 8 unconditional samples) at seed 0."""
    from noisecraft.viz import save_grid

    n = per_class * len(rows) if rows is not None else 64
    labels = take(rows, [i // per_class for i in range(n)])
    images = pipe.generate(n=n, labels=labels, steps=steps, seed=0)
    save_grid(images, path, nrow=per_class if rows is not None else 8)


def process_figures(figure, pipe, run, prompts: list[str]) -> None:
    """forward_process.png and reverse_process.png: `noisecraft explain`'s forward and reverse figures of this
    model (4 images, 8 columns, DDIM 50; x_t in the VP view sqrt(alpha_bar) x that the network sees)."""
    for name in ("forward", "reverse"):
        figure(pipe, name, run.figure(f"{name}_process"), n=4, columns=8, steps=50, prompts=prompts)
