"""Scores of a super-resolution stage and of a video's motion (docs/cascades.md, benchmarks/cascade_ablation.py).

A stage's output ``out`` (N, T, C, H, W) in [-1, 1] is compared with the true high-resolution clip and with
its own low-resolution input:

- ``psnr``: mean per-frame PSNR against the truth (fidelity; it rewards a blur that hedges between edges);
- ``flicker``: 1000 x the mean squared error of the frame-to-frame differences against the truth's: 0 when
  the output changes from frame to frame exactly as the truth does, whatever its per-frame error (the
  temporal consistency Video LDM's aligned upsampler is about, arXiv 2304.08818 Sec. 3.2);
- ``sharpness``: the mean image-gradient magnitude relative to the truth's: 1 = as sharp as the truth,
  below 1 = blurrier (bilinear upsampling), above 1 = edges or grain the truth does not have;
- ``edge_error``: the mean absolute difference of the image gradients from the truth's: low only when the
  edges are where the truth's are *and* as sharp (a blur and grain both raise it);
- ``input_psnr``: the output box-downsampled back, against the low-resolution input (does the stage keep
  what it was given).

Motion (Video LDM Sec. 4's transfer of temporal layers): the centroid of the pixels far from a background
colour, per frame, and its mean acceleration (0 for constant velocity; a bounce adds a little).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from .metrics import psnr


def mean_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-frame PSNR (dB) of two (N, T, C, H, W) videos in [-1, 1]."""
    return float(psnr(a.flatten(0, 1), b.flatten(0, 1)).mean())


def flicker(out: torch.Tensor, truth: torch.Tensor) -> float:
    """1000 x MSE of the frame-to-frame differences against the truth's (0 = changes exactly as the truth)."""
    return 1000 * float(((out.diff(dim=1) - truth.diff(dim=1)) ** 2).mean())


def gradient_energy(video: torch.Tensor) -> float:
    """Mean absolute horizontal plus vertical pixel difference."""
    return float(video.diff(dim=-1).abs().mean() + video.diff(dim=-2).abs().mean())


def sharpness(video: torch.Tensor, truth: torch.Tensor) -> float:
    """Gradient energy relative to the truth's: 1 = as sharp, < 1 blurrier, > 1 edges or grain it lacks."""
    return gradient_energy(video) / gradient_energy(truth)


def edge_error(video: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean |horizontal gradient - the truth's| + mean |vertical gradient - the truth's|."""
    return float((video.diff(dim=-1) - truth.diff(dim=-1)).abs().mean()
                 + (video.diff(dim=-2) - truth.diff(dim=-2)).abs().mean())


def upsampling_scores(out: torch.Tensor, low: torch.Tensor, truth: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """``input_psnr`` always; ``psnr``, ``flicker``, ``sharpness`` and ``edge_error`` when the truth is known."""
    from ..upsampler import downsample
    row = {"input_psnr": mean_psnr(downsample(out, out.shape[-1] // low.shape[-1]), low)}
    if truth is not None:
        row.update(psnr=mean_psnr(out, truth), flicker=flicker(out, truth), sharpness=sharpness(out, truth),
                   edge_error=edge_error(out, truth))
    return row


def foreground_centroids(video: torch.Tensor, background: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """(N, T, 2) centroid (row, column) of the pixels whose largest channel difference from ``background``
    (C, 1, 1) exceeds ``threshold``; a frame without any such pixel gives (0, 0)."""
    fg = ((video - background).abs().amax(2) > threshold).float()  # (N, T, H, W)
    h, w = video.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    mass = fg.sum((-1, -2)).clamp(min=1)
    return torch.stack([(fg * rows).sum((-1, -2)) / mass, (fg * cols).sum((-1, -2)) / mass], -1)


def motion(video: torch.Tensor, background: torch.Tensor) -> Dict[str, float]:
    """``accel_px``: mean centroid acceleration |c[t+1] - 2 c[t] + c[t-1]| in pixels (0 for constant velocity);
    ``frame_change``: mean |frame difference|; ``on_background``: share of pixels near the background colour."""
    c = foreground_centroids(video, background)
    accel = (c[:, 2:] - 2 * c[:, 1:-1] + c[:, :-2]).norm(dim=-1).mean()
    on_background = ((video - background).abs().amax(2) < 0.3).float().mean()
    return {"accel_px": float(accel), "frame_change": float(video.diff(dim=1).abs().mean()),
            "on_background": float(on_background)}
