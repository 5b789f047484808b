"""Convolutional-in-time sampling: a video model run over more frames than it was trained on.

Video LDM (Blattmann et al. 2023, "Align your Latents", arXiv 2304.08818), Sec. 3.1 and 4 (long video
generation): the learned temporal layers are applied to a sequence longer than the training clips, with the
temporal attention *masked* so that a frame attends only to frames at most the training distance away. Every
frame then sees a neighbourhood of the size it was trained with, and the whole long clip is denoised jointly
in one pass (no window stitching), as a convolution over time would be applied to a longer signal.

- ``band_mask(T, d)``: the (T, T) boolean attention mask ``|i - j| <= d`` (True = may attend).
- ``generate_long(model, cfg, num_frames, ...)``: ``generation.generate`` on ``num_frames`` frames inside
  ``model.backbone.conv_in_time(d)`` (the contract in ``backbones/base.py``; VDT and Video LDM declare
  temporal attention, the other backbones refuse), with d = the trained T - 1 by default.

What this does not change: the frame-position embedding. VDT and Video LDM add a fixed sinusoidal embedding
of the frame index, so frames beyond the trained T get positions the model never saw (the paper's model has
the same property; whether that hurts is measured in docs/interpolation.md, not assumed).
"""
from __future__ import annotations

from typing import Optional

import torch

from .errors import UserError


def band_mask(num_frames: int, max_distance: Optional[int], device=None) -> Optional[torch.Tensor]:
    """(T, T) bool, True where ``|i - j| <= max_distance``; None (no mask) for ``max_distance`` None."""
    if max_distance is None:
        return None
    frames = torch.arange(num_frames, device=device)
    return (frames[:, None] - frames[None, :]).abs() <= max_distance


def generate_long(model, cfg, num_frames: int, num_videos: int, max_distance: int = 0,
                  known: Optional[torch.Tensor] = None, known_x: Optional[torch.Tensor] = None, **generate_kwargs):
    """``num_frames`` frames in one sampler pass with the temporal attention masked to ``max_distance``
    (0 = the model's trained ``cfg.data.num_frames - 1``). ``known`` / ``known_x`` are (N, num_frames, ...)
    like ``generation.generate``'s; the other keywords go to it. Returns (N, num_frames, C, H, W)."""
    from .generation import generate
    from .training.config import Config

    trained = cfg.data.num_frames
    if model.autoencoder is not None:
        raise UserError("convolutional-in-time sampling runs the temporal layers over pixel frames; this is a "
                        "latent model (its causal autoencoder encodes fixed-length clips): use --method=rollout")
    if num_frames < trained:
        raise UserError(f"--num_frames={num_frames} is shorter than the model's {trained} frames")
    long_cfg = Config.from_dict(cfg.to_dict())
    long_cfg.data.num_frames = num_frames
    with model.backbone.conv_in_time(max_distance or trained - 1):
        return generate(model, long_cfg, num_videos, known=known, known_x=known_x, **generate_kwargs)
