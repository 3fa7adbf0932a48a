"""U-Net noise-level-conditioned network (Ho et al. 2020, with the improvements of Nichol & Dhariwal 2021).

Read top to bottom: embeddings, the residual block, attention, then the U-Net that stacks them.
The network knows nothing about schedules: it maps (x, noise_label, class_labels, context) to an output the
size of x, and `diffusion.Denoiser` decides what that output means (noise, x0, v or EDM's F).

Conditioning enters in two ways:
  * a global embedding (noise level + class, with an extra "null class" index for classifier-free guidance, or +
    the prompt's pooled text embedding, as Imagen does) that scales and shifts every residual block's normalised
    activations;
  * for text models, the prompt's token embeddings `(B, L, context_dim)` with their padding mask `(B, L)`, read by
    cross-attention blocks at `cfg.cross_attn_resolutions` and in the middle block (Rombach et al. 2022).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisecraft.config import ModelConfig
from noisecraft.errors import UserError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of a float label per sample (Vaswani et al. 2017). t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def add_conditions(net: nn.Module, emb: torch.Tensor, class_labels: torch.Tensor | None,
                   context_pooled: torch.Tensor | None, augment_labels: torch.Tensor | None) -> torch.Tensor:
    """The noise level's embedding `emb` (B, D) plus the class's (no label: the null class `net.num_classes`), the
    prompt's pooled embedding and the augment labels', through the network's `class_emb`, `text_emb` and
    `augment_emb` (each None when it has no such conditioning): what the U-Net and the transformer share."""
    if net.class_emb is not None:
        if class_labels is None:  # no label given: the null class
            class_labels = torch.full((emb.shape[0],), net.num_classes, device=emb.device, dtype=torch.long)
        emb = emb + net.class_emb(class_labels)
    if net.text_emb is not None and context_pooled is not None:
        emb = emb + net.text_emb(context_pooled.to(emb.dtype))
    if augment_labels is not None:  # None: no transform (what sampling asks for), the same as zeros
        if net.augment_emb is None:
            raise ValueError("augment_labels given to a network built without model.augment_dim")
        emb = emb + net.augment_emb(augment_labels.to(emb.dtype))
    return emb


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


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention, (B, heads, L, d) -> (B, heads, L, d); `mask` (B, 1, 1, L_k) is True where a
    key may be attended to. On CPUs it runs in fp32 even under bf16 autocast: PyTorch's bf16 flash-attention
    backward on CPU took 8x the fp32 time at 49 tokens (10% of a digits training step), while attention is a small
    share of the FLOPs."""
    if q.device.type == "cpu" and (q.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):  # autocast would cast the inputs back to bf16
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:  # (B, L, C) -> (B, heads, L, C/heads)
    b, n, c = t.shape
    return t.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:  # (B, heads, L, d) -> (B, L, heads*d)
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head self-attention over pixels."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(tokens).chunk(3, dim=-1))
        h = x.flatten(2).transpose(1, 2) + self.proj(merge_heads(attention(q, k, v)))  # (B, HW, C)
        return h.transpose(1, 2).reshape(b, c, hh, ww)


