"""Your own videos as a dataset: a folder of clips or a manifest, decoded with PyAV.

``VideoDataset(root, num_frames, size)`` reads

- a folder, searched recursively, of video files (``.mp4 .webm .mkv .avi .mov .gif``), of frame folders
  (a sub-folder holding only ``.png``/``.jpg`` frames, in sorted file-name order, at ``default_fps``) and
  of still images (an image next to videos or directly in ``root``);
- or a manifest, ``.csv`` or ``.jsonl``: one row per clip with ``path`` (relative to the manifest) and
  optional ``label`` (int, or a name: names are numbered in sorted order), ``caption`` (kept, unused),
  ``fps`` (overrides the file's), ``start`` and ``end`` (seconds: use only that part of the file).

Each index is one clip of ``num_frames`` frames, chosen as a pure function of (seed, index), so that a
batch is reproducible whatever process loads it (``loader.py``):

- Training split: index i visits the files in a shuffled order, a new order every pass; the clip starts
  at a random frame with a random stride k in ``1..max_stride`` (capped by the file's length), and is
  randomly cropped. Validation split: index i is file i, its first frames at stride 1, centre-cropped.
- The frame interval is k / fps with the file's own fps: Snap Video's variable frame rate (arXiv
  2402.14797, Sec. 3.3), here with the real frame rates of the files. A still image is Snap Video's
  image as an infinite-fps video: the frame repeated ``num_frames`` times, interval 0 (``modality.py``).
- Frames are resized and cropped to ``size = (height, width)``: the largest box of that aspect ratio,
  then resized (``crop_box``, ``frames_to_model``).
- The split is by a hash of each clip's relative path: deterministic, disjoint, and stable when files
  are added.
- Files that cannot be decoded, or are shorter than ``num_frames``, are skipped when the folder is
  indexed, counted and named in one warning, so that a bad file never stops a run at step 40,000.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import modality
from ..errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
TRAIN_LENGTH = 10**9  # training indices are an endless stream of clips (as toy_data.moving_mnist)
CLIP_SEED_STRIDE = 1_000_000_007  # a prime above any index, so every (seed, index) has its own stream
NAMED_IN_WARNING = 20  # skipped files listed by name in the warning; the rest are counted


@dataclass(frozen=True)
class Entry:
    """One usable clip: where it is, how many frames it has, and at what rate."""
    path: str                     # absolute path of the file or frame folder
    key: str                      # path relative to the root or manifest: names the clip, decides its split
    kind: str                     # video | frames | image
    length: int                   # frames available (1 for an image), after start/end
    first: int                    # index of the first available frame in the file
    fps: float                    # frames per second for the frame interval (0 for an image)
    rate: float                   # the file's own frame rate, to find frames by time stamp (videos)
    label: Optional[int] = None
    caption: str = ""
    frame_files: Tuple[str, ...] = ()  # a frame folder's frames, in order


# ----------------------------------------------------------------------------------------------
# Finding the clips: a folder or a manifest
# ----------------------------------------------------------------------------------------------

def find_sources(root: str) -> List[Dict]:
    """The clips under a folder or in a manifest, as dicts (path, key, kind [, label, caption, fps, start, end])."""
    root_path = Path(root).expanduser()
    if root_path.is_file() and root_path.suffix.lower() in MANIFEST_EXTENSIONS:
        return read_manifest(root_path)
    if not root_path.is_dir():
        raise UserError(f"--data_root={root} is neither a folder of videos nor a .csv/.jsonl manifest")
    sources = []
    for folder, dirs, files in os.walk(root_path):
        dirs.sort()  # os.walk visits sub-folders in this order: a stable index on every machine
        folder = Path(folder)
        videos = sorted(f for f in files if f.lower().endswith(VIDEO_EXTENSIONS))
        images = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
        for name in videos:
            sources.append(dict(path=folder / name, key=(folder / name).relative_to(root_path).as_posix(),
                                kind="video"))
        # A sub-folder of only images is one video, frame by frame; images beside videos (or loose in the
        # root) are stills.
        if images and (videos or folder == root_path):
            sources += [dict(path=folder / name, key=(folder / name).relative_to(root_path).as_posix(),
                             kind="image") for name in images]
        elif images:
            sources.append(dict(path=folder, key=folder.relative_to(root_path).as_posix(), kind="frames",
                                frame_files=tuple(str(folder / name) for name in images)))
    return sources


def _kind_of(path: Path) -> str:
    if path.is_dir():
        return "frames"
    return "image" if path.suffix.lower() in IMAGE_EXTENSIONS else "video"


def read_manifest(manifest: Path) -> List[Dict]:
    """Rows of a .csv (with a header) or .jsonl manifest as source dicts; paths are relative to the manifest."""
    if manifest.suffix.lower() == ".csv":
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = []
        for n, line in enumerate(manifest.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{manifest} line {n} is not JSON; write one object per line") from None
    sources = []
    for n, row in enumerate(rows, 1):
        if not row.get("path"):
            raise UserError(f"{manifest} row {n} has no 'path'; every row needs one (relative to the manifest)")
        path = (manifest.parent / str(row["path"])).resolve()
        source = dict(path=path, key=str(row["path"]), kind=_kind_of(path), caption=str(row.get("caption") or ""))
        for name in ("fps", "start", "end"):
            if row.get(name) not in (None, ""):
                try:
                    source[name] = float(row[name])
                except ValueError:
                    raise UserError(f"{manifest} row {n}: {name} must be a number, got {row[name]!r}") from None
        if row.get("label") not in (None, ""):
            source["label"] = str(row["label"])
        if source["kind"] == "frames":
            source["frame_files"] = tuple(str(p) for p in sorted(path.iterdir())
                                          if p.suffix.lower() in IMAGE_EXTENSIONS)
        sources.append(source)
    return sources


# ----------------------------------------------------------------------------------------------
# Probing and decoding
# ----------------------------------------------------------------------------------------------

def _open_stream(container):
    if not container.streams.video:
        raise ValueError("no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1  # loader workers give the parallelism, not decoder threads
    return stream


def probe(source: Dict, default_fps: float) -> Entry:
    """An ``Entry`` for a source; raises if it cannot be decoded (the first frame is decoded to check)."""
    import av

    path, kind = Path(source["path"]), source["kind"]
    if kind == "image":
        read_image(str(path))
        return Entry(str(path), source["key"], "image", 1, 0, 0.0, 0.0, caption=source.get("caption", ""))
    if kind == "frames":
        files = source.get("frame_files", ())
        if not files:
            raise ValueError("no .png/.jpg frames")
        read_image(files[0])
        total, rate = len(files), float(source.get("fps") or default_fps)
    else:
        with av.open(str(path)) as container:
            stream = _open_stream(container)
            next(container.decode(stream))  # StopIteration or a decoding error: not usable
            rate_fraction = stream.average_rate or stream.guessed_rate
            total = stream.frames
        if not total:  # some containers (webm, mkv, gif) do not store a frame count: count the packets
            with av.open(str(path)) as container:
                total = sum(1 for packet in container.demux(_open_stream(container)) if packet.size)
        rate = float(rate_fraction) if rate_fraction else 0.0
        if not rate > 0:
            raise ValueError("no frame rate in the file; give it an fps in a manifest")
    fps = float(source.get("fps") or rate)
    first = math.ceil(source["start"] * rate - 1e-6) if source.get("start") else 0
    last = min(total, math.floor(source["end"] * rate + 1e-6)) if source.get("end") else total
    return Entry(str(path), source["key"], kind, max(0, last - first), first, fps, rate,
                 caption=source.get("caption", ""), frame_files=tuple(source.get("frame_files", ())))


def read_image(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    from PIL import Image  # Pillow comes with imageio

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def decode_video(path: str, wanted: np.ndarray, rate: float) -> np.ndarray:
    """Frames ``wanted`` (sorted frame numbers) of a video file as (T, H, W, 3) uint8 RGB.

    Seeks to the key frame before the first wanted frame and decodes from there; a frame's number is its
    time stamp times the file's frame rate. A number with no frame (a variable-frame-rate file) takes the
    last frame before it.
    """
    import av

    lo, hi = int(wanted[0]), int(wanted[-1])
    keep = set(wanted.tolist())
    numbers, frames = [], []
    with av.open(path) as container:
        stream = _open_stream(container)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if lo > 0 and container.format.name != "gif":  # GIFs have no index to seek in
            container.seek(int((start + lo / rate) / stream.time_base), stream=stream, backward=True)
        for count, frame in enumerate(container.decode(stream)):
            number = count if frame.time is None else round((frame.time - start) * rate)
            if number > hi:
                break
            if number in keep or (number < lo and not frames):
                numbers.append(number)
                frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise ValueError(f"no frames decoded at {lo}..{hi}")
    pick = np.clip(np.searchsorted(np.array(numbers), wanted, side="right") - 1, 0, len(frames) - 1)
    return np.stack(frames)[pick]


def read_frames(entry: Entry, wanted: np.ndarray) -> np.ndarray:
    """Frames ``wanted`` (numbers counted from the entry's first frame) as (T, H, W, 3) uint8."""
    if entry.kind == "image":
        return read_image(entry.path)[None]
    if entry.kind == "frames":
        return np.stack([read_image(entry.frame_files[entry.first + int(i)]) for i in wanted])
    return decode_video(entry.path, entry.first + wanted, entry.rate)


# ----------------------------------------------------------------------------------------------
# Crop and resize
# ----------------------------------------------------------------------------------------------

def crop_box(height: int, width: int, out_height: int, out_width: int,
             generator: Optional[torch.Generator] = None) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)``: the largest box of aspect ``out_height : out_width`` in a height x width frame,
    centred (no generator) or at a random position. Resizing that box to the output size keeps shapes
    undistorted: the frame is scaled so its shorter side fits, and the rest is cut off."""
    scale = min(height / out_height, width / out_width)
    h, w = min(height, max(1, round(out_height * scale))), min(width, max(1, round(out_width * scale)))
    if generator is None:
        return (height - h) // 2, (width - w) // 2, h, w
    top = int(torch.randint(height - h + 1, (1,), generator=generator))
    left = int(torch.randint(width - w + 1, (1,), generator=generator))
    return top, left, h, w


def frames_to_model(frames: np.ndarray, size: Tuple[int, int], channels: int = 3,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, C, h, w) float32 in [-1, 1]: crop (``crop_box``), then resize the whole clip."""
    top, left, h, w = crop_box(frames.shape[1], frames.shape[2], size[0], size[1], generator)
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + h, left:left + w])).permute(0, 3, 1, 2).float()
    if (h, w) != tuple(size):
        x = modality.resize(x, size)  # area averaging when shrinking, anti-aliased bilinear otherwise
    if channels == 1:
        x = x.mean(1, keepdim=True)
    return (x / 127.5 - 1).clamp(-1, 1)


