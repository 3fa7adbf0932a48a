"""The U-Net diagram of `noisecraft explain`: levels, resolutions, channels, where attention sits and parameters
per level, read from the network the run's config builds (so the picture is the model, not a drawing of it)."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from noisecraft.models import build_model, count_parameters
from noisecraft.models.unet import Attention, CrossAttention, Downsample, Upsample


def _kinds(blocks: nn.ModuleList) -> list[str]:
    return [k for k, t in (("self-attn", Attention), ("cross-attn", CrossAttention)) if any(isinstance(b, t)
                                                                                          for b in blocks)]


def _walk(stages: nn.ModuleList, levels: list[int], boundary: type) -> list[dict]:
    """Group a U-Net half's stages into levels (in the order `levels` lists them): each level's residual stages,
    the attention they carry and their parameters; a `boundary` stage (Down/Upsample) closes a level."""
    out, i = [], 0
    for level in levels:
        d = {"level": level, "res_blocks": 0, "attention": [], "params": 0}
        while i < len(stages) and not isinstance(stages[i][0], boundary):
            d["res_blocks"] += 1
            d["attention"] = sorted(set(d["attention"]) | set(_kinds(stages[i])))
            d["params"] += count_parameters(stages[i])
            i += 1
        if i < len(stages):  # the resampling stage belongs to the level it leaves
            d["params"] += count_parameters(stages[i])
            i += 1
        out.append(d)
    return out


def unet_structure(model_cfg) -> dict:
    """Per level: resolution, channels, residual blocks, attention and parameters of the encoder and decoder
    halves; the middle block; and the stem (embeddings, input and output convolutions)."""
    net = build_model(model_cfg)
    u = model_cfg.unet
    n = len(u.channel_mult)
    down = _walk(net.down, list(range(n)), Downsample)
    up = {d["level"]: d for d in _walk(net.up, list(reversed(range(n))), Upsample)}
    p = model_cfg.patch_size
    levels, res = [], model_cfg.image_size // p  # p x p pixel patches are folded into channels before level 0
    for i, mult in enumerate(u.channel_mult):
        levels.append({"level": i, "resolution": res, "channels": u.base_channels * mult,
                       "encoder": down[i], "decoder": up[i]})
        res = (res + 1) // 2
    mid = {"resolution": levels[-1]["resolution"], "channels": levels[-1]["channels"],
           "attention": _kinds(net.mid), "params": count_parameters(net.mid)}
    total = count_parameters(net)
    inner = sum(lv["encoder"]["params"] + lv["decoder"]["params"] for lv in levels) + mid["params"]
    return {"levels": levels, "mid": mid, "stem_params": total - inner, "total_params": total,
            "class_embedding": model_cfg.num_classes > 0, "text": bool(model_cfg.context_dim),
            "in_channels": model_cfg.in_channels, "patch_size": p, "image_size": model_cfg.image_size}


def _fmt(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _box(ax, x: float, y: float, text: str, color: str) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - 1.5, y - 0.38), 3.0, 0.76, boxstyle="round,pad=0.02", fc=color, ec="0.3"))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5)


def _half_text(lv: dict, half: str) -> str:
    h = lv[half]
    attn = (" + " + " + ".join(h["attention"])) if h["attention"] else ""
    return (f"{lv['resolution']}×{lv['resolution']} · {lv['channels']} ch\n{h['res_blocks']} res block"
            f"{'s' if h['res_blocks'] > 1 else ''}{attn}\n{_fmt(h['params'])} params")


def unet_figure(ctx, path: Path) -> dict:
    """Encoder levels down the left, decoder levels up the right, skip connections across, the middle block at
    the bottom; each box: resolution, channels, residual blocks, attention, parameters."""
    from noisecraft.explain.process import pyplot

    plt = pyplot()
    s = unet_structure(ctx.pipe.config.model)
    n = len(s["levels"])
    fig, ax = plt.subplots(figsize=(9, 1.25 * n + 2.4))
    for lv in s["levels"]:
        y = -lv["level"] * 1.3
        _box(ax, 0, y, _half_text(lv, "encoder"), "#dbe9f6")
        _box(ax, 7, y, _half_text(lv, "decoder"), "#fde4cf")
        ax.annotate("", xy=(5.45, y), xytext=(1.55, y), arrowprops=dict(arrowstyle="->", color="0.4", ls="--"))
        ax.text(3.5, y + 0.1, "skip (concat)", ha="center", fontsize=7, color="0.35")
    bottom = -(n - 1) * 1.3 - 1.5
    m = s["mid"]
    _box(ax, 3.5, bottom, f"middle {m['resolution']}×{m['resolution']} · {m['channels']} ch\n2 res blocks + "
         f"{' + '.join(m['attention'])}\n{_fmt(m['params'])} params", "#e5f5e0")
    ax.annotate("", xy=(2.0, bottom), xytext=(0, -(n - 1) * 1.3 - 0.4), arrowprops=dict(arrowstyle="->"))
    ax.annotate("", xy=(7, -(n - 1) * 1.3 - 0.4), xytext=(5.0, bottom), arrowprops=dict(arrowstyle="->"))
    for x, word in ((0, "downsample ↓"), (7, "upsample ↑")):
        for i in range(n - 1):
            ax.text(x + 1.6, -i * 1.3 - 0.65, word, fontsize=6.5, color="0.35")
    cond = "noise level (sinusoidal → MLP)" + (" + class" if s["class_embedding"] else "") + \
        (" + pooled prompt; tokens → cross-attn" if s["text"] else "")
    p = s["patch_size"]
    fold = f" → {p}×{p} patches as {s['in_channels'] * p * p} channels" if p > 1 else ""
    ax.text(3.5, 1.0, f"in: {s['in_channels']}-channel {s['image_size']}×{s['image_size']} x_t{fold} → conv · "
            f"embedding: {cond} → every res block\n"
            f"stem (embeddings, in/out convs) {_fmt(s['stem_params'])} · total {_fmt(s['total_params'])} parameters",
            ha="center", fontsize=8)
    ax.set_xlim(-1.8, 8.8)
    ax.set_ylim(bottom - 0.7, 1.5)
    ax.axis("off")
    fig.suptitle("U-Net of this run (encoder left, decoder right)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"total_params": s["total_params"], "levels": [
        {k: lv[k] for k in ("level", "resolution", "channels")} | {
            "params": lv["encoder"]["params"] + lv["decoder"]["params"],
            "attention": sorted(set(lv["encoder"]["attention"]) | set(lv["decoder"]["attention"]))}
        for lv in s["levels"]], "mid_params": m["params"], "stem_params": s["stem_params"]}
