"""Video LDM's temporal alignment: temporal layers with a learned mixing factor on a frozen image model.

Paper: Blattmann et al. 2023, "Align your Latents: High-Resolution Video Synthesis with Latent Diffusion
Models" (Video LDM, arXiv 2304.08818), Sec. 3.1 (temporal layers, alpha blending, training only the
temporal layers) and Sec. 3.1.1 (context frames for prediction and interpolation). Code notes from
Stable Video Diffusion (Stability-AI/generative-models: AlphaBlender in
``sgm/modules/diffusionmodules/util.py``, VideoResBlock in ``sgm/modules/diffusionmodules/video_model.py``,
VideoTransformerBlock in ``sgm/modules/video_attention.py``).

The idea: a pretrained image model (``unet.UNet``, its layers are the *spatial* layers l_theta^i) sees
the T frames of a video as T unrelated images. After every spatial layer we insert a *temporal* layer
l_phi^i that mixes information across frames, and blend (Sec. 3.1):

    z  = l_theta^i(...)          spatial output,  (B*T, C, H, W)
    z' = l_phi^i(z)              temporal output: '(b t) c h w -> b c t h w', mix over t, and back
    out = alpha^i z + (1 - alpha^i) z',    alpha^i = sigmoid(mix_logit^i) in (0, 1), learned per layer

Two kinds of temporal layer (Sec. 3.1): after each ResBlock a 3D-convolution residual block, kernel
(3, 1, 1) over (T, H, W) as in SVD's video_kernel_size, with the noise embedding's scale-shift norm; after
each attention block a temporal transformer block (self-attention over T at every pixel, then an MLP) with
a fixed sinusoidal frame-position embedding (the paper's "sinusoidal time embeddings").

Choices, and where they differ from the paper / SVD:
- alpha = sigmoid(mix_logit) with mix_logit = 0.5 at init, SVD's "learned_with_images" AlphaBlender
  (alpha_0 = sigmoid(0.5) = 0.622; the paper gives neither the parameterisation nor the init).
- Every temporal residual branch ends in a zero-initialised layer, so each temporal layer starts as the
  identity (z' = z) and the video model starts as the image model whatever alpha is (W.A.L.T Sec. 2 on
  Video LDM: temporal layers initialised "as the identity"). SVD adds the position embedding to the
  stream itself; we add it inside the attention branch so that the identity start is exact.
- Image-only indicator (SVD's ``image_only_indicator``, our ``cond.is_image`` (B,)): alpha = 1 for those
  samples, computed like SVD as ``where(is_image, 1, sigmoid(mix_logit))`` (not sigmoid of the where).
  ``image_only = True`` (or ``with model.image_model():``) skips every temporal layer ("setting alpha = 1",
  Sec. 3.1): the image model.
- Context (Sec. 3.1.1): c_S = (m_S * z, m_S), the masked frames concatenated with the mask, "processed
  with a learned downsampling operation" and fed channel-wise concatenated into the temporal layers. Here
  m_S is ``cond.known`` and the masked frames are the backbone's input at known positions (the Denoiser
  has put the clean context there, ``known_x / sigma_data``). A small conv encoder (stride-2 convs) turns
  them into one feature map per U-Net resolution, concatenated to the input of every 3D-conv block at that
  resolution. The temporal attention sees the context only through the stream. SVD instead concatenates
  the conditioning frame to the U-Net's input channels, which would change the frozen image model.
- Full attention over T by default; ``conv_in_time(d)`` (base.py, conv_time.py) masks it to frames at most d
  apart, the paper's "convolutional in time" sampling of long videos (Sec. 3.1, 4).
- Interpolation stack (Sec. 4, interpolation.py): the stage embedding (``num_stages > 0``) is added to the
  embedding the *temporal* layers receive only, so the frozen image model stays exactly the image model.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import masking
from .base import Backbone
from ..training.checkpoint import clean_state_dict, load_model_state
from ..conditioning import Cond
from .layers import Attention, Mlp, modulate, sincos_1d, stage_embedder
from ..conv_time import band_mask
from .unet import AttentionBlock, ResBlock, UNet, group_norm, zero_init
from ..errors import UserError

ALPHA_INIT_LOGIT = 0.5  # SVD's merge_factor with merge_strategy "learned_with_images": alpha = sigmoid(0.5)


class TemporalLayer(nn.Module):
    """A temporal layer l_phi^i and its blend ``alpha z + (1 - alpha) z'`` with the spatial output z."""

    def __init__(self):
        super().__init__()
        self.mix_logit = nn.Parameter(torch.full((1,), ALPHA_INIT_LOGIT))  # 1-D: FSDP2 cannot shard scalars

    def alpha(self, is_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """sigmoid(mix_logit); with ``is_image`` (N,) bool: (N,), exactly 1 where True."""
        alpha = torch.sigmoid(self.mix_logit)
        return alpha if is_image is None else torch.where(is_image, torch.ones_like(alpha), alpha)

    def temporal(self, z, emb, num_frames, context, band=None):  # z' = l_phi(z), (B*T, C, H, W)
        raise NotImplementedError

    def forward(self, z: torch.Tensor, emb: torch.Tensor, num_frames: int, is_image: Optional[torch.Tensor] = None,
                context: Optional[torch.Tensor] = None, band: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``band`` (T, T) bool: which frames each frame's temporal attention may read (conv_time.py)."""
        z_temporal = self.temporal(z, emb, num_frames, context, band).to(z.dtype)
        alpha = self.alpha(is_image).to(z.dtype).reshape(-1, 1, 1, 1)  # one alpha per frame (or for all)
        return alpha * z + (1 - alpha) * z_temporal


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` over (B, C, T, H, W). A (k, 1, 1) kernel runs as the same convolution written as a
    Conv2d over (T, H*W): ~6x faster forward + backward on CPU, where PyTorch's Conv3d uses a slow kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(self.kernel_size[1:]) != (1, 1):
            return super().forward(x)
        out = F.conv2d(x.flatten(3), self.weight.squeeze(-1), self.bias, padding=(self.padding[0], 0))
        return out.unflatten(3, x.shape[3:])


class TemporalConvBlock(TemporalLayer):
    """3D-conv residual block over '(b t) c h w -> b c t h w' (Video LDM Sec. 3.1; SVD VideoResBlock):

        h = conv3d(SiLU(GN([z, context])));  out = z + zero_conv3d(Dropout(SiLU(GN(h)(1 + scale) + shift)))

    kernel (3, 1, 1) mixes neighbouring frames at the same pixel (SVD); (3, 3, 3) would mix space too.
    """

    def __init__(self, channels: int, emb_dim: int, context_channels: int = 0,
                 kernel: Sequence[int] = (3, 1, 1), dropout: float = 0.0):
        super().__init__()
        padding = tuple(k // 2 for k in kernel)
        self.norm1 = group_norm(channels + context_channels)
        self.conv1 = Conv3d(channels + context_channels, channels, kernel, padding=padding)
        self.emb_proj = nn.Linear(emb_dim, 2 * channels)
        self.norm2 = group_norm(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(Conv3d(channels, channels, kernel, padding=padding))

    def temporal(self, z, emb, num_frames, context, band=None):  # a kernel of 3 frames: local by construction
        x = rearrange(z, "(b t) c h w -> b c t h w", t=num_frames)
        h = x if context is None else torch.cat([x, rearrange(context, "(b t) c h w -> b c t h w",
                                                                t=num_frames).to(x.dtype)], dim=1)
        h = self.conv1(F.silu(self.norm1(h)))
        scale, shift = rearrange(self.emb_proj(F.silu(emb)), "(b t) c -> b c t 1 1", t=num_frames).chunk(2, 1)
        h = self.conv2(self.dropout(F.silu(modulate(self.norm2(h), shift, scale))))
        return rearrange(x + h, "b c t h w -> (b t) c h w")


class TemporalAttentionBlock(TemporalLayer):
    """Self-attention over the T frames at every pixel, then an MLP (SVD's VideoTransformerBlock):

        tokens '(b t) c h w -> (b h w) t c';  tokens += attn(LN(tokens) + pos(t));  tokens += mlp(LN(tokens))

    pos(t) is the fixed sinusoidal embedding of the frame index; both branches end in zero-init layers.
    """

    def __init__(self, channels: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attn = Attention(channels, heads)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = Mlp(channels, mlp_ratio)
        zero_init(self.attn.proj)
        zero_init(self.mlp.fc2)

    def temporal(self, z, emb, num_frames, context, band=None):
        height, width = z.shape[-2:]
        tokens = rearrange(z, "(b t) c h w -> (b h w) t c", t=num_frames)
        position = sincos_1d(torch.arange(num_frames), tokens.shape[-1]).to(tokens)  # (T, C)
        tokens = tokens + self.attn(self.norm1(tokens) + position, attn_mask=band)
        tokens = tokens + self.mlp(self.norm2(tokens))
        return rearrange(tokens, "(b h w) t c -> (b t) c h w", h=height, w=width)


class ContextEncoder(nn.Module):
    """Video LDM Sec. 3.1.1's "learned downsampling" of c_S = (m_S * x, m_S): one feature map per level.

    (N, C, H, W) masked frames and (N, 1, H, W) mask -> [(N, channels, H / 2^i, W / 2^i) for each level i].
    """

    def __init__(self, in_channels: int, channels: int, num_levels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels + 1, channels, 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1)
                                  for _ in range(num_levels - 1))

    def forward(self, x: torch.Tensor, known: torch.Tensor) -> list:
        h = self.conv_in(torch.cat([x * known, known], dim=1))
        features = [h]
        for conv in self.down:
            h = conv(F.silu(h))
            features.append(h)
        return features


class VideoLDM(Backbone):
    """An image ``UNet`` with a temporal layer after each spatial layer (Video LDM Sec. 3.1).

    The backbone contract (backbone.py): ``forward(x, c_noise, cond) -> (out, None)``, out.shape == x.shape.
    Reads ``cond.labels`` (through the U-Net), ``cond.is_image`` (alpha = 1 for those samples) and
    ``cond.known`` (context frames, with the input at known positions as their content).

    temporal_conv: add the 3D-conv blocks (False: temporal attention only, Snap Video's U-Net baseline).
    context: add the context encoder (needs temporal_conv). image_only: skip every temporal layer.
    State dict: ``unet.*`` (spatial, the image model), ``temporal.<i>.*`` (after spatial layer i) and
    ``context_encoder.*``; ``temporal_parameters()`` are everything except ``unet.*``.
    """

    temporal_attention = True  # its temporal attention layers can be masked to a band (conv_in_time)

    def __init__(self, unet: UNet, temporal_conv: bool = True, temporal_kernel: Sequence[int] = (3, 1, 1),
                 context: bool = True, mlp_ratio: float = 4.0, dropout: float = 0.0, num_stages: int = 0):
        super().__init__()
        if context and not temporal_conv:
            raise UserError("context frames enter through the 3D-conv blocks: context=True needs temporal_conv")
        self.unet = unet
        self.image_only = False
        base = unet.conv_in.out_channels
        self.context_encoder = ContextEncoder(unet.in_channels, base, unet.num_levels) if context else None
        temporal = {}
        for layer in unet.spatial_layers():
            if isinstance(layer, AttentionBlock):
                temporal[str(layer.index)] = TemporalAttentionBlock(layer.channels, layer.attn.heads, mlp_ratio)
            elif isinstance(layer, ResBlock) and temporal_conv:
                temporal[str(layer.index)] = TemporalConvBlock(layer.channels, unet.emb_dim,
                                                               base if context else 0, temporal_kernel, dropout)
        self.temporal = nn.ModuleDict(temporal)
        self.stage_embed = stage_embedder(num_stages, unet.emb_dim)  # read by the temporal layers only
        self._context_level = {str(layer.index): layer.level for layer in unet.spatial_layers()}

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> "VideoLDM":
        """A VideoLDM around ``UNet.from_config``; frozen image model if ``model_cfg.freeze_image_model``."""
        image_cfg = dataclasses.replace(model_cfg, num_stages=0)  # the image model has no stages
        model = cls(UNet.from_config(image_cfg, data_cfg), temporal_conv=model_cfg.vldm_temporal_conv,
                    context=model_cfg.vldm_context, mlp_ratio=model_cfg.mlp_ratio, dropout=model_cfg.unet_dropout,
                    num_stages=model_cfg.num_stages)
        if model_cfg.freeze_image_model:
            model.freeze_image_model()
        return model

    # ---- the image model -------------------------------------------------------------------------------

    def freeze_image_model(self) -> "VideoLDM":
        """Train only the temporal layers (Sec. 3.1: "we fix the spatial layers"): requires_grad False."""
        self.unet.requires_grad_(False)
        return self

    def temporal_parameters(self) -> list:
        return [p for name, p in self.named_parameters() if not name.startswith("unet.")]

    def alphas(self) -> dict:
        """{spatial layer index: alpha} of every temporal layer, as floats."""
        return {int(k): float(layer.alpha().detach()) for k, layer in self.temporal.items()}

    def plot_alphas(self, ax) -> None:
        """Bar plot of every temporal layer's alpha on a matplotlib axis (blue: 3D conv, orange: attention)."""
        alphas = self.alphas()
        levels = {layer.index: layer.level for layer in self.unet.spatial_layers()}
        colors = ["tab:blue" if isinstance(self.temporal[str(i)], TemporalConvBlock) else "tab:orange"
                  for i in alphas]
        ax.bar(range(len(alphas)), list(alphas.values()), color=colors)
        ax.axhline(torch.sigmoid(torch.tensor(0.5)).item(), color="gray", ls="--", lw=1, label="init sigmoid(0.5)")
        ax.set_xticks(range(len(alphas)), [f"{i}\nL{levels[i]}" for i in alphas], fontsize=7)
        ax.set(xlabel="temporal layer (after spatial layer i, at U-Net level L)", ylabel="alpha", ylim=(0, 1),
               title="learned alpha per layer (blue: 3D conv, orange: attention)")
        ax.legend(fontsize=8)

    @contextlib.contextmanager
    def image_model(self):
        """Inside, every temporal layer is skipped (alpha = 1, Sec. 3.1): exactly the frozen image model."""
        self.image_only = True
        try:
            yield self
        finally:
            self.image_only = False

    def noise_embedder(self):
        return self.unet.noise_embed  # the image model's: its embedding drives the temporal layers too

    def load_pretrained(self, state: dict, what: str = "image model (U-Net)") -> None:
        """``--init_from``: an image model's weights go into the spatial layers (``load_image_model``)."""
        self.load_image_model(state)

    def load_image_model(self, state: dict) -> None:
        """Load an image model's U-Net weights into the spatial layers (strict, with a clear error).

        ``state``: a UNet state dict; a Denoiser state dict (keys ``backbone.*``); a VideoLDM one (its
        ``unet.*`` part); or a whole train.py checkpoint ({"model", "ema", "config", ...}): its EMA weights
        (what sample.py generates with), else "model". torch.compile / DDP prefixes are removed.
        """
        if isinstance(state.get("model"), dict):  # a whole train.py checkpoint
            state = state["ema"] if isinstance(state.get("ema"), dict) else state["model"]
        state = clean_state_dict(state)
        for prefix in ("backbone.", "unet."):  # Denoiser -> its backbone; VideoLDM -> its U-Net
            if any(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            load_model_state(self.unet, state, "image model (U-Net)")  # strict, says what differs
        except ValueError as e:
            raise UserError(f"{e} A VideoLDM loads an image model trained with --backbone=unet and the same "
                            "unet_* settings, channels, resolution and num_classes.") from None

    # ---- forward ---------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Optional[Cond] = None):
        cond = cond if cond is not None else Cond()
        self.unet.check_input(x)
        b, t, _, height, width = x.shape
        frames = rearrange(x, "b t c h w -> (b t) c h w")
        emb = self.unet.embed(c_noise, cond, b)
        emb_t = emb if self.stage_embed is None else emb + self.stage_embed.of(cond, b, emb.device)
        emb, emb_t = emb.repeat_interleave(t, dim=0), emb_t.repeat_interleave(t, dim=0)
        if self.image_only:
            return rearrange(self.unet.forward_frames(frames, emb, text=self.unet.frame_text(cond, t)),
                             "(b t) c h w -> b t c h w", b=b), None
        is_image = torch.zeros(b, dtype=torch.bool, device=x.device) if cond.is_image is None else cond.is_image
        is_image = is_image.to(x.device).bool().repeat_interleave(t)  # one flag per frame
        band = band_mask(t, self.temporal_distance, x.device)  # None unless conv_in_time
        context = None
        if self.context_encoder is not None:
            known = torch.zeros(b, t, 1, height, width, dtype=x.dtype, device=x.device)
            if cond.known is not None:
                known = cond.known.to(x.device).expand(b, t, 1, height, width).to(x.dtype)
            context = self.context_encoder(frames, rearrange(known, "b t c h w -> (b t) c h w"))

        def after_spatial_layer(index: int, z: torch.Tensor) -> torch.Tensor:
            key = str(index)
            if key not in self.temporal:
                return z
            features = None if context is None else context[self._context_level[key]]
            return self.temporal[key](z, emb_t, t, is_image, features, band)

        out = self.unet.forward_frames(frames, emb, after_spatial_layer, text=self.unet.frame_text(cond, t))
        return rearrange(out, "(b t) c h w -> b t c h w", b=b), None  # no state between sampler steps


def unet_baseline(**unet_kwargs) -> VideoLDM:
    """Snap Video's U-Net baseline (Sec. 4.3, Table 7): "the ADM U-Net ... adapted to the video generation
    setting by interleaving temporal attention operations", trained end to end. E.g.
    ``unet_baseline(**unet_config("unet_284m"))``: 210M spatial + 71M temporal = 281M parameters."""
    return VideoLDM(UNet(**unet_kwargs), temporal_conv=False, context=False,
                    dropout=unet_kwargs.get("dropout", 0.0))


# ---- context masks (Sec. 3.1.1) ----------------------------------------------------------------------

def prediction_mask(B: int, T: int, H: int, W: int, choices: Sequence[int] = (0, 1, 2),
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Video LDM's prediction training masks: per sample the first k frames are given, k drawn uniformly
    from ``choices`` ("condition either on 0, 1 or 2 context frames"; the paper's p_S is not given)."""
    k = torch.tensor(list(choices))[torch.randint(len(choices), (B,), generator=generator)]
    frames = torch.arange(T)[None] < k[:, None]  # (B, T)
    return frames[:, :, None, None, None].expand(B, T, 1, H, W).clone()


def interpolation_mask(B: int, num_key_frames: int, H: int, W: int, factor: int = 4) -> torch.Tensor:
    """Video LDM's interpolation: ``factor - 1`` frames generated between each pair of key frames
    (T -> 4T for factor 4). Returns ``known`` for T = (num_key_frames - 1) * factor + 1 frames."""
    if num_key_frames < 2 or factor < 1:
        raise ValueError("interpolation needs at least 2 key frames and factor >= 1")
    return masking.interpolate(B, (num_key_frames - 1) * factor + 1, H, W, every=factor)
