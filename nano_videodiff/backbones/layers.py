"""Building blocks shared by every transformer backbone: attention, MLP, adaLN, embeddings, patches.

Backbones (``vdt.py``, and later FIT, W.A.L.T) compose these; they do not copy them.
All attention goes through ``torch.nn.functional.scaled_dot_product_attention`` so PyTorch picks the
fastest kernel (flash / memory-efficient on CUDA, a fused kernel on CPU).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..conditioning import DROPPED_LABEL
from ..hardware import explicit_bf16_attention
from ..errors import UserError


# Up to this many keys, CPU bf16 attention is faster as two explicit matmuls than PyTorch's fused kernel
# (forward + backward, one thread: 16 keys 62 vs 216 ms, 64 keys 44 vs 127, 144 keys 91 vs 177; at 256
# keys 160 vs 136 and at 576 keys 368 vs 299 the fused kernel wins, and it never stores the N x N logits).
EXPLICIT_ATTENTION_MAX_KEYS = 256


def attention(q, k, v, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v for (..., heads, N, d) tensors; ``attn_mask`` bool (True = attend).

    ``scaled_dot_product_attention`` everywhere except one measured case: on CPU under bf16 autocast with
    short sequences (the temporal and spatial attention of the toy models), PyTorch's fused CPU kernel is
    several times slower than writing the two matmuls out, which then run on the CPU's bf16 matrix units
    (benchmarks/throughput.py prints both; ``EXPLICIT_ATTENTION_MAX_KEYS`` holds the crossover). Only
    where bf16 matmuls are fast (``hardware.explicit_bf16_attention``): on an AVX2-only CPU they are not.
    """
    if (q.device.type == "cpu" and q.dtype == torch.bfloat16 and k.shape[-2] <= EXPLICIT_ATTENTION_MAX_KEYS
            and explicit_bf16_attention()):
        logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        if attn_mask is not None:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        return logits.float().softmax(-1).to(v.dtype) @ v  # softmax in fp32 for accuracy
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


class Attention(nn.Module):
    """Multi-head attention over tokens ``(B, N, D)``; self-attention, or cross-attention with ``context``.

    qk_norm: RMS-normalise queries and keys per head before the dot product (used by W.A.L.T Sec. 4.3
    and ViT-22B to keep attention logits bounded, which stabilises training of larger models).
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool = False, context_dim: Optional[int] = None):
        super().__init__()
        if dim % heads:
            raise UserError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.qk_norm = qk_norm
        if qk_norm:  # learnable per-channel gains of the RMS norms
            self.q_gain = nn.Parameter(torch.ones(self.head_dim))
            self.k_gain = nn.Parameter(torch.ones(self.head_dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        if self.qk_norm:  # gains cast to the activation dtype so bf16 autocast keeps the fused kernel
            q = F.rms_norm(q, (self.head_dim,), self.q_gain.to(q.dtype))
            k = F.rms_norm(k, (self.head_dim,), self.k_gain.to(k.dtype))
        out = attention(q, k, v, attn_mask)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    """The transformer feed-forward: Linear -> GELU (tanh approximation, as DiT) -> Linear."""

    def __init__(self, dim: int, ratio: float = 4.0, out_dim: Optional[int] = None):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, out_dim or dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN (DiT, Peebles & Xie 2023): ``x * (1 + scale) + shift``; scale = shift = 0 is the identity."""
    return x * (1 + scale) + shift


class AdaLNModulation(nn.Module):
    """Maps the conditioning vector c to ``n`` modulation vectors (shifts, scales, gates).

    Zero-initialised ("adaLN-Zero", DiT Sec. 3.2): at init every gate is 0, so each residual branch
    starts as the identity and the network starts as a function of the skip path only.
    """

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.linear = nn.Linear(dim, n * dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c: torch.Tensor):
        return self.linear(F.silu(c)).chunk(self.n, dim=-1)


