"""Snap Video's diffusion framework as the trainer runs it (Sec. 3.2-3.3): the automatic sigma_in, joint
image+video batches, variable frame rate, and the row definitions of benchmarks/snap_ablation.py.

The building blocks (edm.input_scale, modality.joint_batch, ...) have their own unit tests; these tests
check what ``train.py`` makes of a config, through ``batches.make_batch`` and ``models.build_denoiser``.
"""
import math

import pytest
import torch

from benchmarks import snap_ablation
from nano_videodiff.training import presets as config_lib
from nano_videodiff.training.batches import TrainingData, make_batch
from nano_videodiff.conditioning import Batch, Cond
from nano_videodiff.edm import input_scale
from nano_videodiff.models import build_denoiser, resolved_sigma_in
from nano_videodiff.training.objectives import DiffusionObjective

TINY = ["--dim=16", "--depth=1", "--heads=2"]


def config(*overrides, preset="smoke"):
    cfg, _, _ = config_lib.resolve([f"--config={preset}", *TINY, *overrides])
    return cfg.validate()


# ---- sigma_in presets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("frames,resolution", [(1, 16), (4, 16), (8, 16), (16, 32), (16, 48), (9, 64)])
def test_auto_sigma_in_is_s_sqrt_T(frames, resolution):
    cfg = config("--sigma_in=0", f"--num_frames={frames}", f"--resolution={resolution}", "--patch_size=4")
    model = build_denoiser(cfg)
    expected = input_scale(frames, resolution, resolution, 36, 64)
    # independently: s = sqrt(pixels / base pixels) with Snap Video's 64x36 base, times sqrt(T)
    s = math.sqrt(resolution * resolution / (64 * 36))
    assert model.sigma_in == pytest.approx(expected, rel=1e-12)
    assert model.sigma_in == pytest.approx(s * math.sqrt(frames), rel=1e-12)
    assert resolved_sigma_in(cfg) == model.sigma_in


def test_paper_first_stage_gives_sigma_in_4():
    """16 frames at the 64x36 base (s = 1) -> sqrt(16) = 4, Snap Video Sec. 3.2."""
    assert input_scale(16, 36, 64, 36, 64) == pytest.approx(4.0)


def test_explicit_sigma_in_is_kept_and_one_is_edm():
    assert build_denoiser(config("--sigma_in=2.5")).sigma_in == 2.5
    assert build_denoiser(config()).sigma_in == 1.0  # the default: plain EDM


# ---- joint image + video batches ----------------------------------------------------------------------

def joint_config(*extra):
    return config("--image_fraction=0.5", "--batch_size=8", "--num_frames=4", "--resolution=16", *extra)


@pytest.mark.parametrize("stride", [1, 3])
def test_joint_batch_is_half_images_and_half_videos(stride):
    cfg = joint_config(f"--max_frame_stride={stride}")
    data = TrainingData(cfg)
    fps = cfg.data.fps
    seen_strides = set()
    for step in range(3):
        batch = make_batch(cfg, data, step, 0, 1, "cpu")
        x, cond, sigma, noise = batch.x, batch.cond, batch.sigma, batch.noise
        assert x.shape == (8, 4, 3, 16, 16) and noise.shape == x.shape and sigma.shape == (8,)
        interval = cond.frame_interval
        is_image = interval == 0
        assert int(is_image.sum()) == 4  # exactly half
        static = (x == x[:, :1]).flatten(1).all(1)
        assert static[is_image].all()  # images: T identical frames
        assert not static[~is_image].any()  # videos: the balls move
        k = interval[~is_image] * fps  # videos: interval = k / fps, k integer in 1..max_frame_stride
        assert torch.allclose(k, k.round(), atol=1e-5)
        assert ((k.round() >= 1) & (k.round() <= stride)).all()
        seen_strides |= set(k.round().long().tolist())
    if stride == 1:
        assert seen_strides == {1}
    else:
        assert len(seen_strides) > 1  # the frame rate really varies


def test_variable_frame_rate_frames_are_strided_from_the_clip():
    """A video at interval k/fps shows frames start, start + k, ... of a longer clip: its steps in time are
    k times those of the same balls at stride 1 (checked through the frame-difference size)."""
    cfg = joint_config("--max_frame_stride=3", "--image_fraction=0.0", "--batch_size=16")
    batch = make_batch(cfg, TrainingData(cfg), 0, 0, 1, "cpu")
    x, cond = batch.x, batch.cond
    k = (cond.frame_interval * cfg.data.fps).round()
    motion = (x[:, 1:] - x[:, :-1]).abs().mean((1, 2, 3, 4))
    assert set(k.tolist()) >= {1.0, 3.0}
    assert motion[k == 3].mean() > motion[k == 1].mean()


def test_the_same_step_gives_the_same_batch():
    cfg = joint_config("--max_frame_stride=2")
    a = make_batch(cfg, TrainingData(cfg), 5, 0, 1, "cpu")
    b = make_batch(cfg, TrainingData(cfg), 5, 0, 1, "cpu")
    c = make_batch(cfg, TrainingData(cfg), 6, 0, 1, "cpu")
    fields = lambda batch: (batch.x, batch.cond, batch.sigma, batch.noise, batch.self_cond_draw)
    a, b, c = fields(a), fields(b), fields(c)
    for u, v in zip(a, b):
        if isinstance(u, Cond):
            assert torch.equal(u.frame_interval, v.frame_interval)
        else:
            assert torch.equal(u, v)
    assert not torch.equal(a[0], c[0])


# ---- the ablation benchmark's rows ---------------------------------------------------------------------

