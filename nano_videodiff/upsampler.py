"""Super-resolution stages of a cascade: a denoiser of high-resolution videos conditioned on a low-resolution
one, with noise conditioning augmentation, around any backbone.

Papers
------
- Snap Video (Menapace et al. 2024, arXiv 2402.14797), Sec. 3.5 and App. C: a 36x64 first stage and a
  288x512 upsampler stage (sigma_in = 32, from the same ``s * sqrt(T)`` rule, Sec. 3.2); the upsampler's
  low-resolution input is corrupted with a variable noise level in training and a chosen one at inference.
- W.A.L.T (Gupta et al. 2023, arXiv 2312.06662), Sec. 4.5: SR stages 128x224 -> 256x448 -> 512x896; the
  low-resolution input is upscaled with a depth-to-space convolution, and noise conditioning augmentation
  ``t_sr ~ U(0, t_max)`` is fed into AdaLN-LoRA.
- Video LDM (Blattmann et al. 2023, arXiv 2304.08818), Sec. 3.2: a 4x upsampler made video-aware with the
  same temporal layers as the base model (the "aligned" upsampler), noise-augmented and told the level.
- Noise conditioning augmentation itself: Ho et al. 2022, "Cascaded Diffusion Models for High Fidelity
  Image Generation", arXiv 2106.15282, Sec. 4.2.
- Diffusing the residual over the upsampled input: SRDiff (Li et al. 2022, arXiv 2104.14951), Sec. 3.

How it works
------------
``Upsampler`` is a backbone (the contract of ``backbones/base.py``) around another backbone built for
``2C`` input channels. Given the noisy high-resolution video ``x`` (B, T, C, H, W) and ``cond.low_res``
(B, T, C, H/f, W/f), it lifts the low-resolution video to H x W (bilinear or nearest upsampling, or
W.A.L.T's depth-to-space convolution, initialised to equal nearest upsampling), scales it to unit variance
(EDM's c_in at the augmentation level, ``1 / sqrt(0.5^2 + sigma_aug^2)``: it is a video, of EDM's image std
0.5, whatever ``sigma_data`` the residual gets), concatenates it to ``x``
along the channels and returns the inner backbone's first C output channels. The augmentation level
``cond.aug_sigma`` reaches the inner backbone through its ``noise_embedder()`` (``layers.NoiseEmbedder``),
which adds its embedding to the noise embedding: every backbone gets it, with no per-backbone code.

The stage's denoiser (``UpsamplerDenoiser``) diffuses the residual ``r = x - u`` over the lifted
low-resolution video ``u`` (SRDiff): ``D(x_sigma) = u + D_r(x_sigma - u / sigma_in)`` with EDM's
preconditioning on r. Since every backbone's output layer starts at zero, an untrained stage at high noise
returns ``u`` itself, the upsampled input (the identity of a super-resolution stage), and training only has
to learn the detail the low-resolution video lacks; the loss and the sampler are the ordinary ones.

Training (``training_inputs``, called by ``training/batches.py``) downsamples each clip by area averaging,
draws ``sigma_aug ~ U(0, sr_aug_max)`` per clip (W.A.L.T's t_sr ~ U(0, t_max), in EDM units) and adds that
noise; with ``sr_crop`` it trains on random crops (Video LDM trains its upsampler patch-wise), which
backbones that take any frame size (VDT, the U-Net, Video LDM) then sample at full size. Sampling
(``upsample_videos``, ``cascade``) noises the given low-resolution videos to a chosen ``aug_sigma`` and runs
the ordinary sampler: ``sample.py --upsampler=a.pt[,b.pt] --aug_sigma=...`` chains base -> stages.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .backbones.base import Backbone
from .conditioning import Cond
from .edm import Denoiser
from .errors import UserError
from .training.checkpoint import load_model_state

LIFTS = ("bilinear", "nearest", "depth_to_space")
AUG_SEED_OFFSET = 104_729  # the augmentation noise of sampling has a stream of its own (a prime)
VIDEO_STD = 0.5  # the std the low-res *video* input is scaled for (EDM's sigma_data of images), not the residual's


# ---- resampling ----------------------------------------------------------------------------------------

def downsample(video: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, C, H/f, W/f) by averaging f x f blocks (a box filter: what a camera with
    f times fewer pixels would record)."""
    frames = F.avg_pool2d(rearrange(video, "b t c h w -> (b t) c h w"), factor)
    return rearrange(frames, "(b t) c h w -> b t c h w", b=video.shape[0])


