"""W.A.L.T's window-attention transformer: the backbone (Gupta et al. 2023, "Photorealistic Video Generation
with Diffusion Models", arXiv 2312.06662, Sec. 4.2-4.4, Fig. 2, Table 8).
The ideas it stacks (windows, the identity mask for images, AdaLN-LoRA) are in ``window_attention.py``.

Shape walk-through for one forward pass (B samples, T frames, C channels, H x W, patch p):

    x (B, T, C, H, W) --concat(x, known*x, known)--> (B, T, 2C+1, H, W)          frame prediction, Sec. 4.4
      --patchify each frame--> (B, T, N, (2C+1) p^2) --linear--> tokens (B, T, H/p, W/p, D)
      + learnable space embedding (per patch position) + learnable time embedding (per frame)   Sec. 4.2
    block 1, 3, 5, ...: spatial window        1 x H/p x W/p      + MLP
    block 2, 4, 6, ...: spatiotemporal window wt x wh x ww       + MLP   (images: identity, Sec. 4.2)
    final adaLN + linear --unpatchify--> (B, T, C, H, W)

A block is one window self-attention + one MLP, both pre-norm and modulated by that block's 6 vectors A_i
from AdaLN-LoRA (Eq. 3); ``depth`` counts blocks, i.e. Table 8's "layers" (24 for W.A.L.T-L: 12 spatial, 12
spatiotemporal). The conditioning is c = emb(c_noise) + emb(label) + emb(frame interval); q and k are
RMS-normalised (qk-norm, Sec. 5.2). The output layer is zero-initialised, so the network starts at 0.

Conditioning on given frames (Sec. 4.4): W.A.L.T concatenates c_fp = (m * z, m) to the noisy latent along
channels. Here the Denoiser has already put the known content (at unit scale) into x at known positions,
so the patch embedding reads ``concat(x, known * x, known)``: the known content on its own channels and a
one-channel mask. With no ``cond.known`` both extra inputs are zeros (the same network, unconditional).

Images: ``cond.is_image`` (B,) marks samples whose T frames are independent images (modality.py). Each such
frame is what the paper feeds as a one-frame image: it gets the time embedding of the first frame (the
paper's rule, Sec. 4.2), the spatial blocks see each frame alone, and the spatiotemporal blocks pass it
through unchanged, so every frame of an image sample is processed exactly as the same frame alone would be.

Text (Sec. 4.3, ``TextAttention``): after each block's window attention, a cross-attention whose queries are
the frame's tokens and whose keys and values are the concatenation [the frame's tokens; the text tokens]
(``text_attention="concat"``), or the text tokens alone (``"cross"``, plain cross-attention: the ablation).
The "block's own tokens" are taken per frame (a spatial window), so text never mixes frames and image
samples stay independent frames. Gated, zero-initialised: at init the text changes nothing.

Not implemented: relative position embeddings (Swin-style, Sec. 4.2), self-conditioning (Sec. 4.3); the
exact sub-layer order of Fig. 2 is unconfirmed.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .base import Backbone
from ..conditioning import Cond
from .layers import (AdaLNModulation, Attention, LabelEmbedder, Mlp, NoiseEmbedder, ScalarEmbedder, check_video,
                     conditioning_vector, modulate, patchify, stage_embedder, unpatchify)
from .window_attention import AdaLNLoRA, WindowAttentionLayer, check_window
from ..errors import UserError
from ..text import TextProjection, token_dim


TEXT_ATTENTION = ("concat", "cross")


class TextAttention(nn.Module):
    """x + gate * Attn(q = LN(x) of a frame, k = v = [LN(x) of the frame; text]) (W.A.L.T Sec. 4.3), or
    k = v = text alone (``kind="cross"``). x (B, T, H, W, D); text (B, L, D) with mask (B, L)."""

    def __init__(self, dim: int, heads: int, kind: str = "concat", qk_norm: bool = True):
        super().__init__()
        if kind not in TEXT_ATTENTION:
            raise UserError(f"unknown --walt_text_attention={kind!r}; choose from {', '.join(TEXT_ATTENTION)}")
        self.kind = kind
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, qk_norm)
        self.gate = nn.Parameter(torch.zeros(dim))  # zero: the layer starts as the identity

    def keys(self, queries: torch.Tensor, text: torch.Tensor, mask: torch.Tensor):
        """(keys/values (N', M, D), mask (N', M)) for queries (N', n, D) of N' = B*T frames."""
        if self.kind == "cross":
            return text, mask
        own = torch.ones(queries.shape[:2], dtype=torch.bool, device=queries.device)
        return torch.cat([queries, text.to(queries.dtype)], 1), torch.cat([own, mask], 1)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        q = self.norm(x).flatten(2, 3).flatten(0, 1)  # (B*T, H*W, D): one frame per row
        context, keep = self.keys(q, text.repeat_interleave(t, 0), mask.repeat_interleave(t, 0))
        out = self.attn(q, context, attn_mask=keep[:, None, None, :])
        return x + self.gate * out.reshape(x.shape)


class WALTBlock(nn.Module):
    """Window self-attention (spatial or spatiotemporal) then an MLP, modulated by A_i = 6 vectors (B, 6D):
    (shift, scale, gate) of the attention and of the MLP: Eq. 3's beta_1, gamma_1, alpha_1, beta_2, gamma_2, alpha_2."""

    def __init__(self, dim: int, heads: int, kind: str, window: Sequence[int], mlp_ratio: float = 4.0,
                 qk_norm: bool = True, text_attention: str = ""):
        super().__init__()
        self.attn = WindowAttentionLayer(dim, heads, kind, window, qk_norm)
        self.text = TextAttention(dim, heads, text_attention, qk_norm) if text_attention else None
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor, is_image: Optional[torch.Tensor] = None,
                text: Optional[torch.Tensor] = None, text_mask: Optional[torch.Tensor] = None):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (m[:, None, None, None] for m in modulation.chunk(6, -1))
        x = self.attn(x, shift_a, scale_a, gate_a, is_image)
        if self.text is not None and text is not None:
            x = self.text(x, text, text_mask)
        return x + gate_m * self.mlp(modulate(self.norm_mlp(x), shift_m, scale_m))


