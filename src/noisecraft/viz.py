"""Pictures a user learns from: sample grids, loss curves, the forward and the reverse process."""
from __future__ import annotations

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


def save_images(images: torch.Tensor, out_dir: str | Path, nrow: int | None = None,
                settings: list[dict] | None = None) -> Path:
    """One PNG per image plus grid.png; returns the output directory. `settings` (one dict per image, see
    `noisecraft.imageinfo.image_settings`) go into each PNG's `parameters` text chunk."""
    from noisecraft.errors import UserError
    from noisecraft.imageinfo import png_info

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {out}: {e.strerror}") from None
    for i, img in enumerate(images):
        to_pil(img).save(out / f"{i:05d}.png", pnginfo=png_info(settings[i]) if settings else None)
    save_grid(images, out / "grid.png", nrow=nrow)
    return out


def save_before_after(source: torch.Tensor, mask: torch.Tensor | None, images: torch.Tensor, path: str | Path,
                      max_row: int = 10) -> None:
    """An edit at a glance: the source (C, H, W), the source with the regenerated region greyed out when there is
    a mask (1, H, W), then the edited images (N, C, H, W), in rows of at most `max_row`."""
    tiles = [source]
    if mask is not None:
        tiles.append(torch.where(mask, torch.full_like(source, 128), source))
    grid = torch.cat([torch.stack(tiles), images])
    save_grid(grid, path, nrow=min(len(grid), max_row))


NOT_LOSSES = ("kind", "step", "lr", "img_per_s", "time", "nonfinite_steps")  # fields of train records


def plot_loss_curves(train: list[dict], val: list[dict], out_path: str | Path) -> None:
    """Every loss of the train records and the validation loss against step (log.jsonl records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(k for r in train for k in r if k not in NOT_LOSSES))
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = [(f"train {n}" if len(names) > 1 else "train", [(r["step"], r[n]) for r in train if n in r])
              for n in names] + [("validation (EMA)", [(r["step"], r["val_loss"]) for r in val])]
    for label, points in curves:
        if points:
            ax.plot(*zip(*points), "o-" if label.startswith("validation") else "-", label=label, alpha=0.8)
    if all(v > 0 for _, points in curves for _, v in points):  # an adversarial loss may be <= 0
        ax.set_yscale("log")
    _save_loss_axes(fig, ax, out_path)


def _save_loss_axes(fig, ax, out_path: str | Path) -> None:
    """Label a loss-against-step plot, save it and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_process(rows: list[list[torch.Tensor]], labels: list[str], title: str, out_path: str | Path,
                 row_labels: list[str] | None = None) -> None:
    """A figure of image rows (each a list of uint8 (C, H, W)) with one column label per step (and optionally
    one label per row)."""
    plot_panels([(rows, labels, row_labels, None)], title, out_path)


def plot_panels(panels: list[tuple], title: str, out_path: str | Path) -> None:
    """Several `plot_process` grids stacked in one figure, each (rows, column labels, row labels or None, its
    own title or None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nc = max(len(labels) for _, labels, _, _ in panels)
    heights = [len(rows) + (0.35 if sub else 0) for rows, _, _, sub in panels]
    fig = plt.figure(figsize=(1.3 * nc, 1.3 * sum(heights) + 0.5), layout="constrained")
    subfigs = fig.subfigures(len(panels), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, (rows, labels, row_labels, subtitle) in zip(subfigs, panels, strict=True):
        axes = sub.subplots(len(rows), nc, squeeze=False)
        for r in range(len(rows)):
            for c in range(nc):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(rows[r]):
                    ax.axis("off")
                    continue
                arr = rows[r][c].permute(1, 2, 0).numpy()
                ax.imshow(arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=255)
                if r == 0 and c < len(labels):
                    ax.set_title(labels[c], fontsize=8)
                if c == 0 and row_labels:
                    ax.set_ylabel(row_labels[r], fontsize=8)
        if subtitle:
            sub.suptitle(subtitle, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_gan_losses(train: list[dict], out_path: str | Path) -> None:
    """The discriminator's hinge loss and the generator's adversarial loss (and its reconstruction L1) against
    step, from an autoencoder run's train records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label in (("disc", "discriminator (hinge)"), ("g_adv", "generator (adversarial)"), ("l1", "L1")):
        points = [(r["step"], r[name]) for r in train if name in r]
        if points:
            ax.plot(*zip(*points), "-", label=label, alpha=0.8)
    _save_loss_axes(fig, ax, out_path)
