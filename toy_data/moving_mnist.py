"""Moving MNIST: bouncing digits on a black canvas (Srivastava, Mansimov & Salakhutdinov, ICML 2015).

The standard generator, as re-implemented by PredRNN / PhyDNet / OpenSTL:

    position  u_0 ~ U[0, 1]^2              (normalised, 0 = left/top edge, 1 = right/bottom edge)
    direction theta ~ U[0, 2 pi)
    velocity  v = step_length * (cos theta, sin theta)     fixed speed, step_length = 0.1
    u_{t+1} = u_t + v;   if a coordinate leaves [0, 1]: clamp it to the edge and flip its velocity
    top-left pixel of the digit = floor((resolution - digit_size) * u_t)
    frame_t = max over digits of the digit sprites pasted at their top-left corners

With the defaults (64x64 canvas, 28x28 digits) the digit's top-left corner moves in [0, 36] and the
speed is 3.6 px/frame. Any canvas, digit size, digit count and clip length work the same way.

Where the digits come from (``digits=``):

- ``"mnist"``: real MNIST digits, read from the IDX files (``train-images-idx3-ubyte`` etc., plain or
  ``.gz``) found under ``root`` or ``root/MNIST/raw`` (torchvision's layout) with a small numpy reader.
  With ``download=True`` and no files, ``torchvision.datasets.MNIST(root, download=True)`` fetches them
  (needs internet; nothing is ever downloaded unless asked).
- ``"glyphs"``: an offline digit source that ships with the code: the digits 0-9 rendered from the
  TrueType fonts bundled with matplotlib (DejaVu Sans / Serif / Mono, STIX, Computer Modern; several
  weights and slants), placed like MNIST (fitted to a 20x20 box, centred by mass in 28x28), with a
  random affine jitter (rotation, scale, shear, shift) and stroke thickness per sample.
- ``"auto"`` (default): MNIST from ``root`` when a root is given (an error if it holds none: a wrong
  folder must not quietly train on other digits), glyphs with one warning saying so when it is not.

``load_mnist_test_seq`` reads the fixed standard test set ``mnist_test_seq.npy`` (10,000 clips of 20
frames) used by the 10 -> 10 prediction protocol.
"""
from __future__ import annotations

import functools
import gzip
import os
import struct
import warnings
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from nano_videodiff.errors import UserError

TEST_SEQ_URL = "http://www.cs.toronto.edu/~nitish/unsupervised_video/mnist_test_seq.npy"

# ----------------------------------------------------------------------------------------------------
# Real MNIST: the IDX file format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS")
# ----------------------------------------------------------------------------------------------------

# IDX header: two zero bytes, a type code, the number of dimensions; then one big-endian uint32 per dim.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed, by the ``.gz`` suffix) into a numpy array.

    A file that is not one (wrong bytes, cut short, a broken .gz) raises UserError naming it.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip: BadGzipFile (an OSError), EOFError when cut short
        raise UserError(f"could not read {path} as an MNIST IDX file: {e}; download it again") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number {data[:4]!r}); download it again")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path}: the IDX header is cut short ({len(data)} bytes for {ndim} dimensions); "
                        f"download it again")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = data[4 + 4 * ndim:]
    if len(payload) != expected:
        raise UserError(f"{path}: header says shape {shape} ({expected} bytes), file has {len(payload)}; "
                        f"download it again")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def find_mnist_files(root: str | None, split: str = "train") -> tuple[str, str] | None:
    """Paths of the (images, labels) IDX files of a split under ``root`` or ``root/MNIST/raw``, or None."""
    if root is None:
        return None
    prefix = {"train": "train", "test": "t10k"}[split]
    for folder in (root, os.path.join(root, "MNIST", "raw"), os.path.join(root, "raw")):
        for sep in ("-", "."):  # "train-images-idx3-ubyte" (official) and "train-images.idx3-ubyte" (some mirrors)
            for suffix in ("", ".gz"):
                images = os.path.join(folder, f"{prefix}-images{sep}idx3-ubyte{suffix}")
                labels = os.path.join(folder, f"{prefix}-labels{sep}idx1-ubyte{suffix}")
                if os.path.isfile(images) and os.path.isfile(labels):
                    return images, labels
    return None