def test_ablation_rows_set_what_table_3_changes():
    rows = snap_ablation.row_definitions("bouncing_balls", "vdt")
    assert list(rows) == ["i", "ii", "iii", "iv", "v"]
    cfgs = {k: config_lib.resolve(r["overrides"])[0].validate() for k, r in rows.items()}
    auto = input_scale(16, 32, 32, 36, 64)  # bouncing_balls: 16 frames of 32x32
    expected = {  # row: (sigma_data, sigma_in of the videos, image mode)
        "i": (0.5, 1.0, "video"), "ii": (0.5, auto, "video"), "iii": (1.0, auto / 2, "video"),
        "iv": (1.0, auto, "frames"), "v": (1.0, auto, "video")}
    for key, (sigma_data, sigma_in, mode) in expected.items():
        cfg, row = cfgs[key], rows[key]
        assert cfg.diffusion.sigma_data == sigma_data == row["sigma_data"], key
        assert resolved_sigma_in(cfg) == pytest.approx(sigma_in) and row["sigma_in"] == pytest.approx(sigma_in), key
        assert cfg.data.image_fraction == 0.5, key  # every row trains on images and videos
        assert cfg.model.backbone == "vdt" and cfg.data.dataset == "bouncing_balls", key
        assert row["image_mode"] == mode, key
    # (iv): images as separate 1-frame samples with their own s sqrt(1); everyone else shares the videos'
    assert rows["iv"]["image_sigma_in"] == pytest.approx(input_scale(1, 32, 32, 36, 64))
    assert all(rows[k]["image_sigma_in"] == rows[k]["sigma_in"] for k in ("i", "ii", "iii", "v"))
    # only sigma_data, sigma_in and the image treatment differ between rows
    reference = cfgs["v"].to_dict()
    for key, cfg in cfgs.items():
        diff = {(s, f) for s, fields in cfg.to_dict().items() for f, v in fields.items() if reference[s][f] != v}
        assert diff <= {("diffusion", "sigma_data"), ("diffusion", "sigma_in")}, (key, diff)


def test_ablation_rows_with_fit_and_extra_overrides():
    rows = snap_ablation.row_definitions("bouncing_balls", "fit", row_iv="interval",
                                         extra=["--num_frames=4", "--resolution=16"])
    cfg = config_lib.resolve(rows["v"]["overrides"])[0]
    assert cfg.model.backbone == "fit" and cfg.data.num_frames == 4
    assert rows["v"]["sigma_in"] == pytest.approx(input_scale(4, 16, 16, 36, 64))
    assert rows["iv"]["image_mode"] == "interval" and rows["iv"]["image_sigma_in"] == rows["iv"]["sigma_in"]
    with pytest.raises(ValueError):
        snap_ablation.row_definitions(row_iv="separate")


def row_iv_loss(mode):
    """Row (iv)'s training loss on one joint batch, and the plain loss on the same batch."""
    cfg = joint_config("--sigma_data=1.0", "--sigma_in=0")
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg)
    with torch.no_grad():  # adaLN-zero and the zero output layer would make the output ignore cond at init
        for p in denoiser.parameters():
            if not p.any():
                p.normal_(std=0.1)
    batch = make_batch(cfg, TrainingData(cfg), 0, 0, 1, "cpu")
    image_sigma_in = input_scale(1, 16, 16, 36, 64)
    loss_cls = snap_ablation.image_mode_loss(mode, image_sigma_in, 1 / cfg.data.fps)
    return loss_cls(denoiser)(batch), DiffusionObjective(denoiser)(batch), denoiser, batch


def test_row_iv_frames_trains_images_as_one_frame_with_their_own_sigma_in():
    loss, plain, denoiser, batch = row_iv_loss("frames")
    x, cond, sigma, noise = batch.x, batch.cond, batch.sigma, batch.noise
    video_sigma_in = denoiser.sigma_in
    assert video_sigma_in == pytest.approx(input_scale(4, 16, 16, 36, 64))  # restored after the image part
    img = cond.frame_interval == 0
    parts = []
    for rows, frames, sigma_in in ((~img, slice(None), video_sigma_in),
                                   (img, slice(0, 1), input_scale(1, 16, 16, 36, 64))):
        denoiser.sigma_in = sigma_in
        sub = Cond(frame_interval=cond.frame_interval[rows])
        parts.append(rows.sum() * denoiser.loss(Batch(x[rows][:, frames], sub, sigma=sigma[rows], noise=noise[rows][:, frames])))
    denoiser.sigma_in = video_sigma_in
    assert torch.allclose(loss, sum(parts) / x.shape[0])
    assert not torch.allclose(loss, plain)


def test_row_iv_interval_tells_images_the_video_interval():
    loss, plain, denoiser, batch = row_iv_loss("interval")
    x, cond, sigma, noise = batch.x, batch.cond, batch.sigma, batch.noise
    told = torch.where(cond.frame_interval == 0, torch.full_like(cond.frame_interval, 0.125), cond.frame_interval)
    expected = denoiser.loss(Batch(x, cond.replace(frame_interval=told), sigma=sigma, noise=noise))
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, plain)


def test_learned_feature_distances_rank_real_clips_above_noise_and_frozen_clips():
    """The ablation's scores are the shipped toy video network's FD/KID (evaluation/toy_features.py)."""
    from nano_videodiff.evaluation import toy_features
    clips = toy_features.physion_clips("test", 256, progress=False)["video"][:48]
    stats = snap_ablation.SampleStats(clips[24:])
    real, noise = stats.distances(clips[:24]), stats.distances(torch.rand_like(clips[:24]) * 2 - 1)
    still = stats.distances(clips[:24, :1].expand_as(clips[:24]))
    assert real["fd"] < noise["fd"] and real["kid"] < noise["kid"]
    assert real["fd"] < still["fd"]  # frozen clips have real frames but no motion
