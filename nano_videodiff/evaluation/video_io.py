"""Turning video tensors into things people look at (GIFs, PNG grids and strips) and reading videos back."""
from __future__ import annotations

import importlib.util
import io
import struct
from pathlib import Path
from typing import Optional

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageSequence

from ..errors import UserError
from ..files import atomic_write


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


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    """Position after a chain of GIF data sub-blocks (each a length byte and that many bytes, ended by 0)."""
    while data[pos]:
        pos += data[pos] + 1
    return pos + 1


def _gif_image_parts(data: bytes) -> tuple:
    """(colour table, its size code, image descriptor fields, LZW data) of a one-image GIF from Pillow.

    The layout is the GIF89a specification's: header (6 bytes), logical screen descriptor (7 bytes) and
    optional global colour table, extensions (0x21 ...), one image (0x2C, a 9-byte descriptor, optional
    local colour table, LZW code size and data sub-blocks), trailer (0x3B).
    """
    flags, pos = data[10], 13
    table, size_code = b"", 0
    if flags & 0x80:  # a global colour table of 2^(code + 1) RGB triples
        size_code = flags & 0x07
        table, pos = data[pos:pos + (3 << (size_code + 1))], pos + (3 << (size_code + 1))
    while data[pos] == 0x21:  # Pillow's own extensions (timing, comments): ours replace them
        pos = _skip_sub_blocks(data, pos + 2)
    if data[pos] != 0x2C:
        raise RuntimeError(f"unexpected block 0x{data[pos]:02x} in a GIF frame written by Pillow")
    left, top, width, height, packed = struct.unpack_from("<HHHHB", data, pos + 1)
    pos += 10
    if packed & 0x80:  # a local colour table takes precedence
        size_code = packed & 0x07
        table, pos = data[pos:pos + (3 << (size_code + 1))], pos + (3 << (size_code + 1))
    if not table:
        raise RuntimeError("a GIF frame written by Pillow has no colour table")
    lzw_end = _skip_sub_blocks(data, pos + 1)  # pos: the LZW minimum code size byte
    return table, size_code, (left, top, width, height, packed & 0x40), data[pos:lzw_end]


def _gif_bytes(frames: np.ndarray, duration_ms: float, loop: int = 0) -> bytes:
    """An animated GIF of (T, H, W, 3) uint8 frames that holds exactly T images.

    Pillow's animated-GIF writer merges consecutive identical frames into one longer frame, by design and
    with no option to turn it off (optimize=False does not), so a clip that pauses would read back with
    fewer frames. Here Pillow only encodes each frame on its own, as a one-image GIF (its palette
    quantisation and LZW compression; one image has nothing to merge with), and the images are chained
    by hand: each keeps its colour table as a local one and gets a graphic control block with the delay.
    ``loop=0`` repeats forever.
    """
    if len(frames) == 0:
        raise ValueError("a GIF needs at least one frame")
    height, width = frames.shape[1:3]
    delay = max(1, round(duration_ms / 10))  # GIF delays count hundredths of a second
    out = [b"GIF89a", struct.pack("<HHBBB", width, height, 0x70, 0, 0),  # 8-bit colour, no global table
           b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loop) + b"\x00"]  # looping
    for frame in frames:
        one = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(one, format="GIF")
        table, size_code, (left, top, w, h, interlaced), lzw = _gif_image_parts(one.getvalue())
        # graphic control: disposal 1 (leave in place; every frame covers the screen), no transparency
        out.append(b"\x21\xf9\x04" + struct.pack("<BHBB", 1 << 2, delay, 0, 0))
        out.append(b"\x2c" + struct.pack("<HHHHB", left, top, w, h, 0x80 | interlaced | size_code))
        out += [table, lzw]
    out.append(b"\x3b")
    return b"".join(out)


def save_gif(path, video: torch.Tensor, fps: float = 8.0, scale: int = 4) -> Path:
    """Write a (T, C, H, W) video in [-1, 1] as a looping GIF with all T frames (see ``_gif_bytes``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _gif_bytes(to_uint8(upscale(video, scale)), 1000.0 / fps)
    atomic_write(path, lambda f: f.write(data))  # a kill never leaves half a GIF
    return path


def save_png(path, image: torch.Tensor, scale: int = 4) -> Path:
    """Write a (C, H, W) image in [-1, 1] as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = iio.imwrite("<bytes>", to_uint8(upscale(image, scale)), extension=".png")
    atomic_write(path, lambda f: f.write(data))
    return path