def _missing_mnist_message(root: str | None, split: str) -> str:
    """What was looked for, where, and how to get it: one line."""
    prefix = {"train": "train", "test": "t10k"}[split]
    if root is None:
        return ("real MNIST digits need a folder holding them: pass root=... (--data_root=...), with "
                "download=True to fetch them, or use digits='glyphs' for the offline font digits")
    where = f"{root} (no such folder)" if not os.path.isdir(root) else root
    return (f"no MNIST {split} files in {where}: expected {prefix}-images-idx3-ubyte and "
            f"{prefix}-labels-idx1-ubyte (plain or .gz) there or in {os.path.join(root, 'MNIST', 'raw')}; "
            f"fetch them (needs internet) with MovingMNIST(root={root!r}, download=True) or "
            f"torchvision.datasets.MNIST({root!r}, download=True), or give no data_root for the offline "
            f"font digits")


def load_mnist(root: str | None, split: str = "train", download: bool = False):
    """Real MNIST digits as (images (N, 28, 28) uint8, labels (N,) int64), or None when not available.

    Files already under ``root`` are read with :func:`read_idx`; only when they are missing and
    ``download=True`` does torchvision fetch them (into ``root/MNIST/raw``).
    """
    files = find_mnist_files(root, split)
    if files is not None:
        images, labels = read_idx(files[0]), read_idx(files[1])
    elif download:
        if root is None:
            raise ValueError("download=True needs a root folder to download MNIST into")
        import torchvision  # imported here: only this path needs it

        ds = torchvision.datasets.MNIST(root, train=(split == "train"), download=True)
        images, labels = ds.data.numpy(), ds.targets.numpy()
    else:
        return None
    if images.ndim != 3 or len(images) != len(labels):
        raise UserError(f"MNIST files under {root}: images {images.shape} and labels {labels.shape} do not match")
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# Offline digits: glyphs rendered from matplotlib's bundled fonts
# ----------------------------------------------------------------------------------------------------

GLYPH_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
)
_SS = 4  # glyphs are drawn at 4x (112x112) and box-filtered down to 28x28, which anti-aliases them


