"""Tests for toy_data.moving_mnist: the offline glyph path, real MNIST from IDX fixtures, the test-file loader."""
import gzip
import struct
import warnings

import numpy as np
import pytest
import torch

from nano_videodiff.errors import UserError
from toy_data.moving_mnist import (MovingMNIST, find_mnist_files, load_mnist_test_seq, read_idx,
                                   render_glyph_digits)


def glyphs(**kw):
    return MovingMNIST(digits="glyphs", **kw)


# ------------------------------------------------------------------------------------ offline glyphs


def test_auto_without_a_root_falls_back_to_glyphs_with_one_warning():
    # (a root that is given but holds no MNIST is an error: tests/test_faults_data.py)
    with pytest.warns(UserWarning, match="offline digits") as record:
        ds = MovingMNIST(length=3)
        ds[0], ds[1]  # items do not warn again
    assert len(record) == 1
    assert ds.digits == "glyphs"


def test_glyph_clip_shapes_and_range():
    ds = glyphs(length=4)
    item = ds[0]
    assert item["video"].shape == (20, 1, 64, 64) and item["video"].dtype == torch.float32
    assert item["positions"].shape == (20, 2, 2) and item["labels"].shape == (2,)
    assert item["labels"].dtype == torch.int64 and ((item["labels"] >= 0) & (item["labels"] <= 9)).all()
    v = item["video"]
    assert v.min() == -1.0 and v.max() <= 1.0 and v.max() > 0.9  # black background, white ink
    assert (v > -1).float().mean() < 0.5  # mostly background
    assert isinstance(item["frame_interval"], float) and item["frame_interval"] > 0
    assert len(ds) == 4
    with pytest.raises(IndexError):
        ds[4]


def test_determinism_per_seed_and_index():
    a, b = glyphs(seed=3, length=5), glyphs(seed=3, length=5)
    for i in (0, 4):
        assert torch.equal(a[i]["video"], b[i]["video"])
        assert torch.equal(a[i]["positions"], b[i]["positions"])
    assert not torch.equal(a[0]["video"], a[1]["video"])
    assert not torch.equal(a[0]["video"], glyphs(seed=4)[0]["video"])
    assert not torch.equal(a[0]["video"], glyphs(seed=3, split="test")[0]["video"])  # splits never share clips


def test_motion_is_the_standard_bounce():
    ds = glyphs(length=30, num_frames=20)
    travel = 64 - 28
    speed = 0.1 * travel  # 3.6 px/frame
    flips = 0
    for i in range(len(ds)):
        pos = ds[i]["positions"].numpy()  # (T, K, 2) top-left
        assert pos.min() >= 0 and pos.max() <= travel  # digits stay on the canvas
        step = np.diff(pos, axis=0)
        speeds = np.linalg.norm(step, axis=-1)
        # floor() moves each coordinate by |v| +- 1 px; the speed never changes (bounces only reflect)
        assert (np.abs(step) <= np.ceil(speed) + 1).all()
        assert np.median(speeds) == pytest.approx(speed, abs=1.0)
        # a velocity component changes sign only at a wall
        for k in range(pos.shape[1]):
            for ax in range(2):
                s = step[:, k, ax]
                for t in range(1, len(s)):
                    if s[t - 1] * s[t] < 0:
                        flips += 1
                        p = pos[t, k, ax]
                        assert p <= speed + 1 or p >= travel - speed - 1
    assert flips > 10  # 20 frames of 3.6 px/frame in a 36 px range: most clips bounce


def test_ink_stays_inside_the_digit_boxes():
    ds = glyphs(length=3, num_digits=3, num_frames=8)
    for i in range(len(ds)):
        item = ds[i]
        inside = torch.zeros(8, 64, 64, dtype=torch.bool)
        for t in range(8):
            for x, y in item["positions"][t].long().tolist():
                inside[t, y:y + 28, x:x + 28] = True
        v = item["video"][:, 0]
        assert (v[~inside] == -1).all()
        assert (v[inside] > -1).any()


def test_other_sizes():
    ds = glyphs(num_frames=7, resolution=32, num_digits=3, digit_size=14, length=2)
    item = ds[1]
    assert item["video"].shape == (7, 1, 32, 32)
    assert item["positions"].shape == (7, 3, 2) and item["positions"].max() <= 32 - 14
    with pytest.raises(ValueError):
        MovingMNIST(resolution=20, digit_size=28, digits="glyphs")


