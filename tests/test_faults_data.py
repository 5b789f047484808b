"""Issue #15, the data and video-file part: bad files and torn caches get a clear answer, never a
silent wrong result. GIFs keep every frame, non-videos are refused with one line naming the file,
an explicit MNIST folder without MNIST is an error, and a damaged toy Physion cache is rebuilt."""
import gzip
import io
import os
import re
import signal
import socket
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import toy_data
from nano_videodiff.errors import UserError
from nano_videodiff.training.presets import get_preset
from nano_videodiff.evaluation.video_io import load_video, save_gif, to_uint8
from toy_data import physion
from toy_data.moving_mnist import MovingMNIST, read_idx

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ GIF round trip

def _palette_video(t, channels=3, colours=6, size=12, repeat=1, seed=0):
    """(t, C, size, size) in [-1, 1] drawn from a few colours; frame i shows pattern i // repeat, so
    repeat > 1 gives runs of identical frames (the ones Pillow used to merge)."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(colours, channels))
    patterns = rng.integers(0, colours, size=(-(-t // repeat), size, size))
    frames = palette[patterns[np.arange(t) // repeat]]  # (t, H, W, C) uint8 values
    return torch.from_numpy(frames).float().movedim(-1, 1) / 127.5 - 1


GIF_CASES = {
    "4 identical frames": _palette_video(1).repeat(4, 1, 1, 1),
    "1 frame": _palette_video(1),
    "2 identical frames": _palette_video(1).repeat(2, 1, 1, 1),
    "60 frames in runs of 3": _palette_video(60, repeat=3),
    "grey, runs of 4": _palette_video(16, channels=1, repeat=4),
    "all black then all white": torch.cat([-torch.ones(3, 3, 8, 8), torch.ones(3, 3, 8, 8)]),
}


@pytest.mark.parametrize("name", GIF_CASES)
def test_gif_round_trips_every_frame_exactly(tmp_path, name):
    video = GIF_CASES[name]
    path = save_gif(tmp_path / "v.gif", video, fps=8, scale=1)
    back = load_video(path, channels=video.shape[1])
    assert back.shape == video.shape  # the frame count above all
    # at most 256 colours per frame: GIF stores them exactly, so only the uint8 rounding remains
    expected = torch.from_numpy(to_uint8(video)).float().movedim(-1, 1) / 127.5 - 1
    torch.testing.assert_close(back, expected[:, :video.shape[1]], atol=1e-6, rtol=0)
    with Image.open(path) as im:  # and a plain GIF reader agrees: frames, timing, looping
        assert im.n_frames == len(video) and im.info.get("loop") == 0
        for i in range(im.n_frames):
            im.seek(i)
            assert abs(im.info["duration"] - 125) <= 5  # 8 fps; GIF counts in 10 ms steps


def _pillow_one_frame(frame):
    """What Pillow's GIF quantisation makes of one (H, W, 3) uint8 frame."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="GIF")
    with Image.open(buffer) as im:
        return np.asarray(im.convert("RGB"))