VIDEO_SUFFIXES = (".gif", ".mp4", ".mov", ".webm", ".avi", ".npy")
_MAGIC = {".gif": (b"GIF87a", b"GIF89a"), ".npy": (b"\x93NUMPY",)}  # how these files begin


def _unreadable(path, reason: str) -> UserError:
    return UserError(f"could not read {path} as a video: {reason}")


def _decoder_reason(error: Exception) -> str:
    """One line out of a decoder's exception: its first line, and ffmpeg's last complaint if it sent its log."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 2 and "=== stderr ===" in lines:  # imageio-ffmpeg appends all of ffmpeg's output
        return f"{lines[0]} (ffmpeg: {lines[-1]})"
    return lines[0]


def _read_gif(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a GIF, each composed over the previous ones as a viewer shows it.
    Pillow directly rather than through imageio: imageio turns Pillow's reason into plugin advice."""
    with Image.open(path) as im:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)])


def _read_array(path: Path) -> np.ndarray:
    """The raw array in a video file; any problem with the file is a UserError naming it."""
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise _unreadable(path, f"unsupported file type {path.suffix!r}; use .gif, .mp4 or .npy")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise _unreadable(path, "no such file") from None
    except IsADirectoryError:
        raise _unreadable(path, "it is a folder, not a file") from None
    except OSError as e:
        raise _unreadable(path, e.strerror or str(e)) from None
    if not head:
        raise _unreadable(path, "the file is empty")
    if suffix in _MAGIC and not head.startswith(_MAGIC[suffix]):
        raise _unreadable(path, f"it is not a {suffix[1:].upper()} file (it begins with {head[:8]!r})")
    if suffix not in _MAGIC and not any(importlib.util.find_spec(m) for m in ("imageio_ffmpeg", "av")):
        raise _unreadable(path, f"reading {suffix} files needs imageio-ffmpeg: pip install imageio-ffmpeg")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".gif":
            return _read_gif(path)
        return np.asarray(iio.imread(path, index=None))
    except Exception as e:  # decoders raise anything (OSError, ValueError, EOFError, SyntaxError) on bad bytes
        raise _unreadable(path, _decoder_reason(e)) from e


def load_video(path, channels: Optional[int] = None) -> torch.Tensor:
    """Read a GIF, MP4 (via imageio-ffmpeg) or .npy video as (T, C, H, W) float32 in [-1, 1].

    .npy may hold (T, H, W), (T, H, W, C) or (T, C, H, W); uint8 is read as 0..255, other numbers as
    [-1, 1] (or [0, 1] when no value is negative). ``channels=1`` turns RGB into grey; an alpha channel is
    dropped. A file that is not such a video raises UserError("could not read PATH as a video: why").
    """
    path = Path(path)
    array = _read_array(path)
    if array.dtype.kind not in "biuf":
        raise _unreadable(path, f"it holds {array.dtype} values, not numbers")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise _unreadable(path, f"expected the shape (T, H, W[, C]) of a video, got {array.shape}")
    if array.shape[1] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):  # (T, C, H, W) -> (T, H, W, C)
        array = array.transpose(0, 2, 3, 1)
    if len(array) == 0:
        raise _unreadable(path, f"it has no frames (shape {array.shape})")
    if array.shape[-1] not in (1, 3, 4):
        raise _unreadable(path, f"expected frames of 1, 3 or 4 channels, got an array of shape {array.shape}")
    if array.size == 0:
        raise _unreadable(path, f"its frames are empty (shape {array.shape})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise _unreadable(path, "it holds NaN or infinite values")
    if array.dtype != np.uint8:
        # Clamping would turn e.g. floats in 0..255 into a white video without a word: refuse instead.
        low, high = float(array.min()), float(array.max())
        if low < -1.1 or high > 1.1:
            raise _unreadable(path, f"its {array.dtype} values span [{low:g}, {high:g}]; store floats in [-1, 1] "
                                    f"or [0, 1], or uint8 for 0..255")
    video = torch.from_numpy(np.ascontiguousarray(array)).float()
    if array.dtype == np.uint8:
        video = video / 127.5 - 1
    elif video.min() >= 0:
        video = video * 2 - 1
    video = video[..., :3].movedim(-1, 1)  # drop alpha; (T, C, H, W)
    if channels == 1 and video.shape[1] == 3:
        video = video.mean(1, keepdim=True)
    return video.clamp(-1, 1)