@functools.lru_cache(maxsize=None)
def _base_glyph(font_file: str, digit: int) -> torch.Tensor:
    """One digit in one font, placed the MNIST way on a (112, 112) float canvas in [0, 1]; cached.

    MNIST's recipe (LeCun et al.): the digit is scaled to fit a 20x20 box keeping its aspect ratio and
    centred by its centre of mass in the 28x28 image. Here everything is 4x larger.
    """
    from matplotlib import get_data_path
    from matplotlib.ft2font import FT2Font

    font = FT2Font(os.path.join(get_data_path(), "fonts", "ttf", font_file))
    font.set_size(96, 72)
    font.set_text(str(digit), 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    box, size = 20 * _SS, 28 * _SS
    scale = box / max(ink.shape)
    h, w = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    ink = F.interpolate(torch.from_numpy(ink)[None, None], size=(h, w), mode="bilinear",
                        antialias=True, align_corners=False)[0, 0].clamp(0, 1)
    # Paste so that the centre of mass lands on the canvas centre.
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    mass = ink.sum()
    cy, cx = float((yy * ink).sum() / mass), float((xx * ink).sum() / mass)
    top = int(np.clip(round(size / 2 - cy), 0, size - h))
    left = int(np.clip(round(size / 2 - cx), 0, size - w))
    canvas = torch.zeros(size, size)
    canvas[top:top + h, left:left + w] = ink
    return canvas


def render_glyph_digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jittered glyph sprites (K, 28, 28) float32 in [0, 1] for the digit classes ``labels``.

    Per sample: a random font, rotation +-12 deg, scale 0.85-1.05, horizontal shear +-0.3 (MNIST's
    slant), shift +-1 px and a stroke thickening of 0 to +1.5 px. All drawn from ``rng``, so
    the sprites are a pure function of the generator state.
    """
    k = len(labels)
    if k == 0:
        return np.zeros((0, 28, 28), np.float32)
    fonts = rng.integers(0, len(GLYPH_FONTS), size=k)
    angle = np.deg2rad(rng.uniform(-12, 12, size=k))
    scale = rng.uniform(0.85, 1.05, size=k)
    shear = rng.uniform(-0.3, 0.3, size=k)
    shift = rng.uniform(-1, 1, size=(k, 2)) * (2 / 28)  # +-1 px in grid_sample's [-1, 1] units
    # Thickening in steps of 1 hi-res px (1/4 px) on each side: the thin serif fonts get MNIST-like
    # pen widths. (MNIST strokes are about 2-3 px wide.)
    stroke = rng.integers(0, 4, size=k)

    base = torch.stack([_base_glyph(GLYPH_FONTS[f], int(d)) for f, d in zip(fonts, labels)])[:, None]
    # Forward map of the glyph: A = R(angle) @ Shear @ Scale. affine_grid wants the inverse map
    # (output coordinate -> input coordinate), so invert A.
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shr = np.tile(np.eye(2), (k, 1, 1))
    shr[:, 0, 1] = shear
    fwd = rot @ shr * scale[:, None, None]
    inv = np.linalg.inv(fwd)
    theta = np.concatenate([inv, -(inv @ shift[:, :, None])], axis=2)
    grid = F.affine_grid(torch.as_tensor(theta, dtype=torch.float32), list(base.shape), align_corners=False)
    hi = F.grid_sample(base, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = torch.empty_like(hi)
    for i, s in enumerate(stroke.tolist()):  # K is tiny (the digits of one clip)
        # Dilation (a max filter) widens the pen by s hi-res px on each side.
        out[i:i + 1] = F.max_pool2d(hi[i:i + 1], 2 * s + 1, stride=1, padding=s) if s > 0 else hi[i:i + 1]
    return F.avg_pool2d(out, _SS)[:, 0].clamp(0, 1).numpy()


# ----------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------


class MovingMNIST(torch.utils.data.Dataset):
    """Moving MNIST clips generated on the fly; clip ``i`` is a pure function of ``(seed, split, i)``.

    Each item is a dict:

    - ``video``: (T, 1, H, W) float32 in [-1, 1] (digit ink 1, background -1).
    - ``positions``: (T, num_digits, 2) float32, the **top-left** corner (x = column, y = row) in pixels
      of each digit's ``digit_size`` box as drawn; its centre is ``positions + digit_size / 2``.
    - ``labels``: (num_digits,) int64 digit classes.
    - ``frame_interval``: float, seconds per frame (Moving MNIST has no physical clock; 0.1 by default).

    Args:
        num_frames: clip length T (20 in the standard set: 10 context + 10 predicted).
        resolution: canvas size, an int (H = W; 64 standard) or (H, W).
        num_digits: digits per clip (2 standard).
        digit_size: digit side in pixels (28 standard; sprites are resized when different).
        root: folder holding MNIST's IDX files (or ``root/MNIST/raw``); None or "" = no MNIST.
        download: let torchvision download MNIST into ``root`` when the files are missing.
        digits: "auto" (MNIST from ``root`` when given, error if it holds none; glyphs with a warning when
            no root is given), "mnist" (error if missing), "glyphs".
        seed: dataset seed; clip i uses ``np.random.default_rng([seed, i])`` (train) or
            ``default_rng([seed, i, 1])`` (test), so the two splits never share a clip.
        length: number of clips (the epoch length; 10,000 as in OpenSTL).
        split: "train" or "test": which MNIST file the digits come from (MNIST train / t10k).
        step_length: speed as a fraction of the travel range per frame (0.1 standard).
        frame_interval: value reported in ``frame_interval``.
    """

    def __init__(self, num_frames: int = 20, resolution: int = 64, num_digits: int = 2, digit_size: int = 28,
                 root: str | None = None, download: bool = False, digits: str = "auto", seed: int = 0,
                 length: int = 10_000, split: str = "train", step_length: float = 0.1,
                 frame_interval: float = 0.1):
        if digits not in ("auto", "mnist", "glyphs"):
            raise ValueError(f"digits must be 'auto', 'mnist' or 'glyphs', got {digits!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.height, self.width = (resolution, resolution) if np.isscalar(resolution) else map(int, resolution)
        if digit_size > min(self.height, self.width):
            raise ValueError(f"digit_size {digit_size} does not fit in a {self.height}x{self.width} canvas")
        if num_frames < 1 or num_digits < 0 or length < 0:
            raise ValueError("need num_frames >= 1, num_digits >= 0, length >= 0")
        self.num_frames, self.num_digits = num_frames, num_digits
        self.digit_size, self.seed, self.length, self.split = digit_size, seed, length, split
        self.step_length, self.frame_interval = step_length, float(frame_interval)

        self.mnist = None
        root = root or None  # "" is the config's "not given"
        if digits != "glyphs":
            self.mnist = load_mnist(root, split, download)
            # A root that was given but holds no MNIST is a mistake (a typo, an empty download folder):
            # falling back to the font digits would train on other data behind one warning.
            if self.mnist is None and (digits == "mnist" or root is not None):
                raise UserError(_missing_mnist_message(root, split))
            if self.mnist is None:
                warnings.warn("MovingMNIST: no MNIST folder given; using offline digits rendered from "
                              "matplotlib's fonts (digits='glyphs'). Pass root=... (--data_root=...) to use "
                              "real MNIST.", stacklevel=2)
        self.digits = "mnist" if self.mnist is not None else "glyphs"

    def __len__(self) -> int:
        return self.length

    def trajectories(self, rng: np.random.Generator) -> np.ndarray:
        """Top-left corners (T, K, 2) int64 (x, y) of the standard bouncing motion, drawn from ``rng``."""
        t_len, k = self.num_frames, self.num_digits
        u = rng.uniform(0.0, 1.0, size=(k, 2))  # normalised (x, y) in [0, 1]
        theta = rng.uniform(0.0, 2 * np.pi, size=k)
        v = self.step_length * np.stack([np.cos(theta), np.sin(theta)], axis=-1)
        out = np.empty((t_len, k, 2))
        for t in range(t_len):
            out[t] = u
            u = u + v
            # Bounce: clamp to the wall and reverse that velocity component; the speed never changes.
            hit = (u < 0.0) | (u > 1.0)
            u = np.clip(u, 0.0, 1.0)
            v = np.where(hit, -v, v)
        travel = np.array([self.width - self.digit_size, self.height - self.digit_size])  # (x, y) ranges
        return np.floor(travel * out).astype(np.int64)

    def _sprites(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Digit sprites (K, s, s) float32 in [0, 1] and their labels (K,)."""
        if self.mnist is not None:
            images, labels = self.mnist
            idx = rng.integers(0, len(images), size=self.num_digits)
            sprites, labels = images[idx].astype(np.float32) / 255.0, labels[idx]
        else:
            labels = rng.integers(0, 10, size=self.num_digits)
            sprites = render_glyph_digits(labels, rng)
        if sprites.shape[-1] != self.digit_size and len(sprites):
            sprites = F.interpolate(torch.from_numpy(sprites)[:, None], size=(self.digit_size,) * 2,
                                    mode="bilinear", antialias=True, align_corners=False)[:, 0].clamp(0, 1).numpy()
        return sprites, labels.astype(np.int64)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(f"clip {i} out of range for a dataset of length {self.length}")
        key = [self.seed, int(i)] + ([1] if self.split == "test" else [])
        rng = np.random.default_rng(key)
        pos = self.trajectories(rng)
        sprites, labels = self._sprites(rng)
        s = self.digit_size
        canvas = np.zeros((self.num_frames, self.height, self.width), np.float32)
        for t in range(self.num_frames):
            for k in range(self.num_digits):
                x, y = pos[t, k]
                patch = canvas[t, y:y + s, x:x + s]
                np.maximum(patch, sprites[k], out=patch)  # overlapping digits: pixel-wise max
        video = torch.from_numpy(canvas).mul_(2.0).sub_(1.0)[:, None]
        return {"video": video, "positions": torch.from_numpy(pos.astype(np.float32)),
                "labels": torch.from_numpy(labels), "frame_interval": self.frame_interval}


# ----------------------------------------------------------------------------------------------------
# The standard test file
# ----------------------------------------------------------------------------------------------------


def load_mnist_test_seq(path: str, num_sequences: int | None = None) -> torch.Tensor:
    """Load the standard Moving MNIST test set ``mnist_test_seq.npy`` as (N, T, 1, 64, 64) float32 in [-1, 1].

    The file (Srivastava et al. 2015) holds uint8 frames, time-major: (20, 10000, 64, 64). ``path`` is the
    file, or a folder holding it directly or in ``MovingMNIST/`` (torchvision's layout). All 10,000 clips
    take 3.3 GB as float32; ``num_sequences`` loads only the first ones (the file is memory-mapped).
    """
    candidates = [path] if not os.path.isdir(path) else [
        os.path.join(path, "mnist_test_seq.npy"), os.path.join(path, "MovingMNIST", "mnist_test_seq.npy")]
    found = next((p for p in candidates if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(
            f"Moving MNIST test file not found at {' or '.join(candidates)}. Download {TEST_SEQ_URL} "
            f"(about 800 MB) and pass its path, or run torchvision.datasets.MovingMNIST(root, download=True) "
            f"once and pass root (it stores root/MovingMNIST/mnist_test_seq.npy).")
    data = np.load(found, mmap_mode="r")
    if data.ndim != 4 or data.shape[0] != 20 or data.shape[2:] != (64, 64) or data.dtype != np.uint8:
        raise ValueError(f"{found}: expected uint8 (20, N, 64, 64) time-major frames as in the standard "
                         f"mnist_test_seq.npy, got {data.dtype} {data.shape}")
    if num_sequences is not None:
        data = data[:, :num_sequences]
    clips = torch.from_numpy(np.ascontiguousarray(data.transpose(1, 0, 2, 3)))  # (N, T, H, W)
    return (clips.float() / 127.5 - 1.0)[:, :, None]