_ramp = torch.linspace(-1, 1, 24)
MANY_COLOURS = {  # name -> (video, bound on the mean absolute error in [-1, 1] units)
    "noise": (torch.rand(5, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1, 0.1),
    "gradient": (torch.stack([_ramp[:, None] * _ramp, -_ramp[:, None] * _ramp, _ramp[:, None] + 0 * _ramp])
                 [None].repeat(4, 1, 1, 1), 0.04),
}


@pytest.mark.parametrize("name", MANY_COLOURS)
def test_gif_with_many_colours_is_within_quantisation(tmp_path, name):
    """More colours than a GIF frame's 256: each frame reads back as GIF quantisation leaves it."""
    video, bound = MANY_COLOURS[name]
    video = video.clone()
    video[2] = video[1]  # and a repeated frame among them
    back = load_video(save_gif(tmp_path / "many.gif", video, scale=1))
    assert back.shape == video.shape
    for t, frame in enumerate(to_uint8(video)):
        assert np.array_equal(to_uint8(back[t]), _pillow_one_frame(frame))  # GIF's rounding, nothing more
    assert (back - video).abs().mean() < bound


# ------------------------------------------------------------------------------ reading non-videos

def _valid_gif_bytes(tmp_path):
    return save_gif(tmp_path / "good.gif", _palette_video(4), scale=1).read_bytes()


BAD_FILES = {  # name -> bytes (None: no file at all, "dir": a folder)
    "text.gif": b"hello, I am a text file, not a GIF\n",
    "random.gif": np.random.default_rng(0).bytes(600),
    "empty.gif": b"",
    "missing.gif": None,
    "folder.gif": "dir",
    "truncated.gif": "truncated",
    "text.npy": b"hello\n",
    "empty.npy": b"",
    "random.npy": np.random.default_rng(1).bytes(600),
    "random.mp4": np.random.default_rng(2).bytes(600),
    "empty.mp4": b"",
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_non_video_is_refused_in_one_line_naming_the_file(tmp_path, name):
    path, content = tmp_path / name, BAD_FILES[name]
    if content == "dir":
        path.mkdir()
    elif content == "truncated":
        path.write_bytes(_valid_gif_bytes(tmp_path)[:40])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_video(path)
    message = str(info.value)
    assert message.startswith(f"could not read {path} as a video: ") and len(message) > len(str(path)) + 30
    assert "\n" not in message and "pip install" not in message


BAD_ARRAYS = {
    "nan": (np.full((4, 8, 8), np.nan, np.float32), "NaN or infinite"),
    "no frames": (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
    "strings": (np.array([["a"]]), "numbers"),
    "1-D": (np.zeros(5, np.float32), "shape"),
}


@pytest.mark.parametrize("name", BAD_ARRAYS)
def test_an_npy_that_is_not_a_video_is_refused(tmp_path, name):
    array, reason = BAD_ARRAYS[name]
    path = tmp_path / "clip.npy"
    np.save(path, array)
    with pytest.raises(UserError, match=re.escape(f"could not read {path} as a video: ") + ".*" + reason):
        load_video(path)


def test_an_unsupported_suffix_is_a_user_error(tmp_path):
    path = tmp_path / "clip.txt"
    path.write_text("frames")
    with pytest.raises(UserError, match=r"\.gif, \.mp4 or \.npy"):
        load_video(path)


# ------------------------------------------------------------------------------ Moving MNIST folder

def _mnist_data(root):
    cfg = get_preset("moving_mnist")
    cfg.data.data_root = str(root)
    return cfg.data


def _idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fill(root, kind):
    """Make `root` hold the wrong thing: nothing, only an image file, or damaged IDX files."""
    if kind == "missing folder":
        return
    root.mkdir()
    images, labels = root / "train-images-idx3-ubyte", root / "train-labels-idx1-ubyte"
    if kind == "images only":
        images.write_bytes(_idx_bytes(np.zeros((3, 28, 28))))
    elif kind == "text files":
        images.write_text("not MNIST")
        labels.write_text("not MNIST")
    elif kind == "truncated gzip":
        data = gzip.compress(_idx_bytes(np.zeros((3, 28, 28))))
        (root / "train-images-idx3-ubyte.gz").write_bytes(data[:len(data) // 2])
        (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(3))))
    elif kind == "short header":
        images.write_bytes(bytes([0, 0, 0x08, 3, 0, 0]))
        labels.write_bytes(_idx_bytes(np.zeros(3)))


@pytest.mark.parametrize("kind", ["empty folder", "missing folder", "images only"])
def test_an_explicit_data_root_without_mnist_is_an_error(tmp_path, kind):
    root = tmp_path / "mnist"
    _fill(root, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an error, not a warning and a quiet fallback
        with pytest.raises(UserError) as info:
            toy_data.build_dataset(_mnist_data(root), "train")
    message = str(info.value)
    assert str(root) in message and "\n" not in message
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message  # what was expected
    assert "download=True" in message  # and how to get it


@pytest.mark.parametrize("kind", ["text files", "truncated gzip", "short header"])
def test_damaged_mnist_files_are_an_error_naming_the_file(tmp_path, kind):
    root = tmp_path / "mnist"
    _fill(root, kind)
    with pytest.raises(UserError, match=re.escape(str(root))) as info:
        toy_data.build_dataset(_mnist_data(root), "train")
    assert "\n" not in str(info.value)


def test_without_data_root_the_offline_digits_stay():
    with pytest.warns(UserWarning, match="offline digits"):
        ds = toy_data.build_dataset(get_preset("moving_mnist").data, "train")
    assert ds.digits == "glyphs"


def test_read_idx_names_a_file_that_is_not_idx(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03\x00")  # a header cut off inside the shape
    with pytest.raises(UserError, match=re.escape(str(path))):
        read_idx(str(path))


def test_moving_mnist_class_refuses_an_explicit_root_without_files(tmp_path):
    with pytest.raises(UserError, match="download=True"):
        MovingMNIST(root=str(tmp_path), length=3)


# ------------------------------------------------------------------------------ toy Physion cache

def _small(cache_dir):
    return physion.PhysionDataset("collide", num_clips=3, num_frames=4, resolution=12,
                                  cache_dir=cache_dir, progress=False)


def _flip_a_bit(data):
    data = bytearray(data)
    data[len(data) // 2] ^= 0x10  # inside the compressed video
    return bytes(data)


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _other_arrays(path):
    np.savez_compressed(path, video=np.zeros((2, 4, 3, 12, 12), np.uint8))  # a valid .npz, wrong contents


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(len(p.read_bytes()))),
    "bit flip": lambda p: p.write_bytes(_flip_a_bit(p.read_bytes())),
    "bit flip in the zip magic": lambda p: p.write_bytes(b"QK" + p.read_bytes()[2:]),
    "other arrays": _other_arrays,
    "one array": lambda p: p.write_bytes(_npy_bytes(np.zeros(3))),
}


def _refuse(*args, **kwargs):
    raise AssertionError("simulated although a good cache exists")


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_damaged_physion_cache_is_named_and_rebuilt(tmp_path, monkeypatch, name):
    good = _small(tmp_path)
    CORRUPTIONS[name](good.path)
    with pytest.warns(UserWarning, match=re.escape(str(good.path)) + ".*re-simulating") as record:
        rebuilt = _small(tmp_path)
    # One warning of ours, on one line (other libraries may warn in the same block, e.g. the first time
    # numpy reads garbage in this process: those are not ours to count).
    ours = [w for w in record if "re-simulating" in str(w.message)]
    assert len(ours) == 1 and "\n" not in str(ours[0].message)
    assert set(rebuilt.data) == set(good.data)
    for key in good.data:
        np.testing.assert_array_equal(rebuilt.data[key], good.data[key])
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(physion, "generate_clip", _refuse)  # the rebuilt file is good on disk too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = _small(tmp_path)
    np.testing.assert_array_equal(again.data["video"], good.data["video"])
    with zipfile.ZipFile(good.path) as archive:
        assert archive.testzip() is None


def test_ctrl_c_while_writing_the_cache_leaves_no_torn_file(tmp_path, monkeypatch):
    real_save = np.savez_compressed

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    monkeypatch.setattr(physion.np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _small(tmp_path)
    assert not list(tmp_path.iterdir())  # neither a torn cache nor a left-over temporary file
    monkeypatch.setattr(physion.np, "savez_compressed", real_save)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(_small(tmp_path)) == 3


KILLED_MID_WRITE = """
import os, signal, sys
import numpy as np
from toy_data import physion
def dying(f, **arrays):
    f.write(b"PK\\x03\\x04 half a zip")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # no except, no finally: what a kill -9 or the OOM killer does
np.savez_compressed = dying
physion.PhysionDataset("collide", num_clips=3, num_frames=4, resolution=12, cache_dir=sys.argv[1],
                       progress=False)
"""


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_kill_9_while_writing_the_cache_leaves_no_torn_file_and_no_orphan(tmp_path):
    run = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(tmp_path)], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()
    orphans = list(tmp_path.glob("*.tmp"))
    assert not list(tmp_path.glob("*.npz")) and len(orphans) == 1  # no cache, only the half-written file
    cache_name = orphans[0].name.split(".npz.")[0] + ".npz"
    alive = tmp_path / f"{cache_name}.{socket.gethostname()}.{os.getpid()}.abc.tmp"
    alive.write_bytes(b"a write in progress")  # by a process that is still running (this one)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cache, so nothing damaged to warn about: it just simulates
        ds = _small(tmp_path)
    assert ds.path.name == cache_name and len(ds) == 3
    assert list(tmp_path.glob("*.tmp")) == [alive]  # the dead writer's orphan is gone, the live one kept
