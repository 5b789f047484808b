"""VDT's space-time transformer: the first backbone (Lu et al. 2024, "VDT: General-purpose Video
Diffusion Transformers via Mask Modeling", arXiv 2305.13311, Sec. 3; block layout as in the official code,
github.com/RERV/VDT, ``models.py``).

Shape walk-through for one forward pass (B videos, T frames, C channels, H x W pixels, patch p):

    x (B, T, C, H, W) --patchify--> (B, T, N, C p^2), N = HW/p^2 --linear--> tokens (B, T, N, D)
    + fixed sin-cos space embedding (per patch position) + fixed sin-cos time embedding (per frame)
    each block:  temporal attention  over T   for every patch position   ('b t n d -> (b n) t d')
                 spatial attention   over N   within every frame         ('b t n d -> (b t) n d')
                 MLP                 per token
    final adaLN + linear --unpatchify--> (B, T, C, H, W)

Conditioning: c = emb(c_noise) + emb(label) + emb(frame interval), a single vector per video that drives
adaLN-Zero modulation (DiT) of every sub-layer. Differences from the official VDT code, and why:
- VDT's temporal branch has a plain LayerNorm and no gate; here it is adaLN-Zero modulated like the others,
  so every residual branch starts as the identity (the whole network starts at zero output).
- The output is EDM's F (one prediction per channel), not DiT's learned-variance 2C channels.
- Known (context) positions are marked by adding ``known_fraction * known_embedding`` to each token,
  so the network is told what is given: VDT's official code does not tell it (see masking.py).

Three ways to give the model its context (VDT Sec. 3 compares them for video prediction), chosen by
``conditioning``:
- "concat" (token concatenation, VDT's choice and the default): the clean known content sits in the token
  sequence in place of the noisy one, and every attention layer can read it.
- "adaln": known positions are blanked in the sequence; the context is patch-embedded, averaged into one
  vector and added to c, so it reaches the network only through adaLN scales and shifts.
- "cross_attention": known positions are blanked; each block gets a gated cross-attention from all tokens
  to the context tokens (known patches only, plus one learned "null" token so a sample without context
  still has something to attend to).
The last two work per patch: a patch with any known pixel counts as context, which is exact for whole-frame
masks (prediction, interpolation) and for masks aligned with patches; "concat" handles any pixel mask.
"""
from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import nn

from .base import Backbone
from ..conditioning import Cond
from .layers import (AdaLNModulation, Attention, LabelEmbedder, Mlp, NoiseEmbedder, ScalarEmbedder, check_video,
                     conditioning_vector, modulate, patchify, sincos_1d, sincos_2d, stage_embedder, unpatchify)
from ..conv_time import band_mask
from ..errors import UserError
from ..text import TextProjection, token_dim


CONDITIONING = ("concat", "adaln", "cross_attention")


