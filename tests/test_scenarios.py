"""Per-clip and per-scenario scores (evaluation/scenarios.py) and sample.py's FVD options."""
import pytest
import torch

from nano_videodiff.errors import MissingFile, UserError
from nano_videodiff.evaluation import physics_eval, scenarios
from nano_videodiff.training import presets


@pytest.fixture(scope="module")
def clips():
    cfg = presets.get_preset("physion_all")
    return physics_eval.held_out_clips(cfg, 8)  # a clip of each of the eight scenarios


def test_per_clip_means_equal_the_pooled_table(clips):
    truth, k = clips["video"], 8
    g = torch.Generator().manual_seed(0)
    pred = torch.cat([truth[:, :k], (truth[:, k:] + 0.2 * torch.randn(truth[:, k:].shape, generator=g)).clamp(-1, 1)], 1)
    extra = {key: clips[key] for key in scenarios.CLIP_KEYS}
    pooled = {row["method"]: row for row in physics_eval.score_predictions(pred, truth, k, **extra)["rows"]}
    per_clip = scenarios.per_clip_scores(pred, clips, k)
    for method in ("model", "copy last frame"):
        assert float(per_clip[method]["psnr"].mean()) == pytest.approx(pooled[method]["psnr"], rel=1e-5)
    for method in physics_eval.METHODS:
        assert float(per_clip[method]["contact_acc"].mean()) == pytest.approx(pooled[method]["contact_acc"])
    assert torch.isnan(per_clip["simulator"]["psnr"]).all()  # not a frame row


def test_scenario_table_has_a_row_per_scenario_and_perfect_predictions_match_the_truth(clips):
    truth = clips["video"]
    scores = scenarios.per_clip_scores(truth.clone(), clips, 8)  # a perfect "model"
    assert torch.all(scores["model"]["psnr"] == physics_eval.PSNR_CAP_DB)
    assert torch.allclose(scores["model"]["traj_err_px"], scores["simulator"]["traj_err_px"], equal_nan=True)
    table = scenarios.scenario_table(scores, clips["scenario_id"])
    for name in scenarios.scenario_names():
        assert f"| {name} | 1 |" in table
    readouts = {"observed": {i: 0.5 for i in range(8)}, "full (true clip)": {i: 1.0 for i in range(8)}}
    out = scenarios.readout_table(readouts, scores, clips["scenario_id"])
    assert out.splitlines()[-1].startswith("| all | 0.50 | 1.00 |")
    interval = scenarios.interval_table(scores)
    assert interval.count("[") >= 6  # a bootstrap interval in every filled cell


def test_sample_refuses_fvd_without_weights_or_without_eval(tmp_path):
    import sample
    ckpt = presets.CHECKPOINTS / "physion_collide_main.pt"
    with pytest.raises(MissingFile, match="i3d_torchscript"):  # before any sampling; never a download
        sample.main([f"--ckpt={ckpt}", "--eval", f"--fvd_weights={tmp_path / 'i3d.pt'}", f"--out_dir={tmp_path}"])
    with pytest.raises(UserError, match="pass --eval too"):
        sample.main([f"--ckpt={ckpt}", f"--fvd_weights={tmp_path / 'i3d.pt'}", f"--out_dir={tmp_path}"])
