"""Tests for nano_videodiff.evaluation.metrics: exact values on hand-made clips and an independent SSIM reference."""
import math

import numpy as np
import pytest
import torch

from nano_videodiff.evaluation.metrics import (AGENT_RGB, BACKGROUND_RGB, PATIENT_RGB, constant_velocity_trajectories,
                                    contact_accuracy, contact_from_frames, contact_from_trajectories,
                                    copy_last_frame, mmnist_mae_per_frame, mmnist_mse_per_frame,
                                    object_centroids, object_masks, psnr, radii_from_frames, ssim,
                                    trajectory_error)

BLUE = (0.20, 0.40, 0.90)  # a distractor object colour


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- PSNR


def test_psnr_identical_is_inf():
    x = torch.rand(2, 3, 1, 16, 16, generator=gen(0)) * 2 - 1
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    assert torch.isinf(psnr(x, x, per_frame=True)).all()


@pytest.mark.parametrize("d,data_range", [(0.25, 2.0), (0.5, 2.0), (0.125, 1.0)])
def test_psnr_constant_offset_is_exact(d, data_range):
    # values on a 1/8 grid so that target + d and the squared differences are exact in float32
    target = torch.randint(-8, 5, (2, 4, 3, 8, 8), generator=gen(1)).float() / 8
    pred = target + d
    expected = 10 * math.log10(data_range ** 2 / d ** 2)
    out = psnr(pred, target, data_range=data_range)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.full((2,), expected), rtol=0, atol=1e-5)


def test_psnr_per_frame_and_single_clip():
    target = torch.zeros(2, 3, 1, 8, 8)
    offsets = torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1, 1)
    pred = target + offsets
    per_frame = psnr(pred, target, per_frame=True)
    assert per_frame.shape == (2, 3)
    expected = torch.tensor([10 * math.log10(4 / d ** 2) for d in (0.5, 0.25, 0.125)])
    assert torch.allclose(per_frame, expected.expand(2, 3), atol=1e-5)
    # the video value is the mean of the per-frame values (OpenSTL), not PSNR of the mean MSE
    assert torch.allclose(psnr(pred, target), expected.mean().expand(2), atol=1e-5)
    assert psnr(pred[0], target[0]).shape == ()


def test_psnr_gaussian_noise_matches_variance():
    sigma = 0.1
    target = torch.rand(4, 4, 3, 64, 64, generator=gen(2)) * 2 - 1
    pred = target + sigma * torch.randn(target.shape, generator=gen(3))
    # E[MSE] = sigma^2 -> PSNR = 10 log10(4 / sigma^2) = 26.02 dB; 49k samples/frame -> +-0.03 dB
    assert torch.allclose(psnr(pred, target), torch.full((4,), 10 * math.log10(4 / sigma ** 2)), atol=0.05)


# ---------------------------------------------------------------------------------------------- SSIM


def test_ssim_identical_is_one():
    x = torch.rand(2, 3, 3, 24, 24, generator=gen(4)) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert torch.allclose(ssim(x, x, per_frame=True), torch.ones(2, 3), atol=1e-6)


@pytest.mark.parametrize("a,b", [(-1.0, -0.5), (0.2, 0.6), (-0.75, 1.0)])
def test_ssim_constant_images_is_the_luminance_term(a, b):
    x, y = torch.full((1, 2, 1, 16, 16), a), torch.full((1, 2, 1, 16, 16), b)
    # constant images: zero variances and covariance, so the contrast-structure term is C2 / C2 = 1; the
    # luminance term uses the shifted (non-negative) intensities a + 1, b + 1 with L = 2
    c1 = (0.01 * 2.0) ** 2
    mu1, mu2 = a + 1, b + 1
    expected = (2 * mu1 * mu2 + c1) / (mu1 ** 2 + mu2 ** 2 + c1)
    assert abs(ssim(x, y).item() - expected) < 1e-6
    # ... which is SSIM of the same frames mapped to [0, 1] with L = 1 (the Moving MNIST convention)
    x01, y01 = (x + 1) / 2, (y + 1) / 2
    assert abs(ssim(x01, y01, data_range=1.0, data_min=0.0).item() - expected) < 1e-6