def test_glyph_renderer_is_deterministic_and_digit_like():
    a = render_glyph_digits(np.arange(10), np.random.default_rng(0))
    b = render_glyph_digits(np.arange(10), np.random.default_rng(0))
    c = render_glyph_digits(np.arange(10), np.random.default_rng(1))
    assert a.shape == (10, 28, 28) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # MNIST-like placement: ink in the middle (a 20x20 box, jittered), next to none on the 2-px border,
    # centre of mass near (14, 14)
    yy, xx = np.mgrid[0:28, 0:28] + 0.5
    mass = a.sum(axis=(1, 2))
    border = a.copy()
    border[:, 2:-2, 2:-2] = 0
    assert (border.sum(axis=(1, 2)) < 0.01 * mass).all()
    assert (mass > 20).all()  # real strokes, not empty images
    cy, cx = (a * yy).sum(axis=(1, 2)) / mass, (a * xx).sum(axis=(1, 2)) / mass
    assert np.abs(cy - 14).max() < 3 and np.abs(cx - 14).max() < 3
    # different digits look different
    assert min(np.abs(a[i] - a[j]).sum() for i in range(10) for j in range(i + 1, 10)) > 5


def test_dataloader_collates():
    loader = torch.utils.data.DataLoader(glyphs(length=4, num_frames=6), batch_size=2)
    batch = next(iter(loader))
    assert batch["video"].shape == (2, 6, 1, 64, 64) and batch["frame_interval"].shape == (2,)


# -------------------------------------------------------------------------------- real MNIST (IDX)


def write_idx(path, array):
    code = {np.dtype(np.uint8): 0x08}[array.dtype]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fixture_digits(seed):
    """5 distinct 28x28 'digits' (random ink in a centre box) with distinct labels."""
    rng = np.random.default_rng(seed)
    images = np.zeros((5, 28, 28), np.uint8)
    images[:, 4:24, 4:24] = rng.integers(1, 256, size=(5, 20, 20))
    labels = np.array([7, 2, 9, 0, 5], np.uint8)
    return images, labels


@pytest.fixture(params=["raw", "gz"])
def mnist_root(request, tmp_path):
    """A root in torchvision's layout (root/MNIST/raw) for .gz files, plain files directly under root."""
    gz = request.param == "gz"
    folder = tmp_path / "MNIST" / "raw" if gz else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, seed in (("train", 0), ("t10k", 1)):
        images, labels = fixture_digits(seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return tmp_path


def test_read_idx_roundtrip(mnist_root):
    images_path, labels_path = find_mnist_files(str(mnist_root), "train")
    images, labels = fixture_digits(0)
    assert np.array_equal(read_idx(images_path), images)
    assert np.array_equal(read_idx(labels_path), labels)


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(str(bad))
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="header"):
        read_idx(str(short))


@pytest.mark.parametrize("split,seed", [("train", 0), ("test", 1)])
def test_clips_are_made_of_the_exact_mnist_digits(mnist_root, split, seed):
    images, labels = fixture_digits(seed)
    by_label = {int(l): images[i].astype(np.float32) / 255 for i, l in enumerate(labels)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # files present: no fallback warning
        ds = MovingMNIST(root=str(mnist_root), num_frames=10, length=6, split=split)
    assert ds.digits == "mnist"
    for i in range(len(ds)):
        item = ds[i]
        assert set(item["labels"].tolist()) <= set(by_label)
        # rebuild every frame from the fixture digits at the reported positions, max-composited
        expected = np.zeros((10, 64, 64), np.float32)
        for t in range(10):
            for (x, y), lab in zip(item["positions"][t].long().tolist(), item["labels"].tolist()):
                np.maximum(expected[t, y:y + 28, x:x + 28], by_label[lab], out=expected[t, y:y + 28, x:x + 28])
        assert np.allclose((item["video"][:, 0].numpy() + 1) / 2, expected, atol=1e-6)


def test_mnist_requested_but_missing_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="download=True"):
        MovingMNIST(root=str(tmp_path), digits="mnist")
    with pytest.raises(UserError, match="download=True"):
        MovingMNIST(digits="mnist")  # and without a root at all


# ------------------------------------------------------------------------------ mnist_test_seq.npy


def test_load_mnist_test_seq(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, size=(20, 3, 64, 64), dtype=np.uint8)  # time-major
    (tmp_path / "MovingMNIST").mkdir()
    path = tmp_path / "MovingMNIST" / "mnist_test_seq.npy"
    np.save(path, data)
    clips = load_mnist_test_seq(str(path))
    assert clips.shape == (3, 20, 1, 64, 64) and clips.dtype == torch.float32
    assert clips.min() >= -1 and clips.max() <= 1
    # clip n, frame t is the file's [t, n], mapped 0 -> -1 and 255 -> 1
    assert torch.allclose(clips[2, 7, 0], torch.from_numpy(data[7, 2]).float() / 127.5 - 1)
    assert torch.equal(load_mnist_test_seq(str(tmp_path)), clips)  # torchvision's folder layout
    assert torch.equal(load_mnist_test_seq(str(path), num_sequences=2), clips[:2])


def test_load_mnist_test_seq_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="mnist_test_seq.npy"):
        load_mnist_test_seq(str(tmp_path / "mnist_test_seq.npy"))
    with pytest.raises(FileNotFoundError, match="download"):
        load_mnist_test_seq(str(tmp_path))
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 20, 64, 64), np.uint8))  # sequence-major: not the standard layout
    with pytest.raises(ValueError, match="20, N, 64, 64"):
        load_mnist_test_seq(str(wrong))
