"""The cross-attention figure of a text-to-image model: for one prompt, which image regions attend to which words,
at a few noise levels (the kind of map Hertz et al. 2022, "Prompt-to-Prompt Image Editing with Cross Attention
Control", edit with). Written at the end of training as cross_attention.png and by `noisecraft explain`; also a
function:

    from noisecraft import load_pipeline
    from noisecraft.explain.cross_attention import draw_cross_attention
    draw_cross_attention(load_pipeline("runs/digits-text"), "a bold seven leaning right", "attention.png")

In a latent run the network attends over its feature maps of the latents: its maps are upsampled to the decoded
image they are drawn over, and the network's noisy input is shown decoded.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from noisecraft.conditioning.prompt_syntax import final_words, literal
from noisecraft.data import to_model_range
from noisecraft.models.dit import TokenCrossAttention
from noisecraft.models.unet import CrossAttention

SIGMAS = (8.0, 2.0, 0.5)  # high, middle and low noise: layout is decided early, strokes late


@torch.no_grad()
def cross_attention_maps(pipe, prompt: str, sigmas: tuple[float, ...] = SIGMAS, seed: int = 0) -> dict:
    """Cross-attention of a prompt's tokens over the image at each noise level.

    The prompt's image is drawn (the run's sampling defaults, seed `seed`), encoded into the sampler's space (the
    identity in pixel space), noised to each sigma with fixed noise and denoised once with every cross-attention
    block recording; each block's map is upsampled to the image size, and blocks and heads are averaged. Returns
    {"tokens": the T tokens the model reads, "maps": (S, T, H, W) float (each pixel's attention over the tokens),
    "image": uint8 (C, H, W), "noisy": uint8 (S, C, H, W) the network's input in the VP view x / sqrt(1 + sigma^2),
    decoded}."""
    image = pipe.generate(n=1, prompt=prompt, seed=seed)  # (1, C, H, W) uint8
    x0 = pipe.encode(to_model_range(image.to(pipe.device)))  # (1, c, h, w): pixels, or latents
    cond = pipe.condition([prompt])
    n = int(cond["context_mask"].sum())
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(pipe.device)
    blocks = [m for m in pipe.denoiser.modules() if isinstance(m, (CrossAttention, TokenCrossAttention))]
    maps, noisy = [], []
    for sigma in sigmas:
        x = x0 + sigma * eps
        for b in blocks:
            b.maps = []
        try:
            pipe.denoiser(x, sigma, cond)
            recorded = [m for b in blocks for m in b.maps]
        finally:
            for b in blocks:
                b.maps = None
        per_block = [F.interpolate(p[:1, :, :n].transpose(1, 2).reshape(1, n, h, w), size=image.shape[-2:],
                                   mode="bilinear", align_corners=False) for p, (h, w) in recorded]
        maps.append(torch.cat(per_block).mean(0).cpu())  # (T, H, W)
        noisy.append(pipe.decode(x[:1] / math.sqrt(1 + sigma**2))[0])
    return {"tokens": pipe.text.tokens(final_words(prompt))[:n], "maps": torch.stack(maps), "image": image[0],
            "noisy": torch.stack(noisy), "sigmas": list(sigmas)}


def _shown(image: torch.Tensor):
    """A uint8 (C, H, W) image as imshow takes it: RGB as (H, W, 3), drawn in colour; grey as (H, W), drawn with
    the grey colour map."""
    return image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image.float().mean(0).numpy()


def draw_cross_attention(pipe, prompt: str, path: str | Path, sigmas: tuple[float, ...] = SIGMAS,
                         seed: int = 0) -> Path:
    """Draw `cross_attention_maps` as a PNG: one row per noise level, the network's input, then one map per word
    (the start and end tokens left out), over the final image; colour runs in colour, so that a colour word's map
    can be read against the colour it names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = cross_attention_maps(pipe, prompt, sigmas, seed)
    words = list(range(1, len(r["tokens"]) - 1)) or list(range(len(r["tokens"])))
    image = _shown(r["image"])
    fig, axes = plt.subplots(len(sigmas), len(words) + 1, figsize=(1.2 * (len(words) + 1), 1.3 * len(sigmas) + 0.6),
                             squeeze=False)
    for row, sigma in enumerate(r["sigmas"]):
        axes[row][0].imshow(_shown(r["noisy"][row]), cmap="gray", vmin=0, vmax=255)
        axes[row][0].set_ylabel(f"σ={sigma:g}", fontsize=8)
        for col, t in enumerate(words, 1):
            axes[row][col].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[row][col].imshow(r["maps"][row, t].numpy(), cmap="inferno", alpha=0.65, vmin=0,
                                  vmax=float(r["maps"][row, words].max()))
            if row == 0:
                axes[row][col].set_title(r["tokens"][t], fontsize=8)
    axes[0][0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"cross-attention to each word: “{prompt}”", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def cross_attention_figure(ctx, path: Path) -> dict:
    """`explain`'s figure: the first prompt given, else the longest of the first captions (on digits one that
    names thickness, slant and size)."""
    caption = literal(max(ctx.data.captions.texts[:200], key=len))  # read as written, brackets and all
    prompt = ctx.options.prompts[0] if ctx.options.prompts else caption
    draw_cross_attention(ctx.pipe, prompt, path, seed=ctx.options.seed)
    return {"prompt": prompt}
