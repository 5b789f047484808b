"""Turning video tensors into things people look at: GIFs, PNG grids and strips (imageio)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import imageio.v3 as iio
import numpy as np
import torch


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) in [-1, 1] -> (..., H, W, C) uint8 (grey videos become RGB)."""
    x = ((video.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.movedim(-3, -1).numpy()
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def video_grid(videos: torch.Tensor, ncol: Optional[int] = None, pad: int = 1) -> torch.Tensor:
    """(N, T, C, H, W) -> (T, C, H', W'): the N videos tiled in a grid, separated by white lines."""
    n, t, c, h, w = videos.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    grid = torch.ones(t, c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):  # N is a handful of preview videos, not a hot path
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, :, top:top + h, left:left + w] = videos[i].detach().float().cpu()
    return grid


def frames_strip(video: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """(T, C, H, W) -> (C, H, T*W + gaps): the frames side by side, for a PNG."""
    return video_grid(video[:, None], ncol=video.shape[0], pad=pad)[0]


def frames_grid(videos: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """(N, T, C, H, W) -> (C, H', W'): row i shows video i's frames left to right, for a PNG."""
    return video_grid(videos.flatten(0, 1)[:, None], ncol=videos.shape[1], pad=pad)[0]


def upscale(video: torch.Tensor, scale: int) -> torch.Tensor:
    """Nearest-neighbour enlargement so that 32-pixel videos are visible in a viewer."""
    return video.repeat_interleave(scale, -2).repeat_interleave(scale, -1) if scale > 1 else video


def save_gif(path, video: torch.Tensor, fps: float = 8.0, scale: int = 4) -> Path:
    """Write a (T, C, H, W) video in [-1, 1] as a looping GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8(upscale(video, scale))
    iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def save_png(path, image: torch.Tensor, scale: int = 4) -> Path:
    """Write a (C, H, W) image in [-1, 1] as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(upscale(image, scale)), extension=".png")
    return path


def load_video(path, channels: Optional[int] = None) -> torch.Tensor:
    """Read a GIF, MP4 (via imageio-ffmpeg) or .npy video as (T, C, H, W) float32 in [-1, 1].

    .npy may hold (T, H, W), (T, H, W, C) or (T, C, H, W); uint8 is read as 0..255, floats as [-1, 1]
    (or [0, 1] when no value is negative). ``channels=1`` turns RGB into grey; an alpha channel is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix.lower() in (".gif", ".mp4", ".mov", ".webm", ".avi"):
        array = np.asarray(iio.imread(path, index=None))
    else:
        raise ValueError(f"{path}: unsupported video type {path.suffix!r}; use .gif, .mp4 or .npy")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"{path}: expected a video (T, H, W[, C]), got an array of shape {array.shape}")
    if array.shape[1] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):  # (T, C, H, W) -> (T, H, W, C)
        array = array.transpose(0, 2, 3, 1)
    video = torch.from_numpy(np.ascontiguousarray(array)).float()
    if array.dtype == np.uint8:
        video = video / 127.5 - 1
    elif video.min() >= 0:
        video = video * 2 - 1
    video = video[..., :3].movedim(-1, 1)  # drop alpha; (T, C, H, W)
    if channels == 1 and video.shape[1] == 3:
        video = video.mean(1, keepdim=True)
    return video.clamp(-1, 1)
