"""EDM's sampler: the sigma schedule (Eq. 5), Heun/Euler steps (Alg. 1) and churn (Alg. 2).

References: Karras et al. 2022 (EDM) Eq. 5, Algorithm 1 (deterministic Heun) and Algorithm 2
(stochastic "churn"); Snap Video Sec. 3.2 (sampling with ``sigma_in``) and Sec. 3.6 (guidance).

The sampler knows nothing about networks. It takes any callable ``denoise(x, sigma, cond) -> (x0_hat,
state)`` (``sigma`` of shape (B,)), e.g. ``Denoiser.forward_with_state``, so it can be tested with the
analytic optimal denoiser of Gaussian data (state None) and reused by every backbone. The state is put into
``cond.self_cond`` for the next call (FIT's latent self-conditioning carries latents this way; None = none).

With Snap Video's input scaling the ODE runs on the scaled variable ``y = x / sigma_in + sigma eps``.
The denoiser returns x0 in data units, so the ODE uses ``D / sigma_in`` and the final y (at sigma = 0,
``y = x / sigma_in``) is multiplied back by ``sigma_in``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from .conditioning import Cond
from .edm import paste_known


def edm_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
               device=None) -> torch.Tensor:
    """EDM Eq. 5: ``sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho``, then 0.

    Returns N + 1 float32 values, decreasing from sigma_max to sigma_min, followed by exactly 0.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(num_steps, dtype=torch.float64)
    ramp = i / max(num_steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).to(device=device, dtype=torch.float32)


def dynamic_threshold(x0: torch.Tensor, percentile: float) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, arXiv 2205.11487, Sec. 2.3), used by Snap Video
    (Sec. 3.6) at high guidance: per sample, ``s = max(quantile(|x0|, percentile), 1)``, then
    ``x0 <- clamp(x0, -s, s) / s``. Pushes saturated pixels inwards instead of clipping them at +-1; a
    sample already inside [-1, 1] at that percentile is unchanged. For data in [-1, 1] (pixels), not latents.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"the dynamic thresholding percentile must be in (0, 1], got {percentile}")
    s = torch.quantile(x0.detach().flatten(1).abs().float(), percentile, dim=1).clamp(min=1.0)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def guidance_scale_at(step: int, cfg_scale: float, oscillate_to: Optional[float] = None) -> float:
    """Oscillating guidance (Imagen Video, Ho et al. 2022, arXiv 2210.02303, Sec. 2.6; Snap Video Sec. 3.6):
    the guidance weight alternates between ``cfg_scale`` on even sampler steps and ``oscillate_to`` on odd
    ones; None = the constant ``cfg_scale``. (The papers name the idea, not their schedules' constants.)"""
    return cfg_scale if oscillate_to is None or step % 2 == 0 else float(oscillate_to)


class _GuidedDenoiser:
    """Classifier-free guidance and state carrying around a raw ``denoise`` callable.

    Guidance (Ho & Salimans 2022): ``D = D_uncond + cfg_scale (D_cond - D_uncond)``; cfg_scale = 1 is
    the plain conditional model, 0 the unconditional one. Each branch carries its own state.
    """

    def __init__(self, denoise: Callable, cond: Optional[Cond], cfg_scale: float, uncond: Optional[Cond],
                 oscillate_to: Optional[float] = None, threshold: float = 0.0):
        self.denoise, self.cfg_scale = denoise, float(cfg_scale)
        self.oscillate_to, self.threshold = oscillate_to, float(threshold)
        self.cond = cond
        self.uncond = None
        self.calls = 0  # network evaluations (NFE); a guided step counts once, as EDM's papers do
        if self.cfg_scale != 1.0 or (oscillate_to is not None and oscillate_to != 1.0):
            if uncond is None and (cond is None or (cond.labels is None and cond.captions is None)):
                raise ValueError("cfg_scale != 1 needs an unconditional branch: labels or captions in cond (they "
                                 "are dropped) or an explicit `uncond` (e.g. cond without its context)")
            self.uncond = uncond if uncond is not None else cond.unconditional()

    def _call(self, x, sigma, cond):
        out, state = self.denoise(x, sigma, cond)
        if state is not None:  # carry the state into the next call (RIN self-conditioning)
            cond = (cond if cond is not None else Cond()).replace(self_cond=state)
        return out.float(), cond

    def __call__(self, x: torch.Tensor, sigma: float, step: int = 0) -> torch.Tensor:
        self.calls += 1
        sigma_b = torch.full((x.shape[0],), float(sigma), dtype=torch.float32, device=x.device)
        d, self.cond = self._call(x, sigma_b, self.cond)
        if self.uncond is not None:
            d_uncond, self.uncond = self._call(x, sigma_b, self.uncond)
            d = d_uncond + guidance_scale_at(step, self.cfg_scale, self.oscillate_to) * (d - d_uncond)
        return dynamic_threshold(d, self.threshold) if self.threshold > 0 else d


