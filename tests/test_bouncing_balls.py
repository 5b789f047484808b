"""Tests for toy_data/bouncing_balls.py: shapes, determinism, batching, physics, rendering."""
import numpy as np
import pytest
import torch

from toy_data.bouncing_balls import BouncingBalls, render, simulate

KEYS = ("video", "positions", "velocities", "radii", "colors")


@pytest.fixture(autouse=True)
def one_thread():
    # These tensors are tiny: on a busy 2-core machine, waking a second thread costs more than it saves.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("frames, res, balls", [(16, 32, 2), (5, (24, 40), 3), (3, (48, 20), 1), (4, 16, 6)])
def test_shapes_dtype_range(frames, res, balls):
    h, w = (res, res) if isinstance(res, int) else res
    ds = BouncingBalls(num_frames=frames, resolution=res, num_balls=balls, fps=10.0, length=50)
    clip = ds[3]
    assert clip["video"].shape == (frames, 3, h, w)
    assert clip["positions"].shape == clip["velocities"].shape == (frames, balls, 2)
    assert clip["radii"].shape == (balls,) and clip["colors"].shape == (balls, 3)
    assert all(clip[k].dtype == torch.float32 for k in KEYS)
    assert clip["frame_interval"] == pytest.approx(0.1)
    v = clip["video"]
    assert v.min() == -1 and v.max() <= 1  # black background present, range respected
    assert v.max() > 0.9  # a saturated colour reaches +1 inside a ball
    assert ((v > -1).float().mean() < 0.9)  # the balls do not fill the frame
    assert len(ds) == 50
    with pytest.raises(IndexError):
        ds[50]
    batch = ds.get_batch([0, 1])
    assert batch["video"].shape == (2, frames, 3, h, w) and batch["frame_interval"].shape == (2,)


def test_colours_distinct_and_saturated():
    clip = BouncingBalls(num_balls=4, resolution=16, num_frames=2)[0]
    c = clip["colors"]
    assert torch.allclose(c.max(1).values, torch.ones(4)) and torch.allclose(c.min(1).values, torch.zeros(4))
    assert torch.cdist(c, c).add(torch.eye(4)).min() > 0.5


def test_grayscale_channel():
    clip = BouncingBalls(channels=1, resolution=16, num_frames=3)[2]
    assert clip["video"].shape == (3, 1, 16, 16) and clip["video"].max() == 1.0


def test_deterministic_per_seed_and_index():
    a, b = BouncingBalls(num_balls=3, seed=5), BouncingBalls(num_balls=3, seed=5)
    clip, again = a[11], b[11]  # a fresh object: nothing may depend on state left by earlier calls
    for key in KEYS:
        assert clip[key].numpy().tobytes() == again[key].numpy().tobytes()
    assert not torch.equal(clip["positions"], a[12]["positions"])
    assert not torch.equal(clip["positions"], BouncingBalls(num_balls=3, seed=6)[11]["positions"])


@pytest.mark.parametrize("balls, res", [(2, 32), (6, (24, 40))])
def test_get_batch_equals_stacked_items(balls, res):
    ds = BouncingBalls(num_frames=12, resolution=res, num_balls=balls, radius=(0.1, 0.16), seed=1)
    idx = [3, 0, 17, 99_999, 42, 8]
    batch = ds.get_batch(idx)
    items = [ds[i] for i in idx]
    for key in KEYS:
        assert torch.equal(batch[key], torch.stack([it[key] for it in items])), key
    assert torch.equal(batch["frame_interval"], torch.tensor([it["frame_interval"] for it in items]))


