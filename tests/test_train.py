"""The training script end to end on the `smoke` preset: learning, exact resume, safe checkpoints, errors."""
import json

import pytest
import torch

import sample as sample_script
import train
from nano_videodiff.training.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from nano_videodiff.conditioning import Batch, Cond
from nano_videodiff.training.config import Config
from nano_videodiff.training.presets import get_preset
from nano_videodiff.models import build_denoiser
from nano_videodiff.training.optim import ema_update


def smoke_args(out_dir, *extra):
    return ["--config=smoke", f"--out_dir={out_dir}", "--preview_every=0", *extra]


def fixed_batch_loss(model, cfg, n=16):
    """The loss on a fixed batch with fixed sigma and noise: comparable before and after training."""
    import toy_data
    batch = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(n))
    g = torch.Generator().manual_seed(0)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(n, generator=g))
    noise = torch.randn(batch["video"].shape, generator=g)
    with torch.no_grad():
        return model.loss(Batch(batch["video"], Cond(frame_interval=batch["frame_interval"]), sigma=sigma,
                                noise=noise)).item()


def test_smoke_training_lowers_the_loss(tmp_path):
    cfg = get_preset("smoke")
    torch.manual_seed(cfg.run.seed)
    before = fixed_batch_loss(build_denoiser(cfg), cfg)  # same init as train.py (seeded identically)
    result = train.main(smoke_args(tmp_path / "run", "--max_steps=40"))
    after = fixed_batch_loss(result["model"], cfg)
    assert after < 0.8 * before, (before, after)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0


def test_resume_continues_exactly(tmp_path):
    full = train.main(smoke_args(tmp_path / "full", "--max_steps=12", "--ckpt_every=6"))
    train.main(smoke_args(tmp_path / "split", "--max_steps=12", "--ckpt_every=6", "--stop_at_step=6"))
    resumed = train.main(smoke_args(tmp_path / "split", "--max_steps=12", "--ckpt_every=6", "--resume"))
    for (name, a), b in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    for a, b in zip(full["ema"].state_dict().values(), resumed["ema"].state_dict().values()):
        assert torch.equal(a, b)
    logged = [json.loads(l)["step"] for l in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert logged == [5, 10, 12]  # the resumed log continues, without duplicates


def test_resume_may_move_the_data_and_change_the_workers(tmp_path):
    """Where the data lives and how many processes read it do not change a step's batch: a resumed run may
    change both and still continues exactly; the data itself (e.g. --num_frames) may not change."""
    full = train.main(smoke_args(tmp_path / "full", "--max_steps=8", "--ckpt_every=4"))
    train.main(smoke_args(tmp_path / "split", "--max_steps=8", "--ckpt_every=4", "--stop_at_step=4"))
    resumed = train.main(smoke_args(tmp_path / "split", "--max_steps=8", "--ckpt_every=4", "--resume",
                                    "--num_workers=1", f"--cache_dir={tmp_path / 'elsewhere'}"))
    for (name, a), b in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    with pytest.raises(ValueError, match="num_frames"):
        train.main(smoke_args(tmp_path / "split", "--max_steps=8", "--resume", "--num_frames=2"))


def test_checkpoint_is_complete_and_loads_weights_only(tmp_path):
    train.main(smoke_args(tmp_path / "run", "--max_steps=3", "--ckpt_every=3"))
    path = tmp_path / "run" / "ckpt.pt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"model", "ema", "optimizer", "step", "config", "rng", "scheduler"}
    assert ckpt["step"] == 3 and ckpt["optimizer"]["state"]
    cfg = Config.from_dict(ckpt["config"])
    assert cfg.model.dim == get_preset("smoke").model.dim
    assert not any(p.name.startswith(".ckpt.pt.tmp") for p in path.parent.iterdir())  # no temp file left


def test_atomic_save_keeps_old_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")  # save_checkpoint hands torch.save the open temporary file
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_existing_run_is_not_overwritten(tmp_path):
    train.main(smoke_args(tmp_path / "run", "--max_steps=2", "--ckpt_every=2"))
    with pytest.raises(FileExistsError, match="--resume"):
        train.main(smoke_args(tmp_path / "run", "--max_steps=2"))


def test_resume_refuses_architecture_change(tmp_path):
    train.main(smoke_args(tmp_path / "run", "--max_steps=2", "--ckpt_every=2"))
    with pytest.raises(ValueError, match="differs from the checkpoint"):
        train.main(smoke_args(tmp_path / "run", "--max_steps=4", "--resume", "--dim=64"))


def test_bad_config_keys_and_types(tmp_path):
    with pytest.raises(ValueError, match="unknown config key --not_a_key.*Valid keys"):
        train.main(["--config=smoke", "--not_a_key=3"])
    with pytest.raises(ValueError, match="--depth expects int"):
        train.main(["--config=smoke", "--depth=deep"])
    with pytest.raises(ValueError, match="unknown config preset"):
        train.main(["--config=nope"])
    with pytest.raises(ValueError, match="unknown keys"):
        Config.from_dict({"model": {"dim": 8, "bogus": 1}})


def test_help_lists_every_field(capsys):
    from nano_videodiff.training.config import SECTIONS
    from dataclasses import fields
    train.main(["--help"])
    text = capsys.readouterr().out
    for section in SECTIONS.values():
        for f in fields(section):
            assert f"--{f.name}=" in text


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="python train.py"):
        sample_script.main([f"--ckpt={tmp_path / 'nothing.pt'}", f"--out_dir={tmp_path / 's'}"])
    train.main(smoke_args(tmp_path / "run", "--max_steps=1", "--ckpt_every=1"))
    ckpt = load_checkpoint(tmp_path / "run" / "ckpt.pt")
    other = get_preset("smoke")
    other.model.dim = 48
    with pytest.raises(ValueError, match="different architecture"):
        load_model_state(build_denoiser(other), ckpt["model"])


