"""Snap Video's FIT backbone: grouped read -> compute on latents -> write (Snap Video Sec. 3.4, Fig. 3).

References: Menapace et al. 2024, "Snap Video", Sec. 3.4, Fig. 3, Appx. A, Table 8; Chen & Li 2023,
"FIT: Far-reaching Interleaved Transformers"; Jabri, Fleet & Chen 2022, "Scalable Adaptive Computation
for Iterative Generation" (RIN). arXiv ids: Snap Video 2402.14797, FIT 2305.12689, RIN 2212.11972.
The official FIT and RIN code is google-research/pix2seq (``architectures/transformers.py``, ``tape.py``).

The idea: attention over all T*h*w patch tokens is too expensive for video, so a small set of M learned
*latent tokens* does the heavy computation. Patches are split into G groups (each group = ALL T frames x
a gh x gw tile of patches), the latents are split evenly over the groups, and each group's latents
"read" (cross-attend to) only their own group's patches. Global self-attention then mixes all latents,
and each group's patches "write back" by cross-attending to their group's latents.

Shapes for one forward pass (B videos, T frames, grid h x w patches of p x p px, G groups of
n = T*gh*gw patches, M latents, m = M/G per group, Nc conditioning tokens):

    x (B, T, C, H, W) --patchify--> (B, T, h*w, C p^2) --linear + learned pos.--> patches (B, T, h*w, D)
        --group--> patches (B*G, n, D)              latents Z = Z_init (+ self-cond) (B, M, Dl)
    cond tokens [c_noise, frame interval, resolution, label, text tokens] -> (B, Nc, Dc), padding masked
    each FIT block:
      [local]  patches (B*G, n, D)   <- self-attention within the group   (FIT's local layers; default 0)
      read c   Z (B, M, Dl)          <- cross-attention to cond (B, Nc, Dc) + FF
      read     Z (B*G, m, Dl)        <- cross-attention to patches (B*G, n, D) + FF      (compress)
      compute  Z (B, M, Dl)          <- K x [self-attention over all M latents + FF]    (global layers)
      write    patches (B*G, n, D)   <- cross-attention to Z (B*G, m, Dl) + FF         (decompress)
    --ungroup--> (B, T, h*w, D) --LN + zero-init linear--> (B, T, h*w, C p^2) --unpatchify--> (B, T, C, H, W)

Every sub-layer is a pre-LN residual ``x + Attn(LN(x), LN(context))`` then ``x + FF(LN(x))``. Groups are
folded into the batch (``'b (g m) d -> (b g) m d'``), so there is no Python loop over groups or frames.

How this differs from the pix2seq FIT code (``FITDenoiser``), following Snap Video Appx. A:
- order of reads: conditioning first, then patches (FIT reads patches first, then conditioning);
- a feed-forward after every cross-attention read/write (FIT's ``xattn_with_mlp`` defaults to off);
- 0 local layers by default (too expensive with Snap Video's 147k-patch upsampler); groups span all frames;
- conditioning tokens are read by cross-attention, not concatenated to the latents (RIN, FIT).

Latent self-conditioning (RIN Sec. 3.2): ``Z = Z_init + LN_zero(FF(Z_prev))``, with the LayerNorm's
weight and bias set to 0, so at init the path adds nothing. ``cond.self_cond`` holds Z_prev, the latents
returned by the previous sampler step; ``None`` means "no previous latents" and is treated as zeros, as
RIN does. The backbone returns ``(out, latents)``; the sampler puts the latents into ``cond.self_cond``
at its next call. Training self-conditions a fraction of the samples: the Denoiser's ``self_condition_prob``
(edm.py; 0.9 in Snap Video, ``--fit_self_cond_prob``).

Resolution token: Snap Video embeds the *original* resolution of the training video (before resizing).
The toy data is never resized, so here it is the input's own H and W: a constant token, kept so that the
network has Snap Video's conditioning tokens and sizes.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .base import Backbone
from ..conditioning import Cond
from .layers import (Attention, LabelEmbedder, Mlp, NoiseEmbedder, ScalarEmbedder, check_video, frame_intervals,
                     patchify, stage_embedder, unpatchify)
from ..errors import UserError
from ..text import TextProjection, token_dim


def group_patches(tokens: torch.Tensor, grid_h: int, group: Tuple[int, int]) -> torch.Tensor:
    """(B, T, h*w, D) -> (B*G, T*gh*gw, D): each group = all frames x one gh x gw tile of patches.

    Groups are numbered row-major over the tiles, and the batch index is the outer one.
    """
    gh, gw = group
    return rearrange(tokens, "b t (ny gh nx gw) d -> (b ny nx) (t gh gw) d", ny=grid_h // gh, gh=gh, gw=gw)


def ungroup_patches(groups: torch.Tensor, batch: int, grid_h: int, grid_w: int,
                    group: Tuple[int, int]) -> torch.Tensor:
    """Inverse of ``group_patches``: (B*G, T*gh*gw, D) -> (B, T, h*w, D)."""
    gh, gw = group
    return rearrange(groups, "(b ny nx) (t gh gw) d -> b t (ny gh nx gw) d",
                     b=batch, ny=grid_h // gh, nx=grid_w // gw, gh=gh, gw=gw)


class FITLayer(nn.Module):
    """Pre-LN residual attention + feed-forward: self-attention, or cross-attention if ``context_dim``.

    x <- x + Attn(LN(x), LN(context));  x <- x + Dropout(FF(LN(x)))
    """

    def __init__(self, dim: int, heads: int, context_dim: Optional[int] = None, mlp_ratio: float = 4.0,
                 qk_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim else None
        self.attn = Attention(dim, heads, qk_norm, context_dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = Mlp(dim, mlp_ratio)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                context_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``context_mask`` (B, Nc) bool: which context tokens may be read (padded text tokens may not)."""
        if (context is None) != (self.norm_context is None):
            raise ValueError("a cross-attention layer needs a context; a self-attention layer takes none")
        context = self.norm_context(context) if context is not None else None
        mask = None if context_mask is None else context_mask[:, None, None, :]
        x = x + self.attn(self.norm(x), context, attn_mask=mask)
        return x + self.drop(self.ff(self.norm_ff(x)))


