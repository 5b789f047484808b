"""EDM preconditioning with Snap Video's input scaling ``sigma_in``, the training noise and the loss.

References
----------
- EDM: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
  arXiv 2206.00364, Table 1 ("Ours" column), Eq. 2 (D = c_skip x + c_out F), Eq. 8 (the loss in F-space).
- Snap Video: Menapace et al. 2024, "Snap Video: Scaled Spatiotemporal Transformers for Text-to-Video
  Synthesis", arXiv 2402.14797, Sec. 3.2 (the SNR argument), Table 1 and Appendix D-E (the scaled
  framework derived here; the derivation is repeated below, with the sign convention we chose).

The idea in one paragraph
-------------------------
EDM adds noise ``x_sigma = x + sigma * eps``. Snap Video observes (Sec. 3.2) that averaging a block of
``T * s * s`` redundant pixels (T frames, s times the base resolution) divides the noise variance by
``T s^2``: a video at high resolution looks *less noisy* to the denoiser than the framework assumes.
The fix is to shrink the signal instead: ``x_sigma = x / sigma_in + sigma * eps`` with
``sigma_in = s * sqrt(T)``. The network still regresses a unit-variance target, the v-target
``v = sigma_data^2 * eps - sigma * x`` normalised by ``c_nrm``, and the loss weight lambda(sigma) is EDM's.
Solving ``x = c_skip * x_sigma + c_out * F_target`` for the coefficients gives (Snap Video Table 1):

    c_in   = 1 / sqrt(sigma_data^2 / sigma_in^2 + sigma^2)          (unit-variance network input)
    c_skip = sigma_in sigma_data^2 / (sigma_in sigma^2 + sigma_data^2)
    c_out  = sigma_in sigma sigma_data sqrt(sigma^2 + sigma_data^2) / (sigma_in sigma^2 + sigma_data^2)
    c_noise = ln(sigma) / 4
    F_target = c_nrm * (sigma x - sigma_data^2 eps) = -c_nrm * v,   c_nrm = 1 / (sigma_data sqrt(sigma^2 + sigma_data^2))

Sign convention: Snap Video writes c_out with a minus sign and F_target = +c_nrm v. Flipping both signs
is the same model; we take the sign that makes ``sigma_in = 1`` reproduce EDM's Table 1 *exactly*
(c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)). With sigma_data = 1 the target is v-prediction.

Everything here runs in float32 even under autocast: only the backbone may run in bf16/fp16.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .conditioning import Batch, Cond
from .errors import UserError
from .text import encode_captions


# ----------------------------------------------------------------------------------------------
# Preconditioning (Snap Video Table 1; EDM Table 1 at sigma_in = 1)
# ----------------------------------------------------------------------------------------------

def preconditioning(sigma: torch.Tensor, sigma_data: float, sigma_in: float = 1.0):
    """Return ``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma`` (any shape), in float32.

    ``D(x_sigma) = c_skip * x_sigma + c_out * F(c_in * x_sigma; c_noise)`` estimates the clean data x
    (in data units, i.e. *not* divided by sigma_in) from ``x_sigma = x / sigma_in + sigma * eps``.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    s2, sd2 = sigma**2, sigma_data**2
    c_in = 1.0 / torch.sqrt(sd2 / sigma_in**2 + s2)
    c_skip = sigma_in * sd2 / (sigma_in * s2 + sd2)
    c_out = sigma_in * sigma * sigma_data * torch.sqrt(s2 + sd2) / (sigma_in * s2 + sd2)
    c_noise = torch.log(sigma) / 4
    return c_skip, c_out, c_in, c_noise


def add_noise(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, sigma_in: float = 1.0):
    """Snap Video's forward process: ``x_sigma = x / sigma_in + sigma * eps`` (sigma broadcast per sample)."""
    return x / sigma_in + _per_sample(sigma, x) * eps


