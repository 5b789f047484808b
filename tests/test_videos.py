"""Your own videos (nano_videodiff/data/videos.py, loader.py): the tests write small clips and read them back.

Every clip encodes its frame numbers in its pixels (frame t is filled with the value STEP * t, plus a
pattern for the crop tests), so a decoded clip tells which frames it holds, and so its stride.
"""
import warnings

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from nano_videodiff.data import videos as V  # noqa: E402
from nano_videodiff.training.batches import TrainingData, make_batch  # noqa: E402
from nano_videodiff.training.config import apply_overrides  # noqa: E402
from nano_videodiff.training.presets import PRESETS  # noqa: E402

STEP = 6  # pixel value step between frames: frame t is STEP * t


def numbered_frames(T, H=24, W=32):
    """(T, H, W, 3) uint8: frame t is flat grey STEP * t (survives any codec within STEP / 2)."""
    return np.broadcast_to((STEP * np.arange(T, dtype=np.uint8))[:, None, None, None], (T, H, W, 3)).copy()


def pattern_frames(T, H=24, W=32):
    """(T, H, W, 3) uint8 with detail in space and time, for exact-equality checks."""
    t, y, x = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), indexing="ij")
    return np.stack([(x * 7 + t * 5) % 256, (y * 9 + t * 3) % 256, (x + y + t * 11) % 256], -1).astype(np.uint8)


