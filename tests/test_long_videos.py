"""``sample.py --method=interpolate|conv_time`` (nano_videodiff/long_videos.py): videos longer than the model."""
import json

import pytest
import torch

import sample
import train
from nano_videodiff.errors import UserError
from nano_videodiff.evaluation.video_io import load_video

TINY = ["--dim=16", "--depth=1", "--heads=2", "--batch_size=2", "--max_steps=2", "--warmup_steps=1",
        "--preview_every=0"]


@pytest.fixture(scope="module")
def interp_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("interp")
    train.main(["--config=bouncing_balls_interp", f"--out_dir={run}", *TINY])
    return run / "ckpt.pt"


@pytest.fixture(scope="module")
def predict_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("predict")
    train.main(["--config=smoke", f"--out_dir={run}", "--masking=predict", *TINY])
    return run / "ckpt.pt"


def run_sample(ckpt, out_dir, *extra):
    return sample.main([f"--ckpt={ckpt}", f"--out_dir={out_dir}", "--num_videos=2", "--steps=1", *extra])


def test_interpolate_chains_key_frames_to_16x_their_rate(interp_ckpt, tmp_path):
    videos = run_sample(interp_ckpt, tmp_path, "--method=interpolate")
    assert videos.shape == (2, 65, 3, 16, 16)  # 5 key frames -> 17 -> 65
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_key_frames"] == 5 and metrics["num_frames"] == 65
    assert {"model", "linear_blend", "nearest_key_frame"} <= set(metrics)
    gif = load_video(tmp_path / "video_000.gif", channels=3)
    assert gif.shape[0] == 65 and gif.shape[-1] == 3 * gif.shape[-2]  # [linear blend | model | truth]


def test_conv_time_makes_4x_the_models_frames_from_given_ones(predict_ckpt, tmp_path):
    videos = run_sample(predict_ckpt, tmp_path, "--method=conv_time", "--task=predict")
    assert videos.shape == (2, 16, 3, 16, 16)  # the smoke model's 4 frames, x4
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_frames"] == 16 and metrics["max_distance"] == 3 and "psnr" in metrics["model"]


def test_rollout_method_makes_the_same_length_from_the_same_given_frames(predict_ckpt, tmp_path):
    videos = run_sample(predict_ckpt, tmp_path / "r", "--method=rollout", "--task=predict", "--num_frames=12")
    conv = run_sample(predict_ckpt, tmp_path / "c", "--method=conv_time", "--task=predict", "--num_frames=12")
    assert videos.shape == conv.shape == (2, 12, 3, 16, 16)
    assert torch.equal(videos[:, :2], conv[:, :2])  # the same given frames (the smoke model's k = T // 2)
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["method"] == "rollout"


def test_methods_refuse_models_that_cannot_do_them(interp_ckpt, predict_ckpt, tmp_path):
    with pytest.raises(UserError, match="--num_stages"):
        run_sample(predict_ckpt, tmp_path / "a", "--method=interpolate")
    with pytest.raises(UserError, match="generate or predict"):
        run_sample(predict_ckpt, tmp_path / "b", "--method=conv_time", "--task=interpolate")
    with pytest.raises(UserError, match="does --task=predict, not 'generate'"):
        run_sample(predict_ckpt, tmp_path / "d", "--method=rollout")
    with pytest.raises(UserError, match="unknown --method"):
        run_sample(predict_ckpt, tmp_path / "c", "--method=zoom")
