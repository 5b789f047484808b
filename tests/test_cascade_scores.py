"""The scores of super-resolution stages and of motion (evaluation/upsampling.py), SDEdit regeneration
(generation.regenerate) and the residual std that sets a stage's sigma_data (upsampler.residual_std)."""
import pytest
import torch
import torch.nn.functional as F

from nano_videodiff.evaluation import upsampling as scores
from nano_videodiff.upsampler import downsample, residual_std, upsample


def disc_video(centres, size=32, radius=5.0, background=-1.0):
    """(1, T, 3, size, size): a white disc at each (row, column) centre on a flat background."""
    rows, cols = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    frames = [torch.where(((rows - r) ** 2 + (cols - c) ** 2) <= radius**2, 1.0, background) for r, c in centres]
    return torch.stack(frames)[None, :, None].expand(1, len(centres), 3, size, size).clone()


def test_flicker_is_zero_for_the_truth_and_for_any_constant_offset():
    truth = disc_video([(10, 8 + t) for t in range(5)])
    assert scores.flicker(truth, truth) == 0
    assert scores.flicker(truth + 0.3, truth) == pytest.approx(0, abs=1e-9)  # per-frame error, but consistent
    # a frame-to-frame wobble: frame differences off by 0.2 everywhere -> 1000 x 0.2^2 on every difference
    wobble = truth + 0.2 * (torch.arange(5) % 2).float().reshape(1, 5, 1, 1, 1)
    assert scores.flicker(wobble, truth) == pytest.approx(1000 * 0.04, rel=1e-5)


def test_sharpness_is_one_for_the_truth_below_one_blurred_and_edge_error_sees_both_blur_and_grain():
    truth = disc_video([(16, 16)] * 2)
    blurred = upsample(downsample(truth, 4), 4, "bilinear")
    grainy = truth + 0.2 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    assert scores.sharpness(truth, truth) == 1 and scores.edge_error(truth, truth) == 0
    assert scores.sharpness(blurred, truth) < 1 < scores.sharpness(grainy, truth)
    assert scores.edge_error(blurred, truth) > 0 and scores.edge_error(grainy, truth) > 0
    # edge error is the L1 distance of the gradient fields: one pixel raised by a changes 4 differences by a
    bump = truth.clone()
    bump[..., 16, 16] += 0.5
    h, w = truth.shape[-2:]
    per_frame = 2 * 0.5 / (h * (w - 1)) + 2 * 0.5 / ((h - 1) * w)
    assert scores.edge_error(bump, truth) == pytest.approx(per_frame, rel=1e-5)


def test_upsampling_scores_input_psnr_is_infinite_for_a_consistent_output():
    truth = disc_video([(10, 10), (11, 12)])
    low = downsample(truth, 4)
    nearest = upsample(low, 4, "nearest")  # box-downsamples back to exactly low
    r = scores.upsampling_scores(nearest, low, truth)
    assert set(r) == {"input_psnr", "psnr", "flicker", "sharpness", "edge_error"}
    assert r["input_psnr"] > 80  # the metric's cap for a perfect match
    assert set(scores.upsampling_scores(nearest, low)) == {"input_psnr"}


def test_centroids_and_acceleration_of_a_disc_moving_at_constant_then_changed_velocity():
    steady = disc_video([(10, 6 + 2 * t) for t in range(6)])
    c = scores.foreground_centroids(steady, -torch.ones(3, 1, 1))
    assert torch.allclose(c[0, :, 0], torch.full((6,), 10.0), atol=1e-4)
    assert torch.allclose(c[0, :, 1], 6 + 2 * torch.arange(6).float(), atol=1e-4)
    m = scores.motion(steady, -torch.ones(3, 1, 1))
    assert m["accel_px"] == pytest.approx(0, abs=1e-4)
    assert 0 < m["on_background"] < 1
    bounce = disc_video([(10, 6), (10, 9), (10, 12), (10, 9), (10, 6)])  # second differences 0, -6, 0
    assert scores.motion(bounce, -torch.ones(3, 1, 1))["accel_px"] == pytest.approx(6 / 3, abs=1e-3)


def test_residual_std_is_the_std_of_what_the_stage_diffuses():
    from nano_videodiff.training.presets import get_preset
    cfg = get_preset("cascade_sr")
    cfg.data.num_test_clips = cfg.data.num_train_clips = 16
    import toy_data
    x = toy_data.get_batch(toy_data.build_dataset(cfg.data, "train"), range(8))["video"]
    expected = (x - F.interpolate(F.avg_pool2d(x.flatten(0, 1), 4), scale_factor=4, mode="bilinear",
                                  align_corners=False).reshape(x.shape)).std()
    assert residual_std(cfg, num_clips=8) == pytest.approx(float(expected), rel=1e-5)
    # augmentation adds the lifted noise to the residual: larger with the level
    assert residual_std(cfg, aug_sigma=0.3, num_clips=8) > residual_std(cfg, num_clips=8)
    # the toy stage's preconditioning assumes the residual's std, not the clips' 0.37
    assert cfg.diffusion.sigma_data == pytest.approx(residual_std(get_preset("cascade_sr")), rel=0.15)
    assert float(x.std()) > 2.5 * cfg.diffusion.sigma_data


def test_regenerate_keeps_what_small_noise_does_not_drown_and_is_seeded():
    from nano_videodiff.generation import regenerate
    from nano_videodiff.models import build_denoiser
    from nano_videodiff.training.presets import get_preset
    cfg = get_preset("smoke")
    cfg.data.num_frames = 2
    model = build_denoiser(cfg.validate()).eval()  # untrained: output layer zero, D = c_skip x_sigma
    videos = torch.rand(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    low_noise = regenerate(model, cfg, videos, sigma=0.01, steps=3, seed=1)
    assert (low_noise - videos).abs().mean() < 0.02
    assert torch.equal(regenerate(model, cfg, videos, 0.5, steps=3, seed=1), regenerate(model, cfg, videos, 0.5, 3, 1))
    assert not torch.equal(regenerate(model, cfg, videos, 0.5, 3, seed=1), regenerate(model, cfg, videos, 0.5, 3, 2))
