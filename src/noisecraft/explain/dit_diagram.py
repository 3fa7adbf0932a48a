"""The diffusion transformer's diagram for `noisecraft explain`: patches, tokens, width, heads, blocks and their
parts, and parameters per part, read from the network the run's config builds (the picture is the model)."""
from __future__ import annotations

from pathlib import Path

from noisecraft.explain.unet_diagram import _box, _fmt
from noisecraft.models import build_model, count_parameters


def dit_structure(model_cfg) -> dict:
    """Token grid, width, heads, the blocks (each with its parameters and whether it cross-attends) and the
    parameters of the stem (conv, patchify, positions), the conditioning embeddings and the head."""
    net = build_model(model_cfg)
    blocks = [{"params": count_parameters(b), "cross_attention": b.cross is not None} for b in net.blocks]
    stem = sum(count_parameters(m) for m in (net.stem, net.patchify)) + (net.pos.numel() if net.pos.requires_grad
                                                                         else 0)
    embed = sum(count_parameters(m) for m in (net.time_mlp, net.class_emb, net.text_emb, net.context_norm)
                if m is not None)
    head = sum(count_parameters(m) for m in (net.ada_out, net.out, net.head))
    long_skips = count_parameters(net.skips) if net.skips is not None else 0
    return {"image_size": model_cfg.image_size, "in_channels": model_cfg.in_channels, "patch_size": net.cfg.patch_size,
            "grid": net.grid, "tokens": net.grid ** 2, "width": model_cfg.dit.width,
            "heads": net.blocks[0].attn.heads, "mlp_ratio": model_cfg.dit.mlp_ratio, "conv_stem": model_cfg.conv_stem,
            "pos_embed": model_cfg.dit.pos_embed, "blocks": blocks, "stem_params": stem, "embedding_params": embed,
            "head_params": head, "long_skip_params": long_skips, "total_params": count_parameters(net),
            "class_embedding": model_cfg.num_classes > 0, "text": bool(model_cfg.context_dim)}


def dit_figure(ctx, path: Path) -> dict:
    """Tokens flow top to bottom: stem and patches, the blocks, the head back to pixels; the conditioning vector
    on the side, feeding every block's adaLN."""
    from noisecraft.explain.process import pyplot

    plt = pyplot()
    s = dit_structure(ctx.pipe.config.model)
    p, g, n = s["patch_size"], s["grid"], len(s["blocks"])
    conv = f"3×3 conv → {s['conv_stem']} ch → " if s["conv_stem"] else ""
    rows = [(f"in: {s['in_channels']}-channel {s['image_size']}×{s['image_size']} x_t → {conv}{p}×{p} patches\n"
             f"{s['tokens']} tokens ({g}×{g}) of width {s['width']} + {s['pos_embed']} positions\n"
             f"{_fmt(s['stem_params'])} params", "#dbe9f6")]
    block = s["blocks"][0]
    cross = " → cross-attn (prompt tokens)" if block["cross_attention"] else ""
    skips = f", + {_fmt(s['long_skip_params'])} in long skips (U-ViT)" if s["long_skip_params"] else ""
    rows.append((f"{n} × DiT block: adaLN → self-attn ({s['heads']} heads){cross} → adaLN → MLP "
                 f"(×{s['mlp_ratio']:g})\ngates start at zero (adaLN-zero): each block starts as the identity\n"
                 f"{_fmt(block['params'])} params a block, {_fmt(sum(b['params'] for b in s['blocks']))} in all"
                 f"{skips}",
                 "#fde4cf"))
    rows.append((f"adaLN → linear → {p}×{p} patches → {s['image_size']}×{s['image_size']}"
                 f"{' → 3×3 conv' if s['conv_stem'] else ''}\n{_fmt(s['head_params'])} params", "#e5f5e0"))
    fig, ax = plt.subplots(figsize=(9, 4.6))
    for i, (text, color) in enumerate(rows):
        _box(ax, 0, -1.4 * i, text, color)
        if i:
            ax.annotate("", xy=(0, -1.4 * i + 0.45), xytext=(0, -1.4 * (i - 1) - 0.45),
                        arrowprops=dict(arrowstyle="->"))
    cond = "noise level (sinusoidal → MLP)" + (" + class" if s["class_embedding"] else "") + \
        (" + pooled prompt" if s["text"] else "")
    ax.text(3.4, -1.4, f"c = {cond}\n{_fmt(s['embedding_params'])} params\n→ every block's and the head's adaLN",
            ha="center", va="center", fontsize=7.5, bbox=dict(boxstyle="round", fc="#f2f0f7", ec="0.3"))
    ax.annotate("", xy=(1.55, -1.4), xytext=(2.1, -1.4), arrowprops=dict(arrowstyle="->", color="0.4", ls="--"))
    ax.text(0, 0.9, f"total {_fmt(s['total_params'])} parameters", ha="center", fontsize=8)
    ax.set_xlim(-2.2, 5.0)
    ax.set_ylim(-1.4 * len(rows) + 0.6, 1.2)
    ax.axis("off")
    fig.suptitle("Diffusion transformer of this run (tokens flow down)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {k: s[k] for k in ("total_params", "tokens", "width", "heads", "patch_size")} | {"depth": n}