# ----------------------------------------------------------------------------------------------
# Indexing and the split
# ----------------------------------------------------------------------------------------------

def split_of(key: str, val_fraction: float) -> str:
    """"test" for about ``val_fraction`` of the clips, by a hash of their relative path, else "train"."""
    return "test" if _hash_unit(key) < val_fraction else "train"


def _hash_unit(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64


@functools.lru_cache(maxsize=16)  # train and test split, previews: one probe of every file per run
def index_clips(root: str, min_frames: int, default_fps: float) -> Tuple[Tuple[Entry, ...], Tuple[str, ...]]:
    """Usable clips under ``root`` and the skipped ones ("key: reason"), warned about once."""
    entries, skipped = [], []
    sources = find_sources(root)
    for source in sources:
        try:
            entry = probe(source, default_fps)
        except Exception as err:  # noqa: BLE001 - whatever FFmpeg or Pillow raise, the file is unusable
            skipped.append(f"{source['key']}: {type(err).__name__} {err}".strip())
            continue
        if entry.kind != "image" and entry.length < min_frames:
            skipped.append(f"{source['key']}: too short ({entry.length} frames, need {min_frames})")
            continue
        entries.append(replace(entry, label=source.get("label")))
    if skipped:
        named = "; ".join(skipped[:NAMED_IN_WARNING])
        more = f"; and {len(skipped) - NAMED_IN_WARNING} more" if len(skipped) > NAMED_IN_WARNING else ""
        warnings.warn(f"skipped {len(skipped)} of {len(sources)} clips under {root}: {named}{more}", stacklevel=2)
    return tuple(_number_labels(entries, root)), tuple(skipped)


def _number_labels(entries: List[Entry], root: str) -> List[Entry]:
    """Labels as class numbers: integers as they are, names numbered in sorted order."""
    given = [e.label for e in entries if e.label is not None]
    if not given:
        return entries
    if len(given) != len(entries):
        raise UserError(f"{root}: some rows have a label and some do not; give every row a label or none")
    names = sorted(set(given))
    as_int = all(str(n).lstrip("-").isdigit() for n in names)
    number = {n: int(n) if as_int else i for i, n in enumerate(names)}
    return [replace(e, label=number[e.label]) for e in entries]


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------

class VideoDataset:
    """Clips of ``num_frames`` frames of ``size = (height, width)`` from a folder or manifest (module doc).

    ``dataset[i]`` is a dict: video (T, C, H, W) in [-1, 1], frame_interval (seconds; 0 for a still) and
    labels when the manifest has them. It takes frames with a random stride itself (``max_stride``), so
    training does not re-sample it (``samples_frame_rate``): files have different lengths and rates.
    """

    samples_frame_rate = True

    def __init__(self, root: str, num_frames: int, size: Tuple[int, int], *, split: str = "train",
                 max_stride: int = 1, val_fraction: float = 0.05, seed: int = 0, channels: int = 3,
                 default_fps: float = 8.0):
        if channels not in (1, 3):
            raise UserError(f"--channels={channels}: videos are read as RGB (3) or grey (1)")
        entries, self.skipped = index_clips(str(root), int(num_frames), float(default_fps))
        if len(entries) < 2:
            raise UserError(f"{root} has {len(entries)} usable clips; training needs at least 2 (one is held out)")
        test = [e for e in entries if split_of(e.key, val_fraction) == "test"]
        if not test:  # a small folder: hold out the clip with the smallest hash, so previews have one
            test = [min(entries, key=lambda e: _hash_unit(e.key))]
        if len(test) == len(entries):
            raise UserError(f"--val_fraction={val_fraction} holds out all {len(entries)} clips of {root}; lower it")
        held = {e.key for e in test}
        self.entries = test if split == "test" else [e for e in entries if e.key not in held]
        self.root, self.split, self.num_frames, self.size = str(root), split, int(num_frames), tuple(size)
        self.max_stride, self.seed, self.channels = int(max_stride), int(seed), channels
        self.has_labels = entries[0].label is not None
        self.num_labels = 1 + max(e.label for e in entries) if self.has_labels else 0
        self._order: Tuple[int, Optional[torch.Tensor]] = (-1, None)

    @classmethod
    def from_config(cls, d, split: str) -> "VideoDataset":
        """The dataset of a config's ``data`` section (``--dataset=videos``)."""
        if not d.data_root:
            raise UserError("--dataset=videos needs --data_root=<a folder of videos, or a .csv/.jsonl manifest>")
        dataset = cls(d.data_root, d.num_frames, d.size, split=split,
                      max_stride=d.max_frame_stride, val_fraction=d.val_fraction, seed=d.data_seed,
                      channels=d.channels, default_fps=d.fps)
        if d.num_classes > 0 and not dataset.has_labels:
            raise UserError(f"--num_classes={d.num_classes} needs labels: give a manifest with a 'label' column")
        if d.num_classes > 0 and dataset.num_labels > d.num_classes:
            raise UserError(f"the labels of {d.data_root} go up to {dataset.num_labels - 1}: "
                            f"pass --num_classes={dataset.num_labels}")
        return dataset

    def __len__(self) -> int:
        return TRAIN_LENGTH if self.split == "train" else len(self.entries)

    def entry_of(self, index: int) -> Entry:
        """Training: a new shuffled order of the files for every pass over them; validation: file index."""
        n = len(self.entries)
        if self.split == "test":
            return self.entries[index % n]
        epoch = index // n
        if self._order[0] != epoch:  # one permutation per pass, drawn from (seed, pass)
            g = torch.Generator().manual_seed((self.seed * CLIP_SEED_STRIDE + epoch) % 2**63)
            self._order = (epoch, torch.randperm(n, generator=g))
        return self.entries[int(self._order[1][index % n])]

    def plan(self, entry: Entry, generator: Optional[torch.Generator]) -> Tuple[np.ndarray, float]:
        """Which frames (from the entry's first) and their interval: stride k <= max_stride that fits."""
        T = self.num_frames
        if entry.kind == "image":
            return np.zeros(1, dtype=np.int64), 0.0
        if generator is None:  # validation: the first T frames at the file's own rate
            return np.arange(T), 1.0 / entry.fps
        k_max = min(self.max_stride, (entry.length - 1) // (T - 1)) if T > 1 else 1
        k = 1 + int(torch.randint(k_max, (1,), generator=generator))
        start = int(torch.randint(entry.length - k * (T - 1), (1,), generator=generator))
        return start + k * np.arange(T), k / entry.fps

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        index = int(index)
        for attempt in range(3):  # a file that fails now (it changed after indexing): take the next one
            g = None
            if self.split == "train":
                g = torch.Generator().manual_seed((self.seed * CLIP_SEED_STRIDE + index + attempt) % 2**63)
            entry = self.entry_of(index + attempt)
            wanted, interval = self.plan(entry, g)
            try:
                frames = read_frames(entry, wanted)
                break
            except Exception as err:  # noqa: BLE001
                warnings.warn(f"could not decode {entry.key} ({type(err).__name__} {err}); using the next clip")
        else:
            raise UserError(f"3 clips in a row of {self.root} failed to decode; check the files (last: {entry.key})")
        video = frames_to_model(frames, self.size, self.channels, g)
        if entry.kind == "image":  # Snap Video Sec. 3.3: a still is a video at infinite frame rate
            video = modality.image_to_video(video, self.num_frames)[0][0]
        item = {"video": video, "frame_interval": torch.tensor(interval, dtype=torch.float32)}
        if self.has_labels:
            item["labels"] = torch.tensor(entry.label, dtype=torch.long)
        return item

    def get_batch(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        """The clips of ``indices`` stacked: video (B, T, C, H, W), frame_interval (B,), labels (B,)."""
        items = [self[i] for i in indices]
        return {k: torch.stack([item[k] for item in items]) for k in items[0]}