def test_ssim_decreases_with_noise():
    x = torch.rand(1, 2, 1, 32, 32, generator=gen(5)) * 2 - 1
    scores = [ssim(x + s * torch.randn(x.shape, generator=gen(6)), x).item() for s in (0.0, 0.05, 0.2, 0.5)]
    assert all(s1 > s2 for s1, s2 in zip(scores, scores[1:])), scores
    # uniform [-1, 1] pixels (variance 1/3) plus noise of variance 1/4: structure term ~ (2/3) / (2/3 + 1/4)
    assert scores[-1] == pytest.approx((2 / 3) / (2 / 3 + 0.25), abs=0.05)


def reference_ssim(x, y, data_range, win, sample_cov):
    """Direct per-window SSIM of two 2-D numpy images (slow loops over window positions)."""
    n = win.shape[0]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(x.shape[0] - n + 1):
        for j in range(x.shape[1] - n + 1):
            px, py = x[i:i + n, j:j + n], y[i:i + n, j:j + n]
            mx, my = (win * px).sum(), (win * py).sum()
            vx, vy = (win * (px - mx) ** 2).sum(), (win * (py - my) ** 2).sum()
            cxy = (win * (px - mx) * (py - my)).sum()
            if sample_cov:
                vx, vy, cxy = (v * n * n / (n * n - 1) for v in (vx, vy, cxy))
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("gaussian", [True, False])
def test_ssim_matches_direct_reference(gaussian):
    b, t, c, h, w = 2, 2, 3, 18, 17
    x = torch.rand(b, t, c, h, w, generator=gen(7)) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=gen(8))).clamp(-1, 1)
    if gaussian:
        g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2))
        win = np.outer(g, g) / np.outer(g, g).sum()
        out = ssim(x, y, per_frame=True)
    else:
        win = np.full((7, 7), 1 / 49)
        out = ssim(x, y, per_frame=True, window_size=7, gaussian_weights=False)
    xn, yn = x.double().numpy() + 1, y.double().numpy() + 1  # shifted to [0, 2], L = 2
    ref = np.array([[np.mean([reference_ssim(xn[i, k, ch], yn[i, k, ch], 2.0, win, not gaussian)
                              for ch in range(c)]) for k in range(t)] for i in range(b)])
    assert out.shape == (b, t)
    assert np.allclose(out.numpy(), ref, atol=1e-5)


def test_ssim_rejects_frames_smaller_than_window():
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(1, 1, 1, 8, 8), torch.zeros(1, 1, 1, 8, 8))


# ---------------------------------------------------------------------- Moving MNIST MSE, copy-last


def test_mmnist_mse_on_hand_made_clip():
    pred = -torch.ones(2, 2, 1, 8, 8)  # all black: 0 in [0, 1]
    target = -torch.ones(2, 2, 1, 8, 8)
    target[0, 0, 0, 1, 1:4] = 1.0  # 3 white pixels: squared error 1 each -> 3
    target[0, 1, 0, 2:4, 2:4] = 0.0  # 4 grey pixels (0.5 in [0, 1]) -> 4 * 0.25 = 1
    target[1, 0, 0, 0, 0] = 1.0  # clip 1: 1 white pixel in frame 0 -> 1; frame 1 exact -> 0
    assert torch.allclose(mmnist_mse_per_frame(pred, target), torch.tensor([(3 + 1) / 2, (1 + 0) / 2]))
    # MAE: |1| * 3 and 0.5 * 4 = 2
    assert torch.allclose(mmnist_mae_per_frame(pred, target), torch.tensor([(3 + 1) / 2, (2 + 0) / 2]))
    assert mmnist_mse_per_frame(pred[0], target[0]).shape == (2,)


def test_copy_last_frame_scores_its_definition():
    # a 4-frame brightness ramp: frame t is the constant -1 + 0.5 t; context = frames 0, 1
    ramp = torch.stack([torch.full((1, 8, 8), -1 + 0.5 * t) for t in range(4)])[None]  # (1, 4, 1, 8, 8)
    pred = copy_last_frame(ramp[:, :2], 2)
    assert pred.shape == (1, 2, 1, 8, 8)
    assert torch.equal(pred, torch.full((1, 2, 1, 8, 8), -0.5))
    # errors are 0.5 and 1.0 in [-1, 1] units, i.e. 0.25 and 0.5 in [0, 1] units, over 64 pixels
    assert torch.allclose(mmnist_mse_per_frame(pred, ramp[:, 2:]), torch.tensor([64 * 0.25 ** 2, 64 * 0.5 ** 2]))
    assert torch.allclose(psnr(pred, ramp[:, 2:], per_frame=True),
                          torch.tensor([[10 * math.log10(4 / 0.25), 10 * math.log10(4 / 1.0)]]), atol=1e-5)
    single = copy_last_frame(ramp[0, :3], 5)
    assert single.shape == (5, 1, 8, 8) and torch.equal(single, ramp[0, 2:3].expand(5, -1, -1, -1))


