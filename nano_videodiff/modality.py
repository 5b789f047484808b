"""Images as infinite-frame-rate videos, variable frame-rate clips and joint image+video batches.

Reference: Snap Video (Menapace et al. 2024, "Snap Video: Scaled Spatiotemporal Transformers for
Text-to-Video Synthesis", arXiv 2402.14797), Sec. 3.3 and the ablation of Table 3 (Sec. 4.3); what the
paper leaves open, and what we chose, is listed under UNCONFIRMED below.

The paper's argument
--------------------
Text-to-video models are trained on images as well as videos, because image data sets are larger and
more varied. The usual way, a separate image mode without a time axis, gives the two modalities different
inputs and, once Snap Video scales the input by ``sigma_in = s sqrt(T)`` (edm.py, Sec. 3.2), different
diffusion processes: a single image has no frames to average, so it would want its own ``sigma_in``.
Snap Video calls per-modality ``sigma_in`` values undesirable and treats both with **one** diffusion
process instead:

- An image *is* a video: a T-frame video shot at infinite frame rate. Nothing moves in zero time, so
  its T frames are identical (``image_to_video``). It then has the shape of a video, is noised with the
  same ``sigma_in`` and passes through the same network, and it is the most redundant video there is:
  averaging its T frames really divides the noise variance by T, exactly as Sec. 3.2 assumes.
- The network is told how much time separates two frames by a frame-rate token (Sec. 3.4, Fig. 3).
  Here it is the frame interval in seconds, ``Cond.frame_interval`` (conventions in ``conditioning.py``):
  a video at ``fps`` has interval ``1/fps``, an image has interval ``0``.
- Videos themselves are trained at a variable frame rate ("variable frame-rate training"): frames are
  taken with a random stride from a longer clip, so the same footage is seen at several frame rates
  (``variable_frame_rate``). The model learns what the interval means, and images (interval 0) are the
  limit of that range rather than a special case.
- Images and videos are mixed in the same batch (``joint_batch``); Snap Video uses half and half.
- Table 3 (row iv vs. "Ours"): treating images as infinite-fps videos improves FID from 3.50 to 3.07.

UNCONFIRMED (not in the paper, no code found)
---------------------------------------------
- The value that encodes "infinite fps". We use frame interval 0 seconds: a finite number that the
  frame-interval embedding handles like any other, no special case and no infinity.
- The range of frame rates drawn for videos. We draw the stride uniformly from ``1..max_stride``
  (limited so that the clip holds it), which gives frame rates ``fps / k``.
- How an image is turned into T frames. Repeating it is the reading of "infinite frame rate"; the
  Snap Video author's FIT code for audio (GenAU) does the same (``x.unsqueeze(2).repeat(...)``).

How a trainer uses this module
------------------------------
::

    # once: video clips long enough for the largest stride, and a source of single images
    video_ds = build_dataset(replace(cfg.data, num_frames=clip_length(T, max_stride)))
    images = ImageSource(image_ds, resolution=(H, W))        # e.g. other scenarios, or a sharper render
    n_img, n_vid = split_counts(B, image_fraction)           # exactly round(image_fraction * B) images

    # every step
    clips = get_batch(video_ds, indices[:n_vid])             # (n_vid, L, C, H, W) at the dataset's fps
    video, interval, _ = variable_frame_rate(clips["video"], T, 1 / clips["frame_interval"], max_stride, g)
    batch = joint_batch(video, interval, images.sample(n_img, g), image_fraction, g)
    loss = denoiser.loss(Batch(batch["video"], Cond(frame_interval=batch["frame_interval"])))

The denoiser keeps one ``sigma_in`` for both modalities: that is the point of the construction.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .conditioning import DROPPED_LABEL

Size = Union[int, Tuple[int, int]]


def _check_frames(num_frames: int) -> int:
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    return int(num_frames)


def _uniform_int(high: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One integer per entry, uniform in ``[0, high]`` (inclusive; high is a (B,) long tensor)."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(high.shape, generator=generator, device=device, dtype=torch.float64)
    high = high.to(device)
    return torch.minimum((u * (high + 1)).floor().long(), high)  # the min guards against u*(h+1) rounding up


# ----------------------------------------------------------------------------------------------
# Images as videos
# ----------------------------------------------------------------------------------------------

def image_to_video(images: torch.Tensor, num_frames: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """An image as a ``num_frames``-frame video at infinite frame rate: T identical frames, interval 0.

    images: (B, C, H, W) or (B, 1, C, H, W). Returns ``(videos (B, T, C, H, W), frame_interval (B,))``
    with ``frame_interval`` float32 zeros on the images' device. The frames are copies, not a view.
    """
    num_frames = _check_frames(num_frames)
    if images.ndim == 5:
        if images.shape[1] != 1:
            raise ValueError(f"a 5-D image batch must have one frame, (B, 1, C, H, W); got {tuple(images.shape)}")
        images = images[:, 0]
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W) or (B, 1, C, H, W); got {tuple(images.shape)}")
    videos = images.unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
    return videos, torch.zeros(images.shape[0], dtype=torch.float32, device=images.device)


# ----------------------------------------------------------------------------------------------
# Variable frame rate
# ----------------------------------------------------------------------------------------------

def clip_length(num_frames: int, max_stride: int) -> int:
    """Shortest source clip from which ``num_frames`` frames can be taken with stride ``max_stride``."""
    num_frames = _check_frames(num_frames)
    if int(max_stride) != max_stride or max_stride < 1:
        raise ValueError(f"max_stride must be a positive integer, got {max_stride!r}")
    return (num_frames - 1) * int(max_stride) + 1


def variable_frame_rate(clips: torch.Tensor, num_frames: int, fps: Union[float, torch.Tensor],
                        max_stride: int, generator: Optional[torch.Generator] = None
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Take ``num_frames`` frames from each long clip with a random stride: one clip, many frame rates.

    clips:      (B, L, C, H, W), recorded at ``fps`` frames per second (a float, or (B,) per clip).
    num_frames: T, frames per output video (T <= L).
    max_stride: largest stride k; per sample k is uniform in ``1..min(max_stride, (L-1) // (T-1))``, so
                the frames ``start + k * i`` (i = 0..T-1) always fit, and ``start`` is uniform over the
                positions where they do.
    Returns ``(videos (B, T, C, H, W), frame_interval (B,) = k / fps in seconds, frame_indices (B, T))``
    with ``videos[b, i] == clips[b, frame_indices[b, i]]``. Reproducible for a given generator state.
    """
    num_frames = _check_frames(num_frames)
    if clips.ndim != 5:
        raise ValueError(f"clips must be (B, L, C, H, W); got {tuple(clips.shape)}")
    b, length = clips.shape[:2]
    if num_frames > length:
        raise ValueError(f"cannot take num_frames={num_frames} frames from clips of {length} frames")
    if isinstance(max_stride, bool) or int(max_stride) != max_stride or max_stride < 1:
        raise ValueError(f"max_stride must be a positive integer, got {max_stride!r}")
    fps = torch.as_tensor(fps, dtype=torch.float32, device=clips.device).expand(b)
    if not (torch.isfinite(fps).all() and (fps > 0).all()):
        raise ValueError("fps must be finite and positive (a clip with interval 0 is an image, not a video)")

    # Largest stride that fits: k (T - 1) <= L - 1. One frame fits with any stride.
    fits = (length - 1) // (num_frames - 1) if num_frames > 1 else int(max_stride)
    k_max = min(int(max_stride), fits)
    stride = 1 + _uniform_int(torch.full((b,), k_max - 1, dtype=torch.long), generator)
    start = _uniform_int(length - 1 - stride * (num_frames - 1), generator)
    stride, start = stride.to(clips.device), start.to(clips.device)
    frame_indices = start[:, None] + stride[:, None] * torch.arange(num_frames, device=clips.device)
    videos = clips[torch.arange(b, device=clips.device)[:, None], frame_indices]  # one gather, no loop
    return videos, stride.float() / fps, frame_indices