@pytest.mark.parametrize("balls, radius", [(5, (0.08, 0.14)), (12, (0.1, 0.2))])  # second: crowded box
def test_balls_stay_inside_box_without_overlap_and_keep_energy(balls, radius):
    ds = BouncingBalls(num_frames=24, resolution=(24, 40), num_balls=balls, radius=radius,
                       speed=(0.08, 0.15), seed=2)
    b = ds.get_batch(range(64))
    p, r = b["positions"], b["radii"][:, None, :, None]
    size = torch.tensor([40.0, 24.0])  # (width, height) in pixels, x first
    assert (p - r >= -1e-4).all() and (p + r <= size + 1e-4).all()
    d = torch.cdist(p.flatten(0, 1), p.flatten(0, 1)).view(64, 24, balls, balls)
    reach = (b["radii"][:, :, None] + b["radii"][:, None, :])[:, None]  # (B, 1, n, n) touching distance
    off_diag = ~torch.eye(balls, dtype=torch.bool)
    assert (d[:, 0] >= reach[:, 0] - 1e-4)[:, off_diag].all()  # the starting layout has no overlap
    # Later, touching balls are pushed apart at every substep, so they never sink in deeply (in a
    # crowded box a ball can be pushed back into a neighbour by a wall or a third ball, up to ~1 px).
    assert (d > reach - (0.5 if balls == 5 else 1.5))[:, :, off_diag].all()
    # Kinetic energy stays constant even when a ball touches several others at once.
    _, energy = _momentum_energy(b["velocities"], b["radii"][:, None])
    torch.testing.assert_close(energy, energy[:, :1].expand_as(energy), rtol=1e-5, atol=0)


def test_render_paints_later_balls_on_top_and_antialiases():
    pos = torch.tensor([[[[10.3, 7.5], [14.0, 7.5]]]])  # (B=1, T=1, n=2, 2): overlapping discs
    colors = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    video = render(pos, torch.tensor([[4.0, 4.0]]), colors, height=16, width=24)
    assert video.shape == (1, 1, 3, 16, 24)
    assert video[0, 0, :, 7, 12].tolist() == [-1.0, -1.0, 1.0]  # overlap: the second (blue) ball wins
    assert video[0, 0, :, 7, 7].tolist() == [1.0, -1.0, -1.0]  # red where only the first ball is
    assert video[0, 0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0]  # black background
    edge = video[0, 0, 0, 7, 5:8]  # across the red disc's left rim: centre distances 4.8, 3.8, 2.8
    assert edge[0] == -1 and edge[2] == 1
    assert edge[1].item() == pytest.approx(2 * 0.7 - 1, abs=1e-5)  # coverage = 4 - 3.8 + 0.5 = 0.7


def _momentum_energy(vel, radii):
    m = radii.double() ** 2  # masses proportional to radius^2
    v = vel.double()
    return (m[..., None] * v).sum(-2), 0.5 * (m * (v**2).sum(-1)).sum(-1)


def test_head_on_collision_conserves_momentum_and_energy():
    # Two unequal balls on a collision course in the middle of the box, far from every wall.
    pos = np.array([[[0.35, 0.5], [0.6, 0.52]]])
    vel = np.array([[[0.05, 0.01], [-0.04, 0.0]]])
    radii = np.array([[0.1, 0.06]])
    p, v = simulate(pos, vel, radii, np.array([1.0, 1.0]), num_frames=5)
    assert not np.allclose(v[0, -1], v[0, 0])  # the collision happened
    mom = (radii[..., None] ** 2 * v).sum(2)
    energy = 0.5 * (radii**2 * (v**2).sum(-1)).sum(-1)
    np.testing.assert_allclose(mom, np.broadcast_to(mom[:, :1], mom.shape), atol=1e-14)
    np.testing.assert_allclose(energy, energy[:, :1].repeat(5, 1), rtol=1e-12)
    assert v[0, -1, 0, 0] < v[0, 0, 0, 0] and v[0, -1, 1, 0] > v[0, 0, 1, 0]  # they bounced apart
    assert np.linalg.norm(p[0, -1, 0] - p[0, -1, 1]) >= 0.16  # and no longer overlap


