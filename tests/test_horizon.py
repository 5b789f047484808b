"""The horizon evaluation (evaluation/horizon.py), toy Physion's longer clips and sample.py's long videos."""
import json
import math

import numpy as np
import pytest
import torch
from helpers import FakeModel

import sample as sample_script
import train
from nano_videodiff.evaluation import horizon, physics_eval
from nano_videodiff.evaluation.metrics import contact_accuracy, contact_from_frames, psnr
from nano_videodiff.evaluation.physics_eval import METHODS, PSNR_CAP_DB
from nano_videodiff.evaluation.video_io import load_video
from nano_videodiff.training.presets import get_preset
from toy_data.physion import PhysionDataset, generate_clip

T, K, H = 8, 4, 12  # model frames, given frames, horizon (3 windows of 4)


def physion_cfg(cache_dir, clips=6):
    cfg = get_preset("physion_collide")
    d = cfg.data
    d.num_frames, d.resolution, d.height, d.width, d.num_test_clips, d.cache_dir = T, 32, 32, 32, clips, str(cache_dir)
    cfg.task.num_context = K
    return cfg


# ---------------------------------------------------------------- toy Physion runs longer


def test_longer_clips_continue_the_same_scenes(tmp_path):
    for seed in (1, 3, 5, 7):  # both labels occur among these
        short = generate_clip("collide", seed, num_frames=16)
        long = generate_clip("collide", seed, num_frames=40, scene_frames=16)
        assert np.array_equal(long["video"][:16], short["video"])
        assert np.array_equal(long["states"][:16], short["states"])
        if short["contact"]:  # a contact within the scene's frames is the same contact
            assert long["contact"] and long["contact_frame"] == short["contact_frame"]
        else:  # none in the first 16 frames; the run may find one later
            assert long["contact_frame"] == -1 or long["contact_frame"] >= 16
    with pytest.raises(ValueError, match="scene_frames"):
        generate_clip("collide", 1, num_frames=8, scene_frames=16)
    # the cache key: unchanged unless the scenes are shorter than the clips (earlier caches stay valid)
    same = PhysionDataset(num_clips=2, num_frames=8, cache_dir=tmp_path, progress=False)
    again = PhysionDataset(num_clips=2, num_frames=8, scene_frames=8, cache_dir=tmp_path, progress=False)
    assert again.path == same.path
    longer = PhysionDataset(num_clips=2, num_frames=12, scene_frames=8, cache_dir=tmp_path, progress=False)
    assert longer.path != same.path and torch.equal(longer[1]["video"][:8], same[1]["video"])


# ---------------------------------------------------------------- scoring through the rollout


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    cfg = physion_cfg(tmp_path_factory.mktemp("horizon_cache"))
    return cfg, horizon.horizon_clips(cfg, 6, K + H)


def oracle(truth):
    """A "model" that knows the future: it finds the given frames in the true clips and continues them."""
    padded = torch.cat([truth, truth[:, -1:].expand(-1, T, -1, -1, -1)], 1)

    def fn(x, sigma, cond):
        out = torch.empty_like(x)
        for i, ctx in enumerate(cond.known_x[:, :K]):
            err = torch.stack([(padded[:, o:o + K] - ctx).abs().flatten(1).amax(1)
                               for o in range(truth.shape[1] - K + 1)], 1)  # (clips, offsets)
            j, o = divmod(int(err.argmin()), err.shape[1])
            out[i] = padded[j, o:o + T]
        return out
    return fn


def copy_last(x, sigma, cond):
    return cond.known_x[:, K - 1:K].expand_as(x)


def rows_of(result, name):
    i = METHODS.index(name)
    return [block["rows"][i] for block in result["blocks"]]


def test_a_model_that_knows_the_truth_scores_like_the_simulator(clips):
    cfg, batch = clips
    result = horizon.evaluate_horizon(FakeModel(oracle(batch["video"])), cfg, H, num_clips=6, steps=2)
    assert [(b["start"], b["end"]) for b in result["blocks"]] == [(1, 4), (5, 8), (9, 12)]
    for model, sim in zip(rows_of(result, "model"), rows_of(result, "simulator")):
        assert model["psnr"] == PSNR_CAP_DB and model["ssim"] == pytest.approx(1.0, abs=1e-6)
        assert model["traj_err_px"] == pytest.approx(sim["traj_err_px"], abs=1e-5)  # the tracker's floor
        assert model["objects_shown"] == 1.0
    # contact by step h: the pixel judge on the true frames, step by step
    assert result["steps"]["model"]["contact_acc"] == result["frame_judge_acc"]
    assert result["steps"]["simulator"]["contact_acc"][-1] >= 0.8  # states recover the engine's labels
    json.dumps({key: v for key, v in result.items() if key != "clips"})


def test_a_model_that_repeats_the_last_frame_scores_like_copy_last(clips):
    cfg, _ = clips
    model = FakeModel(copy_last)
    result = horizon.evaluate_horizon(model, cfg, H, num_clips=6, steps=3, solver="euler")
    assert model.calls == 3 * math.ceil(H / (T - K))  # windows x steps, one batch
    for got, copy in zip(rows_of(result, "model"), rows_of(result, "copy last frame")):
        for key in ("psnr", "ssim", "traj_err_px", "objects_shown", "contact_acc"):
            assert got[key] == pytest.approx(copy[key], abs=1e-4), key
    assert rows_of(result, "constant velocity")[0]["psnr"] is None  # object-level rows have no pixels


