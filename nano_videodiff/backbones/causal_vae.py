"""W.A.L.T's causal 3D autoencoder: one latent space for images and videos (W.A.L.T Sec. 4.1, MAGVIT-v2).

W.A.L.T (Gupta et al. 2023) diffuses in the latent space of MAGVIT-v2's video tokenizer (Yu et al. 2023),
without the quantizer: a 3D CNN maps a video of ``1 + f_t k`` frames of H x W pixels to ``1 + k`` latent
frames of (H/f_s) x (W/f_s) x c real values (paper: f_s = 8, f_t = 4, c = 8, so 17 x 128^2 -> 5 x 16^2).

**Causality is the point.** Every convolution sees only the current and the past k_t - 1 frames
(``CausalConv3d``), every normalisation works frame by frame, and each temporal downsampling keeps the
first frame as its own output frame. So latent frame j depends on pixel frames <= j f_t only, and latent
frame 0 on frame 0 alone: an image is a one-frame video, with exactly the latent of the first frame of
any video that starts with it. One latent space for both lets W.A.L.T train jointly on images and videos.

Toy default (f_s = 4, f_t = 2, vae_channel_mult "1,2", widths 32, 64, 64):
    x (B, 1 + 2k, C, 32, 32) -> conv -> res block @32^2 -> down (space) -> res block @16^2
    -> down (space + time) -> res block @8^2 -> mean, logvar (B, 1 + k, c, 8, 8); the decoder mirrors it.

Our choices where W.A.L.T and MAGVIT-v2 say nothing we could confirm, each pinned by a test:
- Temporal pad frames are copies of the first frame, not zeros. Causality holds either way, but with
  copies a still video (an image repeated, ``modality.image_to_video``) gets the image's latent in every
  latent frame, exactly, and no fake black frame precedes every clip of [-1, 1] data.
- Temporal downsampling: a causal 3x3x3 convolution with stride 2 in time (output i reads frames 2i-2..2i),
  at the last, lowest-resolution levels. Upsampling: depth-to-space (``Upsample``).
- GroupNorm per frame: statistics over time would leak the future into the past.
- Loss: per-element MSE + ``kl_weight`` x per-element KL. MSE, not L1: on sparse toy frames L1 stalled
  at the all-background reconstruction in our short CPU runs. The paper adds VQGAN-style adversarial and
  perceptual (LPIPS) losses; we omit them: LPIPS needs downloaded weights, and on flat-coloured toy data
  a GAN costs stability and CPU minutes for sharpness the toy frames hardly need.
- Latent normalisation (W.A.L.T Sec. 5.2, Table 3e: FVD 67.9 without, 60.7 with): per-channel mean and
  std of the posterior means, fitted once after autoencoder training (``fit_latent_stats``), kept in buffers.

How a trainer uses it (autoencoder stage, then latent diffusion)::

    vae = CausalVAE.from_config(cfg.model, cfg.data)           # checks the frame count and resolution
    loss = vae.loss(Batch(video, Cond(is_image=is_image)), generator=g)   # stage 1 step (train.py's contract)
    vae.fit_latent_stats(clips)                                # once, after stage 1; then save state_dict
    z = vae.to_latent(video, is_image)                         # stage 2: ~unit-variance (B, 1+k, c, h, w)
    video = vae.from_latent(z_generated, is_image)             # back to pixels in [-1, 1] (roughly)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..conditioning import Batch
from ..errors import UserError


def _log2(n: int, name: str) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1 or int(n) & (int(n) - 1):
        raise UserError(f"{name} must be a power of 2 (1, 2, 4, 8, ...), got {n!r}")
    return int(n).bit_length() - 1


def latent_frames(num_frames: int, temporal_down: int) -> int:
    """1 + f_t k frames -> 1 + k latent frames (W.A.L.T Sec. 4.1); a clear error for other counts."""
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1 \
            or (num_frames - 1) % temporal_down:
        counts = ", ".join(str(1 + temporal_down * k) for k in (0, 1, 2, 4, 8))
        raise UserError(f"{num_frames} frames cannot be encoded with temporal factor f_t={temporal_down}: use "
                        f"1 + {temporal_down}k frames: {counts}, ... (the first frame is its own latent frame)")
    return 1 + (int(num_frames) - 1) // temporal_down


class CausalConv3d(nn.Module):
    """A 3D convolution on (B, C, T, H, W) whose output at frame t sees only frames t - k_t + 1 .. t.

    W.A.L.T Sec. 4.1 / MAGVIT-v2: pad k_t - 1 frames before the clip and none after. The pad frames are
    copies of the first frame (see the module docstring); H and W get ordinary zero "same" padding. With
    stride s_t in time, output i reads frames s_t i - k_t + 1 .. s_t i, so T frames give (T - 1) // s_t + 1.
    ``causal=False`` pads (k_t - 1) // 2 frames before and k_t // 2 after instead: the regular centred 3D
    convolution the paper contrasts with (used in tutorial 08 to show what breaks).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, causal: bool = True):
        super().__init__()
        kt, kh, kw = kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size,) * 3
        self.time_pad = (kt - 1, 0) if causal else ((kt - 1) // 2, kt // 2)
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=stride,
                              padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = self.time_pad
        if before or after:  # replicate the first (and, if centred, the last) frame
            x = torch.cat([x[:, :, :1].expand(-1, -1, before, -1, -1), x,
                           x[:, :, -1:].expand(-1, -1, after, -1, -1)], dim=2)
        return self.conv(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics over (channels of a group, H, W) of each frame, never across frames."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        out = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(out, "(b t) c h w -> b c t h w", b=x.shape[0])


def _norm(channels: int) -> FrameGroupNorm:
    return FrameGroupNorm(math.gcd(channels, 8), channels, eps=1e-6)  # up to 8 groups


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))), both convolutions causal 3 x 3 x 3 (MAGVIT-v2's block)."""

    def __init__(self, in_channels: int, out_channels: int, causal: bool = True):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_channels), CausalConv3d(in_channels, out_channels, 3, causal=causal)
        self.norm2, self.conv2 = _norm(out_channels), CausalConv3d(out_channels, out_channels, 3, causal=causal)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Upsample(nn.Module):
    """Depth-to-space: 1 + k frames of h x w -> 1 + f k frames of (s h) x (s w), causally.

    A causal conv predicts f s^2 values per position, unfolded into f frames and s x s pixels; the first
    f - 1 frames (those of latent frame 0 before its own) are dropped, so latent frame 0 -> frame 0 only.
    """

    def __init__(self, in_channels: int, out_channels: int, space: int, time: int, causal: bool = True):
        super().__init__()
        self.space, self.time = space, time
        self.conv = CausalConv3d(in_channels, out_channels * time * space * space, 3, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.conv(x), "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)",
                      ft=self.time, fh=self.space, fw=self.space)
        return x[:, :, self.time - 1:]