# ---------------------------------------------------------------------------------- objects by colour


def draw(discs, size=64, ss=8):
    """Anti-aliased RGB frame (3, H, W) in [-1, 1]: discs (cx, cy, r, rgb) painted in order over the
    background, each with its exact pixel coverage estimated from ss x ss sub-samples."""
    sub = (torch.arange(size * ss, dtype=torch.float64) + 0.5) / ss
    yy, xx = torch.meshgrid(sub, sub, indexing="ij")
    img = torch.tensor(BACKGROUND_RGB, dtype=torch.float64).view(3, 1, 1).expand(3, size, size).clone()
    for cx, cy, r, rgb in discs:
        inside = (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r).double()
        cover = inside.view(size, ss, size, ss).mean(dim=(1, 3))
        img = (1 - cover) * img + cover * torch.tensor(rgb, dtype=torch.float64).view(3, 1, 1)
    return (img * 2 - 1).float()


def test_centroids_of_antialiased_discs():
    truth = [(20.3, 31.7, 6.0), (43.85, 22.4, 4.5)]
    frame = draw([(*truth[0], AGENT_RGB), (*truth[1], PATIENT_RGB), (32.0, 50.0, 5.0, BLUE)])
    noisy = frame + 0.02 * torch.randn(frame.shape, generator=gen(9))
    video = torch.stack([frame, noisy])[None]  # (1, 2, 3, 64, 64)
    xy, visible = object_centroids(video)
    assert xy.shape == (1, 2, 2, 2) and visible.all()
    true_xy = torch.tensor([[t[0], t[1]] for t in truth])
    assert (xy[0] - true_xy).norm(dim=-1).max() < 0.5
    assert (xy[0, 0] - true_xy).norm(dim=-1).max() < 0.1  # the clean frame is far better than 0.5 px
    # equivalent-disc radii from the areas
    radii = radii_from_frames(video)
    assert radii.shape == (1, 2) and torch.allclose(radii[0], torch.tensor([6.0, 4.5]), atol=0.5)


def test_absent_object_is_nan_and_invisible():
    frame = draw([(20.0, 20.0, 5.0, AGENT_RGB), (44.0, 44.0, 5.0, BLUE)])  # no yellow patient
    xy, visible = object_centroids(frame[None])  # one clip (T=1, 3, H, W)
    assert xy.shape == (1, 2, 2)
    assert visible[0].tolist() == [True, False]
    assert torch.isnan(xy[0, 1]).all() and torch.isfinite(xy[0, 0]).all()
    # the blue distractor is nobody's: no membership anywhere near it
    m = object_masks(frame[None])
    assert m[0, :, 38:51, 38:51].max() == 0


def test_trajectory_error_ignores_invisible():
    true = torch.zeros(1, 2, 2, 2)
    pred = torch.tensor([[[[3.0, 4.0], [0.0, 1.0]], [[float("nan"), 0.0], [6.0, 8.0]]]])
    visible = torch.tensor([[[True, True], [True, False]]])
    # counted: 5 (frame 0, obj 0), 1 (frame 0, obj 1); NaN and invisible entries are skipped
    assert trajectory_error(pred, true, visible).item() == pytest.approx(3.0)
    assert trajectory_error(pred, true).item() == pytest.approx((5 + 1 + 10) / 3)
    per_frame = trajectory_error(pred, true, visible, per_frame=True)
    assert per_frame[0].item() == pytest.approx(3.0) and torch.isnan(per_frame[1])


def test_constant_velocity_is_exact_on_a_straight_line():
    t = torch.arange(6, dtype=torch.float32)
    line = torch.stack([10 + 1.5 * t, 40 - 2.25 * t], -1)  # (6, 2), exact in float32
    xy = torch.stack([line, line.flip(-1)], 1)[None]  # (1, 6, K=2, 2)
    ctx = xy[:, :4].clone()
    ctx[0, 2, 1] = float("nan")  # object 1 missing in frame 2: it must use frames 1 and 3
    out = constant_velocity_trajectories(ctx, 2)
    assert out.shape == (1, 2, 2, 2)
    assert torch.equal(out, xy[:, 4:])


