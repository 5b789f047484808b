"""Tests for nano_videodiff.modality: images as infinite-frame-rate videos, variable frame rate,
joint image+video batches and the image source (Snap Video Sec. 3.3).

The measured SNR gain of block averaging lives in tests/test_edm.py and is not repeated here.
"""
import pytest
import torch

from nano_videodiff import modality
from nano_videodiff.conditioning import DROPPED_LABEL, Cond
from nano_videodiff.backbones.vdt import VDT
from toy_data.bouncing_balls import BouncingBalls


def gen(seed):
    return torch.Generator().manual_seed(seed)


def clips_with_frame_ids(b=6, length=20, c=2, h=3, w=4):
    """Clips whose every pixel holds (clip, frame) so that a gathered frame tells where it came from."""
    clip = torch.arange(b, dtype=torch.float32).reshape(b, 1, 1, 1, 1)
    frame = torch.arange(length, dtype=torch.float32).reshape(1, length, 1, 1, 1)
    return (1000 * clip + frame + torch.rand(b, length, c, h, w, generator=gen(0)) * 0.1)


# image_to_video --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 2, 5, 4), (3, 1, 2, 5, 4)])
def test_image_to_video_repeats_frames_with_interval_zero(shape):
    images = torch.randn(shape, generator=gen(1))
    videos, interval = modality.image_to_video(images, 7)
    assert videos.shape == (3, 7, 2, 5, 4)
    flat = images.reshape(3, 2, 5, 4)
    for t in range(7):
        assert torch.equal(videos[:, t], flat)
    assert interval.dtype == torch.float32 and torch.equal(interval, torch.zeros(3))
    videos[:, 0] += 1  # a copy, not a view: writing one frame leaves the image and other frames alone
    assert torch.equal(videos[:, 1], flat) and torch.equal(images.reshape(3, 2, 5, 4), flat)


@pytest.mark.parametrize("shape,frames", [((3, 2, 2, 5, 4), 4), ((2, 5, 4), 4), ((3, 2, 5, 4), 0)])
def test_image_to_video_rejects_bad_input(shape, frames):
    with pytest.raises(ValueError):
        modality.image_to_video(torch.zeros(shape), frames)


def test_vdt_conditioning_of_an_image_does_not_depend_on_T():
    """Interval 0 gives every image the same conditioning vector, whatever T, and differs from a video's."""
    torch.manual_seed(0)
    net = VDT(in_channels=3, patch_size=2, dim=16, depth=1, heads=2).eval()
    images = torch.rand(3, 3, 4, 4) * 2 - 1
    c_noise = torch.full((3,), 0.1)
    vectors = []
    for frames in (1, 4, 9):
        _, interval = modality.image_to_video(images, frames)
        with torch.no_grad():
            vectors.append(net.conditioning_vector(c_noise, Cond(frame_interval=interval), 3))
    for v in vectors:
        assert torch.equal(v, vectors[0])
        # the same for every image of the batch (up to float rounding of the batched matmul)
        assert torch.allclose(v, v[:1].expand_as(v), rtol=0, atol=1e-6)
    with torch.no_grad():
        video = net.conditioning_vector(c_noise, Cond(frame_interval=torch.full((3,), 1 / 8)), 3)
    assert not torch.allclose(video, vectors[0])


# variable_frame_rate ---------------------------------------------------------------------------------

def test_variable_frame_rate_gathers_strided_frames():
    clips = clips_with_frame_ids()
    videos, interval, idx = modality.variable_frame_rate(clips, 5, 8.0, 4, gen(2))
    assert videos.shape == (6, 5, 2, 3, 4) and idx.shape == (6, 5) and interval.shape == (6,)
    stride = idx[:, 1] - idx[:, 0]
    assert torch.equal(idx, idx[:, :1] + stride[:, None] * torch.arange(5))
    assert torch.allclose(interval, stride.float() / 8.0)
    for b in range(6):
        assert torch.equal(videos[b], clips[b, idx[b]])


@pytest.mark.parametrize("length,frames,max_stride", [(20, 5, 4), (20, 5, 10), (9, 5, 3), (5, 5, 3), (7, 1, 3)])
def test_variable_frame_rate_strides_in_bounds_and_clips_fit(length, frames, max_stride):
    clips = torch.zeros(400, length, 1, 1, 1)
    _, interval, idx = modality.variable_frame_rate(clips, frames, 1.0, max_stride, gen(3))
    stride = interval.round().long()  # fps = 1: interval = stride
    fits = (length - 1) // (frames - 1) if frames > 1 else max_stride
    allowed = set(range(1, min(max_stride, fits) + 1))
    assert set(stride.tolist()) == allowed  # every allowed stride is drawn in 400 samples, no other
    assert idx.min() >= 0 and idx.max() < length
    if frames > 1:
        assert torch.equal(idx[:, -1] - idx[:, 0], stride * (frames - 1))
    # every start position that fits is used for the smallest stride
    starts = idx[stride == 1, 0]
    assert set(starts.tolist()) == set(range(length - (frames - 1)))