def _level_plan(widths: Sequence[int], spatial_steps: int, temporal_steps: int):
    """(width in, width out, spatial factor, temporal factor) of the len(widths) - 1 resampling steps:
    spatial 2x steps first, temporal 2x steps last, so the high-resolution levels see every frame."""
    n = len(widths) - 1
    return [(widths[i], widths[i + 1], 2 if i < spatial_steps else 1, 2 if i >= n - temporal_steps else 1)
            for i in range(n)]


def build_encoder(in_channels, widths, latent_channels, plan, num_res_blocks, causal=True) -> nn.Sequential:
    """(B, C, T, H, W) -> (B, 2c, 1 + (T-1)/f_t, H/f_s, W/f_s): the latent's mean and log-variance."""
    layers: List[nn.Module] = [CausalConv3d(in_channels, widths[0], 3, causal=causal)]
    for w_in, w_out, fs, ft in plan:  # res blocks, then a strided causal conv (downsampling)
        layers += [ResBlock(w_in, w_in, causal) for _ in range(num_res_blocks)]
        layers.append(CausalConv3d(w_in, w_out, 3, stride=(ft, fs, fs), causal=causal))
    layers += [ResBlock(widths[-1], widths[-1], causal) for _ in range(num_res_blocks)]
    return nn.Sequential(*layers, _norm(widths[-1]), nn.SiLU(),
                         CausalConv3d(widths[-1], 2 * latent_channels, 3, causal=causal))