def test_constant_velocity_seen_once_or_never():
    ctx = torch.full((3, 2, 2), float("nan"))
    ctx[1, 0] = torch.tensor([5.0, 7.0])  # object 0 seen once -> stays; object 1 never -> NaN
    out = constant_velocity_trajectories(ctx, 3)
    assert torch.equal(out[:, 0], torch.tensor([[5.0, 7.0]] * 3))
    assert torch.isnan(out[:, 1]).all()


# ------------------------------------------------------------------------------------------- contact


def test_contact_from_frames_touching_vs_separated():
    r1, r2 = 6.0, 5.0
    # boundary on a pixel edge, inside a pixel, on a diagonal; then a 4 px gap; then far apart
    touch_a = draw([(20.0, 32.0, r1, AGENT_RGB), (20.0 + r1 + r2, 32.0, r2, PATIENT_RGB)])
    touch_b = draw([(20.3, 30.0, r1, AGENT_RGB), (20.3 + r1 + r2, 30.0, r2, PATIENT_RGB)])
    touch_c = draw([(24.0, 24.0, r1, AGENT_RGB), (24.0 + (r1 + r2) / 2 ** 0.5, 24.0 + (r1 + r2) / 2 ** 0.5, r2,
                                                   PATIENT_RGB)])
    apart = draw([(20.0, 32.0, r1, AGENT_RGB), (20.0 + r1 + r2 + 4.0, 32.0, r2, PATIENT_RGB)])
    gap2 = draw([(20.3, 30.0, r1, AGENT_RGB), (20.3 + r1 + r2 + 2.0, 30.0, r2, PATIENT_RGB)])  # documented limit
    far = draw([(10.0, 10.0, r1, AGENT_RGB), (50.0, 50.0, r2, PATIENT_RGB)])
    frames = torch.stack([touch_a, touch_b, touch_c, apart, gap2, far])[:, None]  # 6 clips of 1 frame
    assert contact_from_frames(frames).tolist() == [True, True, True, False, False, False]
    # "contact at any time": a clip whose single touching frame is in the middle
    clip = torch.stack([far, apart, touch_b, far])
    assert contact_from_frames(clip).item() is True
    assert contact_from_frames(clip, per_frame=True).tolist() == [False, False, True, False]


def test_contact_from_trajectories_and_accuracy():
    # agent moves right along y=0 towards a patient at x=20; radii 3 + 2, margin 1 -> contact at dist <= 6
    ax = torch.tensor([0.0, 6.0, 12.0, 14.0])
    xy = torch.zeros(2, 4, 2, 2)
    xy[:, :, 0, 0] = ax
    xy[:, :, 1, 0] = 20.0
    xy[1, :, 0, 0] = ax.clamp(max=13.0)  # clip 1 stops at distance 7
    radii = torch.tensor([3.0, 2.0])
    assert contact_from_trajectories(xy, radii).tolist() == [True, False]
    assert contact_from_trajectories(xy, radii, per_frame=True)[0].tolist() == [False, False, False, True]
    assert contact_from_trajectories(xy, radii, margin=2.0).tolist() == [True, True]
    xy[0, 3] = float("nan")  # an invisible frame never touches
    assert contact_from_trajectories(xy, radii).tolist() == [False, False]
    assert contact_accuracy(torch.tensor([True, False, True, False]), torch.tensor([1, 1, 1, 0])) == 0.75


def test_recovered_trajectories_score_contact_like_the_frames():
    # the same code path scores a frame-based model and a trajectory-based baseline
    frames = [draw([(14.0 + 4 * t, 32.0, 5.0, AGENT_RGB), (40.0, 32.0, 5.0, PATIENT_RGB)]) for t in range(5)]
    video = torch.stack(frames)[None]  # agent reaches the patient at t = 4 (centre 30, distance 10)
    xy, _ = object_centroids(video)
    radii = radii_from_frames(video)
    assert contact_from_frames(video).item() and contact_from_trajectories(xy, radii).item()
    assert not contact_from_trajectories(xy[:, :3], radii).item()  # no contact in frames 0-2
    cv = constant_velocity_trajectories(xy[:, :3], 2)  # frames 3-4 from frames 0-2 only
    assert torch.allclose(cv, xy[:, 3:], atol=0.05)
    assert contact_from_trajectories(cv, radii).item()
