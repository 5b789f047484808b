"""Latent diffusion through train.py and sample.py (latent.py): W.A.L.T's two stages on the smoke preset."""
import pytest
import torch

import sample as sample_script
import train
from nano_videodiff.training.config import apply_overrides, split_args
from nano_videodiff.training.presets import get_preset
from nano_videodiff.latent import check_latent_task, latent_data_config, latent_known, latent_task_config

VAE = ["--num_frames=5", "--resolution=16", "--vae_channels=8", "--vae_channel_mult=1", "--vae_latent_channels=4",
       "--vae_spatial_down=4", "--vae_temporal_down=2"]


def reference_latent_known(known, f):
    """Loop version of the causal prefix rule: latent j is known iff pixel frames 0..f*j are all known."""
    B, T = known.shape[:2]
    out = torch.zeros(B, 1 + (T - 1) // f, dtype=torch.bool)
    for b in range(B):
        for j in range(out.shape[1]):
            out[b, j] = all(bool(known[b, t].all()) for t in range(f * j + 1))
    return out


@pytest.mark.parametrize("f", [1, 2, 4])
def test_latent_known_is_the_causal_prefix_rule(f):
    g = torch.Generator().manual_seed(f)
    T = 1 + 2 * f
    known = torch.rand(64, T, 1, 1, 1, generator=g) < 0.7  # many random frame patterns
    known = known.expand(64, T, 1, 4, 4).clone()
    known[0, 0, 0, 0, 0] = False  # one missing pixel makes the frame unknown
    got = latent_known(known, T, f)
    assert got.shape == (64, 3, 1, 1, 1)
    assert torch.equal(got.flatten(1), reference_latent_known(known, f))


def test_latent_task_check_and_context_count():
    known = torch.zeros(2, 5, 1, 4, 4, dtype=torch.bool)
    known[:, :3] = True  # 3 = 1 + 2*1 frames: latent frames 0 and 1
    lat = latent_known(known, 5, 2)
    assert lat.flatten(1).tolist() == [[True, True, False]] * 2
    check_latent_task(known, lat, 5, 2)  # fine
    known[:, 4] = True  # interpolation-like: the last frame given too, no latent frame carries it
    with pytest.raises(ValueError, match="prefix"):
        check_latent_task(known, latent_known(known, 5, 2), 5, 2)
    cfg = get_preset("smoke")
    cfg.data.autoencoder, cfg.model.vae_temporal_down, cfg.task.num_context = "x.pt", 2, 5
    assert latent_task_config(cfg).num_context == 3
    cfg.data.num_frames, cfg.data.height, cfg.data.width, cfg.model.vae_spatial_down = 9, 16, 16, 4
    lat_data = latent_data_config(cfg)
    assert (lat_data.num_frames, lat_data.size, lat_data.channels) == (5, (4, 4), cfg.model.vae_latent_channels)
    cfg.task.num_context = 4
    with pytest.raises(ValueError, match="1 \\+ 2m"):
        latent_task_config(cfg)


def test_two_stages_train_and_sample(tmp_path):
    stage1 = tmp_path / "vae"
    vae_run = train.main(["--config=smoke", "--backbone=causal_vae", *VAE, f"--out_dir={stage1}", "--max_steps=3",
                          "--preview_every=3"])
    ckpt1 = torch.load(stage1 / "ckpt.pt", weights_only=True)
    assert ckpt1["latent_stats_fitted"] and not torch.equal(ckpt1["ema"]["latent_std"], torch.ones(4))
    assert (stage1 / "previews" / "step_000003.png").exists()
    assert vae_run["last_loss"] > 0

    stage2 = tmp_path / "diffusion"
    common = ["--config=smoke", *VAE, f"--autoencoder={stage1 / 'ckpt.pt'}", "--patch_size=2",
              "--masking=predict", "--num_context=3"]
    run = train.main([*common, f"--out_dir={stage2}", "--max_steps=2", "--preview_every=2", "--ckpt_every=2"])
    ckpt2 = torch.load(stage2 / "ckpt.pt", weights_only=True)
    # the frozen autoencoder travels with the denoiser, unchanged by training
    assert torch.equal(ckpt2["model"]["autoencoder.latent_std"], ckpt1["ema"]["latent_std"])
    for k, v in ckpt1["ema"].items():
        assert torch.equal(ckpt2["model"][f"autoencoder.{k}"], v), k
    assert not any(p.requires_grad for p in run["model"].autoencoder.parameters())

    videos = sample_script.main([f"--ckpt={stage2 / 'ckpt.pt'}", f"--out_dir={tmp_path / 's'}", "--task=predict",
                                 "--num_context=3", "--num_videos=2", "--steps=2"])
    assert videos.shape == (2, 5, 3, 16, 16)
    import toy_data
    cfg = run["config"]
    truth = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(2))["video"]
    assert torch.equal(videos[:, :3], truth[:, :3])  # given frames come back as given
    with pytest.raises(ValueError, match="prefix"):
        sample_script.main([f"--ckpt={stage2 / 'ckpt.pt'}", f"--out_dir={tmp_path / 'i'}", "--task=interpolate",
                            "--num_videos=2", "--steps=2"])