def test_nan_batch_is_rejected():
    cfg = get_preset("smoke")
    model = build_denoiser(cfg)
    x = torch.zeros(1, cfg.data.num_frames, 3, cfg.data.height, cfg.data.width)
    x[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.loss(Batch(x))


def test_sample_script_writes_gifs_and_grid(tmp_path):
    train.main(smoke_args(tmp_path / "run", "--max_steps=2", "--ckpt_every=2"))
    out = tmp_path / "samples"
    videos = sample_script.main([f"--ckpt={tmp_path / 'run' / 'ckpt.pt'}", f"--out_dir={out}",
                                 "--num_videos=3", "--steps=2", "--batch_size=2"])
    cfg = get_preset("smoke")
    assert videos.shape == (3, cfg.data.num_frames, 3, cfg.data.height, cfg.data.width)
    assert torch.isfinite(videos).all()
    assert sorted(p.name for p in out.iterdir()) == ["grid.gif", "grid.png", "video_000.gif",
                                                       "video_001.gif", "video_002.gif"]
    again = sample_script.main([f"--ckpt={tmp_path / 'run' / 'ckpt.pt'}", f"--out_dir={out}", "--overwrite",
                                "--num_videos=3", "--steps=2", "--batch_size=3"])
    assert torch.allclose(videos, again, atol=1e-5)  # same seed, same videos, whatever the batching
    with pytest.raises(FileExistsError):
        sample_script.main([f"--ckpt={tmp_path / 'run' / 'ckpt.pt'}", f"--out_dir={out}"])
    with pytest.raises(ValueError, match="unknown option"):
        sample_script.main([f"--ckpt={tmp_path / 'run' / 'ckpt.pt'}", "--stepz=3"])


def test_fit_backbone_with_lamb_trains_and_samples(tmp_path):
    run = tmp_path / "fit"
    result = train.main(smoke_args(run, "--backbone=fit", "--fit_group_h=2", "--fit_group_w=2",
                                   "--fit_num_latents=8", "--optimizer=lamb", "--lr=5e-3", "--max_steps=6",
                                   "--ckpt_every=6"))
    assert type(result["model"].backbone).__name__ == "FIT"
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    assert ckpt["optimizer"]["state"]  # LAMB state is saved and loads with weights_only
    videos = sample_script.main([f"--ckpt={run / 'ckpt.pt'}", f"--out_dir={tmp_path / 's'}", "--num_videos=2",
                                 "--steps=2"])
    assert videos.shape[0] == 2 and torch.isfinite(videos).all()


def test_every_preset_builds():
    from nano_videodiff.training.presets import PRESETS
    from nano_videodiff.models import build_autoencoder
    for name in PRESETS:
        cfg = get_preset(name).validate()
        with torch.device("meta"):
            model = build_autoencoder(cfg) if cfg.model.backbone == "causal_vae" else build_denoiser(cfg)
        assert sum(p.numel() for p in model.parameters()) > 0, name


def torchrun(tmp_path, *args):
    """``torchrun --standalone --nproc_per_node=2 train.py ARGS`` on CPU (gloo), as a user would run it."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(root / "train.py"), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def logged_losses(run_dir):
    return [json.loads(l)["loss"] for l in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("parallel,backbone",
                         [("ddp", "vdt"), ("fsdp", "vdt"), ("fsdp", "walt"), ("fsdp", "videoldm")])
def test_two_processes_equal_one_process(tmp_path, parallel, backbone):
    """torchrun with 2 CPU processes (gloo) sees the same global batch as one process: same losses, weights.

    DDP replicates the model, FSDP2 shards it; both must give one process's numbers (to float tolerance),
    with gradient accumulation and activation checkpointing on (the FSDP run) or off (the DDP run).
    """
    args = ["--config=smoke", "--max_steps=3", "--log_every=1", "--preview_every=0", "--image_fraction=0.5",
            "--masking=vdt", "--depth=2", f"--backbone={backbone}", *BACKBONE_ARGS[backbone]]
    extra = ["--grad_accum_steps=2", "--activation_checkpointing"] if parallel == "fsdp" else []
    torchrun(tmp_path, *args, *extra, f"--parallel={parallel}", f"--out_dir={tmp_path / 'two'}")
    single = train.main([*args, f"--out_dir={tmp_path / 'one'}"])
    two, one = logged_losses(tmp_path / "two"), logged_losses(tmp_path / "one")
    assert len(two) == 3 and two == pytest.approx(one, rel=1e-5)
    saved = torch.load(tmp_path / "two" / "ckpt.pt", weights_only=True)
    # Weights within a tenth of one AdamW step (lr 1e-3): Adam divides by sqrt(v), so a parameter whose
    # gradients are ~0 (the U-Net's zero-initialised output layers) turns float rounding differences of
    # the cross-rank reduction into update differences of up to ~lr; the VDT matches to 1e-5.
    atol = 1e-5 if backbone == "vdt" else 1e-4
    for name, value in single["model"].state_dict().items():  # full tensors with plain names
        assert torch.allclose(saved["model"][name], value, atol=atol), name
    for name, value in single["ema"].state_dict().items():
        assert torch.allclose(saved["ema"][name], value, atol=atol), name


def test_fsdp_checkpoint_resumes_in_one_process(tmp_path):
    """A run stopped under 2-process FSDP continues in one process exactly as an uninterrupted run."""
    args = ["--config=smoke", "--max_steps=4", "--log_every=1", "--preview_every=0", "--ckpt_every=100"]
    torchrun(tmp_path, *args, "--parallel=fsdp", "--stop_at_step=2", f"--out_dir={tmp_path / 'split'}")
    resumed = train.main([*args, "--resume", f"--out_dir={tmp_path / 'split'}"])
    full = train.main([*args, f"--out_dir={tmp_path / 'full'}"])
    assert logged_losses(tmp_path / "split") == pytest.approx(logged_losses(tmp_path / "full"), rel=1e-5)
    for (name, a), b in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


BACKBONE_ARGS = {"vdt": [], "fit": ["--fit_group_h=2", "--fit_group_w=2", "--fit_num_latents=8"],
                 "walt": ["--walt_window_h=2", "--walt_window_w=2"],
                 "unet": ["--unet_channels=8", "--unet_channel_mult=1,2", "--unet_num_res_blocks=1"],
                 "videoldm": ["--unet_channels=8", "--unet_channel_mult=1,2", "--unet_num_res_blocks=1",
                              "--freeze_image_model=false"]}


@pytest.mark.slow  # torch.compile takes about a minute per backbone on 2 CPU cores; run with `pytest -m slow`
@pytest.mark.parametrize("backbone", sorted(BACKBONE_ARGS))
def test_compile_gives_the_same_training_and_clean_checkpoint_keys(tmp_path, backbone):
    args = [f"--backbone={backbone}", "--max_steps=3", *BACKBONE_ARGS[backbone]]
    plain = train.main(smoke_args(tmp_path / "plain", *args))
    compiled = train.main(smoke_args(tmp_path / "compiled", *args, "--compile"))
    assert compiled["last_loss"] == pytest.approx(plain["last_loss"], rel=1e-4)
    keys = torch.load(tmp_path / "compiled" / "ckpt.pt", weights_only=True)["model"].keys()
    assert not any("_orig_mod" in k for k in keys)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """Micro-batches of a step add up to the whole batch's gradient: same losses and weights."""
    args = smoke_args(tmp_path, "--max_steps=3", "--log_every=1", "--image_fraction=0.5", "--masking=vdt")
    whole = train.main([*args, f"--out_dir={tmp_path / 'whole'}"])
    split = train.main([*args, f"--out_dir={tmp_path / 'split'}", "--grad_accum_steps=2"])
    logs = [[json.loads(l)["loss"] for l in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("whole", "split")]
    assert logs[0] == pytest.approx(logs[1], rel=1e-5)
    for (name, a), b in zip(whole["model"].state_dict().items(), split["model"].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(ValueError, match="grad_accum_steps"):
        train.main([*args, f"--out_dir={tmp_path / 'bad'}", "--grad_accum_steps=3"])


def test_video_ldm_workflow_image_model_then_alignment(tmp_path):
    """Video LDM through the scripts: an image U-Net on 1-frame clips, then --init_from it and align."""
    unet = ["--unet_channels=8", "--unet_channel_mult=1,2", "--unet_num_res_blocks=1", "--unet_attn_resolutions=8",
            "--heads=2"]
    image = train.main(smoke_args(tmp_path / "image", "--backbone=unet", "--num_frames=1", "--max_steps=2", *unet))
    video = train.main(smoke_args(tmp_path / "video", "--backbone=videoldm", "--max_steps=2", *unet,
                                  f"--init_from={tmp_path / 'image' / 'ckpt.pt'}"))
    # the image model is frozen inside the video model: exactly the image run's EMA weights
    image_weights = image["ema"].backbone.state_dict()
    for name, value in video["model"].backbone.unet.state_dict().items():
        assert torch.equal(value, image_weights[name]), name
    assert not any(p.requires_grad for p in video["model"].backbone.unet.parameters())
    both = sample_script.main([f"--ckpt={tmp_path / 'video' / 'ckpt.pt'}", f"--out_dir={tmp_path / 's'}",
                               "--num_videos=2", "--steps=2", "--image_model"])
    assert both.shape[0] == 2 and (tmp_path / "s" / "grid.png").stat().st_size > 0
    # [image model | aligned video model]: 2 panels of the resolution side by side (the alpha chart is
    # test_temporal_alignment's test_plot_alphas_draws_one_bar_per_temporal_layer)
    with pytest.raises(ValueError, match="not built on an image model"):  # a plain U-Net has no image model
        sample_script.main([f"--ckpt={tmp_path / 'image' / 'ckpt.pt'}", f"--out_dir={tmp_path / 's2'}",
                            "--num_videos=2", "--steps=2", "--image_model"])
    with pytest.raises(ValueError, match="init_from"):  # a frozen random U-Net is refused
        train.main(smoke_args(tmp_path / "bad", "--backbone=videoldm", "--max_steps=1", *unet))


@pytest.mark.parametrize("backbone", ["vdt", "fit", "walt", "unet", "videoldm"])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_every_backbone_trains_a_step_on_cpu(tmp_path, backbone, dtype):
    result = train.main(smoke_args(tmp_path / "run", f"--backbone={backbone}", f"--dtype={dtype}", "--max_steps=2",
                                   "--masking=predict", "--activation_checkpointing", *BACKBONE_ARGS[backbone]))
    assert torch.isfinite(torch.tensor(result["last_loss"]))


def test_train_window_takes_random_consecutive_frames_of_each_clip():
    """--train_window: each sample is frames s..s+W-1 of its clip, s drawn per sample and step; DDP ranks
    slice the same global batch."""
    import toy_data
    from nano_videodiff.training.batches import TrainingData, make_batch
    from nano_videodiff.training.presets import get_preset
    cfg = get_preset("smoke_autoencoder")
    cfg.data.num_frames, cfg.data.train_window, cfg.data.num_train_clips = 9, 5, 6
    cfg.validate()
    data = TrainingData(cfg)
    starts = set()
    for step in range(4):
        x = make_batch(cfg, data, step, 0, 1, "cpu").x
        assert x.shape[1] == 5
        g = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + step)
        clips = toy_data.get_batch(data.videos, torch.randint(6, (cfg.optim.batch_size,), generator=g).tolist())
        for b in range(len(x)):
            found = [s for s in range(5) if torch.equal(clips["video"][b, s:s + 5], x[b])]
            assert found, (step, b)
            starts.add(found[0])
        halves = [make_batch(cfg, data, step, r, 2, "cpu").x for r in (0, 1)]
        assert torch.equal(torch.cat(halves), x)
    assert len(starts) > 1  # the windows move
    cfg.task.masking = "predict"
    with pytest.raises(ValueError, match="train_window"):
        cfg.validate()


def test_ema_update_values():
    """EMA with warm-up: decay = min(0.5^(1/h), (1 + step) / (10 + step)). From EMA 0 and parameters 1, one
    update at step 0 (decay 0.1) gives 0.9; at a large step it gives 1 - 0.5^(1/h); buffers are copied."""
    from torch import nn
    for step, halflife, expected in ((0, 200.0, 0.9), (10**7, 200.0, 1 - 0.5 ** (1 / 200)), (10**7, 5.0, 1 - 0.5 ** 0.2),
                                     (10, 200.0, 1 - 11 / 20)):
        model, ema = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0)
            for e in ema.parameters():
                e.zero_()
            model.running_mean.fill_(0.25)
        ema_update(ema, list(model.parameters()), list(model.buffers()), step, halflife)
        for e in ema.parameters():
            torch.testing.assert_close(e, torch.full_like(e, expected), rtol=0, atol=1e-7)
        assert torch.equal(ema.running_mean, model.running_mean)
