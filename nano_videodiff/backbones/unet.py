"""An ADM-style image U-Net, applied to every frame of a video on its own.

Papers: ADM, Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", Sec. 3 (the
architecture improvements: attention at several resolutions, BigGAN-style residual blocks, adaptive group
normalisation "AdaGN", here called scale-shift norm); Video LDM, Blattmann et al. 2023, "Align your
Latents", Sec. 3.1 (a pretrained image model whose layers become the *spatial* layers l_theta of a video
model); Snap Video, Menapace et al. 2024, Table 7 (the U-Net baselines, ``unet_config``).

Shape walk-through (B videos, T frames, C channels, H x W pixels, widths w_i = channels * channel_mult[i]):

    x (B, T, C, H, W) --fold time into batch--> (B*T, C, H, W) --conv_in--> (B*T, w_0, H, W)
    down path:  level i: num_res_blocks x [ResBlock (+ self-attention)], then Downsample (H, W halve)
    middle:     ResBlock, self-attention, ResBlock at the lowest resolution
    up path:    level i: (num_res_blocks + 1) x [concat a skip, ResBlock (+ attention)], then Upsample
    GroupNorm, SiLU, zero-initialised conv_out --unfold--> (B, T, C, H, W)

Every output of the down path (conv_in, each step, each Downsample) is pushed on a stack; each up-path
step pops one and concatenates it to its input (ADM's skip connections). Frames never meet: the same
module is an image model (T = 1) and the spatial part of a video model (``temporal_alignment.py``).

Conditioning: emb = MLP(Fourier(c_noise)) (+ a label embedding), one vector per image that scales and
shifts the second GroupNorm of every ResBlock. The backbone contract is the one in ``backbone.py``:
``forward(x, c_noise, cond) -> (out, None)``; it reads ``cond.labels`` (if num_classes > 0) and ignores the rest:
known (context) frames reach it only as the clean content the Denoiser puts into its input, and an image
model, seeing one frame at a time, cannot use them for the other frames.

Hooks for Video LDM: every ``ResBlock`` and ``AttentionBlock`` is a *spatial layer* with an ``index`` (its
position in forward order, ``spatial_layers()``), a resolution ``level`` and its ``channels``.
``forward_frames(x, emb, after_layer)`` calls ``h = after_layer(index, h)`` after each of them, which is
where Video LDM interleaves its temporal layers, with no copy of this forward pass.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .base import Backbone
from ..conditioning import Cond
from .layers import Attention, LabelEmbedder, NoiseEmbedder, check_video, modulate, stage_embedder
from ..errors import UserError
from ..text import TextProjection, token_dim


def group_norm(channels: int) -> nn.GroupNorm:
    """ADM's GroupNorm(32, C); narrow toy layers use the largest group count dividing C."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias: a residual branch ending in it starts as the identity (ADM)."""
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


def parse_ints(text) -> tuple:
    """"1,2,2" -> (1, 2, 2); tuples and lists pass through (config strings or Python values)."""
    if isinstance(text, str):
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    return tuple(int(v) for v in text)