def test_variable_frame_rate_per_clip_fps_and_determinism():
    clips = clips_with_frame_ids()
    fps = torch.tensor([8.0, 16.0, 24.0, 8.0, 30.0, 12.5])
    a = modality.variable_frame_rate(clips, 4, fps, 6, gen(4))
    b = modality.variable_frame_rate(clips, 4, fps, 6, gen(4))
    c = modality.variable_frame_rate(clips, 4, fps, 6, gen(5))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[2], c[2])
    stride = a[2][:, 1] - a[2][:, 0]
    assert torch.allclose(a[1], stride.float() / fps)


@pytest.mark.parametrize("kwargs", [dict(num_frames=21), dict(num_frames=0), dict(max_stride=0),
                                    dict(max_stride=1.5), dict(fps=0.0), dict(fps=float("inf"))])
def test_variable_frame_rate_errors(kwargs):
    args = dict(clips=torch.zeros(2, 20, 1, 2, 2), num_frames=4, fps=8.0, max_stride=2)
    args.update(kwargs)
    with pytest.raises(ValueError):
        modality.variable_frame_rate(**args)
    with pytest.raises(ValueError):
        modality.variable_frame_rate(torch.zeros(20, 1, 2, 2), 4, 8.0, 2)


def test_clip_length_holds_the_largest_stride():
    assert modality.clip_length(16, 1) == 16 and modality.clip_length(16, 3) == 46
    clips = torch.zeros(300, modality.clip_length(6, 3), 1, 1, 1)
    _, interval, _ = modality.variable_frame_rate(clips, 6, 1.0, 3, gen(6))
    assert interval.max() == 3


# joint_batch -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch,fraction", [(8, 0.5), (7, 0.5), (6, 0.0), (5, 1.0), (10, 0.25)])
def test_joint_batch_ratio_and_image_rows(batch, fraction):
    videos = torch.rand(batch, 4, 3, 5, 5, generator=gen(7)) * 2 - 1
    interval = torch.full((batch,), 0.125)
    images = torch.rand(batch, 3, 5, 5, generator=gen(8)) * 2 - 1
    out = modality.joint_batch(videos, interval, images, fraction, gen(9))
    n_img = round(fraction * batch)
    assert out["video"].shape == (batch, 4, 3, 5, 5)
    assert out["is_image"].dtype == torch.bool and int(out["is_image"].sum()) == n_img
    img, vid = out["is_image"], ~out["is_image"]
    assert torch.equal(out["frame_interval"][img], torch.zeros(n_img))
    assert torch.equal(out["frame_interval"][vid], torch.full((batch - n_img,), 0.125))
    for row in range(batch):
        i = int(out["index"][row])
        if img[row]:
            assert torch.equal(out["video"][row], images[i][None].expand(4, -1, -1, -1))
        else:
            assert torch.equal(out["video"][row], videos[i])
    # the first n images and videos are used, each once
    assert sorted(out["index"][img].tolist()) == list(range(n_img))
    assert sorted(out["index"][vid].tolist()) == list(range(batch - n_img))


def test_joint_batch_is_shuffled_reproducibly():
    videos, images = torch.randn(16, 2, 1, 2, 2), torch.randn(16, 1, 2, 2)
    a = modality.joint_batch(videos, torch.ones(16), images, 0.5, gen(10))
    b = modality.joint_batch(videos, torch.ones(16), images, 0.5, gen(10))
    c = modality.joint_batch(videos, torch.ones(16), images, 0.5, gen(11))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["is_image"], c["is_image"])
    assert not torch.equal(a["is_image"], torch.arange(16) < 8)  # not simply images first


