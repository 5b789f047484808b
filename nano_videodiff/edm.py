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

from .conditioning import Cond
from . import masking


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
# The denoiser D and its loss
# ----------------------------------------------------------------------------------------------

def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor so that it broadcasts over the other dims of ``like``."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=like.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


class Denoiser(nn.Module):
    """Wraps any backbone ``F(x, c_noise, cond)`` into ``D(x_sigma, sigma, cond) -> x0_hat`` (data units).

    The backbone sees ``c_in * x_sigma`` (unit variance) and ``c_noise``; it never sees sigma itself.
    A backbone may return ``out`` or ``(out, state)``; the state (e.g. FIT latents) is handed back as
    ``(x0, state)`` (by default whenever there is one; ``return_state=False`` forces a plain tensor), so the
    sampler carries it to the next step (RIN's latent self-conditioning at inference).
    """

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5, sigma_in: float = 1.0,
                 P_mean: float = -1.2, P_std: float = 1.2):
        super().__init__()
        self.backbone = backbone
        self.sigma_data = float(sigma_data)  # std of the data, in data units
        self.sigma_in = float(sigma_in)      # Snap Video's input scaling; 1 = plain EDM
        self.P_mean, self.P_std = float(P_mean), float(P_std)  # training ln(sigma) ~ N(P_mean, P_std^2)

    def forward(self, x_sigma: torch.Tensor, sigma: torch.Tensor, cond: Optional[Cond] = None,
                return_state: Optional[bool] = None):
        cond = cond if cond is not None else Cond()
        x_sigma = x_sigma.float()
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x_sigma.device).expand(x_sigma.shape[0])
        c_skip, c_out, c_in, c_noise = (_per_sample(c, x_sigma) for c in
                                        preconditioning(sigma, self.sigma_data, self.sigma_in))
        net_in = c_in * x_sigma
        # Known (clean) content enters the network at the scale it would have at sigma = 0,
        # c_in(0) * x / sigma_in = x / sigma_data: unit variance, whatever the noise level (masking.py).
        net_in = masking.network_input(net_in, cond, self.sigma_data)
        out = self.backbone(net_in, c_noise.flatten(), cond)
        out, state = out if isinstance(out, tuple) else (out, None)
        with torch.autocast(device_type=x_sigma.device.type, enabled=False):
            x0 = c_skip * x_sigma + c_out * out.float()
        x0 = masking.paste_known(x0, cond)  # known content comes back exactly
        if return_state is None:  # default: hand the state on when the backbone has one (sampler hook)
            return_state = state is not None
        return (x0, state) if return_state else x0

    def loss(self, x: torch.Tensor, cond: Optional[Cond] = None, sigma: Optional[torch.Tensor] = None,
             noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None,
             self_cond_draw: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean over the batch of ``lambda(sigma) * mean over generated positions of (D(x_sigma) - x)^2``.

        EDM sums over pixels; we average, so the loss scale does not depend on the video size, nor (with
        masks) on how many positions are generated. ``sigma`` and ``noise`` may be passed for exact
        reproducibility (the trainer draws them from a per-step generator); otherwise they are drawn here.

        Latent self-conditioning (RIN, used by FIT): if the backbone has ``self_condition_prob = p > 0``, a
        first pass without gradient gives latents, which a second pass receives as ``cond.self_cond`` for a
        fraction p of the samples (zeros, i.e. "no previous latents", for the rest). ``self_cond_draw``
        (B,) uniform numbers choose which samples; drawn here if not given.
        """
        if not torch.isfinite(x).all():
            raise ValueError("training batch contains NaN or Inf; check the data pipeline")
        x = x.float()
        if sigma is None:
            sigma = sample_training_sigma(x.shape[0], self.P_mean, self.P_std, generator, x.device)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_sigma = add_noise(x, noise, sigma, self.sigma_in)
        p = getattr(self.backbone, "self_condition_prob", 0.0)
        if p > 0 and self.training:
            if self_cond_draw is None:
                self_cond_draw = torch.rand(x.shape[0], generator=generator, device=x.device)
            with torch.no_grad():
                _, latents = self(x_sigma, sigma, cond, return_state=True)
            use = (self_cond_draw.to(x.device) < p).to(latents.dtype)
            cond = (cond if cond is not None else Cond()).replace(
                self_cond=latents.detach() * use.reshape(-1, *([1] * (latents.ndim - 1))))
        x0 = self(x_sigma, sigma, cond, return_state=False)
        per_position = (x0 - x) ** 2
        per_sample = masking.mean_over_generated(per_position, cond)
        return (loss_weight(sigma, self.sigma_data).to(x.device) * per_sample).mean()