class VDTBlock(nn.Module):
    """Temporal attention -> spatial attention -> MLP, each pre-norm, adaLN-Zero modulated and gated."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True,
                 cross_attention: bool = False, text: bool = False):
        super().__init__()
        self.text = None
        if text:  # ordinary cross-attention from every token to the text tokens (as Video LDM / SD read text)
            self.norm_text = nn.LayerNorm(dim, eps=1e-6)
            self.text = Attention(dim, heads, qk_norm)
            self.text_gate = nn.Parameter(torch.zeros(dim))  # zero: starts as the identity
        self.cross = None
        if cross_attention:  # VDT's "cross-attention" conditioning: tokens query the context tokens
            self.norm_x = nn.LayerNorm(dim, eps=1e-6)
            self.cross = Attention(dim, heads, qk_norm)
            self.cross_gate = nn.Parameter(torch.zeros(dim))  # zero: starts as the identity, like adaLN-Zero
        self.norm_t = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn_t = Attention(dim, heads, qk_norm)
        self.norm_s = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn_s = Attention(dim, heads, qk_norm)
        self.norm_m = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)
        self.ada = AdaLNModulation(dim, 9)  # (shift, scale, gate) for each of the three sub-layers

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: Optional[torch.Tensor] = None,
                context_mask: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None,
                text_mask: Optional[torch.Tensor] = None, band: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, n, d = x.shape
        mods = [m[:, None, None, :] for m in self.ada(c)]  # each (B, 1, 1, D): broadcast over T and N
        sh_t, sc_t, g_t, sh_s, sc_s, g_s, sh_m, sc_m, g_m = mods

        h = rearrange(modulate(self.norm_t(x), sh_t, sc_t), "b t n d -> (b n) t d")
        x = x + g_t * rearrange(self.attn_t(h, attn_mask=band), "(b n) t d -> b t n d", b=b)

        h = rearrange(modulate(self.norm_s(x), sh_s, sc_s), "b t n d -> (b t) n d")
        x = x + g_s * rearrange(self.attn_s(h), "(b t) n d -> b t n d", b=b)

        if self.cross is not None:
            h = self.cross(self.norm_x(x).flatten(1, 2), context, attn_mask=context_mask)
            x = x + self.cross_gate * h.reshape(b, t, n, d)

        if self.text is not None and text is not None:
            h = self.text(self.norm_text(x).flatten(1, 2), text.to(x.dtype), attn_mask=text_mask[:, None, None, :])
            x = x + self.text_gate * h.reshape(b, t, n, d)

        return x + g_m * self.mlp(modulate(self.norm_m(x), sh_m, sc_m))


class VDT(Backbone):
    """The backbone contract (backbone.py): ``forward(x, c_noise, cond) -> (out, None)``, out.shape == x.shape.

    x:       (B, T, C, H, W), already scaled by c_in (unit variance); H, W divisible by patch_size.
    c_noise: (B,) = ln(sigma) / 4.
    cond:    reads ``labels`` (if num_classes > 0), ``frame_interval``, ``known``, ``stage`` (if num_stages > 0)
             and (if text_dim > 0) ``text`` / ``text_mask`` (a gated cross-attention to the text in every
             block); ignores the rest.
    Convolutional in time (``conv_in_time``, conv_time.py): the temporal attention is masked to a band.
    """

    temporal_attention = True  # frames mix only through attention over T: conv_in_time can mask it

    def __init__(self, in_channels: int = 3, patch_size: int = 4, dim: int = 128, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, num_classes: int = 0, qk_norm: bool = True,
                 conditioning: str = "concat", num_stages: int = 0, text_dim: int = 0):
        super().__init__()
        if conditioning not in CONDITIONING:
            raise UserError(f"unknown conditioning {conditioning!r}; choose from {', '.join(CONDITIONING)}")
        self.conditioning = conditioning
        self.in_channels, self.patch_size, self.dim = in_channels, patch_size, dim
        patch_dim = in_channels * patch_size**2
        self.embed = nn.Linear(patch_dim, dim)
        self.noise_embed = NoiseEmbedder(dim)
        self.interval_embed = ScalarEmbedder(dim)
        self.label_embed = LabelEmbedder(num_classes, dim) if num_classes > 0 else None
        self.stage_embed = stage_embedder(num_stages, dim)
        self.known_embed = nn.Parameter(torch.zeros(dim))  # added to tokens in proportion to known pixels
        if conditioning != "concat":  # a separate embedding of the clean context
            self.context_embed = nn.Linear(patch_dim, dim)
        if conditioning == "adaln":
            self.context_pool = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))
        if conditioning == "cross_attention":
            self.null_context = nn.Parameter(torch.zeros(1, 1, dim))
        cross = conditioning == "cross_attention"
        self.text_proj = TextProjection(text_dim, dim) if text_dim else None
        self.blocks = nn.ModuleList(VDTBlock(dim, heads, mlp_ratio, qk_norm, cross, text_dim > 0)
                                    for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = AdaLNModulation(dim, 2)
        self.final = nn.Linear(dim, patch_dim)
        nn.init.zeros_(self.final.weight)  # zero output at init: D starts as c_skip * x_sigma
        nn.init.zeros_(self.final.bias)

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> "VDT":
        return cls(in_channels=data_cfg.channels, patch_size=model_cfg.patch_size, dim=model_cfg.dim,
                   depth=model_cfg.depth, heads=model_cfg.heads, mlp_ratio=model_cfg.mlp_ratio,
                   num_classes=data_cfg.num_classes, qk_norm=model_cfg.qk_norm,
                   conditioning=model_cfg.conditioning, num_stages=model_cfg.num_stages,
                   text_dim=token_dim(model_cfg))

    def conditioning_vector(self, c_noise: torch.Tensor, cond: Cond, batch: int) -> torch.Tensor:
        """c = emb(c_noise) + emb(frame interval) + emb(label) + emb(stage): one vector per video for adaLN."""
        return conditioning_vector(self.noise_embed, self.interval_embed, self.label_embed, c_noise, cond, batch,
                                   self.stage_embed)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Optional[Cond] = None):
        cond = cond if cond is not None else Cond()
        check_video(x, self.in_channels, self.patch_size)
        b, t, ch, h, w = x.shape
        p = self.patch_size
        patches = patchify(x, p)  # (B, T, N, C p^2)
        known_fraction = torch.zeros(*patches.shape[:3], 1, dtype=x.dtype, device=x.device)
        if cond.known is not None:
            known_fraction = patchify(cond.known.expand(b, t, 1, h, w).to(x.dtype), p).mean(-1, keepdim=True)
        space = sincos_2d(h // p, w // p, self.dim).to(x)  # (N, D)
        time = sincos_1d(torch.arange(t), self.dim).to(x)  # (T, D)
        position = space[None, None] + time[None, :, None]  # (1, T, N, D)
        c = self.conditioning_vector(c_noise, cond, b)
        context = context_mask = None
        if self.conditioning != "concat":
            is_context = known_fraction > 0  # (B, T, N, 1): patches holding given content
            ctx_tokens = self.context_embed(patches * is_context) + position
            patches = patches * ~is_context  # the sequence itself no longer carries the context
            if self.conditioning == "adaln":
                pooled = (ctx_tokens * is_context).sum((1, 2)) / is_context.sum((1, 2)).clamp(min=1)
                c = c + self.context_pool(pooled)
            else:
                null = self.null_context.expand(b, 1, self.dim).to(ctx_tokens.dtype)
                context = torch.cat([null, ctx_tokens.flatten(1, 2)], 1)  # (B, 1 + T N, D)
                keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device),
                                  is_context.flatten(1, 3)], 1)
                context_mask = keep[:, None, None, :]  # (B, 1, 1, keys): attend to context + null only
        tokens = self.embed(patches) + position + known_fraction * self.known_embed
        band = band_mask(t, self.temporal_distance, x.device)  # None unless conv_in_time
        text, text_mask = self.text_proj(cond) if self.text_proj is not None else (None, None)
        for block in self.blocks:
            tokens = block(tokens, c, context, context_mask, text, text_mask, band)
        shift, scale = self.final_ada(c)
        out = self.final(modulate(self.final_norm(tokens), shift[:, None, None], scale[:, None, None]))
        return unpatchify(out, p, ch, h, w), None  # no state to carry between sampler steps