def test_joint_batch_batch_size_and_labels():
    videos, images = torch.randn(3, 2, 1, 2, 2), torch.randn(5, 1, 1, 2, 2)
    out = modality.joint_batch(videos, torch.ones(3), images, 0.5, gen(12), batch_size=6,
                               video_labels=torch.tensor([4, 5, 6]))
    assert out["video"].shape[0] == 6 and int(out["is_image"].sum()) == 3
    assert torch.equal(out["labels"][out["is_image"]], torch.full((3,), DROPPED_LABEL))
    assert sorted(out["labels"][~out["is_image"]].tolist()) == [4, 5, 6]
    out = modality.joint_batch(videos, torch.ones(3), images, 0.5, gen(12), batch_size=6,
                               video_labels=torch.tensor([4, 5, 6]), image_labels=torch.tensor([1, 1, 1, 2, 2]))
    assert torch.equal(out["labels"][out["is_image"]], torch.ones(3, dtype=torch.long))
    assert "labels" not in modality.joint_batch(videos, torch.ones(3), images, 0.5, gen(12))


def test_split_counts():
    assert modality.split_counts(8, 0.5) == (4, 4)
    assert modality.split_counts(10, 0.25) == (2, 8)  # round(2.5) = 2 (Python rounds half to even)
    assert modality.split_counts(3, 1.0) == (3, 0)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_joint_batch_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="image_fraction"):
        modality.joint_batch(torch.zeros(4, 2, 1, 2, 2), torch.ones(4), torch.zeros(4, 1, 2, 2), fraction)


def test_joint_batch_errors():
    videos, interval = torch.zeros(4, 2, 1, 2, 2), torch.ones(4)
    with pytest.raises(ValueError, match="same"):  # images at another resolution
        modality.joint_batch(videos, interval, torch.zeros(4, 1, 3, 3), 0.5)
    with pytest.raises(ValueError, match="needs 3 images"):  # too few images
        modality.joint_batch(videos, interval, torch.zeros(1, 1, 2, 2), 0.75)
    with pytest.raises(ValueError, match="needs"):  # too few videos for the batch size
        modality.joint_batch(videos, interval, torch.zeros(8, 1, 2, 2), 0.25, batch_size=8)
    with pytest.raises(ValueError, match="one entry per video"):
        modality.joint_batch(videos, torch.ones(3), torch.zeros(4, 1, 2, 2), 0.5)
    with pytest.raises(ValueError):
        modality.joint_batch(videos[0], interval, torch.zeros(4, 1, 2, 2), 0.5)


# ImageSource -----------------------------------------------------------------------------------------

def test_image_source_frames_of_the_dataset():
    ds = BouncingBalls(num_frames=5, resolution=12, num_balls=1, seed=3, length=50)
    source = modality.ImageSource(ds)
    out = source.sample_batch(6, gen(13))
    assert out["image"].shape == (6, 3, 12, 12)
    assert out["image"].min() >= -1 and out["image"].max() <= 1
    assert out["clip_index"].max() < 50 and out["frame_index"].max() < 5
    for i in range(6):  # each image is the named frame of the named clip
        assert torch.equal(out["image"][i], ds[int(out["clip_index"][i])]["video"][int(out["frame_index"][i])])
    assert torch.equal(source.sample(6, gen(13)), out["image"])
    assert not torch.equal(source.sample(6, gen(14)), out["image"])


def test_image_source_resizes():
    ds = BouncingBalls(num_frames=3, resolution=16, num_balls=2, seed=4, length=20)
    small = modality.ImageSource(ds, resolution=8).sample(4, gen(15))
    assert small.shape == (4, 3, 8, 8) and small.min() >= -1 and small.max() <= 1
    full = modality.ImageSource(ds).sample(4, gen(15))
    # area averaging: each output pixel is the mean of a 2 x 2 block of the dataset's frame
    assert torch.allclose(small, full.reshape(4, 3, 8, 2, 8, 2).mean((3, 5)), atol=1e-6)
    wide = modality.ImageSource(ds, resolution=(20, 24)).sample(2, gen(15))
    assert wide.shape == (2, 3, 20, 24) and wide.min() >= -1 - 1e-6 and wide.max() <= 1 + 1e-6


class _Frames(torch.utils.data.Dataset):
    """A minimal dataset without get_batch: clip i is the constant i/10, labelled i % 3."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return dict(video=torch.full((2, 1, 4, 4), i / 10), frame_interval=0.5, labels=i % 3)


def test_image_source_is_dataset_agnostic():
    out = modality.ImageSource(_Frames(), resolution=2).sample_batch(5, gen(16))
    assert out["image"].shape == (5, 1, 2, 2)
    assert torch.allclose(out["image"][:, 0, 0, 0], out["clip_index"].float() / 10)
    with pytest.raises(ValueError):
        modality.ImageSource(_Frames(), resolution=0)
    with pytest.raises(ValueError):
        modality.ImageSource(_Frames()).sample(0)
