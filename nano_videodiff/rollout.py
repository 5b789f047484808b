"""Autoregressive rollout: videos longer than the model, by predicting the next T - k frames from the last k.

A model trained on clips of T frames with the ``predict`` task (k given frames) makes a video of any length
N by windows: the first window's context is the given frames; every further window takes the **last k frames
of the video made so far** (the previous window's output) as its context and generates T - k new frames,
until N frames exist. The given frames are copied into the output (bit-exact), and every window's context is
a copy of frames already in the output, so window boundaries are continuous by construction.

    videos = rollout(model, cfg, context, num_frames=64, steps=16, seed=0)   # (B, 64, C, H, W)

The papers' long-video recipes this follows:

- Video LDM (Blattmann et al. 2023, "Align your Latents", arXiv 2304.08818), Sec. 3.1 and 4: long
  videos are made autoregressively by conditioning the prediction model on the latest frames it generated
  (their model conditions on 2 frames to carry the motion), with classifier-free guidance on that context
  ("context guidance": ``guidance="context"``, the branch without the given frames).
- W.A.L.T (Gupta et al. 2023, arXiv 2312.06662), Sec. 4.4 and App. A: frame prediction in the latent
  space of the causal autoencoder; for the next clip the *last frames of the decoded video* are encoded
  again ("the last 5 frames -> 2 latent frames", f_t = 4). The causal prefix rule (``latent.py``):
  ``1 + f_t m`` pixel frames make ``1 + m`` exactly known latent frames, so k must be ``1 + f_t m``. Here
  every window calls ``generation.generate`` with the window's pixels, which encodes its last-k context
  with the causal encoder, samples the latents and decodes, exactly that rule. The latent of the new
  window's frame 0 is an *image* latent (the first frame of a causal clip), so the previous window's
  latents cannot simply be reused: re-encoding is required, not a shortcut.

Everything model-specific (pixels or latents, backbone, guidance) is ``generate``'s, so the rollout works
for every backbone trained with a prediction mode (``--masking=predict`` or VDT's mixture).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import masking
from .errors import UserError
from .evaluation.physics_eval import context_length as context_frames  # k: given frames per window
from .generation import generate

# Window w samples its noise with seed ``seed + w * WINDOW_SEED_STRIDE``: window 0 is generate(seed=seed).
WINDOW_SEED_STRIDE = 1_000_003


def num_windows(num_given: int, num_frames: int, window: int, k: int) -> int:
    """Windows needed to grow ``num_given`` frames to ``num_frames`` with T - k new frames per window."""
    return max(0, math.ceil((num_frames - num_given) / (window - k)))


@torch.no_grad()
def rollout(model, cfg, context: Optional[torch.Tensor], num_frames: int, *, num_context: Optional[int] = None,
            steps: int = 0, seed: int = 0, labels: Optional[torch.Tensor] = None, num_videos: int = 1,
            progress: bool = False, **generate_kwargs) -> torch.Tensor:
    """A video of ``num_frames`` frames (B, N, C, H, W) in data space ([-1, 1]) by autoregressive windows.

    context:     (B, L, C, H, W) given frames, L >= k (all L come back bit-exactly, the rollout continues
                 from the last k); None = the first window is generated from nothing (``num_videos``
                 videos; needs a model trained with unconditional generation, e.g. VDT's mixture).
    num_context: k, given frames per window (default: the training config's, else T // 2); for a latent
                 model k = 1 + f_t m (W.A.L.T's prefix rule, see the module docstring).
    steps, seed: sampler steps (0 = the config's) and noise seed (window w uses seed + w * 1_000_003).
    labels, and ``generate_kwargs`` (solver, cfg_scale, guidance, S_churn, dtype, batch_size, device,
    frame_interval) are passed to ``generation.generate`` for every window; ``guidance="context"`` with
    ``cfg_scale`` != 1 is context guidance on each window's given frames (Video LDM Sec. 3.1 and 4).
    The denoiser is called windows x (sampler evaluations per sample) times per batch.
    """
    d = cfg.data
    t, k = d.num_frames, context_frames(cfg, num_context)
    if context is None:  # a first clip from nothing, then continue it
        context = generate(model, cfg, num_videos, labels=labels, steps=steps, seed=seed, progress=progress,
                           **generate_kwargs)
        seed += WINDOW_SEED_STRIDE
    if context.ndim != 5 or tuple(context.shape[2:]) != (d.channels, d.height, d.width):
        raise UserError(f"the context must be (B, L, {d.channels}, {d.height}, {d.width}) frames in [-1, 1], "
                        f"got {tuple(context.shape)}")
    b, given = context.shape[:2]
    if given < k:
        raise UserError(f"the rollout needs at least k = {k} given frames (each window continues from the last "
                        f"k), got {given}; pass a longer context or a smaller --num_context")
    if num_frames < given:
        raise UserError(f"num_frames={num_frames} is shorter than the {given} given frames")
    out = torch.empty(b, num_frames, *context.shape[2:], dtype=context.dtype)
    out[:, :given] = context  # the given frames, bit-exactly
    known = masking.predict(b, t, d.height, d.width, num_context=k)
    made = given
    for w in range(num_windows(given, num_frames, t, k)):
        window = torch.zeros(b, t, *context.shape[2:], dtype=context.dtype)
        window[:, :k] = out[:, made - k:made]  # the latest k frames: given or generated by the last window
        frames = generate(model, cfg, b, known=known, known_x=window, labels=labels, steps=steps,
                          seed=seed + w * WINDOW_SEED_STRIDE, progress=progress, **generate_kwargs)
        new = min(t - k, num_frames - made)
        out[:, made:made + new] = frames[:, k:k + new].to(out.dtype)
        made += new
    return out