class FITBlock(nn.Module):
    """[local layers] -> read conditioning -> grouped read -> K global layers -> grouped write."""

    def __init__(self, dim: int, latent_dim: int, cond_dim: int, heads: int, latent_heads: int,
                 num_groups: int, global_layers: int, local_layers: int = 0, mlp_ratio: float = 4.0,
                 qk_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.num_groups = num_groups
        kw = dict(mlp_ratio=mlp_ratio, qk_norm=qk_norm, dropout=dropout)
        self.local = nn.ModuleList(FITLayer(dim, heads, **kw) for _ in range(local_layers))
        self.read_cond = FITLayer(latent_dim, latent_heads, cond_dim, **kw)
        self.read = FITLayer(latent_dim, latent_heads, dim, **kw)
        self.compute = nn.ModuleList(FITLayer(latent_dim, latent_heads, **kw) for _ in range(global_layers))
        self.write = FITLayer(dim, heads, latent_dim, **kw)

    def forward(self, patches: torch.Tensor, latents: torch.Tensor, cond_tokens: torch.Tensor,
                cond_mask: Optional[torch.Tensor] = None):
        """patches (B*G, n, D) grouped; latents (B, M, Dl) group-contiguous; cond_tokens (B, Nc, Dc) with
        ``cond_mask`` (B, Nc) (None = all valid)."""
        g = self.num_groups
        for layer in self.local:
            patches = layer(patches)
        latents = self.read_cond(latents, cond_tokens, cond_mask)
        per_group = rearrange(latents, "b (g m) d -> (b g) m d", g=g)
        latents = rearrange(self.read(per_group, patches), "(b g) m d -> b (g m) d", g=g)
        for layer in self.compute:
            latents = layer(latents)
        patches = self.write(patches, rearrange(latents, "b (g m) d -> (b g) m d", g=g))
        return patches, latents


class FIT(Backbone):
    """The backbone contract (backbone.py): ``forward(x, c_noise, cond) -> (out, latents)``.

    ``has_unused_parameters``: ``known_embed`` gets no gradient in a step without given frames.

    x:       (B, T, C, H, W), already scaled by c_in; T, H, W must be the sizes the model was built for.
    c_noise: (B,) = ln(sigma) / 4.
    cond:    reads ``labels`` (if num_classes > 0), ``stage`` (if num_stages > 0), ``frame_interval``, ``known``,
             ``self_cond`` ((B, num_latents, latent_dim) latents of the previous step, or None), ``text`` /
             ``text_mask`` (if text_dim > 0: text tokens, appended to the conditioning tokens, padding masked out).
    returns: out with out.shape == x.shape, and the final latents (B, num_latents, latent_dim).

    Sizes: ``dim``/``heads`` are the patch tokens' width and heads, ``latent_dim``/``latent_heads`` the
    latents'; ``group_size`` = (gh, gw) patches per group tile (a group always spans all frames);
    ``depth`` FIT blocks, each with ``global_layers`` latent self-attention layers.
    """
    has_unused_parameters = True


    def __init__(self, in_channels: int = 3, num_frames: int = 16, height: int = 32, width: int = 32,
                 patch_size: int = 4, dim: int = 128, heads: int = 4, latent_dim: int = 128,
                 latent_heads: int = 4, num_latents: int = 64, group_size: Tuple[int, int] = (4, 4),
                 depth: int = 2, global_layers: int = 2, local_layers: int = 0,
                 cond_dim: Optional[int] = None, mlp_ratio: float = 4.0, num_classes: int = 0,
                 qk_norm: bool = False, dropout: float = 0.0, self_cond_mlp_ratio: float = 1.0,
                 num_stages: int = 0, text_dim: int = 0):
        super().__init__()
        p, (gh, gw) = patch_size, group_size
        if height % p or width % p:
            raise UserError(f"frame {height}x{width} is not divisible by the patch size {p}")
        # A patch grid that does not tile into groups is padded at the bottom / right and the output cropped:
        # Snap Video App. A pads its 64x36 frames by 4 rows to 64x40 (9 -> 10 patch rows, 2 groups of 5).
        grid_h, grid_w = math.ceil(height // p / gh) * gh, math.ceil(width // p / gw) * gw
        self.padding = (grid_h * p - height, grid_w * p - width)  # (rows, columns) of zeros added
        num_groups = (grid_h // gh) * (grid_w // gw)
        if num_latents % num_groups:
            raise UserError(f"num_latents {num_latents} must be divisible by the number of groups "
                            f"{num_groups}: the latents are split evenly over the groups")
        cond_dim = cond_dim or dim
        self.in_channels, self.patch_size, self.dim, self.latent_dim = in_channels, p, dim, latent_dim
        self.num_frames, self.height, self.width = num_frames, height, width
        self.grid, self.group_size, self.num_groups = (grid_h, grid_w), (gh, gw), num_groups
        self.num_latents = num_latents

        patch_dim = in_channels * p * p
        self.embed = nn.Linear(patch_dim, dim)
        self.pos = nn.Parameter(torch.randn(num_frames, grid_h * grid_w, dim) * 0.02)  # learnable (Table 8)
        self.known_embed = nn.Parameter(torch.zeros(dim))  # added in proportion to known pixels (as vdt.py)
        self.latents = nn.Parameter(torch.randn(num_latents, latent_dim) * 0.02)  # Z_init
        # RIN latent self-conditioning: Z_init + LN_zero(FF(Z_prev)); zero LN affine = no effect at init.
        # No paper gives this FF's width; 1x keeps the Table 8 presets at 500M / 3.9B parameters.
        self.self_cond_ff = Mlp(latent_dim, self_cond_mlp_ratio)
        self.self_cond_norm = nn.LayerNorm(latent_dim)
        nn.init.zeros_(self.self_cond_norm.weight)
        nn.init.zeros_(self.self_cond_norm.bias)
        # Conditioning tokens (Snap Video Sec. 3.4): noise level, frame rate, original resolution, label.
        self.noise_embed = NoiseEmbedder(cond_dim)
        self.interval_embed = ScalarEmbedder(cond_dim)
        self.height_embed = ScalarEmbedder(cond_dim)  # of log(height in px)
        self.width_embed = ScalarEmbedder(cond_dim)   # of log(width in px)
        self.label_embed = LabelEmbedder(num_classes, cond_dim) if num_classes > 0 else None
        self.stage_embed = stage_embedder(num_stages, cond_dim)  # Video LDM's interpolation stage: a token
        # Text tokens join the conditioning tokens the latents read (Snap Video Sec. 3.4: T5 token embeddings)
        self.text_proj = TextProjection(text_dim, cond_dim) if text_dim else None

        self.blocks = nn.ModuleList(
            FITBlock(dim, latent_dim, cond_dim, heads, latent_heads, num_groups, global_layers,
                     local_layers, mlp_ratio, qk_norm, dropout) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim)
        self.final = nn.Linear(dim, patch_dim)
        nn.init.zeros_(self.final.weight)  # zero output at init: D starts as c_skip * x_sigma
        nn.init.zeros_(self.final.bias)

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> "FIT":
        """Build from ``ModelConfig``'s ``fit_*`` fields (0 widths/heads = the patch tokens') and the frames' (H, W)."""
        m, d = model_cfg, data_cfg
        return cls(in_channels=d.channels, num_frames=d.num_frames, height=d.height, width=d.width,
                   patch_size=m.patch_size, dim=m.dim, heads=m.heads, latent_dim=m.fit_latent_dim or m.dim,
                   latent_heads=m.fit_latent_heads or m.heads, num_latents=m.fit_num_latents,
                   group_size=(m.fit_group_h, m.fit_group_w), depth=m.depth, global_layers=m.fit_global_layers,
                   local_layers=m.fit_local_layers, cond_dim=m.fit_cond_dim or None, mlp_ratio=m.mlp_ratio,
                   num_classes=d.num_classes, qk_norm=m.qk_norm, dropout=m.fit_dropout, num_stages=m.num_stages,
                   text_dim=token_dim(m))

    def conditioning_tokens(self, c_noise: torch.Tensor, cond: Cond, batch: int):
        """((B, Nc, cond_dim) [noise level, frame interval, resolution (, label) (, stage) (, text...)] tokens,
        and their (B, Nc) mask, None when every token is valid (no text)."""
        device = c_noise.device
        interval = frame_intervals(cond, batch, device)
        size = torch.tensor([self.height, self.width], dtype=torch.float32, device=device).expand(batch, 2)
        tokens = [self.noise_embed(c_noise, cond),
                  self.interval_embed(interval),
                  self.height_embed(size[:, 0].log()) + self.width_embed(size[:, 1].log())]
        if self.label_embed is not None:
            tokens.append(self.label_embed.of(cond, device))
        if self.stage_embed is not None:
            tokens.append(self.stage_embed.of(cond, batch, device))
        tokens = torch.stack(tokens, dim=1)
        text, text_mask = self.text_proj(cond) if self.text_proj is not None else (None, None)
        if text is None:
            return tokens, None
        fixed = torch.ones(tokens.shape[:2], dtype=torch.bool, device=device)
        return torch.cat([tokens, text.to(tokens.dtype)], 1), torch.cat([fixed, text_mask], 1)

    def initial_latents(self, self_cond: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """Z = Z_init + LN_zero(FF(Z_prev)) (RIN); Z_prev = None is treated as zeros."""
        shape = (batch, self.num_latents, self.latent_dim)
        if self_cond is None:
            self_cond = torch.zeros(shape, device=self.latents.device)
        elif tuple(self_cond.shape) != shape:
            raise ValueError(f"cond.self_cond must be the latents of a previous call, shape {shape}; "
                             f"got {tuple(self_cond.shape)}")
        return self.latents + self.self_cond_norm(self.self_cond_ff(self_cond.to(self.latents.device)))

    def pad(self, frames: torch.Tensor) -> torch.Tensor:
        """Zeros below and right of (..., H, W) frames up to the grouped patch grid (no copy if none needed)."""
        rows, cols = self.padding
        return F.pad(frames, (0, cols, 0, rows)) if rows or cols else frames

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor,
                cond: Optional[Cond] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        cond = cond if cond is not None else Cond()
        check_video(x, self.in_channels, self.patch_size)
        b, t, ch, h, w = x.shape
        if (t, h, w) != (self.num_frames, self.height, self.width):
            raise ValueError(f"FIT was built for {self.num_frames} frames of {self.height}x{self.width} px "
                             f"(learned position embeddings and groups are sized for it); got {t} frames "
                             f"of {h}x{w}. Build the model with the data's sizes.")
        p = self.patch_size
        patches = patchify(self.pad(x), p)  # (B, T, grid_h*grid_w, C p^2)
        tokens = self.embed(patches) + self.pos
        if cond.known is not None:  # fraction of each patch that is given content (padding is never given)
            known = self.pad(cond.known.expand(b, t, 1, h, w).to(x.dtype))
            tokens = tokens + patchify(known, p).mean(-1, keepdim=True) * self.known_embed
        tokens = group_patches(tokens, self.grid[0], self.group_size)  # (B*G, n, D)
        latents = self.initial_latents(cond.self_cond, b)  # (B, M, Dl)
        cond_tokens, cond_mask = self.conditioning_tokens(c_noise, cond, b)  # (B, Nc, Dc), (B, Nc) or None
        for block in self.blocks:
            tokens, latents = block(tokens, latents, cond_tokens, cond_mask)
        tokens = ungroup_patches(tokens, b, *self.grid, self.group_size)  # (B, T, h*w, D)
        out = self.final(self.final_norm(tokens))
        out = unpatchify(out, p, ch, self.grid[0] * p, self.grid[1] * p)
        return out[..., :h, :w], latents  # the padding cropped off


# ----------------------------------------------------------------------------------------------
# Presets: Snap Video Table 8 (input 16 x 36 x 64 = T x H x W, padded inside to 40 rows: ``FIT.padding``)
# ----------------------------------------------------------------------------------------------

def _snap(dim, latent_dim, num_latents, head_ch, latent_head_ch):
    return dict(in_channels=3, num_frames=16, height=36, width=64, patch_size=4, dim=dim,
                heads=dim // head_ch, latent_dim=latent_dim, latent_heads=latent_dim // latent_head_ch,
                num_latents=num_latents, group_size=(5, 4), depth=6, global_layers=4, local_layers=0,
                cond_dim=dim, mlp_ratio=4.0, dropout=0.1)


SNAPVIDEO_PRESETS = {
    # Table 8: patch 1x4x4; group 16x5x4 patches (T x H x W): 8 groups of 320 patches; 6 blocks x 4 global;
    # heads = width / head channels. Unstated (assumed): FF ratio 4, attention width = query width.
    # Measured on the meta device: 499.9M (paper: 500M) and 4.057B (paper: 3.9B, +4.0%) parameters.
    "snapvideo_500m": _snap(dim=768, latent_dim=1024, num_latents=512, head_ch=48, latent_head_ch=64),
    "snapvideo_3.9b": _snap(dim=1024, latent_dim=3072, num_latents=768, head_ch=64, latent_head_ch=128),
    # Toy: 16 frames of 32x32 RGB (bouncing balls), patch 4 -> 16x8x8 grid, 4 groups of 16x4x4 patches.
    "toy": dict(in_channels=3, num_frames=16, height=32, width=32, patch_size=4, dim=128, heads=4,
                latent_dim=128, latent_heads=4, num_latents=64, group_size=(4, 4), depth=2,
                global_layers=2, local_layers=0, mlp_ratio=4.0),
}
PAPER_PARAMETERS = {"snapvideo_500m": 500e6, "snapvideo_3.9b": 3.9e9}  # the sizes the paper names


def snapvideo_config(name: str) -> dict:
    """Keyword arguments of ``FIT`` for a preset: ``FIT(**snapvideo_config("snapvideo_500m"))``."""
    if name not in SNAPVIDEO_PRESETS:
        raise ValueError(f"unknown FIT preset {name!r}; available: {', '.join(SNAPVIDEO_PRESETS)}")
    return dict(SNAPVIDEO_PRESETS[name])