class WALT(Backbone):
    """The backbone contract (backbone.py): ``forward(x, c_noise, cond) -> (out, None)``, out.shape == x.shape.

    x:       (B, T, C, H, W), already scaled by c_in; T <= num_frames, H = height, W = width.
    c_noise: (B,) = ln(sigma) / 4.
    cond:    reads ``labels`` (if num_classes > 0), ``frame_interval``, ``known``, ``is_image``, ``stage`` and (if
             text_dim > 0) ``text`` / ``text_mask``.
    window:  the spatiotemporal window (frames, height, width) in tokens; 0 = the whole axis (the paper's
             1 + t frames is 0). It must divide the token grid (T, H/p, W/p).
    adaln_lora_rank: r of Eq. 3; 0 = a separate full adaLN per block.
    """

    def __init__(self, in_channels: int = 3, num_frames: int = 16, height: int = 32, width: int = 32,
                 patch_size: int = 4, dim: int = 128, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
                 num_classes: int = 0, qk_norm: bool = True, window: Sequence[int] = (0, 4, 4),
                 adaln_lora_rank: int = 2, num_stages: int = 0, text_dim: int = 0, text_attention: str = "concat"):
        super().__init__()
        if height % patch_size or width % patch_size:
            raise UserError(f"frames {height}x{width} are not divisible by the patch size {patch_size}")
        self.in_channels, self.patch_size, self.dim, self.num_frames = in_channels, patch_size, dim, num_frames
        self.grid = (height // patch_size, width // patch_size)
        self.window = tuple(window)
        check_window(self.window, (num_frames, *self.grid), "spatiotemporal window")
        self.embed = nn.Linear((2 * in_channels + 1) * patch_size**2, dim)  # reads concat(x, known*x, known)
        self.space_embed = nn.Parameter(torch.randn(*self.grid, dim) * 0.02)  # learnable absolute positions
        self.time_embed = nn.Parameter(torch.randn(num_frames, dim) * 0.02)
        self.noise_embed = NoiseEmbedder(dim)
        self.interval_embed = ScalarEmbedder(dim)
        self.label_embed = LabelEmbedder(num_classes, dim) if num_classes > 0 else None
        self.stage_embed = stage_embedder(num_stages, dim)
        kinds = ["spatial" if i % 2 == 0 else "spatiotemporal" for i in range(depth)]
        self.text_proj = TextProjection(text_dim, dim) if text_dim else None
        text_attention = text_attention if text_dim else ""
        self.blocks = nn.ModuleList(WALTBlock(dim, heads, k, self.window, mlp_ratio, qk_norm, text_attention)
                                    for k in kinds)
        self.modulation = AdaLNLoRA(dim, depth, adaln_lora_rank)
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = AdaLNModulation(dim, 2)
        self.final = nn.Linear(dim, in_channels * patch_size**2)
        nn.init.zeros_(self.final.weight)  # zero output at init: D starts as c_skip * x_sigma
        nn.init.zeros_(self.final.bias)

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> "WALT":
        return cls(in_channels=data_cfg.channels, num_frames=data_cfg.num_frames, height=data_cfg.height,
                   width=data_cfg.width, patch_size=model_cfg.patch_size, dim=model_cfg.dim,
                   depth=model_cfg.depth, heads=model_cfg.heads, mlp_ratio=model_cfg.mlp_ratio,
                   num_classes=data_cfg.num_classes, qk_norm=model_cfg.qk_norm,
                   window=(model_cfg.walt_window_t, model_cfg.walt_window_h, model_cfg.walt_window_w),
                   adaln_lora_rank=model_cfg.adaln_lora_rank, num_stages=model_cfg.num_stages,
                   text_dim=token_dim(model_cfg), text_attention=model_cfg.walt_text_attention)

    def conditioning_vector(self, c_noise: torch.Tensor, cond: Cond, batch: int) -> torch.Tensor:
        """c = emb(c_noise) + emb(frame interval) + emb(label) + emb(stage): one vector per video for adaLN."""
        return conditioning_vector(self.noise_embed, self.interval_embed, self.label_embed, c_noise, cond, batch,
                                   self.stage_embed)

    def positions(self, batch: int, frames: int, is_image: Optional[torch.Tensor]) -> torch.Tensor:
        """Space + time embedding (B, T, H/p, W/p, D); every frame of an image sample gets frame 0's time."""
        frame = torch.arange(frames, device=self.time_embed.device).expand(batch, frames)
        if is_image is not None:
            frame = torch.where(is_image.to(frame.device)[:, None], 0, frame)
        return self.space_embed[None, None] + self.time_embed[frame][:, :, None, None]

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Optional[Cond] = None):
        cond = cond if cond is not None else Cond()
        check_video(x, self.in_channels, self.patch_size)
        b, t, ch, h, w = x.shape
        p = self.patch_size
        if t > self.num_frames or (h // p, w // p) != self.grid:
            raise ValueError(f"this WALT was built for up to {self.num_frames} frames of "
                             f"{self.grid[0] * p}x{self.grid[1] * p} (learned position embeddings); got {t} frames "
                             f"of {h}x{w}. Build it with num_frames/height/width (data config) for this shape")
        check_window(self.window, (t, *self.grid), "spatiotemporal window")
        known = torch.zeros(b, t, 1, h, w, dtype=x.dtype, device=x.device)
        if cond.known is not None:
            known = cond.known.to(x.device).expand(b, t, 1, h, w).to(x.dtype)
        patches = patchify(torch.cat([x, known * x, known], dim=2), p)  # (B, T, N, (2C+1) p^2)
        tokens = self.embed(patches).unflatten(2, self.grid)  # (B, T, H/p, W/p, D)
        tokens = tokens + self.positions(b, t, cond.is_image).to(tokens.dtype)
        c = self.conditioning_vector(c_noise, cond, b)
        text, text_mask = self.text_proj(cond) if self.text_proj is not None else (None, None)
        for block, modulation in zip(self.blocks, self.modulation(c)):
            tokens = block(tokens, modulation, cond.is_image, text, text_mask)
        shift, scale = (m[:, None, None, None] for m in self.final_ada(c))
        out = self.final(modulate(self.final_norm(tokens), shift, scale))  # (B, T, H/p, W/p, C p^2)
        return unpatchify(out.flatten(2, 3), p, ch, h, w), None  # no state between sampler steps


# ----------------------------------------------------------------------------------------------
# Paper sizes (Table 1, Table 8; the layer/width mapping is our inference: 12 L d^2 ~ the stated size),
# written once: DiT-style one-line constructors, which ``paper_configs.py`` and the tests build from.
# ----------------------------------------------------------------------------------------------

WALT_SIZES = {
    "walt_l": dict(depth=24, dim=1024, heads=16),   # Kinetics-600 frame prediction; Table 1: 313M
    "walt_xl": dict(depth=28, dim=1152, heads=16),  # UCF-101 class-conditional; Table 1: 460M
}
# The paper's input: a 17x128x128 video -> 5x16x16 latents of 8 channels, patch 1, 5x8x8 windows.
LATENT_INPUT = dict(in_channels=8, num_frames=5, height=16, width=16, patch_size=1, window=(5, 8, 8),
                    adaln_lora_rank=2, mlp_ratio=4.0, qk_norm=True)
# Classes of each paper model's dataset (a data setting, not a size: paper_configs.py uses its own 8).
PAPER_CLASSES = {"walt_l": 0, "walt_xl": 101}


def WALT_L(**kwargs) -> WALT:
    return WALT(**WALT_SIZES["walt_l"], **kwargs)


def WALT_XL(**kwargs) -> WALT:
    return WALT(**WALT_SIZES["walt_xl"], **kwargs)


WALT_MODELS = {"walt_l": WALT_L, "walt_xl": WALT_XL}
PAPER_PARAMETERS = {"walt_l": 313e6, "walt_xl": 460e6}  # Table 1 (with each dataset's classes)

WALT_PRESETS = {  # keyword arguments of the whole WALT, input and classes included
    **{name: dict(LATENT_INPUT, **WALT_SIZES[name], num_classes=PAPER_CLASSES[name]) for name in WALT_SIZES},
    # Toy: 16 frames of 32x32 RGB, patch 4 -> 16 x 8 x 8 tokens, spatiotemporal windows 16 x 4 x 4.
    "toy": dict(in_channels=3, num_frames=16, height=32, width=32, patch_size=4, dim=128, depth=4, heads=4,
                window=(0, 4, 4), adaln_lora_rank=2, num_classes=0),
}


def walt_config(name: str) -> dict:
    """Keyword arguments of ``WALT`` for a preset: ``WALT(**walt_config("walt_l"))``."""
    if name not in WALT_PRESETS:
        raise ValueError(f"unknown WALT preset {name!r}; available: {', '.join(WALT_PRESETS)}")
    return dict(WALT_PRESETS[name])