def upsample(video: torch.Tensor, factor: int, mode: str = "bilinear") -> torch.Tensor:
    """(B, T, C, h, w) -> (B, T, C, f h, f w): bilinear (half-pixel centres) or nearest, frame by frame."""
    frames = rearrange(video, "b t c h w -> (b t) c h w")
    frames = F.interpolate(frames, scale_factor=factor, mode=mode,
                           **({"align_corners": False} if mode == "bilinear" else {}))
    return rearrange(frames, "(b t) c h w -> b t c h w", b=video.shape[0])


def augment(low_res: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Noise conditioning augmentation: ``low + sigma * eps`` with one sigma (B,) per clip (EDM units)."""
    return low_res + sigma.to(low_res).reshape(-1, *([1] * (low_res.ndim - 1))) * noise.to(low_res)


class DepthToSpace(nn.Module):
    """W.A.L.T Sec. 4.5's depth-to-space upscaling: a 3x3 convolution to ``C f^2`` channels, then each
    pixel's ``f^2`` channel groups laid out as an f x f block (``pixel_shuffle``).

    Initialised so that it *is* nearest-neighbour upsampling (every output sub-pixel copies the centre tap
    of its own channel): the stage starts from the plain concatenation and learns a better upscaling.
    """

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(channels, channels * factor**2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for c in range(channels):
                self.conv.weight[c * factor**2:(c + 1) * factor**2, c, 1, 1] = 1.0

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        frames = F.pixel_shuffle(self.conv(rearrange(video, "b t c h w -> (b t) c h w")), self.factor)
        return rearrange(frames, "(b t) c h w -> b t c h w", b=video.shape[0])


# ---- the backbone --------------------------------------------------------------------------------------

class Upsampler(Backbone):
    """A super-resolution stage: ``inner`` (built for 2C channels) sees ``[x, lift(cond.low_res)]``.

    State dict: ``inner.*`` (the wrapped backbone, its noise embedder's ``augmentation`` branch included) and,
    for depth-to-space, ``depth_to_space.*``. ``image_model()`` is the inner backbone's (Video LDM: the
    image upsampler, temporal layers off).
    """

    def __init__(self, inner: Backbone, channels: int, factor: int, lift: str = "bilinear"):
        super().__init__()
        if factor < 2 or lift not in LIFTS:
            raise UserError(f"an upsampler needs factor >= 2 and lift in {LIFTS}; got {factor}, {lift!r}")
        self.inner, self.channels, self.factor, self.lift_mode = inner, channels, factor, lift
        inner.noise_embedder().enable_augmentation()
        self.depth_to_space = DepthToSpace(channels, factor) if lift == "depth_to_space" else None

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> "Upsampler":
        from dataclasses import replace
        from .backbones import backbone_class
        inner_data = replace(data_cfg, channels=2 * data_cfg.channels)  # [x, lifted low-res]
        inner = backbone_class(model_cfg.backbone).from_config(model_cfg, inner_data)
        return cls(inner, data_cfg.channels, model_cfg.sr_factor, model_cfg.sr_input)

    def lift(self, low_res: torch.Tensor) -> torch.Tensor:
        if self.depth_to_space is not None:
            return self.depth_to_space(low_res)
        return upsample(low_res, self.factor, self.lift_mode)

    def lifted(self, x: torch.Tensor, cond: Optional[Cond]) -> torch.Tensor:
        """``lift(cond.low_res)`` at the size of the video ``x``, after checking that it was given and fits."""
        if cond is None or cond.low_res is None:
            raise UserError("this model is a super-resolution stage: it needs the low-resolution video "
                            "(cond.low_res); sample it with sample.py --upsampler=<its ckpt.pt> after a base model")
        b, t, _, h, w = x.shape
        expected = (b, t, self.channels, h // self.factor, w // self.factor)
        if tuple(cond.low_res.shape) != expected or h % self.factor or w % self.factor:
            raise ValueError(f"cond.low_res has shape {tuple(cond.low_res.shape)}; for a video {tuple(x.shape)} "
                             f"this {self.factor}x upsampler needs {expected}")
        return self.lift(cond.low_res.to(x.device, x.dtype))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Optional[Cond] = None):
        cond = cond if cond is not None else Cond()
        b, c = x.shape[0], x.shape[2]
        sigma = cond.aug_sigma
        sigma = torch.zeros(b, device=x.device) if sigma is None else sigma.to(x.device).float().expand(b)
        scale = (VIDEO_STD**2 + sigma**2).rsqrt().reshape(-1, 1, 1, 1, 1)
        lifted = self.lifted(x, cond) * scale.to(x.dtype)
        out, state = self.inner(torch.cat([x, lifted], dim=2), c_noise, cond)
        return out[:, :, :c], state

    def noise_embedder(self):
        return self.inner.noise_embedder()

    def image_model(self):
        return self.inner.image_model()

    def load_pretrained(self, state, what: str = "pretrained") -> None:
        """Another stage's weights: ``inner.*`` through the inner backbone's own ``load_pretrained`` (Video LDM:
        an image upsampler's U-Net into the spatial layers), the rest (depth-to-space) strictly here."""
        inner = {k[len("inner."):]: v for k, v in state.items() if k.startswith("inner.")}
        own = {k: v for k, v in state.items() if not k.startswith("inner.")}
        self.inner.load_pretrained(inner, what)
        if self.depth_to_space is not None or own:
            load_model_state(self.depth_to_space or nn.Module(),
                             {k[len("depth_to_space."):]: v for k, v in own.items()}, what)


class UpsamplerDenoiser(Denoiser):
    """EDM on the residual over the lifted low-res video u: ``D(x_sigma) = u + D_r(x_sigma - u / sigma_in)``.

    ``x_sigma - u / sigma_in`` is exactly the residual's noisy version ``(x - u) / sigma_in + sigma eps``,
    so ``Denoiser.loss`` (which compares D with x) and the sampler work unchanged. No masks (``cond.known``).
    """

    def forward_with_state(self, x_sigma, sigma, cond=None):
        if cond is not None and cond.known is not None:
            raise UserError("a super-resolution stage takes no given content (cond.known), only cond.low_res")
        u = self.backbone.lifted(x_sigma.float(), cond).float()
        d, state = super().forward_with_state(x_sigma.float() - u / self.sigma_in, sigma, cond)
        return d + u, state


def denoiser_class(cfg) -> type:
    """``UpsamplerDenoiser`` for a super-resolution stage (``--sr_factor > 1``), else EDM's ``Denoiser``."""
    return UpsamplerDenoiser if cfg.model.sr_factor > 1 else Denoiser


def is_upsampler(cfg) -> bool:
    return cfg.model.sr_factor > 1


def config_checks(cfg) -> list:
    """``Config.validate``'s checks of the sr_* settings: (ok, message) pairs."""
    d, m = cfg.data, cfg.model
    f = m.sr_factor
    checks = [(f >= 1, f"--sr_factor must be >= 1 (1 = not an upsampler), got {f}"),
              (m.sr_input in LIFTS, f"--sr_input must be one of {', '.join(LIFTS)}, got {m.sr_input!r}"),
              (m.sr_aug_max >= 0, f"--sr_aug_max must be >= 0, got {m.sr_aug_max}"),
              (m.sr_crop >= 0, f"--sr_crop must be >= 0, got {m.sr_crop}")]
    if f > 1:
        checks += [
            (d.height % f == 0 and d.width % f == 0,
             f"--sr_factor={f} must divide the frames {d.height}x{d.width} (the low-res input is H/f x W/f)"),
            (not d.autoencoder, "--sr_factor upsamples pixels: it does not combine with --autoencoder"),
            (m.sr_crop == 0 or (m.sr_crop % f == 0 and m.sr_crop <= min(d.height, d.width)),
             f"--sr_crop={m.sr_crop} must be a multiple of --sr_factor={f} and fit in {d.height}x{d.width}"),
        ]
    else:
        checks.append((m.sr_crop == 0, "--sr_crop trains an upsampler on crops: it needs --sr_factor > 1"))
    return checks


# ---- training ------------------------------------------------------------------------------------------

def training_inputs(cfg, x: torch.Tensor, batch_size: int, generator: torch.Generator, mine: slice):
    """``(x, low_res, aug_sigma)`` for this rank's clips ``x`` of one step: x cropped (``sr_crop``), its
    f-times downsampled version noised to ``aug_sigma ~ U(0, sr_aug_max)`` per clip.

    Every draw (crop offsets, levels, noise) is made for the global batch of ``batch_size`` clips and
    sliced with ``mine``, so the result does not depend on the world size (batches.py).
    """
    m, f = cfg.model, cfg.model.sr_factor
    if m.sr_crop:
        size, (height, width) = m.sr_crop, x.shape[-2:]
        top = torch.randint((height - size) // f + 1, (batch_size,), generator=generator)[mine] * f
        left = torch.randint((width - size) // f + 1, (batch_size,), generator=generator)[mine] * f
        x = torch.stack([clip[..., i:i + size, j:j + size] for clip, i, j in zip(x, top.tolist(), left.tolist())])
    sigma = torch.rand(batch_size, generator=generator)[mine] * m.sr_aug_max
    low = downsample(x.float(), f)
    noise = torch.randn((batch_size, *low.shape[1:]), generator=generator)[mine]
    return x, augment(low, sigma, noise), sigma


@torch.no_grad()
def residual_std(cfg, aug_sigma: float = 0.0, num_clips: int = 64, seed: int = 0) -> float:
    """The std of what a stage diffuses, ``x - lift(augment(downsample(x)))``, on ``num_clips`` training clips:
    the ``--sigma_data`` a stage should use (EDM's sigma_data is the std of the diffused data, Karras et al.
    2022, arXiv 2206.00364, Sec. 5 / App. B.6). Lifted with bilinear / nearest as configured (depth-to-space
    starts as nearest).

    The residual of a super-resolution stage is mostly zero (flat regions) with detail at edges, so its std is
    far below the clips' own: 0.12 for the toy bouncing balls at 4x, where EDM's default 0.5 would make the
    network predict a target four times smaller than the unit variance its preconditioning assumes.
    """
    import toy_data
    x = toy_data.get_batch(toy_data.build_dataset(cfg.data, "train"), range(num_clips))["video"].float()
    f = cfg.model.sr_factor
    low = downsample(x, f)
    noise = torch.randn(low.shape, generator=torch.Generator().manual_seed(seed))
    lifted = upsample(augment(low, torch.full((num_clips,), float(aug_sigma)), noise), f,
                      "nearest" if cfg.model.sr_input == "depth_to_space" else cfg.model.sr_input)
    return float((x - lifted).std())


# ---- sampling ------------------------------------------------------------------------------------------

@torch.no_grad()
def upsample_videos(model, cfg, low_res: torch.Tensor, aug_sigma: float, steps: int = 0, seed: int = 0,
                    **generate_kwargs) -> torch.Tensor:
    """One stage: high-resolution videos (N, T, C, H, W) in [-1, 1] for ``low_res`` (N, T, C, H/f, W/f).

    The low-resolution videos are noised to ``aug_sigma`` (EDM units; the model is told the level) and the
    stage samples as any model does (generation.generate); ``seed`` fixes both noises.
    """
    from .generation import generate
    from .training.config import Config
    if not is_upsampler(cfg):
        raise UserError("this checkpoint is not a super-resolution stage (its --sr_factor is 1)")
    if aug_sigma < 0:
        raise UserError(f"--aug_sigma must be >= 0 (EDM units; 0 = no augmentation), got {aug_sigma}")
    f, d = cfg.model.sr_factor, cfg.data
    n, t, c, h, w = low_res.shape
    if (c, h * f, w * f) != (d.channels, d.height, d.width):
        raise UserError(f"a {f}x stage for {d.channels} x {d.height}x{d.width} frames needs {d.channels} x "
                        f"{d.height // f}x{d.width // f} inputs; got {c} x {h}x{w}")
    stage_cfg = Config.from_dict(cfg.to_dict())
    stage_cfg.data.num_frames = t  # per-frame backbones (an image upsampler) take clips of any length
    g = torch.Generator().manual_seed(seed + AUG_SEED_OFFSET)
    sigma = torch.full((n,), float(aug_sigma))
    low = augment(low_res.float(), sigma, torch.randn(low_res.shape, generator=g))
    return generate(model, stage_cfg, n, steps=steps, seed=seed, extra_cond={"low_res": low, "aug_sigma": sigma},
                    **generate_kwargs)


def cascade(videos: torch.Tensor, stages: Sequence, aug_sigma, steps: int = 0, seed: int = 0,
            **generate_kwargs) -> List[torch.Tensor]:
    """Base videos through every ``(model, cfg)`` stage in turn: [base, stage 1 output, ...].

    ``aug_sigma``: one level for all stages, or one per stage.
    """
    levels = list(aug_sigma) if isinstance(aug_sigma, (list, tuple)) else [aug_sigma] * len(stages)
    if len(levels) != len(stages):
        raise UserError(f"--aug_sigma gives {len(levels)} levels for {len(stages)} upsamplers")
    outputs = [videos]
    for (model, cfg), level in zip(stages, levels):
        outputs.append(upsample_videos(model, cfg, outputs[-1], level, steps, seed, **generate_kwargs))
    return outputs


def run_cascade(videos: torch.Tensor, args, device) -> tuple:
    """``sample.py --upsampler=a.pt[,b.pt] --aug_sigma=s[,s2]``: (the last stage's videos, the base videos
    nearest-upsampled to that size, to show next to them)."""
    from .models import load_model
    stages = [load_model(path, args.use_ema, device) for path in args.upsampler.split(",") if path]
    try:
        levels = [float(s) for s in str(args.aug_sigma).split(",")]
    except ValueError:
        raise UserError(f"--aug_sigma must be a number, or one per stage (0.1 or 0.1,0.05); "
                        f"got {args.aug_sigma!r}") from None
    outputs = cascade(videos, stages, levels if len(levels) > 1 else levels[0], steps=args.upsampler_steps,
                      seed=args.seed, dtype=args.dtype, batch_size=args.batch_size, device=device, progress=True)
    from .evaluation.upsampling import mean_psnr
    for i, (low, high) in enumerate(zip(outputs, outputs[1:])):  # does each stage keep what it was given?
        kept = mean_psnr(downsample(high, high.shape[-1] // low.shape[-1]), low)
        print(f"stage {i + 1}: {low.shape[-2]}x{low.shape[-1]} -> {high.shape[-2]}x{high.shape[-1]}, input PSNR "
              f"{kept:.2f} dB (its output box-downsampled back against its input)")
    factor = math.prod(cfg.model.sr_factor for _, cfg in stages)
    return outputs[-1], upsample(videos, factor, "nearest")