def fourier_features(values: torch.Tensor, dim: int, max_freq: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of scalars: sin/cos at ``dim/2`` geometrically spaced frequencies 1..max_freq.

    Used for c_noise = ln(sigma)/4 (roughly in [-2, 1.5]) and frame intervals in seconds (0 = image).
    """
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), half, device=values.device))
    angles = values.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ScalarEmbedder(nn.Module):
    """A scalar per sample (noise level, frame interval, ...) -> a ``dim`` vector: Fourier features + MLP."""

    def __init__(self, dim: int, num_features: int = 256):
        super().__init__()
        self.num_features = num_features
        self.mlp = nn.Sequential(nn.Linear(num_features, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.mlp(fourier_features(values, self.num_features))


class NoiseEmbedder(ScalarEmbedder):
    """The noise level's embedding, ``emb(c_noise)``; in a super-resolution stage (upsampler.py) plus
    ``emb_aug(ln(1 + sigma_aug))``, the level of the noise augmentation of its low-resolution input.

    Noise conditioning augmentation (Ho et al. 2022, "Cascaded Diffusion Models", arXiv 2106.15282, Sec. 4.2;
    W.A.L.T arXiv 2312.06662 Sec. 4.5: t_sr fed into AdaLN-LoRA; Video LDM arXiv 2304.08818 Sec. 3.2): the
    model is told how noisy its conditioning is, added to the noise embedding, so that every backbone's
    adaLN / conditioning tokens receive it. ``enable_augmentation`` adds the branch with a zero-initialised
    last layer: at init it adds exactly 0 and the backbone is unchanged. ``cond.aug_sigma`` None means 0.
    """

    def __init__(self, dim: int, num_features: int = 256):
        super().__init__(dim, num_features)
        self.augmentation = None

    def enable_augmentation(self) -> None:
        dim = self.mlp[-1].out_features
        self.augmentation = ScalarEmbedder(dim, self.num_features)
        nn.init.zeros_(self.augmentation.mlp[-1].weight)
        nn.init.zeros_(self.augmentation.mlp[-1].bias)

    def forward(self, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
        emb = super().forward(c_noise)
        if self.augmentation is None:
            return emb
        sigma = None if cond is None else cond.aug_sigma
        sigma = torch.zeros(emb.shape[0], device=emb.device) if sigma is None else sigma.to(emb.device).float()
        return emb + self.augmentation(torch.log1p(sigma.expand(emb.shape[0])))


class LabelEmbedder(nn.Module):
    """Class / scenario labels -> vectors, with one extra learned row for DROPPED_LABEL (guidance)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        bad = (labels >= self.num_classes) | ((labels < 0) & (labels != DROPPED_LABEL))
        if bad.any():
            raise ValueError(f"labels must be in [0, {self.num_classes}) or DROPPED_LABEL={DROPPED_LABEL}")
        return self.table(torch.where(labels == DROPPED_LABEL, self.num_classes, labels))

    def of(self, cond, device) -> torch.Tensor:
        """The embedding of ``cond.labels``; a model built with labels must be given them."""
        if cond.labels is None:
            raise ValueError("this model was trained with labels (num_classes > 0): pass cond.labels "
                             "(use DROPPED_LABEL for unconditional samples)")
        return self(cond.labels.to(device))


class StageEmbedder(nn.Module):
    """Which stage of Video LDM's interpolation stack a sample is in (``cond.stage``) -> a learned vector.

    Video LDM (Blattmann et al. 2023, arXiv 2304.08818) Sec. 4 trains one model for T -> 4T and 4T -> 16T,
    "distinguished by a binary conditioning"; like the label embedding it is added to the noise embedding.
    ``cond.stage`` None means stage 0. Built only for ``num_stages > 0``, so other checkpoints are unchanged.
    """

    def __init__(self, num_stages: int, dim: int):
        super().__init__()
        self.num_stages = num_stages
        self.table = nn.Embedding(num_stages, dim)

    def of(self, cond, batch: int, device) -> torch.Tensor:
        stage = cond.stage
        if stage is None:
            stage = torch.zeros(batch, dtype=torch.long)
        stage = torch.as_tensor(stage, device=device)
        if stage.dtype not in (torch.int32, torch.int64) or ((stage < 0) | (stage >= self.num_stages)).any():
            raise ValueError(f"cond.stage must be integers in [0, {self.num_stages}), got {stage.tolist()}")
        return self.table(stage.expand(batch))


def stage_embedder(num_stages: int, dim: int) -> Optional[StageEmbedder]:
    return StageEmbedder(num_stages, dim) if num_stages > 0 else None


def conditioning_vector(noise_embed, interval_embed, label_embed, c_noise, cond, batch: int,
                        stage_embed: Optional[StageEmbedder] = None) -> torch.Tensor:
    """c = emb(c_noise) + emb(frame interval) + emb(label) (+ emb(stage)) (label, stage only if their
    embedders are not None): the one vector per video that drives adaLN in VDT and W.A.L.T (DiT's
    conditioning, plus frame rate)."""
    c = noise_embed(c_noise, cond) + interval_embed(frame_intervals(cond, batch, c_noise.device))
    if label_embed is not None:
        c = c + label_embed.of(cond, c.device)
    if stage_embed is not None:
        c = c + stage_embed.of(cond, batch, c.device)
    return c


def frame_intervals(cond, batch: int, device) -> torch.Tensor:
    """``cond.frame_interval`` as (B,) float seconds; not given means interval 0 for every sample."""
    interval = cond.frame_interval
    if interval is None:
        return torch.zeros(batch, device=device)
    return torch.as_tensor(interval, device=device).float().expand(batch)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, N, C*p*p) with N = (H/p)(W/p): each frame cut into p x p patches."""
    return rearrange(x, "b t c (h p1) (w p2) -> b t (h w) (c p1 p2)", p1=p, p2=p)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Inverse of ``patchify``: (B, T, N, C*p*p) -> (B, T, C, H, W)."""
    return rearrange(tokens, "b t (h w) (c p1 p2) -> b t c (h p1) (w p2)",
                     h=height // p, w=width // p, c=channels, p1=p, p2=p)


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sinusoidal embedding of integer positions (Vaswani et al. 2017): (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sinusoidal embedding (as DiT/VDT): half the channels encode the row, half the column."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.cat([sincos_1d(rows.flatten(), dim // 2), sincos_1d(cols.flatten(), dim // 2)], dim=-1)


def check_video(x: torch.Tensor, channels: int, patch_size: int = 1, name: str = "x") -> None:
    """Fail early and clearly on inputs a backbone cannot take (shapes, dtype, NaN)."""
    if x.ndim != 5:
        raise ValueError(f"{name} must be a video batch (B, T, C, H, W); got shape {tuple(x.shape)}. "
                         "For an image batch (B, C, H, W) use x.unsqueeze(1).")
    if x.shape[2] != channels:
        raise ValueError(f"{name} has {x.shape[2]} channels but the model was built for {channels}")
    if x.shape[-2] % patch_size or x.shape[-1] % patch_size:
        raise ValueError(f"{name} frames {x.shape[-2]}x{x.shape[-1]} are not divisible by the patch size "
                         f"{patch_size}; resize or pad the input")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
