"""The standard Moving MNIST protocol (evaluation/mmnist_protocol.py): the metric against hand computations,
a small fake mnist_test_seq.npy end to end through sample.py --eval with a tiny model, and the naming of the
offline-digit fallback."""
import json

import numpy as np
import pytest
import torch

import sample as sample_script
import train
from nano_videodiff.errors import UserError
from nano_videodiff.evaluation import mmnist_protocol
from nano_videodiff.evaluation.mmnist_protocol import PUBLISHED_SOURCE, frame_mse, frame_ssim


def to_model_range(x01):
    return torch.as_tensor(x01, dtype=torch.float32) * 2 - 1  # [0, 1] -> [-1, 1], the project's range


# ------------------------------------------------------------------------ the metric, by hand


def test_mse_is_the_per_frame_pixel_sum_averaged_over_frames_and_sequences():
    truth = np.zeros((2, 2, 1, 64, 64))  # two 2-frame black videos
    pred = truth.copy()
    pred[0, 0, 0, 0, :10] = 1.0      # video 0, frame 0: 10 pixels off by 1    -> 10 * 1^2      = 10
    pred[0, 1] = 0.5                 # video 0, frame 1: every pixel off by 0.5 -> 4096 * 0.25  = 1024
    pred[1, 1, 0, 5, 7] = 0.2        # video 1, frame 1: one pixel off by 0.2  -> 0.04; frame 0 exact -> 0
    expected = (10 + 1024 + 0 + 0.04) / 4  # mean over the 2 x 2 frames
    assert frame_mse(to_model_range(pred), to_model_range(truth)) == pytest.approx(expected, rel=1e-6)
    # the field's 'per frame' number is not a per-pixel mean: that would be 4096 times smaller
    assert frame_mse(to_model_range(pred), to_model_range(truth)) != pytest.approx(expected / 4096)


def test_ssim_of_constant_frames_by_hand():
    # Two flat frames a and b: every window has zero variance and covariance, so SSIM reduces to the
    # luminance term (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 L)^2, L = 1 on [0, 1] frames.
    a, b = 0.5, 0.25
    pred = to_model_range(np.full((1, 2, 1, 64, 64), a))
    truth = to_model_range(np.full((1, 2, 1, 64, 64), b))
    c1 = 0.01 ** 2
    assert frame_ssim(pred, truth) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)
    assert frame_ssim(truth, truth) == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_mnist_ckpt(tmp_path_factory):
    """A Moving MNIST model at the protocol's size (20 x 64x64, 10 -> 10), trained for one step (seconds)."""
    root = tmp_path_factory.mktemp("mmnist_protocol")
    with pytest.warns(UserWarning, match="offline digits"):
        train.main(["--config=moving_mnist", "--dim=16", "--depth=1", "--heads=2", "--batch_size=2",
                    "--max_steps=1", "--preview_every=0", "--dtype=fp32", "--sample_steps=1",
                    f"--out_dir={root / 'run'}"])
    return root / "run" / "ckpt.pt"


def fake_test_seq(path, num_sequences=4, seed=0):
    """A small file in the standard layout: uint8, time-major (20, N, 64, 64); sparse white 'ink'."""
    rng = np.random.default_rng(seed)
    frames = np.where(rng.random((20, num_sequences, 64, 64)) > 0.9, 255, 0).astype(np.uint8)
    frames[:, :, 20:30, 20:30] = rng.integers(0, 256, size=(20, num_sequences, 10, 10), dtype=np.uint8)
    np.save(path, frames)
    return frames


