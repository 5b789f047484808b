"""physics_eval: the prediction table (model vs copy-last, constant velocity, simulator) on a tiny model,
an oracle "model" that returns the truth, hand-made clips scored against direct metric calls, exact
shape gaps, datasets without states, and ``sample.py --eval``."""
import json
import math

import numpy as np
import pytest
import torch

import sample as sample_script
import train
from nano_videodiff.evaluation import physics_eval
from nano_videodiff.training.presets import get_preset
from nano_videodiff.evaluation.metrics import (AGENT_RGB, BACKGROUND_RGB, PATIENT_RGB, constant_velocity_trajectories,
                                    contact_accuracy, contact_from_frames, contact_from_trajectories,
                                    copy_last_frame, object_centroids, psnr, radii_from_frames, ssim,
                                    trajectory_error)
from nano_videodiff.models import build_denoiser
from nano_videodiff.evaluation.physics_eval import (METHODS, PSNR_CAP_DB, evaluate_prediction, format_table,
                                         score_predictions, shape_gap)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A physion_collide model trained for 2 steps at toy sizes (seconds)."""
    root = tmp_path_factory.mktemp("physics_eval")
    train.main(["--config=physion_collide", "--num_train_clips=16", "--num_test_clips=8",
                f"--cache_dir={root / 'cache'}", "--dim=32", "--depth=1", "--heads=2", "--batch_size=4",
                "--max_steps=2", "--preview_every=0", f"--out_dir={root / 'run'}", "--dtype=fp32",
                "--sample_steps=2", "--resolution=32"])
    return root / "run" / "ckpt.pt"


@pytest.fixture(scope="module")
def tiny_eval(tiny_ckpt):
    model, cfg = sample_script.load_model(tiny_ckpt)
    return evaluate_prediction(model, cfg, num_clips=8), model, cfg


def test_table_has_four_rows_with_the_right_none_pattern(tiny_eval):
    result, _, cfg = tiny_eval
    assert [row["method"] for row in result["rows"]] == list(METHODS)
    assert result["num_clips"] == 8 and 0 <= result["positive_rate"] <= 1
    assert result["config"]["num_context"] == 8 and result["config"]["steps"] == 2
    for row in result["rows"]:
        pixels = row["method"] in ("model", "copy last frame")
        assert (row["psnr"] is None) != pixels and (row["ssim"] is None) != pixels
        if pixels:
            assert 0 < row["psnr"] <= PSNR_CAP_DB and -1 <= row["ssim"] <= 1
        assert 0 <= row["traj_err_px"] < math.hypot(cfg.data.height, cfg.data.width)
        assert 0 <= row["contact_acc"] <= 1
        assert (row["objects_shown"] is None) == (row["method"] == "simulator")
    table = format_table(result)
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 4 and all(name in table for name in METHODS)
    json.dumps(result)  # plain numbers and None only


def test_simulator_row_is_the_measurement_floor(tiny_eval):
    sim = tiny_eval[0]["rows"][3]
    assert sim["contact_acc"] >= 0.9  # states + exact shapes recover the engine's label
    assert sim["traj_err_px"] < 1.5  # the colour tracker agrees with the states to about a pixel


def test_oracle_model_scores_like_the_truth(tiny_eval, monkeypatch):
    _, model, cfg = tiny_eval
    # the "model" returns the ground truth: the given frames are the whole clip
    monkeypatch.setattr(physics_eval, "generate", lambda model, cfg, n, known=None, known_x=None, **kw: known_x.clone())
    result = evaluate_prediction(model, cfg, num_clips=8)
    oracle, sim = result["rows"][0], result["rows"][3]
    assert oracle["psnr"] == PSNR_CAP_DB and oracle["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert oracle["traj_err_px"] == pytest.approx(sim["traj_err_px"], abs=1e-5)  # the tracker's floor
    assert oracle["objects_shown"] == 1.0
    clips = physics_eval.held_out_clips(cfg, 8)
    judged = contact_accuracy(contact_from_frames(clips["video"]), clips["contact"])
    assert oracle["contact_acc"] == judged == result["frame_judge_acc"]


# ---------------------------------------------------------------- hand-made clips, no dataset


def draw_discs(centres, radii, size=32, ss=4):
    """Anti-aliased red (agent) and yellow (patient) discs: centres (B, T, 2, 2) px, radii (2,). (B, T, 3, H, W)."""
    grid = (np.arange(size * ss) + 0.5) / ss
    ys, xs = grid[:, None], grid[None, :]
    b, t = centres.shape[:2]
    out = np.empty((b, t, 3, size, size), np.float32)
    for i in range(b):
        for j in range(t):
            img = np.empty((size * ss, size * ss, 3))
            img[:] = BACKGROUND_RGB
            for obj, rgb in ((1, PATIENT_RGB), (0, AGENT_RGB)):  # agent painted last, as in toy Physion
                x, y = centres[i, j, obj]
                img[(xs - x) ** 2 + (ys - y) ** 2 <= radii[obj] ** 2] = rgb
            img = img.reshape(size, ss, size, ss, 3).mean((1, 3))
            out[i, j] = img.transpose(2, 0, 1) * 2 - 1
    return torch.from_numpy(out)


def hand_made_clips(t=8):
    """Clip 0: the agent rolls into the patient (contact). Clip 1: it rolls away (no contact)."""
    steps = np.arange(t)[:, None]
    agent = np.stack([np.concatenate([6 + 2.0 * steps, np.full_like(steps, 16.3, dtype=float)], 1),
                      np.concatenate([12 - 1.0 * steps, np.full_like(steps, 15.7, dtype=float)], 1)])
    patient = np.broadcast_to(np.array([24.4, 16.0]), agent.shape)
    centres = np.stack([agent, patient], 2)  # (2, T, 2, 2)
    radii = np.array([3.0, 3.0])
    states = torch.zeros(2, t, 2, 6)
    states[..., :2] = torch.from_numpy(centres).float()
    return draw_discs(centres, radii), states, torch.tensor([True, False]), torch.tensor([[3.0, 3.0]] * 2)


def test_rows_equal_metrics_computed_directly():
    truth, states, contact, radii = hand_made_clips()
    k, t = 4, truth.shape[1]
    pred = (truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    rows = {r["method"]: r for r in score_predictions(pred, truth, k, states, contact, radii)["rows"]}
    copy = copy_last_frame(truth[:, :k], t - k)
    seen = object_centroids(truth[:, k:])[1]
    for name, future in (("model", pred[:, k:]), ("copy last frame", copy)):
        row = rows[name]
        per_frame = psnr(future, truth[:, k:], per_frame=True).clamp(max=PSNR_CAP_DB)
        assert row["psnr"] == pytest.approx(per_frame.mean().item())
        assert row["ssim"] == pytest.approx(ssim(future, truth[:, k:]).mean().item())
        xy, vis = object_centroids(future)
        assert row["traj_err_px"] == pytest.approx(trajectory_error(xy, states[:, k:, :, :2], vis & seen).item())
        whole = torch.cat([truth[:, :k], future], 1)
        assert row["contact_acc"] == contact_accuracy(contact_from_frames(whole), contact)
    # the last context frame shows no contact yet: copy-last says "no" to both clips
    assert rows["copy last frame"]["contact_acc"] == 0.5
    # constant velocity: context tracks extrapolated; exact motion here, so only tracker error remains
    cv = rows["constant velocity"]
    ctx_xy = object_centroids(truth[:, :k])[0]
    assert cv["contact_acc"] == 1.0 and cv["traj_err_px"] < 0.3 and cv["psnr"] is None and cv["ssim"] is None
    full = torch.cat([ctx_xy, constant_velocity_trajectories(ctx_xy, t - k)], 1)
    judged = contact_from_trajectories(full, radii_from_frames(truth[:, :k]))
    assert cv["contact_acc"] == contact_accuracy(judged, contact)
    sim = rows["simulator"]
    xy_true, _ = object_centroids(truth[:, k:])
    assert sim["traj_err_px"] == pytest.approx(trajectory_error(xy_true, states[:, k:, :, :2], seen).item())
    assert sim["contact_acc"] == 1.0 and sim["objects_shown"] is None


def test_shape_gap_exact_values():
    def one(objs):  # objs: [(x, y, angle, kind, w, h)] for agent and patient -> gap in one frame
        states = torch.tensor([[[[x, y, a, 0, 0, 0] for x, y, a, *_ in objs]]])
        kinds = torch.tensor([[o[3] for o in objs]])
        sizes = torch.tensor([[[o[4], o[5]] for o in objs]], dtype=torch.float32)
        radii = sizes.norm(dim=-1) / 2
        return shape_gap(states, kinds, sizes, radii)[0, 0].item()

    assert one([(0, 0, 0, 0, 4, 4), (10, 0, 0, 0, 6, 6)]) == pytest.approx(5.0)  # 10 - 2 - 3
    assert one([(0, 0, 0, 0, 4, 4), (10, 0, 0, 1, 6, 2)]) == pytest.approx(5.0)  # box edge at x = 7
    assert one([(10, 0, 0, 1, 6, 2), (0, 0, 0, 0, 4, 4)]) == pytest.approx(5.0)  # the same, roles swapped
    # a box turned 45 degrees points a corner at the disc: corner at x = 10 - sqrt(2)
    assert one([(0, 0, 0, 0, 4, 4), (10, 0, math.pi / 4, 1, 2, 2)]) == pytest.approx(8 - math.sqrt(2), abs=1e-5)
    assert one([(0, 0, 0, 1, 2, 2), (5, 0, 0, 1, 2, 2)]) == pytest.approx(3.0)  # box faces 1 -> 4
    assert one([(0, 0, 0, 1, 2, 2), (1.5, 0.5, 0.3, 1, 2, 2)]) == 0.0  # overlapping boxes
    positions_only = torch.tensor([[[[0.0, 0.0], [10.0, 0.0]]]])  # (B, T, K, 2): no angle column
    gap = shape_gap(positions_only, torch.tensor([[0, 1]]), torch.tensor([[[4.0, 4.0], [6.0, 2.0]]]), torch.ones(1, 2))
    assert gap.item() == pytest.approx(5.0)


# ---------------------------------------------------------------- datasets without states


def test_datasets_without_states_get_pixel_rows_only():
    truth, *_ = hand_made_clips()
    rows = score_predictions(truth.flip(1), truth, 4, mmnist_mse=True)["rows"]
    assert [r["method"] for r in rows] == ["model", "copy last frame"]
    for r in rows:
        assert r["traj_err_px"] is None and r["contact_acc"] is None and r["mse"] > 0


@pytest.mark.filterwarnings("ignore:MovingMNIST")
def test_moving_mnist_evaluation_reports_mse():
    cfg = get_preset("moving_mnist")
    cfg.data.num_frames, cfg.task.num_context = 4, 2
    cfg.model.dim, cfg.model.depth, cfg.model.heads = 16, 1, 2
    torch.manual_seed(0)
    result = evaluate_prediction(build_denoiser(cfg), cfg, num_clips=2, steps=1)
    assert [r["method"] for r in result["rows"]] == ["model", "copy last frame"]
    assert result["positive_rate"] is None and result["config"]["num_context"] == 2
    assert all(r["mse"] > 0 and r["psnr"] > 0 for r in result["rows"])
    assert "MSE/frame" in format_table(result)


def test_sample_script_eval_writes_table_and_gifs(tiny_ckpt, tmp_path):
    out = tmp_path / "eval"
    result = sample_script.main([f"--ckpt={tiny_ckpt}", "--eval", "--eval_clips=4", "--num_videos=2", "--steps=1",
                                 f"--out_dir={out}", "--device=cpu"])
    saved = json.loads((out / "eval.json").read_text())
    assert saved["num_clips"] == 4 and [r["method"] for r in saved["rows"]] == list(METHODS)
    assert saved["rows"] == result["rows"] and "clips" not in saved
    assert (out / "video_001.gif").exists() and not (out / "video_002.gif").exists() and (out / "grid.png").exists()


def test_state_contact_margin_boundary():
    """Two discs whose gap is just inside the engine's slop touch, just outside do not (for a disc and a box too).
    The reference is pymunk's own collision slop, not the module's constant, so a wrong constant fails."""
    import pymunk
    from nano_videodiff.evaluation.physics_eval import BOX, DISC, contact_from_states
    margin = pymunk.Space().collision_slop  # 0.1: the engine lets shapes this close count as touching
    gaps = torch.tensor([0.0, 0.8 * margin, 1.2 * margin, 2.5 * margin])
    n = len(gaps)
    r_a, r_p = 2.0, 3.0
    states = torch.zeros(n, 4, 2, 6)
    states[:, :, 1, 0] = 20.0  # the patient at x = 20, the agent approaching it
    states[:, :, 0, 0] = (20.0 - r_a - r_p - gaps)[:, None] - torch.tensor([6.0, 4.0, 2.0, 0.0])  # approaching
    kinds = torch.tensor([[DISC, DISC]]).repeat(n, 1)
    sizes = torch.tensor([[[2 * r_a, 2 * r_a], [2 * r_p, 2 * r_p]]]).repeat(n, 1, 1)
    radii = torch.tensor([[r_a, r_p]]).repeat(n, 1)
    assert contact_from_states(states, kinds, sizes, radii).tolist() == [True, True, False, False]
    box = kinds.clone()
    box[:, 1] = BOX  # a 6 x 6 box: its left face at x = 17 is as far as the disc's edge
    assert contact_from_states(states, box, sizes, radii).tolist() == [True, True, False, False]