def test_autoencoder_mismatch_and_unfinished_stage1_are_refused(tmp_path):
    stage1 = tmp_path / "vae"
    train.main(["--config=smoke", "--backbone=causal_vae", *VAE, f"--out_dir={stage1}", "--max_steps=4",
                "--stop_at_step=2", "--preview_every=0"])
    common = ["--config=smoke", *VAE, f"--autoencoder={stage1 / 'ckpt.pt'}", "--patch_size=2", "--max_steps=1"]
    with pytest.raises(ValueError, match="latent statistics"):
        train.main([*common, f"--out_dir={tmp_path / 'a'}"])
    with pytest.raises(ValueError, match="vae_latent_channels"):
        train.main([*common, "--vae_latent_channels=8", f"--out_dir={tmp_path / 'b'}"])
    with pytest.raises(ValueError, match="not an autoencoder"):
        plain = tmp_path / "plain"
        train.main(["--config=smoke", f"--out_dir={plain}", "--max_steps=1", "--preview_every=0"])
        train.main([*common, f"--autoencoder={plain / 'ckpt.pt'}", f"--out_dir={tmp_path / 'c'}"])


def test_a_two_stage_job_runs_in_one_command(tmp_path):
    """With --autoencoder_preset, a missing stage-1 checkpoint is trained first, then reused as it is."""
    out = tmp_path / "job"
    args = ["--config=smoke", *VAE, "--autoencoder={out_dir}/autoencoder/ckpt.pt", "--autoencoder_preset=smoke_autoencoder",
            "--patch_size=2", "--masking=predict", "--num_context=3", f"--out_dir={out}", "--max_steps=2",
            "--preview_every=0"]
    run = train.main(args)
    stage1 = out / "autoencoder" / "ckpt.pt"
    ckpt1 = torch.load(stage1, weights_only=True)
    assert ckpt1["latent_stats_fitted"] and ckpt1["config"]["model"]["vae_channels"] == 8  # the shared fields
    assert ckpt1["step"] == get_preset("smoke_autoencoder").optim.max_steps
    assert run["config"].data.autoencoder == str(stage1)  # the saved config names the file it used
    for k, v in ckpt1["ema"].items():
        assert torch.equal(run["model"].autoencoder.state_dict()[k], v), k
    written = stage1.stat().st_mtime_ns
    train.main(args + ["--overwrite"])  # a second run of the job trains stage 2 again, not stage 1
    assert stage1.stat().st_mtime_ns == written


def test_a_missing_named_autoencoder_is_trained_into_the_runs_folder(tmp_path):
    """A preset may name a shipped file (not a ckpt.pt); if it is missing, stage 1 goes to OUT_DIR/autoencoder."""
    out = tmp_path / "job"
    run = train.main(["--config=smoke", *VAE, f"--autoencoder={tmp_path / 'shipped' / 'missing.pt'}",
                      "--autoencoder_preset=smoke_autoencoder", "--patch_size=2", f"--out_dir={out}",
                      "--max_steps=1", "--preview_every=0"])
    assert run["config"].data.autoencoder == str(out / "autoencoder" / "ckpt.pt")
    assert torch.load(out / "autoencoder" / "ckpt.pt", weights_only=True)["latent_stats_fitted"]


def test_cached_latents_are_what_per_step_encoding_gives(tmp_path):
    """A fixed training set is encoded once (batches.TrainingData); a step reads the same latents as encoding
    its own clips would give, for a single process and for each rank's slice."""
    from nano_videodiff.training.batches import TrainingData, make_batch
    from nano_videodiff.latent import build_frozen_autoencoder
    cfg = get_preset("smoke")
    apply_overrides(cfg, split_args(VAE)[0])
    cfg.data.num_train_clips, cfg.data.autoencoder, cfg.model.patch_size = 12, "unused", 2
    torch.manual_seed(0)
    vae = build_frozen_autoencoder(cfg)
    for p in vae.parameters():
        p.data.normal_(0, 0.3)
    cached = TrainingData(cfg, vae)
    assert cached.latents.shape == (12, 3, 4, 4, 4)
    per_step = TrainingData(cfg, vae)
    per_step.latents = None  # encode every batch as it is drawn
    for step in (0, 3):
        a, b = make_batch(cfg, cached, step, 0, 1, "cpu"), make_batch(cfg, per_step, step, 0, 1, "cpu")
        torch.testing.assert_close(a.x, b.x, rtol=1e-5, atol=1e-6)  # batch size changes float rounding only
        halves = [make_batch(cfg, cached, step, r, 2, "cpu").x for r in (0, 1)]
        assert torch.equal(torch.cat(halves), a.x)
