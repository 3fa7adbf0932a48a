"""Diffusion transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"): a ViT on patches of
the noisy image, conditioned by adaLN-zero, with cross-attention to the prompt's tokens for text models (as
PixArt-alpha, Chen et al. 2023, adds it to DiT).

Read top to bottom: positions, the block, then the network that patchifies, runs the blocks and unpatchifies.
Like the U-Net it knows nothing about schedules: it maps (x, noise_label, class_labels, context) to an output the
size of x, and `diffusion.Denoiser` decides what that output means.

Sizes come from `ModelConfig`: its own settings `cfg.dit` (`width` of a token, `depth` blocks, `mlp_ratio`,
`pos_embed`, `long_skip`: U-ViT's skips from the first half of the blocks to the second) and those every network
shares (`head_channels` the width of an attention head, `patch_size` the side of the pixel patch a token covers).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from noisecraft.config import ModelConfig
from noisecraft.errors import UserError
from noisecraft.models.unet import add_conditions, attention, merge_heads, split_heads, timestep_embedding


def sincos_positions_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2D sin-cos positions (as MAE and DiT): half the channels encode the row, half the column.
    -> (grid * grid, dim), row-major like the patch tokens."""
    if dim % 4:
        raise UserError(f"model.dit.width={dim} must be a multiple of 4 for 2D sin-cos positions")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([timestep_embedding(rows.flatten(), dim // 2, 10_000.0),
                      timestep_embedding(cols.flatten(), dim // 2, 10_000.0)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift  # (B, N, D) by (B, 1, D)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D)
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(merge_heads(attention(q, k, v)))


class TokenCrossAttention(nn.Module):
    """Image tokens attend to the prompt's tokens; padding is masked out. Starts as the identity (zero output
    projection). `maps`, when a list, records each call's attention probabilities (B, N, L) averaged over heads
    with the token grid's (H, W), as the U-Net's `CrossAttention` does, for the cross-attention figure."""

    def __init__(self, width: int, heads: int, context_dim: int, grid: int):
        super().__init__()
        self.heads, self.grid = heads, grid
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim, 2 * width)
        self.proj = nn.Linear(width, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.maps: list | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = split_heads(self.q(self.norm(x)), self.heads)  # (B, heads, N, d)
        k, v = (split_heads(t, self.heads) for t in self.kv(context).chunk(2, dim=-1))  # (B, heads, L, d)
        keep = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        if self.maps is not None:
            logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, heads, N, L)
            probs = logits.masked_fill(~keep, float("-inf")) if keep is not None else logits
            self.maps.append((probs.softmax(-1).mean(1), (self.grid, self.grid)))
        return x + self.proj(merge_heads(attention(q, k, v, keep)))


class DiTBlock(nn.Module):
    """LayerNorm -> self-attention -> [cross-attention] -> LayerNorm -> MLP, each residual branch shifted, scaled and
    gated by the conditioning vector c (adaLN-zero: the gates start at zero, so each block starts as the identity)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, context_dim: int | None,
                 grid: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.cross = TokenCrossAttention(width, heads, context_dim, grid) if context_dim else None
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                 nn.Linear(hidden, width))
        self.ada = nn.Linear(width, 6 * width)  # c -> shift, scale, gate of both branches
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: tuple | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)  # each (B, 1, D)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross is not None and context is not None:  # a text model called without a prompt skips it
            x = self.cross(x, *context)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """[3x3 conv] -> patchify -> + positions -> `depth` DiT blocks -> adaLN -> linear -> unpatchify -> [3x3 conv].

    With `long_skip` (U-ViT, Bao et al. 2023) block i of the first half hands its output to block depth - 1 - i of
    the second, which reads Linear(2D, D) of [its input, that output] (the middle block of an odd depth has none).

    forward(x (B, C, H, W), noise_label (B,), class_labels (B,) | None, context (B, L, D) | None,
            context_mask (B, L) bool | None, context_pooled (B, D) | None, augment_labels (B, A) | None)
            -> (B, C, H, W)
    The conditioning vector c is the noise level's embedding + the class's (index `num_classes` is the null class,
    for classifier-free guidance) + the prompt's pooled embedding + the augment labels', as in the U-Net.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dit  # the transformer's own settings
        p, width = cfg.patch_size, d.width
        if cfg.image_size % p:
            raise UserError(f"model.patch_size={p} must divide the image size {cfg.image_size}")
        if width % cfg.head_channels:
            raise UserError(f"model.dit.width={width} must be a multiple of "
                            f"model.head_channels={cfg.head_channels}")
        self.grid, heads = cfg.image_size // p, width // cfg.head_channels
        # Early convolutions (Xiao et al. 2021; U-ViT's last conv): a 3x3 conv at full resolution before the patches
        # and after them, so pixels within and across patch borders mix before and after the tokens.
        pix = cfg.conv_stem or cfg.in_channels  # channels a patch is cut from and decoded to
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, pix, 3, padding=1), nn.GELU()) if cfg.conv_stem \
            else nn.Identity()
        self.patchify = nn.Conv2d(pix, width, p, stride=p)  # (B, C', H, W) -> (B, D, H/p, W/p)
        if d.pos_embed == "learned":
            self.pos = nn.Parameter(torch.randn(self.grid * self.grid, width) * 0.02)
        else:  # fixed: not a weight, so not in checkpoints
            self.register_buffer("pos", sincos_positions_2d(self.grid, width), persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.num_classes = cfg.num_classes
        self.class_emb = nn.Embedding(cfg.num_classes + 1, width) if cfg.num_classes > 0 else None
        if cfg.context_dim:  # the frozen text encoder's tokens and pooled embedding, normalised as in the U-Net
            self.context_norm = nn.LayerNorm(cfg.context_dim)
            self.text_emb = nn.Sequential(nn.LayerNorm(cfg.context_dim), nn.Linear(cfg.context_dim, width))
        else:
            self.context_norm = self.text_emb = None
        # Non-leaking augmentation: the transforms' labels join c; bias-free, so zeros (sampling) add nothing.
        self.augment_emb = nn.Linear(cfg.augment_dim, width, bias=False) if cfg.augment_dim else None
        self.blocks = nn.ModuleList([DiTBlock(width, heads, d.mlp_ratio, cfg.dropout, cfg.context_dim, self.grid)
                                     for _ in range(d.depth)])
        self.skips = nn.ModuleList([nn.Linear(2 * width, width) for _ in range(d.depth // 2)]) \
            if d.long_skip else None  # skips[j] feeds the j-th block of the second half
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, p * p * pix)
        self.head = nn.Sequential(nn.GELU(), nn.Conv2d(pix, cfg.in_channels, 3, padding=1)) if cfg.conv_stem \
            else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's: Xavier-uniform linear layers (the patch embedding as one), small embeddings, and zeros for every
        adaLN modulation and the output layer, so the network starts by predicting zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patchify.weight.view(self.patchify.out_channels, -1))
        nn.init.zeros_(self.patchify.bias)
        if self.class_emb is not None:
            nn.init.normal_(self.class_emb.weight, std=0.02)
        for m in [b.ada for b in self.blocks] + [self.ada_out, self.out if not self.cfg.conv_stem else self.head[1]]:
            nn.init.zeros_(m.weight)  # with a conv head the head starts at zero, so `out` still gets gradients
            nn.init.zeros_(m.bias)
        for b in self.blocks:
            if b.cross is not None:
                nn.init.zeros_(b.cross.proj.weight)
        width = self.cfg.dit.width
        for skip in self.skips or []:  # [identity | zeros]: the skip starts unread, so each block as the identity
            with torch.no_grad():
                skip.weight.copy_(torch.cat([torch.eye(width), torch.zeros(width, width)], dim=1))  # (D, 2D)

    def condition(self, noise_label: torch.Tensor, class_labels: torch.Tensor | None,
                  context_pooled: torch.Tensor | None, augment_labels: torch.Tensor | None,
                  dtype: torch.dtype) -> torch.Tensor:
        """The conditioning vector c (B, D), after its SiLU (every adaLN reads it through one)."""
        c = self.time_mlp(timestep_embedding(noise_label, self.cfg.dit.width).to(dtype))  # (B, D)
        return F.silu(add_conditions(self, c, class_labels, context_pooled, augment_labels))

    def run_blocks(self, h: torch.Tensor, c: torch.Tensor, context: tuple | None) -> torch.Tensor:
        """The blocks on the tokens h (B, N, D), with the long skips when the model has them."""
        if self.skips is None:
            for block in self.blocks:
                h = block(h, c, context)
            return h
        half, saved = len(self.skips), []
        for i, block in enumerate(self.blocks):
            if i >= len(self.blocks) - half:  # the second half: the mirrored first-half block's output joins
                h = self.skips[i - (len(self.blocks) - half)](torch.cat([h, saved.pop()], dim=-1))  # (B, N, D)
            h = block(h, c, context)
            if i < half:
                saved.append(h)  # (B, N, D)
        return h

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, class_labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                context_pooled: torch.Tensor | None = None, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        b, ch, hh, ww = x.shape
        p, g = self.cfg.patch_size, self.grid
        if hh != ww or hh != g * p:
            raise UserError(f"this transformer was built for {g * p}x{g * p} inputs, got {hh}x{ww}")
        c = self.condition(noise_label, class_labels, context_pooled, augment_labels, x.dtype)
        context = None if context is None else (self.context_norm(context), context_mask)  # (B, L, D), (B, L)
        h = self.patchify(self.stem(x)).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)  # (B, N, D), N = g * g
        h = self.run_blocks(h, c, context)
        shift, scale = self.ada_out(c)[:, None].chunk(2, dim=-1)
        h = self.out(modulate(self.norm_out(h), shift, scale))  # (B, N, p * p * C')
        h = h.transpose(1, 2).reshape(b, -1, g, g)  # (B, C' * p * p, g, g), C' = conv_stem or C
        return self.head(F.pixel_shuffle(h, p))  # (B, C, H, W)