# ----------------------------------------------------------------------------------------------
# Joint image + video batches
# ----------------------------------------------------------------------------------------------

def split_counts(batch_size: int, image_fraction: float) -> Tuple[int, int]:
    """``(n_images, n_videos)`` of a joint batch: ``n_images = round(image_fraction * batch_size)``."""
    if not 0.0 <= image_fraction <= 1.0:
        raise ValueError(f"image_fraction must be in [0, 1], got {image_fraction!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n_images = int(round(image_fraction * batch_size))
    return n_images, int(batch_size) - n_images


def joint_batch(videos: torch.Tensor, video_interval: torch.Tensor, images: torch.Tensor,
                image_fraction: float = 0.5, generator: Optional[torch.Generator] = None, *,
                batch_size: Optional[int] = None, video_labels: Optional[torch.Tensor] = None,
                image_labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """One training batch of ``batch_size`` rows, ``round(image_fraction * batch_size)`` of them images.

    videos:         (Bv, T, C, H, W) real videos, and their ``video_interval`` (Bv,) in seconds.
    images:         (Bi, C, H, W) or (Bi, 1, C, H, W), turned into T-frame videos by ``image_to_video``.
    batch_size:     rows in the result (default Bv). The first ``n_images`` images and the first
                    ``batch_size - n_images`` videos are used (see ``split_counts``); more may be passed.
    video_labels, image_labels: optional (Bv,) / (Bi,) class labels. If only one side has labels, the
                    other side's rows get DROPPED_LABEL (trained as unconditional samples).
    The rows are shuffled with ``generator``. Returns a dict:
        video (B, T, C, H, W), frame_interval (B,) float32 (0 for images), is_image (B,) bool,
        index (B,) long: the row of ``videos`` or ``images`` each sample came from,
        labels (B,) long: only when labels were given.
    """
    if videos.ndim != 5:
        raise ValueError(f"videos must be (B, T, C, H, W); got {tuple(videos.shape)}")
    batch_size = videos.shape[0] if batch_size is None else batch_size
    n_img, n_vid = split_counts(batch_size, image_fraction)
    frames = videos.shape[1]
    image_videos, image_interval = image_to_video(images, frames)
    if image_videos.shape[2:] != videos.shape[2:]:
        raise ValueError(f"images {tuple(image_videos.shape[2:])} and videos {tuple(videos.shape[2:])} must "
                         "have the same (C, H, W); resize them, e.g. ImageSource(..., resolution=(H, W))")
    video_interval = torch.as_tensor(video_interval, dtype=torch.float32, device=videos.device).reshape(-1)
    if video_interval.shape[0] != videos.shape[0]:
        raise ValueError("video_interval needs one entry per video")
    if n_img > image_videos.shape[0] or n_vid > videos.shape[0]:
        raise ValueError(f"a batch of {batch_size} with image_fraction {image_fraction} needs {n_img} images and "
                         f"{n_vid} videos; got {image_videos.shape[0]} and {videos.shape[0]}")

    device = videos.device
    rows = torch.arange(max(n_img, n_vid), device=device)
    parts = dict(
        video=(image_videos[:n_img].to(device=device, dtype=videos.dtype), videos[:n_vid]),
        frame_interval=(image_interval[:n_img].to(device), video_interval[:n_vid]),
        is_image=(torch.ones(n_img, dtype=torch.bool, device=device),
                  torch.zeros(n_vid, dtype=torch.bool, device=device)),
        index=(rows[:n_img], rows[:n_vid]),
    )
    if video_labels is not None or image_labels is not None:
        def labels(given, n, name):
            if given is None:
                return torch.full((n,), DROPPED_LABEL, dtype=torch.long, device=device)
            given = torch.as_tensor(given, device=device).long().reshape(-1)
            if given.shape[0] < n:
                raise ValueError(f"{name} has {given.shape[0]} entries, need {n}")
            return given[:n]
        parts["labels"] = (labels(image_labels, n_img, "image_labels"), labels(video_labels, n_vid, "video_labels"))

    perm_device = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(batch_size, generator=generator, device=perm_device).to(device)
    return {k: torch.cat(v)[order] for k, v in parts.items()}


# ----------------------------------------------------------------------------------------------
# A source of images: single frames of a (toy) video dataset
# ----------------------------------------------------------------------------------------------

class ImageSource:
    """Single frames of any dataset that ``toy_data.get_batch`` reads, used as an image data set.

    The image data should carry something the videos do not (in Snap Video: the variety of image data
    sets). With the toy data, build the source from other scenarios or other seeds than the videos, or
    render it at a higher resolution and let ``resolution`` bring it to the videos' size (area averaging,
    i.e. a cleaner anti-aliased picture than the videos' own rendering).

    dataset:    has ``len()``; ``toy_data.get_batch(dataset, indices)["video"]`` is (n, T, C, H, W).
    resolution: output size, an int (square) or (H, W); None keeps the dataset's size.
    """

    def __init__(self, dataset, resolution: Optional[Size] = None):
        if len(dataset) < 1:
            raise ValueError("ImageSource needs a non-empty dataset")
        if resolution is not None:
            resolution = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
            if len(resolution) != 2 or min(resolution) < 1:
                raise ValueError(f"resolution must be a positive int or (H, W), got {resolution!r}")
        self.dataset, self.resolution = dataset, resolution

    def sample_batch(self, n: int, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """``n`` random frames of random clips: dict(image (n, C, H, W), clip_index, frame_index, [labels])."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        from toy_data import get_batch  # the library does not need toy_data at import time

        clip_index = _uniform_int(torch.full((int(n),), len(self.dataset) - 1, dtype=torch.long), generator).cpu()
        batch = get_batch(self.dataset, clip_index.tolist())
        video = batch["video"]  # (n, T, C, H, W)
        frame_index = _uniform_int(torch.full((int(n),), video.shape[1] - 1, dtype=torch.long), generator).cpu()
        image = video[torch.arange(int(n)), frame_index]
        if self.resolution is not None and tuple(image.shape[-2:]) != self.resolution:
            image = resize(image, self.resolution)
        out = dict(image=image, clip_index=clip_index, frame_index=frame_index)
        if "labels" in batch:
            out["labels"] = batch["labels"]
        return out

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` images (n, C, H, W) in the dataset's value range ([-1, 1] for the toy data)."""
        return self.sample_batch(n, generator)["image"]


def resize(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize (N, C, H, W) images: area averaging when shrinking, anti-aliased bilinear otherwise."""
    h, w = int(size[0]), int(size[1])
    if h <= images.shape[-2] and w <= images.shape[-1]:
        return F.interpolate(images, size=(h, w), mode="area")
    return F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
