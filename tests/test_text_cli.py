"""Text-to-video end to end: train.py with captions, sample.py --prompt (a grid per prompt), the preset."""
import json

import pytest
import torch

import sample
import train
from nano_videodiff.errors import UserError
from nano_videodiff.training.presets import get_preset
from nano_videodiff.training.config import Config
from nano_videodiff.training.batches import TrainingData, make_batch


def _text_smoke(tmp_path):
    out = tmp_path / "run"
    train.main(["--config=smoke", "--text_encoder=learned", "--text_dim=16", "--text_depth=1", "--max_steps=4",
                "--preview_every=0", "--ckpt_every=4", f"--out_dir={out}"])
    return out / "ckpt.pt"


def test_train_with_captions_then_sample_several_prompts(tmp_path):
    ckpt = _text_smoke(tmp_path)
    out = tmp_path / "samples"
    videos = sample.main([f"--ckpt={ckpt}", f"--out_dir={out}", "--num_videos=2", "--steps=2", "--cfg_scale=2",
                          "--prompt=a red ball moves left fast|a blue ball falls slowly"])
    assert videos.shape[0] == 4 and (out / "grid.png").exists() and len(list(out.glob("video_*.gif"))) == 4
    with pytest.raises(UserError, match="empty prompt"):
        sample.main([f"--ckpt={ckpt}", f"--out_dir={out}", "--overwrite", "--prompt=a||b"])


def test_prompt_needs_a_text_model(tmp_path):
    out = tmp_path / "run"
    train.main(["--config=smoke", "--max_steps=2", "--preview_every=0", f"--out_dir={out}"])
    with pytest.raises(UserError, match="text encoder"):
        sample.main([f"--ckpt={out / 'ckpt.pt'}", f"--out_dir={tmp_path / 's'}", "--prompt=a red ball"])


def test_training_batches_carry_captions_dropped_with_the_labels():
    cfg = get_preset("smoke")
    cfg.model.text_encoder, cfg.diffusion.label_dropout = "learned", 0.5
    data = TrainingData(cfg)
    caps = [c for step in range(6) for c in make_batch(cfg, data, step, 0, 1, "cpu").cond.captions]
    assert "" in caps and any(caps)
    again = [c for step in range(6) for c in make_batch(cfg, data, step, 0, 1, "cpu").cond.captions]
    assert caps == again  # deterministic per seed and step


def test_physion_text_preset():
    cfg = get_preset("physion_text")
    assert cfg.data.scenario == "all" and cfg.model.text_encoder == "learned" and cfg.task.masking == "none"
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_sample_with_dynamic_thresholding_and_oscillating_guidance(tmp_path):
    ckpt = _text_smoke(tmp_path)
    common = [f"--ckpt={ckpt}", "--num_videos=1", "--steps=2", "--cfg_scale=5", "--prompt=a red ball moves left"]
    plain = sample.main(common + [f"--out_dir={tmp_path / 'a'}"])
    tuned = sample.main(common + [f"--out_dir={tmp_path / 'b'}", "--dynamic_threshold=0.9", "--cfg_oscillate_to=1"])
    assert plain.shape == tuned.shape and (plain - tuned).abs().max() > 0