@torch.no_grad()
def sample(denoise: Callable, noise: torch.Tensor, sigmas: torch.Tensor, cond: Optional[Cond] = None,
           solver: str = "heun", S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"),
           S_noise: float = 1.0, sigma_in: float = 1.0, cfg_scale: float = 1.0,
           uncond: Optional[Cond] = None, generator: Optional[torch.Generator] = None,
           progress: bool = False, return_nfe: bool = False, cfg_oscillate_to: Optional[float] = None,
           dynamic_threshold_percentile: float = 0.0):
    """Integrate the probability-flow ODE from ``noise * sigmas[0]`` down to sigma = 0.

    denoise:   callable (x, sigma (B,), cond) -> (x0 in data units, state or None).
    noise:     unit Gaussian of the output shape; scaled by sigmas[0] here, as in EDM's sampler.
    sigmas:    decreasing noise levels ending in 0, e.g. ``edm_sigmas(N)``: N steps.
    solver:    "heun" (2N-1 denoiser calls; the last step, to sigma = 0, is Euler) or "euler" (N calls).
    S_churn, S_min, S_max, S_noise: Alg. 2's stochasticity; S_churn = 0 is the deterministic Alg. 1.
    sigma_in:  Snap Video's input scaling (must equal the one the denoiser was trained with).
    cfg_scale: classifier-free guidance weight; ``uncond`` overrides the default unconditional cond
               (labels dropped), e.g. to drop the context frames instead (VDT/Video LDM context guidance).
    generator: for the churn noise, so stochastic sampling is reproducible.
    cfg_oscillate_to, dynamic_threshold_percentile: Snap Video Sec. 3.6's oscillating guidance
               (``guidance_scale_at``) and dynamic thresholding of D (``dynamic_threshold``); off by default.
    Known content (``cond.known``) is returned bit-exactly: the denoiser already pastes it into D, and
    the final result is overwritten with ``cond.known_x`` where known.
    """
    if solver not in ("heun", "euler"):
        raise ValueError(f"unknown solver {solver!r}; use 'heun' or 'euler'")
    sigmas = sigmas.to(torch.float32)
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0.0:
        raise ValueError("sigmas must be a 1-D decreasing schedule ending in 0 (see edm_sigmas)")
    den = _GuidedDenoiser(denoise, cond, cfg_scale, uncond, cfg_oscillate_to, dynamic_threshold_percentile)
    num_steps = len(sigmas) - 1
    x = noise.float() * sigmas[0]
    steps = tqdm(range(num_steps), desc="sampling", leave=False, disable=not progress)
    for i in steps:
        s_cur, s_next = float(sigmas[i]), float(sigmas[i + 1])
        # Alg. 2: raise the noise level to s_hat by adding fresh noise ("churn").
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= s_cur <= S_max else 0.0
        s_hat = s_cur * (1 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + math.sqrt(s_hat**2 - s_cur**2) * S_noise * eps
        # Euler step of dx/dsigma = (x - D(x)/sigma_in) / sigma (Alg. 1 with sigma(t) = t, s(t) = 1).
        d = (x - den(x, s_hat, i) / sigma_in) / s_hat
        x_next = x + (s_next - s_hat) * d
        # Heun's 2nd-order correction, skipped on the last step where sigma_next = 0.
        if solver == "heun" and s_next > 0:
            d_next = (x_next - den(x_next, s_next, i) / sigma_in) / s_next
            x_next = x + (s_next - s_hat) * 0.5 * (d + d_next)
        x = x_next
    result = paste_known(x * sigma_in, cond)
    return (result, den.calls) if return_nfe else result