def test_standard_file_end_to_end_through_sample_eval(tiny_mnist_ckpt, tmp_path):
    frames = fake_test_seq(tmp_path / "mnist_test_seq.npy", num_sequences=4)
    out = tmp_path / "eval"
    result = sample_script.main([f"--ckpt={tiny_mnist_ckpt}", "--eval", f"--mnist_test_seq={tmp_path}",
                                 "--eval_clips=3", "--num_videos=2", "--steps=1", f"--out_dir={out}",
                                 "--device=cpu"])
    assert result["comparable"] and result["num_clips"] == 3
    assert "standard Moving MNIST test set" in result["test_set"] and "first 3 sequences" in result["test_set"]
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["model", "copy last frame", "SimVP v2", "PredRNN", "ConvLSTM"]
    assert [(rows[m]["mse"], rows[m]["ssim"]) for m in ("SimVP v2", "PredRNN", "ConvLSTM")] == \
        [(15.05, 0.967), (25.04, 0.944), (29.88, 0.925)]
    assert all(rows[m]["source"] == PUBLISHED_SOURCE for m in ("SimVP v2", "PredRNN", "ConvLSTM"))
    # copy-last, straight from the file's bytes: frame 10 (the last given) against frames 11..20
    x = frames[:, :3].transpose(1, 0, 2, 3).astype(np.float64) / 255  # (N, T, H, W) in [0, 1]
    copy_mse = ((x[:, 9:10] - x[:, 10:]) ** 2).sum(axis=(2, 3)).mean()
    assert rows["copy last frame"]["mse"] == pytest.approx(copy_mse, rel=1e-5)
    # the model's row is the same metric on its predictions, whose given frames are the file's
    pred = result["clips"]["pred"]
    assert torch.allclose(pred[:, :10], torch.as_tensor(x[:2, :10] * 2 - 1, dtype=torch.float32)[:, :, None],
                          atol=1e-6)
    saved = json.loads((out / "eval.json").read_text())
    assert saved["rows"] == result["rows"] and "clips" not in saved
    assert len(saved["model_mse_per_frame"]) == 10
    assert (out / "video_001.gif").exists() and not (out / "video_002.gif").exists()


def test_chunked_scoring_equals_one_chunk(tiny_mnist_ckpt, tmp_path, monkeypatch):
    """The full set is scored in chunks; the copy-last row (no sampling noise) must not depend on them."""
    fake_test_seq(tmp_path / "mnist_test_seq.npy", num_sequences=5, seed=1)
    model, cfg = sample_script.load_model(tiny_mnist_ckpt)
    whole = mmnist_protocol.evaluate(model, cfg, test_seq=str(tmp_path), num_clips=5, steps=1)
    monkeypatch.setattr(mmnist_protocol, "EVAL_CHUNK", 2)
    chunked = mmnist_protocol.evaluate(model, cfg, test_seq=str(tmp_path), num_clips=5, steps=1)
    assert chunked["rows"][1]["mse"] == pytest.approx(whole["rows"][1]["mse"], rel=1e-6)
    assert chunked["rows"][1]["ssim"] == pytest.approx(whole["rows"][1]["ssim"], rel=1e-6)


@pytest.mark.filterwarnings("ignore:MovingMNIST")
def test_without_the_file_the_offline_digits_are_named(tiny_mnist_ckpt, tmp_path):
    model, cfg = sample_script.load_model(tiny_mnist_ckpt)
    result = mmnist_protocol.evaluate(model, cfg, num_clips=2, steps=1)
    assert not result["comparable"] and result["num_clips"] == 2
    assert "offline font digits, not comparable to the published numbers" in result["test_set"]
    table = mmnist_protocol.format_table(result)
    assert table.splitlines()[0].endswith("offline font digits, not comparable to the published numbers.")
    assert "published (OpenSTL), not reproduced here" in table and "| copy last frame |" in table


def test_wrong_inputs_are_user_errors(tiny_mnist_ckpt, tmp_path):
    model, cfg = sample_script.load_model(tiny_mnist_ckpt)
    with pytest.raises(UserError, match="mnist_test_seq: Moving MNIST test file not found"):
        mmnist_protocol.evaluate(model, cfg, test_seq=str(tmp_path / "missing.npy"), num_clips=1)
    np.save(tmp_path / "bad.npy", np.zeros((10, 2, 64, 64), np.uint8))  # 10 frames: not the standard layout
    with pytest.raises(UserError, match="expected uint8 \\(20, N, 64, 64\\)"):
        mmnist_protocol.evaluate(model, cfg, test_seq=str(tmp_path / "bad.npy"), num_clips=1)
    cfg.data.num_frames = 16  # a checkpoint that is not 10 -> 10 cannot take the standard clips
    with pytest.raises(UserError, match="standard 10 -> 10 clips"):
        mmnist_protocol.evaluate(model, cfg, test_seq=str(tmp_path / "bad.npy"), num_clips=1)
    with pytest.raises(ValueError, match="pass --eval too"):
        sample_script.main([f"--ckpt={tiny_mnist_ckpt}", f"--mnist_test_seq={tmp_path}"])