class CrossAttention(nn.Module):
    """Pixels attend to the prompt's token embeddings (Rombach et al. 2022, "High-Resolution Image Synthesis with
    Latent Diffusion Models"); padding tokens are masked out, so they change nothing.

    Set `maps` to a list to record each call's attention probabilities, (B, HW, L) averaged over heads, with the
    feature map's (H, W): what the cross-attention figure draws. None (the default) records nothing."""

    def __init__(self, channels: int, head_channels: int, context_dim: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)  # starts as the identity, like every residual branch here
        nn.init.zeros_(self.proj.bias)
        self.maps: list | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hh, ww = x.shape
        q = split_heads(self.q(self.norm(x).flatten(2).transpose(1, 2)), self.heads)  # (B, heads, HW, d)
        k, v = (split_heads(t, self.heads) for t in self.kv(context).chunk(2, dim=-1))  # (B, heads, L, d)
        keep = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        if self.maps is not None:
            logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, heads, HW, L)
            probs = logits.masked_fill(~keep, float("-inf")) if keep is not None else logits
            self.maps.append((probs.softmax(-1).mean(1), (hh, ww)))
        h = self.proj(merge_heads(attention(q, k, v, keep)))  # (B, HW, C)
        return x + h.transpose(1, 2).reshape(b, c, hh, ww)


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
    """Encoder-decoder with skip connections; self-attention at the resolutions in `cfg.unet.attn_resolutions`, and
    for text models (`cfg.context_dim`) cross-attention at `cfg.unet.cross_resolutions` and mid.

    forward(x (B, C, H, W), noise_label (B,), class_labels (B,) | None, context (B, L, D) | None,
            context_mask (B, L) bool | None, context_pooled (B, D) | None, augment_labels (B, A) | None)
            -> (B, C, H, W)
    Class index `num_classes` is the null class (no label), used for classifier-free guidance.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        u = cfg.unet  # the U-Net's own settings
        ch, emb_dim = u.base_channels, 4 * u.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = cfg.num_classes
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes > 0 else None
        if cfg.context_dim:  # LayerNorm on the frozen text embeddings, as Imagen found helps: a sentence encoder's
            # unit-norm outputs differ little between "leaning left" and "leaning right" (cosine 0.95)
            self.context_norm = nn.LayerNorm(cfg.context_dim)
            self.text_emb = nn.Sequential(nn.LayerNorm(cfg.context_dim), nn.Linear(cfg.context_dim, emb_dim))
        else:
            self.context_norm = self.text_emb = None
        # Non-leaking augmentation: the transforms' labels join the embedding; bias-free, so zeros (sampling) add 0.
        self.augment_emb = nn.Linear(cfg.augment_dim, emb_dim, bias=False) if cfg.augment_dim else None

        p = cfg.patch_size
        if cfg.image_size % p:
            raise UserError(f"model.patch_size={p} must divide the image size {cfg.image_size}")
        # A 3x3 conv at full resolution before the patches and after them (model.conv_stem, as in the DiT): without
        # it the output is unfolded straight from patches, and flat regions keep a faint 2-pixel checker.
        pix = cfg.conv_stem or cfg.in_channels  # channels the patches are cut from and decoded to
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, pix, 3, padding=1), nn.GELU()) if cfg.conv_stem \
            else nn.Identity()
        self.conv_in = nn.Conv2d(pix * p * p, ch, 3, padding=1)
        self.down, skips, res = self._encoder(cfg, emb_dim, cfg.image_size // p)
        cur = skips[-1]
        self.mid = nn.ModuleList([ResBlock(cur, cur, emb_dim, cfg.dropout, u.scale_shift),
                                  *self._attention(cfg, cur, res, mid=True),
                                  ResBlock(cur, cur, emb_dim, cfg.dropout, u.scale_shift)])
        self.up, cur = self._decoder(cfg, emb_dim, skips, res)
        self.norm_out = group_norm(cur)
        self.conv_out = nn.Conv2d(cur, pix * p * p, 3, padding=1)
        self.head = nn.Sequential(nn.GELU(), nn.Conv2d(pix, cfg.in_channels, 3, padding=1)) if cfg.conv_stem \
            else nn.Identity()
        last = self.head[1] if cfg.conv_stem else self.conv_out  # the output starts at zero
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _encoder(self, cfg: ModelConfig, emb_dim: int, res: int) -> tuple[nn.ModuleList, list[int], int]:
        """The encoder's stages from the top level (feature maps res x res) down; -> the stages, the channels of
        each skip connection they leave for the decoder, and the size of the lowest level."""
        u, down = cfg.unet, nn.ModuleList()
        ch = cur = u.base_channels
        skips = [ch]
        for level, mult in enumerate(u.channel_mult):
            for _ in range(u.num_res_blocks):
                blocks = nn.ModuleList([ResBlock(cur, ch * mult, emb_dim, cfg.dropout, u.scale_shift)])
                cur = ch * mult
                blocks.extend(self._attention(cfg, cur, res))
                down.append(blocks)
                skips.append(cur)
            if level < len(u.channel_mult) - 1:
                down.append(nn.ModuleList([Downsample(cur)]))
                skips.append(cur)
                res = (res + 1) // 2
        return down, skips, res

    def _decoder(self, cfg: ModelConfig, emb_dim: int, skips: list[int], res: int) -> tuple[nn.ModuleList, int]:
        """The decoder's stages from the lowest level (res x res) up, each residual block reading one skip (taken
        from the end of `skips`); -> the stages and their output channels."""
        u, up = cfg.unet, nn.ModuleList()
        ch, cur = u.base_channels, skips[-1]
        for level, mult in reversed(list(enumerate(u.channel_mult))):
            for _ in range(u.num_res_blocks + 1):
                blocks = nn.ModuleList([ResBlock(cur + skips.pop(), ch * mult, emb_dim, cfg.dropout, u.scale_shift)])
                cur = ch * mult
                blocks.extend(self._attention(cfg, cur, res))
                up.append(blocks)
            if level > 0:
                up.append(nn.ModuleList([Upsample(cur)]))
                res *= 2  # approximate for odd sizes; only used to place attention
        return up, cur

    @staticmethod
    def _attention(cfg: ModelConfig, channels: int, res: int, mid: bool = False) -> list[nn.Module]:
        """The attention blocks after a residual block at feature-map size `res`; the middle block has both."""
        blocks = [Attention(channels, cfg.head_channels)] if mid or res in cfg.unet.attn_resolutions else []
        if cfg.context_dim and (mid or res in cfg.unet.cross_resolutions):
            blocks.append(CrossAttention(channels, cfg.head_channels, cfg.context_dim))
        return blocks

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, class_labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                context_pooled: torch.Tensor | None = None, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(noise_label, self.cfg.unet.base_channels).to(x.dtype))  # (B, 4ch)
        emb = F.silu(add_conditions(self, emb, class_labels, context_pooled, augment_labels))
        context = None if context is None else (self.context_norm(context), context_mask)  # (B, L, D), (B, L)

        h = self.conv_in(F.pixel_unshuffle(self.stem(x), self.cfg.patch_size))  # (B, ch, H/p, W/p)
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
        h = self.conv_out(F.silu(self.norm_out(h)))  # (B, C*p*p, H/p, W/p)
        return self.head(F.pixel_shuffle(h, self.cfg.patch_size))  # (B, C, H, W)

    @staticmethod
    def _run(blocks: nn.ModuleList, h, emb, context):
        for block in blocks:
            if isinstance(block, ResBlock):
                h = block(h, emb)
            elif isinstance(block, Attention):
                h = block(h)
            elif isinstance(block, CrossAttention):
                if context is not None:  # a text model called without a prompt skips its cross-attention
                    h = block(h, *context)
            else:
                h = block(h)
        return h