class ResBlock(nn.Module):
    """ADM's residual block with scale-shift norm (AdaGN, ADM Sec. 3):

        h = conv(SiLU(GN(x)));   (scale, shift) = Linear(SiLU(emb))
        out = skip(x) + zero_conv(Dropout(SiLU(GN(h) * (1 + scale) + shift)))

    skip is a 1x1 conv when the width changes, else the identity.
    """

    def __init__(self, in_channels: int, channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.channels = channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * channels)
        self.norm2 = group_norm(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(channels, channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == channels else nn.Conv2d(in_channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = modulate(self.norm2(h), shift, scale)
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions of each image (ADM): x + proj(attn(GN(x))), proj zero-init.

    With ``text``: then ordinary cross-attention from every position to the text tokens,
    x + proj(attn(LN(x), text)), proj zero-init: how Stable Diffusion's U-Net, Video LDM's image model
    (Video LDM Sec. 4, kept frozen there), reads its text encoder's tokens.
    """

    def __init__(self, channels: int, heads: int, text: bool = False):
        super().__init__()
        self.channels = channels
        self.norm = group_norm(channels)
        self.attn = Attention(channels, heads)
        zero_init(self.attn.proj)
        self.text = None
        if text:
            self.norm_text = nn.LayerNorm(channels)
            self.text = zero_init_proj(Attention(channels, heads))

    def forward(self, x: torch.Tensor, text: Optional[torch.Tensor] = None,
                text_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        tokens = rearrange(self.norm(x), "n c h w -> n (h w) c")
        x = x + rearrange(self.attn(tokens), "n (h w) c -> n c h w", h=height, w=width)
        if self.text is None or text is None:
            return x
        tokens = self.norm_text(rearrange(x, "n c h w -> n (h w) c"))
        out = self.text(tokens, text.to(tokens.dtype), attn_mask=text_mask[:, None, None, :])
        return x + rearrange(out, "n (h w) c -> n c h w", h=height, w=width)


def zero_init_proj(attention: Attention) -> Attention:
    zero_init(attention.proj)
    return attention


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (ADM's conv_resample=True)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour repeat, then a 3x3 conv (ADM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


SPATIAL_LAYERS = (ResBlock, AttentionBlock)


def step_width(step) -> int:
    """The width of a step's attention block (the text it reads is projected to it); 0 if it has none."""
    return next((layer.channels for layer in step if isinstance(layer, AttentionBlock)), 0)


class Step(nn.ModuleList):
    """One entry of the down/middle/up path: its layers in order; it takes or gives one skip tensor."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, after_layer: Optional[Callable] = None, text=(None, None)):
        for layer in self:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h, *text) if isinstance(layer, AttentionBlock) \
                else layer(h)
            if after_layer is not None and isinstance(layer, SPATIAL_LAYERS):
                h = after_layer(layer.index, h)
        return h


class UNet(Backbone):
    """The backbone contract (backbone.py): ``forward(x, c_noise, cond) -> (out, None)``, out.shape == x.shape.

    x: (B, T, C, H, W), H and W divisible by 2^(levels-1); each frame is an independent image.
    c_noise: (B,) = ln(sigma) / 4.   cond: reads ``labels`` (if num_classes > 0), ``stage`` (if num_stages > 0),
    ``text`` / ``text_mask`` (if text_dim > 0: cross-attention after every self-attention), ignores the rest.

    channels, channel_mult: width of level i is channels * channel_mult[i] (ADM's model_channels, mult).
    attn_resolutions: feature-map sizes (in pixels, of an ``image_size`` input) that get self-attention,
    like ADM's attention_resolutions; the middle block always has attention (ADM). ``image_size`` is an int
    or (H, W); for non-square frames the longer side is the one counted, so a 36x64 frame gets attention at
    the same levels as a 64x64 one (the choice is per level, i.e. per downsampling factor).
    heads / head_channels: a fixed number of heads, or (head_channels > 0) width / head_channels heads
    (ADM's num_heads / num_head_channels). emb_dim: width of the noise/label embedding (0 = 4 * channels).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions: Sequence[int] = (8,), image_size: Union[int, Sequence[int]] = 32,
                 heads: int = 4, head_channels: int = 0, emb_dim: int = 0, num_classes: int = 0,
                 dropout: float = 0.0, num_stages: int = 0, text_dim: int = 0):
        super().__init__()
        emb_dim = emb_dim or 4 * channels
        self.in_channels, self.num_levels, self.emb_dim = in_channels, len(channel_mult), emb_dim
        widths = [channels * m for m in channel_mult]
        # ADM: sinusoidal features of width model_channels, then Linear -> SiLU -> Linear.
        self.noise_embed = NoiseEmbedder(emb_dim, num_features=channels)
        self.label_embed = LabelEmbedder(num_classes, emb_dim) if num_classes > 0 else None
        self.stage_embed = stage_embedder(num_stages, emb_dim)  # Video LDM's interpolation stage

        def res(cin, cout, level):
            block = ResBlock(cin, cout, emb_dim, dropout)
            block.level = level
            return block

        def attn(ch, level):
            block = AttentionBlock(ch, ch // head_channels if head_channels else heads, text=text_dim > 0)
            block.level = level
            return block

        side = max(image_size) if isinstance(image_size, (tuple, list)) else image_size

        def attends(level):
            return side // 2**level in attn_resolutions

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down_blocks, skip_widths, ch = nn.ModuleList(), [channels], channels
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down_blocks.append(Step([res(ch, width, level)] + ([attn(width, level)] if attends(level) else [])))
                ch = width
                skip_widths.append(ch)
            if level < self.num_levels - 1:
                self.down_blocks.append(Step([Downsample(ch)]))
                skip_widths.append(ch)
        bottom = self.num_levels - 1
        self.middle = Step([res(ch, ch, bottom), attn(ch, bottom), res(ch, ch, bottom)])
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_widths.pop(), widths[level], level)]
                ch = widths[level]
                layers += [attn(ch, level)] if attends(level) else []
                layers += [Upsample(ch)] if level > 0 and i == num_res_blocks else []
                self.up_blocks.append(Step(layers))
        widths_with_text = sorted({m.channels for m in self.modules() if isinstance(m, AttentionBlock)}) if text_dim else []
        self.text_proj = nn.ModuleDict({str(w): TextProjection(text_dim, w) for w in widths_with_text})
        self.norm_out = group_norm(ch)
        self.conv_out = zero_init(nn.Conv2d(ch, in_channels, 3, padding=1))  # the U-Net starts at F = 0
        for index, layer in enumerate(self.spatial_layers()):
            layer.index = index

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> "UNet":
        m = model_cfg
        unet = cls(in_channels=data_cfg.channels, channels=m.unet_channels,
                   channel_mult=parse_ints(m.unet_channel_mult), num_res_blocks=m.unet_num_res_blocks,
                   attn_resolutions=parse_ints(m.unet_attn_resolutions), image_size=data_cfg.size,
                   heads=m.heads, num_classes=data_cfg.num_classes, dropout=m.unet_dropout,
                   num_stages=m.num_stages, text_dim=token_dim(m))
        factor = 2 ** (unet.num_levels - 1)
        if data_cfg.height % factor or data_cfg.width % factor:
            raise UserError(f"frames of {data_cfg.height}x{data_cfg.width} must be divisible by {factor} in both "
                            f"directions for a U-Net "
                            f"with {unet.num_levels} levels (--unet_channel_mult={m.unet_channel_mult})")
        return unet

    def spatial_layers(self) -> list:
        """Every ResBlock and AttentionBlock in forward order (registration order is forward order)."""
        return [m for m in self.modules() if isinstance(m, SPATIAL_LAYERS)]

    def embed(self, c_noise: torch.Tensor, cond: Cond, batch: int) -> torch.Tensor:
        """emb = MLP(Fourier(c_noise)) (+ augmentation level) + label embedding (+ stage embedding): (B, emb_dim),
        one vector per video."""
        emb = self.noise_embed(torch.as_tensor(c_noise).expand(batch), cond)
        if self.label_embed is not None:
            emb = emb + self.label_embed.of(cond, emb.device)
        if self.stage_embed is not None:
            emb = emb + self.stage_embed.of(cond, batch, emb.device)
        return emb

    def check_input(self, x: torch.Tensor) -> None:
        check_video(x, self.in_channels)
        factor = 2 ** (self.num_levels - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"frames {x.shape[-2]}x{x.shape[-1]} must be divisible by {factor}: this U-Net "
                             f"halves them {self.num_levels - 1} times")

    def frame_text(self, cond: Cond, frames: int) -> dict:
        """Per attention width, ``(text tokens, mask)`` repeated for each of the ``frames`` frames of a video."""
        out = {}
        for width, proj in self.text_proj.items():
            tokens, mask = proj(cond)
            if tokens is not None:
                out[int(width)] = (tokens.repeat_interleave(frames, 0), mask.repeat_interleave(frames, 0))
        return out

    def forward_frames(self, x: torch.Tensor, emb: torch.Tensor,
                       after_layer: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None,
                       text: Optional[dict] = None) -> torch.Tensor:
        """The U-Net on a batch of images (N, C, H, W) with embeddings (N, emb_dim).

        ``after_layer(index, h) -> h`` runs after every spatial layer (Video LDM's temporal layers);
        ``text`` is ``frame_text``'s {width: (tokens, mask)} (None = no text).
        """
        text = text or {}
        h = self.conv_in(x)
        skips = [h]

        def run(step, h):
            return step(h, emb, after_layer, text.get(step_width(step), (None, None)))
        for step in self.down_blocks:
            h = run(step, h)
            skips.append(h)
        h = run(self.middle, h)
        for step in self.up_blocks:
            h = run(step, torch.cat([h, skips.pop()], dim=1))
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Optional[Cond] = None):
        cond = cond if cond is not None else Cond()
        self.check_input(x)
        b, t = x.shape[:2]
        emb = self.embed(c_noise, cond, b).repeat_interleave(t, dim=0)  # the same embedding for every frame
        out = self.forward_frames(rearrange(x, "b t c h w -> (b t) c h w"), emb, text=self.frame_text(cond, t))
        return rearrange(out, "(b t) c h w -> b t c h w", b=b), None  # no state between sampler steps


# Snap Video Table 7: the U-Net baselines (ADM adapted to video by interleaving temporal attention).
# Given: 16x64x40 input (T x W x H), base channels, channel multipliers, 2 residual blocks, attention at
# [32, 16, 8], 64 attention head channels, "conditioning channels" 768, dropout 0.1, scale-shift norm, and
# the sizes 85M / 284M. Inferred: the attention resolutions refer to the 64-pixel side (ADM's
# image_size // resolution: the 2nd-4th levels); "conditioning channels" is the embedding width (768 for
# both, although ADM's 4 x channels rule gives it only for 284M); conv resampling (no resblock_updown); RGB
# pixels (the first stage runs in pixel space); the sizes count the *video* U-Net. These spatial U-Nets have
# 60.5M / 209.9M parameters; ``temporal_alignment.unet_baseline`` adds a temporal attention + MLP layer
# after each of their 16 attention layers: 79.0M (-7%) / 281.3M (-1%). Text conditioning (T5 cross-
# attention in Snap Video) is not modelled, which is one reason to expect fewer parameters than the paper.
SNAPVIDEO_UNETS = {
    "unet_85m": dict(in_channels=3, channels=128, channel_mult=(1, 2, 2, 3), num_res_blocks=2,
                     attn_resolutions=(32, 16, 8), image_size=64, head_channels=64, emb_dim=768, dropout=0.1),
    "unet_284m": dict(in_channels=3, channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=2,
                      attn_resolutions=(32, 16, 8), image_size=64, head_channels=64, emb_dim=768, dropout=0.1),
}
PAPER_PARAMETERS = {"unet_85m": 85e6, "unet_284m": 284e6}


def unet_config(name: str) -> dict:
    """Keyword arguments of ``UNet`` for a Snap Video Table 7 baseline: ``UNet(**unet_config("unet_284m"))``."""
    if name not in SNAPVIDEO_UNETS:
        raise ValueError(f"unknown U-Net preset {name!r}; available: {', '.join(SNAPVIDEO_UNETS)}")
    return dict(SNAPVIDEO_UNETS[name])
