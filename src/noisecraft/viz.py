"""Pictures a user learns from: sample grids, loss curves, the forward and the reverse process."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def to_pil(img: torch.Tensor):
    """uint8 (C, H, W) -> PIL image."""
    from PIL import Image

    arr = img.permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, padding: int = 2) -> None:
    """uint8 (N, C, H, W) -> one PNG, `nrow` images per row."""
    from torchvision.utils import make_grid

    nrow = nrow or max(1, int(len(images) ** 0.5))
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=255)
    to_pil(grid).save(path)


def plot_loss_curves(log_path: str | Path, out_path: str | Path) -> None:
    """Train loss (smoothed) and validation loss against step, from the JSONL log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = [], []
    for line in Path(log_path).read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            train.append((rec["step"], rec["loss"]))
        if "val_loss" in rec:
            val.append((rec["step"], rec["val_loss"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train", alpha=0.8)
    if val:
        ax.plot(*zip(*val), "o-", label="validation (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_process(rows: list[list[torch.Tensor]], labels: list[str], title: str, out_path: str | Path) -> None:
    """A figure of image rows (each a list of uint8 (C, H, W)) with one column label per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), len(labels)
    fig, axes = plt.subplots(nr, nc, figsize=(1.3 * nc, 1.3 * nr + 0.5), squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            arr = img.permute(1, 2, 0).numpy()
            ax.imshow(arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(labels[c], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