def training_target(x, eps, sigma, sigma_data: float):
    """The unit-variance regression target of F: ``c_nrm * (sigma x - sigma_data^2 eps)`` (= -c_nrm v)."""
    sigma = _per_sample(sigma, x)
    c_nrm = 1.0 / (sigma_data * torch.sqrt(sigma**2 + sigma_data**2))
    return c_nrm * (sigma * x - sigma_data**2 * eps)


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1/sigma_data^2 + 1/sigma^2.

    Snap Video keeps it unchanged (Table 1); in F-space it becomes w(sigma) = lambda c_out^2, which is 1
    at sigma_in = 1 (EDM Eq. 8) and (sigma^2+sigma_data^2)^2 / (sigma^2+sigma_data^2/sigma_in)^2 otherwise.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_training_sigma(batch_size: int, P_mean: float = -1.2, P_std: float = 1.2,
                          generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """EDM's training noise distribution: ln(sigma) ~ N(P_mean, P_std^2), one sigma per sample."""
    z = torch.randn(batch_size, generator=generator, device=device, dtype=torch.float32)
    return torch.exp(P_mean + P_std * z)


EDM_P_MEAN, EDM_SIGMA_DATA = -1.2, 0.5  # EDM Table 1: chosen together, for pixels in [-1, 1]


def relative_P_mean(sigma_data: float, P_mean: float = EDM_P_MEAN) -> float:
    """EDM's training noise for data of another scale: ``P_mean + ln(sigma_data / 0.5)``.

    What the denoiser sees is the noise-to-signal ratio ``sigma / sigma_data``. EDM tuned ``P_mean = -1.2``
    with ``sigma_data = 0.5``, i.e. ``ln(sigma / sigma_data) ~ N(-0.51, P_std^2)``. Keeping that
    distribution for unit-variance data (W.A.L.T's normalised latents, Snap Video's ``sigma_data = 1``)
    needs ``P_mean = -1.2 + ln 2 = -0.51``; keeping -1.2 there trains at noise levels half as large relative
    to the data, and the high-noise levels that decide where objects go (prediction) are seen too rarely.
    """
    if sigma_data <= 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
    return P_mean + math.log(sigma_data / EDM_SIGMA_DATA)


# ----------------------------------------------------------------------------------------------
# The SNR argument (Snap Video Sec. 3.2, Fig. 2)
# ----------------------------------------------------------------------------------------------

def input_scale(num_frames: int, height: int, width: int, base_height: int = 36, base_width: int = 64) -> float:
    """``sigma_in = s * sqrt(T)`` with ``s^2 = (H * W) / (base_H * base_W)``, the pixel-count ratio.

    Snap Video's base is EDM's 64 px resolution, i.e. its first stage's 64x36 frames (W x H) count as s = 1:
    16 frames at 64x36 give sigma_in = 4 and 16 frames at 512x288 give 32 (Sec. 3.2, 3.5).
    ``T s^2`` is the number of pixels averaged into one base pixel.
    """
    if min(num_frames, height, width, base_height, base_width) <= 0:
        raise ValueError("input_scale needs positive frame count and sizes")
    s_squared = (height * width) / (base_height * base_width)
    return math.sqrt(num_frames * s_squared)


def snr(sigma, sigma_data: float, sigma_in: float = 1.0):
    """Per-pixel signal-to-noise ratio of ``x/sigma_in + sigma eps`` for data of std sigma_data."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    return (sigma_data / sigma_in) ** 2 / sigma**2


def block_average_snr_gain(num_frames: int, s: float) -> float:
    """Averaging a T x s x s block of redundant pixels multiplies the SNR by ``T s^2`` (Sec. 3.2)."""
    return num_frames * s * s


def effective_snr(sigma, sigma_data: float, num_frames: int, s: float, sigma_in: float = 1.0):
    """The SNR a denoiser sees after averaging redundant blocks: ``T s^2 * snr``.

    With sigma_in = s sqrt(T) this equals the plain EDM snr at sigma_in = 1: the scaling undoes the gain.
    """
    return block_average_snr_gain(num_frames, s) * snr(sigma, sigma_data, sigma_in)


# ----------------------------------------------------------------------------------------------
# Given content in D (VDT's mask modeling under EDM preconditioning; masking.py says *which* positions)
# ----------------------------------------------------------------------------------------------
#
# Everything that *uses* a ``known`` mask is here, so that D reads in one place:
#   1. known content goes into the network clean, at the scale it would have at sigma = 0;
#   2. the network is told which positions are known (backbones read ``cond.known``);
#   3. D returns the known content exactly (so the sampler gives it back bit-exactly);
#   4. the loss averages over generated positions only.
#
# How this relates to VDT's formula under EDM preconditioning: VDT (DDPM, unit-variance x_t) feeds
# ``x_start`` at data scale where mask = 0. Our network input is ``c_in(sigma) * x_sigma`` with
# ``x_sigma = x / sigma_in + sigma * eps``. Putting the clean ``x / sigma_in`` in at the current
# c_in(sigma) would shrink the context like 1/sigma (invisible at sigma = 80), so we use the sigma -> 0
# limit: ``c_in(0) * x / sigma_in = x / sigma_data``, unit variance at every noise level, exactly as
# the noisy positions are. Loss: VDT divides the masked squared error by *all* positions, so its loss
# scale moves with the mask ratio; we divide by the number of generated positions.

def _known_of(cond: Optional[Cond], like: torch.Tensor) -> Optional[torch.Tensor]:
    """The cond's ``known`` mask broadcast to ``like`` (B, T, C, H, W), or None; checks its content."""
    known = cond.known if cond is not None else None
    if known is None:
        return None
    if known.dtype != torch.bool:
        raise TypeError(f"cond.known must be a bool tensor, got {known.dtype}")
    try:
        known = known.to(like.device).expand_as(like)
    except RuntimeError:
        raise ValueError(f"cond.known of shape {tuple(cond.known.shape)} does not broadcast to the video "
                         f"shape {tuple(like.shape)}; it should be (B, T, 1, H, W)") from None
    if cond.known_x is None:
        raise ValueError("cond.known is set but cond.known_x (the clean content) is missing")
    if cond.known_x.shape != like.shape:
        raise ValueError(f"cond.known_x has shape {tuple(cond.known_x.shape)}, expected {tuple(like.shape)}: "
                         "the context must have the model's resolution and channel count")
    return known


def network_input(net_in: torch.Tensor, cond: Optional[Cond], sigma_data: float) -> torch.Tensor:
    """Replace known positions of ``c_in * x_sigma`` by the clean content at unit scale, ``x / sigma_data``."""
    known = _known_of(cond, net_in)
    if known is None:
        return net_in
    return torch.where(known, cond.known_x.to(net_in) / sigma_data, net_in)


def paste_known(x0: torch.Tensor, cond: Optional[Cond]) -> torch.Tensor:
    """``where(known, known_x, x0)``: given content comes back exactly (and gets no gradient)."""
    known = _known_of(cond, x0)
    if known is None:
        return x0
    return torch.where(known, cond.known_x.to(x0.dtype), x0)


def mean_over_generated(per_position: torch.Tensor, cond: Optional[Cond]) -> torch.Tensor:
    """Per-sample mean of ``per_position`` (B, T, C, H, W) over generated positions only.

    Normalised by the number of generated positions, so a constant per-position error gives the same
    loss whatever the mask ratio. A sample with nothing to generate contributes 0.
    """
    known = _known_of(cond, per_position)
    if known is None:
        return per_position.flatten(1).mean(1)
    generated = (~known).flatten(1).to(per_position.dtype)
    total = (per_position.flatten(1) * generated).sum(1)
    return total / generated.sum(1).clamp(min=1.0)


# ----------------------------------------------------------------------------------------------
# The denoiser D and its loss
# ----------------------------------------------------------------------------------------------

def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor so that it broadcasts over the other dims of ``like``."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=like.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


class Denoiser(nn.Module):
    """EDM Eq. 7 with Snap Video's scaling: ``D(x_sigma, sigma, cond) = c_skip x_sigma + c_out F(c_in x_sigma)``.

    Wraps any backbone (backbone.py: ``F(x, c_noise, cond) -> (out, state)``) and returns x0_hat in data
    units. The backbone sees ``c_in * x_sigma`` (unit variance), with known content put in clean, and
    ``c_noise``; it never sees sigma itself.

    self_condition_prob: RIN's latent self-conditioning rate in training (Snap Video uses 0.9 for FIT);
        needs a backbone whose ``state`` is its latents. 0 = off.
    autoencoder: latent diffusion's frozen stage-1 model (W.A.L.T Sec. 3, latent.py), or None for pixel
        diffusion. D works on its normalised latents; ``generation.generate`` decodes with it. Its weights
        are saved with the denoiser's (``autoencoder.*``), so a checkpoint samples on its own.
    text_encoder: ``text.py``'s encoder of ``cond.captions`` (None = no text); a learned one is a submodule,
        trained with the backbone and saved as ``text_encoder.*``; a frozen one is not (its weights are its own).
    """

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5, sigma_in: float = 1.0,
                 P_mean: float = -1.2, P_std: float = 1.2, self_condition_prob: float = 0.0,
                 autoencoder: Optional[nn.Module] = None, text_encoder=None):
        super().__init__()
        if not 0.0 <= self_condition_prob <= 1.0:
            raise ValueError(f"self_condition_prob must be in [0, 1], got {self_condition_prob}")
        self.backbone = backbone
        self.sigma_data = float(sigma_data)  # std of the data, in data units
        self.sigma_in = float(sigma_in)      # Snap Video's input scaling; 1 = plain EDM
        self.P_mean, self.P_std = float(P_mean), float(P_std)  # training ln(sigma) ~ N(P_mean, P_std^2)
        self.self_condition_prob = float(self_condition_prob)
        self.autoencoder = autoencoder
        self.text_encoder = text_encoder  # text.py: captions -> tokens (a learned one is trained with D)

    def forward(self, x_sigma: torch.Tensor, sigma: torch.Tensor, cond: Optional[Cond] = None) -> torch.Tensor:
        """D(x_sigma; sigma): the clean estimate x0_hat (B, T, C, H, W) in data units."""
        return self.forward_with_state(x_sigma, sigma, cond)[0]

    def forward_with_state(self, x_sigma: torch.Tensor, sigma: torch.Tensor, cond: Optional[Cond] = None):
        """``(D(x_sigma; sigma), state)``: the backbone's state too (FIT's latents, else None).

        The sampler calls this and hands the state to the next step as ``cond.self_cond`` (RIN).
        """
        x_sigma = x_sigma.float()
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x_sigma.device).expand(x_sigma.shape[0])
        c_skip, c_out, c_in, c_noise = (_per_sample(c, x_sigma) for c in
                                        preconditioning(sigma, self.sigma_data, self.sigma_in))
        # Known (clean) content enters the network at the scale it would have at sigma = 0,
        # c_in(0) * x / sigma_in = x / sigma_data: unit variance, whatever the noise level.
        net_in = network_input(c_in * x_sigma, cond, self.sigma_data)
        cond = encode_captions(self.text_encoder, cond, x_sigma.device)  # cond.captions -> cond.text (text.py)
        out, state = self.backbone(net_in, c_noise.flatten(), cond if cond is not None else Cond())
        with torch.autocast(device_type=x_sigma.device.type, enabled=False):
            x0 = c_skip * x_sigma + c_out * out.float()
        return paste_known(x0, cond), state  # known content comes back exactly

    def loss(self, batch: Batch, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Mean over the batch of ``lambda(sigma) * mean over generated positions of (D(x_sigma) - x)^2``.

        EDM sums over pixels; we average, so the loss scale does not depend on the video size, nor (with
        masks) on how many positions are generated. ``batch.sigma`` and ``batch.noise`` are the trainer's
        draws from its per-step generator (exact reproducibility); left None, they are drawn here.

        Latent self-conditioning (RIN, used by FIT): with ``self_condition_prob = p > 0``, a first pass
        without gradient gives latents, which a second pass receives as ``cond.self_cond`` for a fraction p
        of the samples (zeros, i.e. "no previous latents", for the rest). ``batch.self_cond_draw`` (B,)
        uniform numbers choose which samples; drawn here if not given.
        """
        x, cond = batch.x, batch.cond
        if not torch.isfinite(x).all():
            raise UserError("training batch contains NaN or Inf; check the data pipeline")
        interval = None if cond is None else cond.frame_interval  # NaN would look like a too-high --lr
        if interval is not None and not torch.isfinite(interval).all():
            raise UserError("the training clips' frame_interval (seconds between frames) holds NaN or Inf: the "
                            "data gives no valid frame rate; check the dataset's fps / frame_interval (--fps)")
        x = x.float()
        sigma = batch.sigma
        if sigma is None:
            sigma = sample_training_sigma(x.shape[0], self.P_mean, self.P_std, generator, x.device)
        noise = batch.noise
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_sigma = add_noise(x, noise, sigma, self.sigma_in)
        p = self.self_condition_prob
        if p > 0 and self.training:
            draw = batch.self_cond_draw
            if draw is None:
                draw = torch.rand(x.shape[0], generator=generator, device=x.device)
            with torch.no_grad():
                _, latents = self.forward_with_state(x_sigma, sigma, cond)
            if latents is None:
                raise ValueError(f"self_condition_prob={p} needs a backbone that returns its latents as state "
                                 f"(FIT); {type(self.backbone).__name__} returns none")
            use = (draw.to(x.device) < p).to(latents.dtype)
            cond = cond.replace(self_cond=latents.detach() * use.reshape(-1, *([1] * (latents.ndim - 1))))
        x0 = self(x_sigma, sigma, cond)
        per_sample = mean_over_generated((x0 - x) ** 2, cond)
        return (loss_weight(sigma, self.sigma_data).to(x.device) * per_sample).mean()