def write_mp4(path, frames, fps, codec="libx264"):
    """H.264 at near-lossless quality (crf 0, 4:4:4 chroma), so decoding is within rounding of RGB<->YUV
    (or, in other containers, FFV1: lossless)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        if codec == "libx264":
            stream.options = {"crf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_gif(path, frames, fps):
    imageio.mimsave(str(path), list(frames), duration=1000 / fps, loop=0)


def write_frame_folder(folder, frames):
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        imageio.imwrite(str(folder / f"{t:04d}.png"), frame)


def frame_numbers(video):
    """Which frames a decoded clip (T, C, H, W) in [-1, 1] holds, from its grey level."""
    return torch.round((video.mean(dim=(1, 2, 3)) + 1) * 127.5 / STEP).long()


@pytest.fixture
def folder(tmp_path):
    """A mixed folder: an MP4 at 12 fps, a GIF at 20 fps, a frame folder, and a still image."""
    root = tmp_path / "clips"
    (root / "sub").mkdir(parents=True)
    write_mp4(root / "a.mp4", numbered_frames(30), 12)
    write_gif(root / "sub" / "b.gif", numbered_frames(20), 20)
    write_frame_folder(root / "seq", numbered_frames(16))
    imageio.imwrite(str(root / "still.png"), pattern_frames(1)[0])
    V.index_clips.cache_clear()
    return root


def entries_by_key(root, min_frames=4):
    entries, skipped = V.index_clips(str(root), min_frames, 8.0)
    return {e.key: e for e in entries}, skipped


# ----------------------------------------------------------------------------------------------
# Decoding: frames and frame rates as written
# ----------------------------------------------------------------------------------------------

def test_mp4_decodes_what_was_written_within_codec_loss(tmp_path):
    frames = pattern_frames(30, 48, 64)
    write_mp4(tmp_path / "p.mp4", frames, 12)
    entry = V.probe(dict(path=tmp_path / "p.mp4", key="p.mp4", kind="video"), 8.0)
    assert (entry.length, entry.fps) == (30, 12.0)
    wanted = np.arange(7, 30, 5)  # starts after frame 0: seeks
    got = V.read_frames(entry, wanted).astype(int)
    assert got.shape == (len(wanted), 48, 64, 3)
    assert np.abs(got - frames[wanted]).max() <= 3  # YUV 4:4:4 round trip


def test_mkv_without_a_frame_count_is_counted(tmp_path):
    frames = pattern_frames(14, 16, 16)
    write_mp4(tmp_path / "c.mkv", frames, 25, codec="ffv1")
    entry = V.probe(dict(path=tmp_path / "c.mkv", key="c.mkv", kind="video"), 8.0)
    assert (entry.length, entry.fps) == (14, 25.0)
    assert np.abs(V.read_frames(entry, np.array([2, 9, 13])).astype(int) - frames[[2, 9, 13]]).max() <= 3


def test_gif_and_frame_folder_decode_exactly(tmp_path):
    frames = numbered_frames(20) // 2 * 2  # few colours: a GIF palette holds them exactly
    write_gif(tmp_path / "g.gif", frames, 20)
    write_frame_folder(tmp_path / "f", frames)
    gif = V.probe(dict(path=tmp_path / "g.gif", key="g.gif", kind="video"), 8.0)
    assert (gif.length, gif.fps) == (20, 20.0)
    wanted = np.array([3, 5, 7, 19])
    assert np.array_equal(V.read_frames(gif, wanted), frames[wanted])
    folder = V.probe(dict(path=tmp_path / "f", key="f", kind="frames",
                          frame_files=tuple(str(p) for p in sorted((tmp_path / "f").iterdir()))), 8.0)
    assert (folder.length, folder.fps) == (20, 8.0)  # frame folders run at --fps
    assert np.array_equal(V.read_frames(folder, wanted), frames[wanted])


def test_folder_kinds_and_rates(folder):
    entries, skipped = entries_by_key(folder)
    assert skipped == ()
    assert {k: (e.kind, e.fps, e.length) for k, e in entries.items()} == {
        "a.mp4": ("video", 12.0, 30), "sub/b.gif": ("video", 20.0, 20), "seq": ("frames", 8.0, 16),
        "still.png": ("image", 0.0, 1)}


def test_strides_give_the_frame_interval(folder):
    ds = V.VideoDataset(folder, 4, (16, 16), max_stride=3, val_fraction=0.01, seed=5)
    strides = set()
    for i in range(40):
        item, entry = ds[i], ds.entry_of(i)
        if entry.kind == "image":
            continue
        numbers = frame_numbers(item["video"])
        k = numbers[1] - numbers[0]
        assert torch.equal(numbers, numbers[0] + k * torch.arange(4))  # evenly spaced frames of the file
        assert item["frame_interval"].item() == pytest.approx(k.item() / entry.fps)
        strides.add(k.item())
    assert strides == {1, 2, 3}


def test_still_image_is_an_infinite_fps_video(folder):
    ds = V.VideoDataset(folder, 5, (16, 16), val_fraction=0.01)
    i = next(i for i in range(20) if ds.entry_of(i).kind == "image")
    item = ds[i]
    assert item["frame_interval"].item() == 0.0
    assert item["video"].shape == (5, 3, 16, 16)
    assert torch.equal(item["video"], item["video"][:1].expand(5, -1, -1, -1))  # one frame, repeated


def test_clip_is_a_pure_function_of_seed_and_index(folder):
    a = V.VideoDataset(folder, 4, (16, 16), max_stride=2, seed=3)
    b = V.VideoDataset(folder, 4, (16, 16), max_stride=2, seed=3)
    for i in (7, 0, 7, 123):
        assert torch.equal(a[i]["video"], b[i]["video"])
    assert any(not torch.equal(a[i]["video"], V.VideoDataset(folder, 4, (16, 16), max_stride=2, seed=4)[i]["video"])
               for i in range(8))


# ----------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------

def test_crop_box_takes_height_and_width():
    assert V.crop_box(48, 64, 16, 16) == (0, 8, 48, 48)  # the centre square
    assert V.crop_box(48, 64, 9, 16) == (6, 0, 36, 64)   # a wide box: Snap Video's 36x64 shape
    g = torch.Generator().manual_seed(0)
    boxes = {V.crop_box(48, 64, 16, 16, g) for _ in range(20)}
    assert len(boxes) > 1 and all(b[2:] == (48, 48) and 0 <= b[1] <= 16 and b[0] == 0 for b in boxes)


def test_frames_to_model_sizes_and_range():
    frames = pattern_frames(3, 48, 64)
    x = V.frames_to_model(frames, (12, 20))
    assert x.shape == (3, 3, 12, 20) and x.min() >= -1 and x.max() <= 1
    assert V.frames_to_model(frames, (16, 16), channels=1).shape == (3, 1, 16, 16)
    same = V.frames_to_model(frames, (48, 48))  # no resize: exactly the centre crop
    assert torch.equal(same, torch.from_numpy(frames[:, :, 8:56]).permute(0, 3, 1, 2).float() / 127.5 - 1)


# ----------------------------------------------------------------------------------------------
# Bad files, the split, manifests
# ----------------------------------------------------------------------------------------------

def test_corrupt_and_short_files_are_skipped_with_one_warning(folder):
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 20)
    write_gif(folder / "short.gif", numbered_frames(2), 10)
    V.index_clips.cache_clear()
    with pytest.warns(UserWarning) as caught:
        V.VideoDataset(folder, 4, (16, 16), split="train")
        V.VideoDataset(folder, 4, (16, 16), split="test")  # the index is shared: no second warning
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 2 of 6 clips" in message and "broken.mp4" in message and "short.gif: too short" in message


def test_split_is_deterministic_and_disjoint(tmp_path):
    keys = [f"dir{i % 7}/clip_{i}.mp4" for i in range(2000)]
    test = {k for k in keys if V.split_of(k, 0.05) == "test"}
    assert 60 < len(test) < 140 and test == {k for k in keys if V.split_of(k, 0.05) == "test"}
    for i in range(12):
        imageio.imwrite(str(tmp_path / f"s{i}.png"), pattern_frames(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = {e.key for e in V.VideoDataset(tmp_path, 4, (8, 8), split="train", val_fraction=0.3).entries}
        held = {e.key for e in V.VideoDataset(tmp_path, 4, (8, 8), split="test", val_fraction=0.3).entries}
    assert held and train and not train & held and len(train | held) == 12


def test_bad_roots_and_flags_say_what_to_do(tmp_path):
    from nano_videodiff.errors import UserError

    with pytest.raises(UserError, match="neither a folder"):
        V.VideoDataset(tmp_path / "missing", 4, (8, 8))
    imageio.imwrite(str(tmp_path / "only.png"), pattern_frames(1)[0])
    with pytest.raises(UserError, match="1 usable clips"):
        V.VideoDataset(tmp_path, 4, (8, 8))
    (tmp_path / "m.csv").write_text("label\n1\n")
    with pytest.raises(UserError, match="row 1 has no 'path'"):
        V.VideoDataset(tmp_path / "m.csv", 4, (8, 8))
    for flags, message in [({"data_root": ""}, "needs --data_root"), ({"val_fraction": "1"}, "--val_fraction"),
                           ({"num_workers": "-1"}, "--num_workers"),
                           ({"num_workers": "2", "image_fraction": "0.5"}, "--num_workers=0")]:
        with pytest.raises(ValueError, match=message):
            _resolve({"config": "smoke", "dataset": "videos", "data_root": str(tmp_path), **flags})


def test_manifests_csv_and_jsonl(folder):
    (folder / "list.csv").write_text("path,label,caption,fps,start,end\n"
                                     "a.mp4,cat,a cat,24,0.5,2\n"
                                     "sub/b.gif,dog,,,,\n"
                                     "seq,cat,,4,,\n")
    (folder / "list.jsonl").write_text('{"path": "a.mp4", "label": 1}\n{"path": "still.png", "label": 0}\n')
    entries, _ = entries_by_key(folder / "list.csv")
    a, b, seq = entries["a.mp4"], entries["sub/b.gif"], entries["seq"]
    assert (a.label, b.label, seq.label) == (0, 1, 0)  # names numbered in sorted order
    assert (a.fps, a.rate, a.first, a.length, a.caption) == (24.0, 12.0, 6, 18, "a cat")  # 0.5 s .. 2 s at 12 fps
    assert (seq.fps, seq.length) == (4.0, 16)
    ds = V.VideoDataset(folder / "list.csv", 4, (16, 16))
    item = next(ds[i] for i in range(10) if ds.entry_of(i).key == "a.mp4")
    assert frame_numbers(item["video"])[0] >= 6 and item["frame_interval"].item() == pytest.approx(1 / 24)
    jsonl, _ = entries_by_key(folder / "list.jsonl")
    assert {k: (e.kind, e.label) for k, e in jsonl.items()} == {"a.mp4": ("video", 1), "still.png": ("image", 0)}


# ----------------------------------------------------------------------------------------------
# Training: the (seed, step) batch with DataLoader workers, and a smoke run
# ----------------------------------------------------------------------------------------------

def _resolve(flags):
    """A validated Config from a preset and --key=value strings, as train.py builds it."""
    cfg = PRESETS[flags.pop("config")]()
    apply_overrides(cfg, flags)
    return cfg.validate()


def test_step_batch_is_the_same_with_workers_and_ranks(folder):
    def batches(num_workers, rank, world, steps=3):
        cfg = _resolve({"config": "smoke", "dataset": "videos", "data_root": str(folder), "max_frame_stride": "2",
                        "batch_size": "4", "grad_accum_steps": "2", "num_workers": str(num_workers)})
        data = TrainingData(cfg)
        out = []
        with data.prefetching(cfg, 1, rank, world):
            for step in range(1, 1 + steps):
                for micro in range(2):  # as train.py: every micro-batch of every step, in order
                    out.append(make_batch(cfg, data, step, rank * 2 + micro, world * 2, "cpu"))
        assert data.loader is None  # the workers are stopped on leaving the block
        return out

    plain = batches(0, 0, 1)
    assert [b.x.shape[0] for b in plain] == [2] * 6
    for got, want in zip(batches(2, 0, 1), plain):
        assert torch.equal(got.x, want.x) and torch.equal(got.cond.frame_interval, want.cond.frame_interval)
    # 2 ranks with 2 workers each: rank r's micro-batches are the global batch's slices r*2, r*2 + 1
    rank0, rank1 = batches(2, 0, 2), batches(2, 1, 2)
    for s in range(3):
        joined = torch.cat([rank0[2 * s].x, rank0[2 * s + 1].x, rank1[2 * s].x, rank1[2 * s + 1].x])
        assert torch.equal(joined, torch.cat([plain[2 * s].x, plain[2 * s + 1].x]))


def test_train_and_sample_on_a_folder(folder, tmp_path):
    import sample as sample_script
    import train

    out = tmp_path / "run"
    train.main(["--config=smoke", "--dataset=videos", f"--data_root={folder}", f"--out_dir={out}",
                "--max_steps=4", "--ckpt_every=4", "--preview_every=4", "--log_every=2", "--max_frame_stride=2",
                "--num_workers=2"])
    assert (out / "ckpt.pt").exists() and list((out / "previews").iterdir())
    ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["config"]["data"]["dataset"] == "videos" and ckpt["step"] == 4
    videos = sample_script.main([f"--ckpt={out / 'ckpt.pt'}", f"--out_dir={tmp_path / 'samples'}", "--num_videos=2",
                                 "--steps=2"])
    assert videos.shape[:2] == (2, 4)