def build_decoder(out_channels, widths, latent_channels, plan, num_res_blocks, causal=True) -> nn.Sequential:
    """(B, c, 1 + k, h, w) -> (B, C, 1 + f_t k, f_s h, f_s w): the encoder's mirror image."""
    layers: List[nn.Module] = [CausalConv3d(latent_channels, widths[-1], 3, causal=causal)]
    for w_in, w_out, fs, ft in reversed(plan):
        layers += [ResBlock(w_out, w_out, causal) for _ in range(num_res_blocks)]
        layers.append(Upsample(w_out, w_in, fs, ft, causal))
    layers += [ResBlock(widths[0], widths[0], causal) for _ in range(num_res_blocks)]
    return nn.Sequential(*layers, _norm(widths[0]), nn.SiLU(), CausalConv3d(widths[0], out_channels, 3, causal=causal))


@dataclass
class DiagonalGaussian:
    """The posterior q(z|x) = N(mean, exp(logvar)), each (B, 1 + k, c, h, w)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) (the reparameterisation trick)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mean + torch.exp(0.5 * self.logvar) * eps.to(self.mean)

    def kl(self) -> torch.Tensor:
        """KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - 1 - ln s^2) / 2, per element."""
        return 0.5 * (self.mean.float() ** 2 + self.logvar.float().exp() - 1.0 - self.logvar.float())


class CausalVAE(nn.Module):
    """W.A.L.T's causal 3D autoencoder (Sec. 4.1) with a diagonal-Gaussian latent and latent normalisation.

    Its loss gives every parameter a gradient (``has_unused_parameters`` as in the backbone contract).

    Videos are (B, T, C, H, W) in [-1, 1] with T = 1 + f_t k; latents are (B, 1 + k, c, H/f_s, W/f_s).
    An image batch (B, C, H, W) or (B, 1, C, H, W) is a one-frame video. ``is_image`` (B,) bool marks
    samples whose T frames are one image repeated (``modality.image_to_video``): their frame 0 is encoded
    alone and its latent repeated over the latent frames; decoding does the same with latent frame 0.
    """
    has_unused_parameters = False


    def __init__(self, in_channels: int = 3, channels: int = 32, channel_mult: Sequence[int] = (1, 2),
                 latent_channels: int = 4, spatial_down: int = 4, temporal_down: int = 2,
                 kl_weight: float = 1e-6, num_res_blocks: int = 1, causal: bool = True):
        super().__init__()
        spatial_steps, temporal_steps = _log2(spatial_down, "spatial_down"), _log2(temporal_down, "temporal_down")
        levels = 1 + max(spatial_steps, temporal_steps)
        mult = [int(m) for m in channel_mult]
        if not 1 <= len(mult) <= levels:
            raise UserError(f"channel_mult {mult} has {len(mult)} entries but f_s={spatial_down}, "
                            f"f_t={temporal_down} give {levels} levels: pass 1 to {levels} multipliers")
        widths = [channels * mult[min(i, len(mult) - 1)] for i in range(levels)]  # the last one repeats
        self.spatial_down, self.temporal_down, self.latent_channels = spatial_down, temporal_down, latent_channels
        self.kl_weight = kl_weight
        plan = _level_plan(widths, spatial_steps, temporal_steps)
        self.encoder = build_encoder(in_channels, widths, latent_channels, plan, num_res_blocks, causal)
        self.decoder = build_decoder(in_channels, widths, latent_channels, plan, num_res_blocks, causal)
        # Latent normalisation (W.A.L.T Sec. 5.2, Table 3e): identity until fit_latent_stats is called.
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> "CausalVAE":
        """From the ``vae_*`` fields of ModelConfig; checks that the data's clips can be encoded."""
        m = model_cfg
        vae = cls(in_channels=data_cfg.channels, channels=m.vae_channels,
                  channel_mult=[int(v) for v in str(m.vae_channel_mult).split(",") if v.strip()],
                  latent_channels=m.vae_latent_channels, spatial_down=m.vae_spatial_down,
                  temporal_down=m.vae_temporal_down, kl_weight=m.vae_kl_weight)
        vae.latent_shape(data_cfg.num_frames, data_cfg.height, data_cfg.width)
        return vae

    def latent_shape(self, T: int, H: int, W: int) -> Tuple[int, int, int, int]:
        """(1 + (T-1)/f_t, c, H/f_s, W/f_s); a ValueError naming the valid sizes otherwise."""
        if H % self.spatial_down or W % self.spatial_down:
            raise ValueError(f"H={H} and W={W} must be divisible by the spatial factor f_s={self.spatial_down}")
        return (latent_frames(T, self.temporal_down), self.latent_channels,
                H // self.spatial_down, W // self.spatial_down)

    # --- the two networks, all samples treated as videos -------------------------------------------------
    def _encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W) -> (B, 1 + k, 2c, h, w)
        self.latent_shape(x.shape[1], x.shape[3], x.shape[4])
        return rearrange(self.encoder(rearrange(x, "b t c h w -> b c t h w")), "b c t h w -> b t c h w")

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return rearrange(self.decoder(rearrange(z, "b t c h w -> b c t h w")), "b c t h w -> b t c h w")

    @staticmethod
    def _per_sample(fn, x: torch.Tensor, is_image: Optional[torch.Tensor], out_frames: int) -> torch.Tensor:
        """fn on the videos of the batch, and on frame 0 of the images with its one frame repeated."""
        if is_image is None:
            return fn(x)
        is_image = torch.as_tensor(is_image, device=x.device).bool().reshape(-1)
        if is_image.shape[0] != x.shape[0]:
            raise ValueError(f"is_image needs one entry per sample: {is_image.shape[0]} for a batch of {x.shape[0]}")
        if not is_image.any():
            return fn(x)
        images = fn(x[is_image, :1])
        images = images.expand(-1, out_frames, *images.shape[2:])
        if is_image.all():
            return images.contiguous()
        videos = fn(x[~is_image])
        out = videos.new_empty((x.shape[0],) + tuple(videos.shape[1:]))
        out[~is_image], out[is_image] = videos, images.to(videos.dtype)
        return out

    @staticmethod
    def _as_video(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # an image batch is a batch of one-frame videos
            return x[:, None]
        if x.ndim != 5:
            raise ValueError(f"expected videos (B, T, C, H, W) or images (B, C, H, W), got {tuple(x.shape)}")
        return x

    # --- public API ------------------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, is_image: Optional[torch.Tensor] = None) -> DiagonalGaussian:
        """q(z|x) for videos (B, T, C, H, W) or images (B, C, H, W) -> mean, logvar (B, 1 + k, c, h, w)."""
        x = self._as_video(x)
        t_lat = latent_frames(x.shape[1], self.temporal_down)
        mean, logvar = self._per_sample(self._encode, x, is_image, t_lat).chunk(2, dim=2)
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))  # clamped for a finite exp()

    def encode(self, x: torch.Tensor, is_image: Optional[torch.Tensor] = None, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The posterior mean (or, with ``sample``, a draw) in raw, unnormalised latent units."""
        post = self.posterior(x, is_image)
        return post.sample(generator) if sample else post.mean

    def decode(self, z: torch.Tensor, is_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Raw latents (B, 1 + k, c, h, w) -> videos (B, 1 + f_t k, C, f_s h, f_s w)."""
        if z.ndim != 5:
            raise ValueError(f"latents must be (B, T_lat, c, h, w), got {tuple(z.shape)}")
        return self._per_sample(self._decode, z, is_image, 1 + self.temporal_down * (z.shape[1] - 1))

    def reconstruct(self, x: torch.Tensor, is_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """decode(encode(x)) with the posterior mean, shaped like x (images stay (B, C, H, W))."""
        out = self.decode(self.encode(x, is_image), is_image)
        return out[:, 0] if x.ndim == 4 else out

    def loss_terms(self, x: torch.Tensor, is_image: Optional[torch.Tensor] = None,
                   generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """Stage-1 training loss: MSE(x, decode(z)) + kl_weight * KL, z ~ q(z|x); each term a per-element mean.

        Per-element means keep the loss (and so the learning rate) independent of the video size. Image
        samples are compared on their repeated frame, so they count like a video in the mean.
        """
        x = self._as_video(x)
        post = self.posterior(x, is_image)
        recon = self.decode(post.sample(generator), is_image)
        reconstruction = (recon.float() - x.float()).pow(2).mean()
        kl = post.kl().mean()
        return dict(loss=reconstruction + self.kl_weight * kl, reconstruction=reconstruction, kl=kl)

    def loss(self, batch: Batch, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The training contract (``loss = model.loss(batch)``, as a Denoiser's): the scalar of ``loss_terms``
        on ``batch.x``, with ``batch.cond.is_image``; the batch's diffusion fields are not used."""
        return self.loss_terms(batch.x, batch.cond.is_image, generator)["loss"]

    # --- latent normalisation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_latent_stats(self, videos: Union[torch.Tensor, Iterable[torch.Tensor]],
                         is_image: Optional[torch.Tensor] = None, batch_size: int = 16):
        """Set ``latent_mean``/``latent_std`` to the per-channel mean and std of the posterior means.

        videos: a tensor (N, T, C, H, W), encoded ``batch_size`` at a time, or an iterable of batches.
        Statistics are over every sample, latent frame and position (image latents count once per latent
        frame, as the diffusion model sees them). Returns (mean, std), each (c,).
        """
        if torch.is_tensor(videos):
            flags = is_image.split(batch_size) if is_image is not None else [None] * len(videos.split(batch_size))
            batches = zip(videos.split(batch_size), flags)
        else:
            batches = ((v, None) for v in videos)
        count, sums, squares = 0, 0.0, 0.0  # float64 running sums over all latent positions, per channel
        for x, flag in batches:
            z = self.encode(x, flag).double().transpose(0, 2).reshape(self.latent_channels, -1).cpu()
            count, sums, squares = count + z.shape[1], sums + z.sum(1), squares + z.pow(2).sum(1)
        if count == 0:
            raise ValueError("fit_latent_stats got no data")
        mean = sums / count
        self.latent_mean.copy_(mean)
        self.latent_std.copy_((squares / count - mean ** 2).clamp_min(1e-12).sqrt())
        return self.latent_mean.clone(), self.latent_std.clone()

    def _latent_stats(self, z: torch.Tensor):
        return (self.latent_mean.to(z.dtype)[:, None, None], self.latent_std.to(z.dtype)[:, None, None])

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """(z - mean_c) / std_c per latent channel: what the diffusion model sees."""
        mean, std = self._latent_stats(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of ``normalize``: z * std_c + mean_c."""
        mean, std = self._latent_stats(z)
        return z * std + mean

    def to_latent(self, x: torch.Tensor, is_image: Optional[torch.Tensor] = None, sample: bool = False,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Pixels -> normalised latents (B, 1 + k, c, h, w): ``normalize(encode(x, is_image))``."""
        return self.normalize(self.encode(x, is_image, sample, generator))

    def from_latent(self, z: torch.Tensor, is_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalised latents -> pixels: ``decode(denormalize(z), is_image)``."""
        return self.decode(self.denormalize(z), is_image)