def test_dataset_conserves_energy_everywhere_and_momentum_between_walls():
    ds = BouncingBalls(num_frames=32, resolution=32, num_balls=2, radius=(0.12, 0.18), seed=3)
    b = ds.get_batch(range(64))
    mom, energy = _momentum_energy(b["velocities"], b["radii"][:, None])
    # Walls and balls are elastic: kinetic energy is constant through every bounce.
    torch.testing.assert_close(energy, energy[:, :1].expand_as(energy), rtol=1e-5, atol=0)
    # Momentum changes only at walls: check it over frame steps where no ball can reach a wall.
    p, r = b["positions"].double(), b["radii"].double()[:, None, :, None]
    vmax = (2 * energy[:, 0] / (b["radii"].double() ** 2).min(1).values).sqrt()  # fastest possible ball
    gap = torch.minimum(p - r, 32 - p - r).amin((-1, -2))  # (B, T) closest ball edge to a wall
    free = (gap[:, :-1] > 1.5 * vmax[:, None]) & (gap[:, 1:] > 1.5 * vmax[:, None])
    scale = mom.norm(dim=-1).amax()
    dmom = (mom[:, 1:] - mom[:, :-1]).norm(dim=-1)
    assert (dmom[free] < 1e-5 * scale).all()
    changed = (b["velocities"][:, 1:] - b["velocities"][:, :-1]).abs().amax((-1, -2)) > 1e-3
    assert (free & changed).sum() >= 3  # ball-ball collisions really happened in wall-free steps
    assert (~free & changed).sum() >= 3  # and wall bounces elsewhere, which do change momentum
    assert dmom[~free & changed].max() > 0.01 * scale


@pytest.mark.parametrize("res", [(64, 64), (48, 80)])
def test_rendered_centroid_matches_positions(res):
    h, w = res
    ds = BouncingBalls(num_frames=8, resolution=res, num_balls=2, seed=4)
    b = ds.get_batch(range(6))
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    checked = 0
    for c in range(6):
        p, r, col = b["positions"][c], b["radii"][c], b["colors"][c]
        for t in range(8):
            if (p[t, 0] - p[t, 1]).norm() < r.sum() + 6:
                continue  # only isolated balls: the other disc must lie outside the window
            frame = (b["video"][c, t] + 1) / 2  # (3, H, W) in [0, 1]
            for k in range(2):
                win = ((xs - p[t, k, 0]) ** 2 + (ys - p[t, k, 1]) ** 2).sqrt() < r[k] + 2
                weight = (frame * col[k, :, None, None]).sum(0) * win  # colour-weighted coverage
                centroid = torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
                assert (centroid - p[t, k]).norm() < 0.5
                area = weight.sum() / col[k].pow(2).sum()  # coverage summed = disc area in pixels
                assert abs(area - np.pi * r[k] ** 2) < 0.05 * np.pi * r[k] ** 2
                checked += 1
    assert checked >= 40


def test_velocities_match_position_differences_between_bounces():
    ds = BouncingBalls(num_frames=24, resolution=(40, 56), num_balls=3, seed=5)
    b = ds.get_batch(range(16))
    p, v = b["positions"].double(), b["velocities"].double()
    steady = (v[:, 1:] == v[:, :-1]).all(-1)  # (B, T-1, n): no bounce for this ball in this step
    step = p[:, 1:] - p[:, :-1]
    assert steady.float().mean() > 0.5
    assert (step - v[:, :-1]).norm(dim=-1)[steady].max() < 1e-3
    assert v.norm(dim=-1).mean() > 1.0  # balls actually move (pixels per frame)


def test_works_with_dataloader():
    ds = BouncingBalls(num_frames=4, resolution=16, length=6)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=3))
    assert len(batches) == 2 and batches[1]["video"].shape == (3, 4, 3, 16, 16)
    assert torch.equal(batches[1]["positions"], ds.get_batch([3, 4, 5])["positions"])


def test_a_long_run_of_fresh_clips_does_not_run_out_of_training_clips():
    """--num_train_clips=0 draws clip step * B + i: 8000 steps of 16 clips is past 100,000 (a crash once)."""
    import toy_data
    from nano_videodiff.training.presets import get_preset
    d = get_preset("cascade_sr_frames").data
    train, test = toy_data.build_dataset(d, "train"), toy_data.build_dataset(d, "test")
    assert len(train) >= 10**8
    clip = toy_data.get_batch(train, [8000 * 16 + 3])["video"]
    assert clip.shape == (1, 1, 3, 64, 64)
    assert not torch.equal(clip, toy_data.get_batch(train, [3])["video"])  # a clip of its own
    assert len(test) == 100_000  # the held-out split as before