def test_the_first_window_is_the_one_window_evaluation(clips):
    """Block 1 (one window) scores what physics_eval scores on the T-frame clips: the long clips start as the
    model's clips do, window 0 is generate with the same seed, and contact by frame T - 1 is the T-frame label."""
    cfg, batch = clips
    fn = oracle(batch["video"])
    shifted = FakeModel(lambda x, sigma, cond: fn(x, sigma, cond).roll(1, dims=-1))  # a model 1 px off
    long = horizon.evaluate_horizon(shifted, cfg, H, num_clips=6, steps=2)
    one = physics_eval.evaluate_prediction(shifted, cfg, num_clips=6, steps=2)
    assert one["rows"][0]["traj_err_px"] > 0.5  # the shift is measured
    for got, want in zip(long["blocks"][0]["rows"], one["rows"]):
        assert got["method"] == want["method"]
        for key in ("psnr", "ssim", "traj_err_px", "objects_shown", "contact_acc"):
            assert got[key] == pytest.approx(want[key], abs=1e-5), (got["method"], key)


def test_blocks_and_steps_agree_with_direct_metrics(clips):
    cfg, batch = clips
    truth = batch["video"]
    g = torch.Generator().manual_seed(0)
    pred = (truth + 0.1 * torch.randn(truth.shape, generator=g)).clamp(-1, 1)
    result = horizon.score_horizon(pred, batch, K, block=5)
    assert [(b["start"], b["end"]) for b in result["blocks"]] == [(1, 5), (6, 10), (11, 12)]
    direct = psnr(pred[:, K:], truth[:, K:], per_frame=True).mean(0)  # (H,)
    assert result["steps"]["model"]["psnr"] == pytest.approx(direct.tolist(), abs=1e-4)
    for block in result["blocks"]:
        a, b = block["start"] - 1, block["end"]
        assert block["rows"][0]["psnr"] == pytest.approx(float(direct[a:b].mean()), abs=1e-4)
        for i, name in enumerate(METHODS):  # contact by the block's end = the step curve at its last step
            assert block["rows"][i]["contact_acc"] == result["steps"][name]["contact_acc"][b - 1]
    # the label by the last frame is the engine's label over the whole clip: the pixel judge agrees
    judged = contact_accuracy(contact_from_frames(truth), batch["contact"])
    assert result["frame_judge_acc"][-1] == judged
    steps = torch.tensor([[False, True, False, False, True], [False] * 5])
    assert horizon._cumulative(steps).tolist() == [[False, True, True, True, True], [False] * 5]
    table = horizon.format_horizon({**result, "num_clips": 6, "positive_rate": 0.5, "config": {
        "scenario": "collide", "num_context": K, "horizon": H, "windows": 3, "num_frames": T, "height": 32,
        "width": 32, "steps": 2}})
    judge_row = [line for line in table.splitlines() if line.startswith("| *pixel judge on the true frames* |")]
    assert "| frames 1-5 |" in table and len(judge_row) == 1 and judge_row[0].endswith(f"| {judged:.3f} |")


# ---------------------------------------------------------------- sample.py


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A physion_collide model of 8 frames (4 given) trained for 2 steps at toy sizes (seconds)."""
    root = tmp_path_factory.mktemp("horizon_ckpt")
    train.main(["--config=physion_collide", "--num_train_clips=8", "--num_test_clips=4", f"--num_frames={T}",
                f"--num_context={K}", f"--cache_dir={root / 'cache'}", "--dim=32", "--depth=1", "--heads=2",
                "--batch_size=4", "--max_steps=2", "--preview_every=0", f"--out_dir={root / 'run'}",
                "--dtype=fp32", "--sample_steps=2", "--resolution=32"])
    return root / "run" / "ckpt.pt"


def test_sample_writes_a_long_video(tiny_ckpt, tmp_path):
    n = 3 * T + 2
    videos = sample_script.main([f"--ckpt={tiny_ckpt}", "--task=predict", f"--num_frames={n}", "--num_videos=2",
                                 f"--out_dir={tmp_path / 'long'}"])
    _, cfg = sample_script.load_model(tiny_ckpt)
    truth = horizon.horizon_clips(cfg, 2, n)["video"]  # sample.py's toy test clips, n frames long
    assert videos.shape == truth.shape and torch.equal(videos[:, :K], truth[:, :K])
    gif = load_video(tmp_path / "long" / "video_000.gif")
    assert gif.shape[0] == n  # [given | model | truth], all n frames long
    scores = json.loads((tmp_path / "long" / "metrics.json").read_text())
    assert 0 < scores["psnr"] <= 100


def test_sample_eval_horizon_writes_tables_and_plot(tiny_ckpt, tmp_path):
    result = sample_script.main([f"--ckpt={tiny_ckpt}", "--eval", f"--horizon={H}", "--eval_clips=2", "--num_videos=1",
                                 f"--out_dir={tmp_path / 'eval'}"])
    assert len(result["blocks"]) == 3 and result["config"]["windows"] == 3
    for name in ("horizon.md", "horizon.png", "eval.json", "video_000.gif"):
        assert (tmp_path / "eval" / name).exists()
    with pytest.raises(sample_script.UserError, match="--task=predict"):
        sample_script.parse_sample_args([f"--ckpt={tiny_ckpt}", "--num_frames=20"])
    with pytest.raises(sample_script.UserError, match="option of --eval"):
        sample_script.parse_sample_args([f"--ckpt={tiny_ckpt}", "--horizon=20"])
    with pytest.raises(sample_script.UserError, match="shorter than the model"):
        sample_script.main([f"--ckpt={tiny_ckpt}", "--task=predict", "--num_frames=5", f"--out_dir={tmp_path / 'x'}"])
