"""Every checkpoint shipped in checkpoints/ loads safely, rebuilds from its own config, and still scores
the check recorded in checkpoints/manifest.json (nano_videodiff/shipped.py)."""
import json

import pytest
import torch

from nano_videodiff import shipped
from nano_videodiff.training.checkpoint import load_checkpoint

MANIFEST = shipped.read_manifest()
# Diffusion models and autoencoders; other kinds (the toy video feature network) test their own entry
# (tests/test_toy_features.py).
MODELS = sorted(name for name, entry in MANIFEST.items() if "kind" not in entry)
# Float rounding differs between CPUs (kernel choice, thread count); a real change of the weights or of the
# code moves these numbers by far more.
TOLERANCE = {"held_out_loss": dict(rel=0.02), "prediction_psnr": dict(abs=0.3), "reconstruction_psnr": dict(abs=0.2),
             "upsampling_psnr": dict(abs=0.3)}


def test_the_manifest_lists_every_shipped_file_and_nothing_else():
    files = {p.name for p in shipped.CHECKPOINTS.glob("*.pt")}
    assert files == {entry["file"] for entry in MANIFEST.values()}
    assert "physion_collide_main" in MANIFEST and "physion_autoencoder" in MANIFEST
    for name, entry in MANIFEST.items():
        assert "python " in entry["command"] and len(entry["commit"]) == 40 and entry["check"], name


@pytest.mark.parametrize("name", MODELS)
def test_shipped_checkpoint_loads_and_reproduces_its_check(name):
    entry = MANIFEST[name]
    path = shipped.CHECKPOINTS / entry["file"]
    assert path.stat().st_size < 10e6  # a few MB: half-precision EMA weights, no optimizer state
    ckpt = load_checkpoint(path)  # weights_only=True inside
    assert ckpt["step"] == entry["steps"] and "optimizer" not in ckpt
    assert all(v.dtype in (torch.float16, torch.int64, torch.bool) for v in ckpt["ema"].values())
    torch.manual_seed(0)
    model, cfg = shipped.load_shipped(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # half-precision weights cast back
    measured = shipped.measure_check(model, cfg)
    assert set(measured) == set(entry["check"])
    for key, value in entry["check"].items():
        assert measured[key] == pytest.approx(value, **TOLERANCE[key]), (name, key)


def test_the_check_tells_a_trained_model_from_an_untrained_one():
    """The loss check is not a constant: the same architecture with fresh weights scores far worse."""
    entry = MANIFEST["physion_collide_main"]
    _, cfg = shipped.load_shipped(shipped.CHECKPOINTS / entry["file"])
    from nano_videodiff.models import build_denoiser
    untrained = build_denoiser(cfg)
    trained, _ = shipped.load_shipped(shipped.CHECKPOINTS / entry["file"])
    untrained.autoencoder.load_state_dict(trained.autoencoder.state_dict())  # the same latent space
    assert shipped.held_out_loss(untrained.eval(), cfg) > 2 * entry["check"]["held_out_loss"]


def test_sample_eval_runs_on_the_shipped_main_model(tmp_path):
    import sample
    result = sample.main([f"--ckpt={shipped.CHECKPOINTS / MANIFEST['physion_collide_main']['file']}", "--eval",
                          "--eval_clips=4", "--steps=2", f"--out_dir={tmp_path}", "--num_videos=2"])
    assert result["num_clips"] == 4 and json.loads((tmp_path / "eval.json").read_text())["rows"]
