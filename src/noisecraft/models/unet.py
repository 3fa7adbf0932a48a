"""U-Net noise-level-conditioned network (Ho et al. 2020, with the improvements of Nichol & Dhariwal 2021).

Read top to bottom: embeddings, the residual block, attention, then the U-Net that stacks them.
The network knows nothing about schedules: it maps (x, noise_label, class_labels, context) to an output the
size of x, and `diffusion.Denoiser` decides what that output means (noise, x0, v or EDM's F).

Conditioning enters in two ways, so later text conditioning needs no rewrite:
  * a global embedding (noise level + class, with an extra "null class" index for classifier-free guidance)
    that scales and shifts every residual block's normalised activations;
  * optional token context `(B, L, context_dim)` read by cross-attention in every attention block.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisecraft.config import ModelConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of a float label per sample (Vaswani et al. 2017). t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def group_norm(channels: int) -> nn.GroupNorm:
    # Up to 32 groups of at least 4 channels; the count must divide the channel count.
    groups = max(g for g in range(1, 33) if channels % g == 0 and channels // g >= 4 or g == 1)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, + embedding, dropout -> conv, plus skip.

    The embedding either scales and shifts the second norm's output (Nichol & Dhariwal 2021) or, as in
    Ho et al. 2020, is added as a per-channel bias (`scale_shift=False`, fewer parameters).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, scale_shift: bool = True):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, (2 if scale_shift else 1) * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        e = self.emb(emb)[:, :, None, None]  # (B, out or 2*out, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, (B, heads, L, d) -> (B, heads, L, d). On CPUs it runs in fp32 even under
    bf16 autocast: PyTorch's bf16 flash-attention backward on CPU took 8x the fp32 time at 49 tokens (10% of a
    digits training step), while attention is a small share of the FLOPs."""
    if q.device.type == "cpu" and (q.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):  # autocast would cast the inputs back to bf16
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention over pixels, then (if context_dim) cross-attention to context tokens."""

    def __init__(self, channels: int, head_channels: int, context_dim: int | None = None):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        if context_dim is not None:
            self.cross_norm = nn.LayerNorm(channels)
            self.cross_q = nn.Linear(channels, channels)
            self.cross_kv = nn.Linear(context_dim, 2 * channels)
            self.cross_proj = nn.Linear(channels, channels)
            nn.init.zeros_(self.cross_proj.weight)
            nn.init.zeros_(self.cross_proj.bias)
        self.has_cross = context_dim is not None

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, C/heads)
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:  # (B, heads, L, d) -> (B, L, heads*d)
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hh, ww = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out = attention(self._split(q), self._split(k), self._split(v))
        h = x.flatten(2).transpose(1, 2) + self.proj(self._merge(out))  # (B, HW, C)
        if self.has_cross and context is not None:
            q = self.cross_q(self.cross_norm(h))
            k, v = self.cross_kv(context).chunk(2, dim=-1)  # (B, L, C) each
            h = h + self.cross_proj(self._merge(attention(self._split(q), self._split(k), self._split(v))))
        return h.transpose(1, 2).reshape(b, c, hh, ww)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class UNet(nn.Module):
    """Encoder-decoder with skip connections; attention at the resolutions in `cfg.attn_resolutions`.

    forward(x (B, C, H, W), noise_label (B,), class_labels (B,) | None, context (B, L, D) | None) -> (B, C, H, W)
    Class index `num_classes` is the null class (no label), used for classifier-free guidance.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.base_channels, 4 * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = cfg.num_classes
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes > 0 else None

        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, res, cur = [ch], cfg.image_size, ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                blocks = nn.ModuleList([ResBlock(cur, ch * mult, emb_dim, cfg.dropout, cfg.scale_shift)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(Attention(cur, cfg.head_channels, cfg.context_dim))
                self.down.append(blocks)
                skips.append(cur)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(cur)]))
                skips.append(cur)
                res = (res + 1) // 2

        self.mid = nn.ModuleList([ResBlock(cur, cur, emb_dim, cfg.dropout, cfg.scale_shift),
                                  Attention(cur, cfg.head_channels, cfg.context_dim),
                                  ResBlock(cur, cur, emb_dim, cfg.dropout, cfg.scale_shift)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                blocks = nn.ModuleList([ResBlock(cur + skips.pop(), ch * mult, emb_dim, cfg.dropout, cfg.scale_shift)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(Attention(cur, cfg.head_channels, cfg.context_dim))
                self.up.append(blocks)
            if level > 0:
                self.up.append(nn.ModuleList([Upsample(cur)]))
                res *= 2  # approximate for odd sizes; only used to place attention

        self.norm_out = group_norm(cur)
        self.conv_out = nn.Conv2d(cur, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, class_labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(noise_label, self.cfg.base_channels).to(x.dtype))  # (B, 4ch)
        if self.class_emb is not None:
            if class_labels is None:  # no label given: the null class
                class_labels = torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(class_labels)
        emb = F.silu(emb)

        h = self.conv_in(x)  # (B, ch, H, W)
        hs = [h]
        for blocks in self.down:
            h = self._run(blocks, h, emb, context)
            hs.append(h)
        h = self._run(self.mid, h, emb, context)
        for blocks in self.up:
            if isinstance(blocks[0], Upsample):
                h = blocks[0](h, hs[-1].shape[-2:])
            else:
                h = self._run(blocks, torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)

    @staticmethod
    def _run(blocks: nn.ModuleList, h, emb, context):
        for block in blocks:
            if isinstance(block, ResBlock):
                h = block(h, emb)
            elif isinstance(block, Attention):
                h = block(h, context)
            else:
                h = block(h)
        return h
