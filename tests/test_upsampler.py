"""Tests for the super-resolution stages of a cascade (nano_videodiff/upsampler.py, training/cascade_configs.py)."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import gen, randomise, video

from nano_videodiff import upsampler
from nano_videodiff.backbones.layers import ScalarEmbedder
from nano_videodiff.conditioning import Batch, Cond
from nano_videodiff.edm import input_scale
from nano_videodiff.errors import UserError
from nano_videodiff.models import build_denoiser, count_parameters, resolved_sigma_in
from nano_videodiff.training.cascade_configs import CASCADE_PARAMETERS, CASCADE_PRESETS
from nano_videodiff.training.config import Config
from nano_videodiff.training.presets import get_preset

BACKBONES = ("vdt", "fit", "walt", "unet", "videoldm")


def stage_config(backbone, height=16, width=16, factor=2, lift="bilinear", frames=4):
    """A tiny upsampler of ``backbone`` for frames of height x width (low-res input height/f x width/f)."""
    cfg = get_preset("smoke")
    d, m = cfg.data, cfg.model
    d.num_frames, d.height, d.width = frames, height, width
    m.backbone, m.sr_factor, m.sr_input = backbone, factor, lift
    m.patch_size, m.dim, m.heads, m.depth = 4, 32, 2, 1
    m.fit_group_h = m.fit_group_w = 2
    m.fit_num_latents, m.fit_self_cond_prob = 8, 0.0
    m.walt_window_h = m.walt_window_w = 2
    m.unet_channels, m.unet_channel_mult, m.unet_attn_resolutions = 8, "1,2", "8"
    m.freeze_image_model = False
    return cfg.validate()


def stage(backbone, seed=0, randomised=True, **kw):
    cfg = stage_config(backbone, **kw)
    torch.manual_seed(seed)
    model = build_denoiser(cfg)
    return (randomise(model, seed + 1) if randomised else model), cfg


def inputs(cfg, seed=0, aug=None):
    d, f = cfg.data, cfg.model.sr_factor
    x = video(2, d.num_frames, d.channels, d.height, d.width, seed)
    low = video(2, d.num_frames, d.channels, d.height // f, d.width // f, seed + 1).clamp(-1, 1)
    return x, Cond(low_res=low, aug_sigma=aug)


SIGMA = torch.tensor([0.7, 2.0])


# Shapes, through every backbone --------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("size", [(16, 16), (16, 32)])
def test_every_backbone_upsamples_square_and_non_square(backbone, size):
    model, cfg = stage(backbone, height=size[0], width=size[1])
    x, cond = inputs(cfg, aug=torch.tensor([0.0, 0.3]))
    with torch.no_grad():
        out = model(x, SIGMA, cond)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_depth_to_space_input_shapes_and_errors():
    model, cfg = stage("vdt", lift="depth_to_space", factor=4)
    x, cond = inputs(cfg)
    assert model(x, SIGMA, cond).shape == x.shape
    with pytest.raises(UserError, match="low-resolution"):
        model(x, SIGMA, Cond())
    with pytest.raises(ValueError, match="needs"):
        model(x, SIGMA, cond.replace(low_res=F.pad(cond.low_res, (0, 1))))


# Resampling: reference implementations ------------------------------------------------------------------

def test_downsample_is_the_block_mean_and_nearest_upsample_repeats():
    v = video(2, 3, 3, 8, 12)
    blocks = v.reshape(2, 3, 3, 2, 4, 3, 4).mean((4, 6))
    assert torch.allclose(upsampler.downsample(v, 4), blocks, atol=1e-6)
    near = upsampler.upsample(v, 2, "nearest")
    assert torch.equal(near, v.repeat_interleave(2, -2).repeat_interleave(2, -1))
    # bilinear with half-pixel centres: downsampling its output by 2 averages a 2x2 block of (3/4, 1/4)
    # weights, which for a constant image gives the constant back
    const = torch.full((1, 1, 1, 4, 4), 0.3)
    assert torch.allclose(upsampler.upsample(const, 4, "bilinear"), torch.full((1, 1, 1, 16, 16), 0.3))


def test_depth_to_space_starts_as_nearest_upsampling():
    d2s = upsampler.DepthToSpace(3, 4)
    v = video(2, 3, 3, 5, 7)
    assert torch.allclose(d2s(v), upsampler.upsample(v, 4, "nearest"), atol=1e-6)
    randomise(d2s)
    assert not torch.allclose(d2s(v), upsampler.upsample(v, 4, "nearest"), atol=1e-3)


# Noise conditioning augmentation -------------------------------------------------------------------------

def test_augmentation_at_level_zero_is_no_augmentation():
    low, noise = video(2, 3, 3, 4, 4), video(2, 3, 3, 4, 4, seed=5)
    assert torch.equal(upsampler.augment(low, torch.zeros(2), noise), low)
    sigma = torch.tensor([0.0, 0.5])
    assert torch.allclose(upsampler.augment(low, sigma, noise)[1], low[1] + 0.5 * noise[1])
    for backbone in BACKBONES:  # the model: level 0 given == level not given; another level differs
        model, cfg = stage(backbone)
        x, cond = inputs(cfg)
        with torch.no_grad():
            none = model(x, SIGMA, cond)
            zero = model(x, SIGMA, cond.replace(aug_sigma=torch.zeros(2)))
            other = model(x, SIGMA, cond.replace(aug_sigma=torch.full((2,), 0.5)))
        assert torch.equal(none, zero), backbone
        assert not torch.allclose(none, other, atol=1e-4), backbone


@pytest.mark.parametrize("sigma_data", [0.5, 0.12])
def test_the_low_res_video_reaches_the_backbone_at_unit_variance_whatever_the_residuals_sigma_data(sigma_data):
    """The inner backbone sees [x, lift(low) / sqrt(0.5^2 + sigma_aug^2)]: the conditioning is a video (EDM's
    image std 0.5), so --sigma_data (the residual's std) must not rescale it."""
    cfg = stage_config("vdt")
    cfg.diffusion.sigma_data = sigma_data
    model = build_denoiser(cfg)
    seen = {}
    model.backbone.inner.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    x, cond = inputs(cfg, aug=torch.tensor([0.0, 0.3]))
    with torch.no_grad():
        model.backbone(x, SIGMA, cond)
    lifted = upsampler.upsample(cond.low_res, 2, "bilinear")
    scale = torch.tensor([0.5, (0.25 + 0.09) ** 0.5]).reshape(2, 1, 1, 1, 1)
    assert torch.equal(seen["x"][:, :, :3], x)
    assert torch.allclose(seen["x"][:, :, 3:], lifted / scale, atol=1e-6)


def test_every_backbone_is_told_the_level_through_its_noise_embedder():
    for backbone in BACKBONES:
        model, _ = stage(backbone, randomised=False)
        embedder = model.backbone.noise_embedder()
        branch = embedder.augmentation
        assert branch is not None, backbone
        c = torch.tensor([0.1, -0.3])
        # at init the branch adds exactly 0: the stage starts as its backbone would without it
        assert torch.equal(embedder(c, Cond(aug_sigma=torch.tensor([0.0, 3.0]))), embedder(c))
        randomise(branch)
        expected = ScalarEmbedder.forward(embedder, c) + branch(torch.log1p(torch.tensor([0.0, 3.0])))
        assert torch.allclose(embedder(c, Cond(aug_sigma=torch.tensor([0.0, 3.0]))), expected, atol=1e-6)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_conditioning_video_is_used(backbone):
    model, cfg = stage(backbone)
    x, cond = inputs(cfg)
    with torch.no_grad():
        a = model(x, SIGMA, cond)
        b = model(x, SIGMA, cond.replace(low_res=cond.low_res.flip(-1)))
    assert not torch.allclose(a, b, atol=1e-4)


def test_aligned_upsampler_starts_as_the_image_upsampler():
    """Video LDM: temporal layers start as the identity, so the aligned upsampler at init (temporal layers
    untrained, image weights anything) equals the image upsampler, i.e. the same model with alpha = 1."""
    model, cfg = stage("videoldm", randomised=False)
    randomise(model.backbone.inner.unet, seed=3)
    x, cond = inputs(cfg, aug=torch.tensor([0.2, 0.4]))
    with torch.no_grad():
        aligned = model(x, SIGMA, cond)
        with model.backbone.image_model():
            image = model(x, SIGMA, cond)
    assert torch.allclose(aligned, image, atol=1e-5)
    randomise(model.backbone.inner.temporal, seed=4)
    with torch.no_grad():
        assert not torch.allclose(model(x, SIGMA, cond), image, atol=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_an_untrained_stage_returns_the_upsampled_input_at_high_noise(backbone):
    """Residual diffusion: D = u + D_r(x_sigma - u / sigma_in); every backbone's output starts at zero, so
    at init D = u + c_skip (x_sigma - u / sigma_in), which is u itself as sigma grows (c_skip -> 0)."""
    from nano_videodiff.edm import preconditioning
    model, cfg = stage(backbone, randomised=False)
    x, cond = inputs(cfg, aug=torch.tensor([0.0, 0.2]))
    u = upsampler.upsample(cond.low_res, cfg.model.sr_factor, "bilinear")
    for s in (0.5, 80.0):
        sigma = torch.full((2,), s)
        x_sigma = x * s
        c_skip = preconditioning(sigma, model.sigma_data, model.sigma_in)[0][0]
        with torch.no_grad():
            d = model(x_sigma, sigma, cond)
        assert torch.allclose(d, u + c_skip * (x_sigma - u / model.sigma_in), atol=1e-5)
    assert (d - u).abs().max() < 1e-3 * x_sigma.abs().max()


def test_the_stage_is_edm_on_the_residual():
    """Reference: a plain EDM Denoiser around the same backbone, applied to the residual's noisy version."""
    from nano_videodiff.edm import Denoiser
    model, cfg = stage("vdt")
    x, cond = inputs(cfg, aug=torch.tensor([0.1, 0.3]))
    plain = Denoiser(model.backbone, sigma_data=model.sigma_data, sigma_in=2.5)
    model.sigma_in = 2.5
    u = model.backbone.lift(cond.low_res)
    r_sigma = (x - u) / 2.5 + SIGMA.reshape(-1, 1, 1, 1, 1) * video(*x.shape, seed=7)
    with torch.no_grad():
        assert torch.allclose(model(r_sigma + u / 2.5, SIGMA, cond), plain(r_sigma, SIGMA, cond) + u, atol=1e-5)


# Training batches ----------------------------------------------------------------------------------------

def test_training_inputs_crop_on_the_grid_and_noise_within_the_range():
    cfg = stage_config("unet", height=16, width=32, factor=4)
    cfg.model.sr_crop, cfg.model.sr_aug_max = 8, 0.0
    x = video(4, 2, 3, 16, 32)
    crop, low, sigma = upsampler.training_inputs(cfg, x, 4, gen(0), slice(0, 4))
    assert crop.shape == (4, 2, 3, 8, 8) and torch.equal(sigma, torch.zeros(4))
    assert torch.allclose(low, upsampler.downsample(crop, 4))
    for clip, part in zip(x, crop):  # each crop is a window of its clip at a multiple of f
        windows = [clip[..., i:i + 8, j:j + 8] for i in range(0, 9, 4) for j in range(0, 25, 4)]
        assert any(torch.equal(window, part) for window in windows)
    cfg.model.sr_aug_max = 0.3
    _, low, sigma = upsampler.training_inputs(cfg, x, 4, gen(0), slice(0, 4))
    assert ((sigma >= 0) & (sigma <= 0.3)).all() and sigma.std() > 0
    # world-size independence: two ranks' halves are the single process's batch
    halves = [upsampler.training_inputs(cfg, x[s], 4, gen(0), s) for s in (slice(0, 2), slice(2, 4))]
    whole = upsampler.training_inputs(cfg, x, 4, gen(0), slice(0, 4))
    for k in range(3):
        assert torch.equal(torch.cat([h[k] for h in halves]), whole[k])


def test_a_training_step_of_a_stage_has_a_finite_loss_and_gradient():
    from nano_videodiff.training.batches import TrainingData, make_batch
    cfg = stage_config("unet", height=16, width=16, factor=4)
    cfg.model.sr_crop = 8
    model = build_denoiser(cfg)
    batch = make_batch(cfg, TrainingData(cfg), 0, 0, 1, "cpu")
    assert batch.x.shape[-2:] == (8, 8) and batch.cond.low_res.shape[-2:] == (2, 2)
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_config_checks():
    cfg = stage_config("unet")
    for change, match in [(dict(sr_factor=3), "divide"), (dict(sr_input="cubic"), "sr_input"),
                          (dict(sr_crop=5), "multiple"), (dict(sr_aug_max=-1.0), "sr_aug_max")]:
        bad = Config.from_dict(cfg.to_dict())
        for k, v in change.items():
            setattr(bad.model, k, v)
        with pytest.raises(UserError, match=match):
            bad.validate()


# Sampling a cascade --------------------------------------------------------------------------------------

def test_a_cascade_of_two_stages_multiplies_the_size():
    first, cfg1 = stage("vdt", height=8, width=16, factor=2, frames=2)
    second, cfg2 = stage("unet", height=16, width=32, factor=2, frames=2)
    base = video(3, 2, 3, 4, 8).clamp(-1, 1)
    outs = upsampler.cascade(base, [(first, cfg1), (second, cfg2)], aug_sigma=[0.1, 0.0], steps=2)
    assert [o.shape for o in outs] == [(3, 2, 3, 4, 8), (3, 2, 3, 8, 16), (3, 2, 3, 16, 32)]
    again = upsampler.cascade(base, [(first, cfg1), (second, cfg2)], aug_sigma=[0.1, 0.0], steps=2)
    assert torch.equal(outs[-1], again[-1])  # seeded
    with pytest.raises(UserError, match="needs"):
        upsampler.upsample_videos(second, cfg2, base, 0.1, steps=2)
    with pytest.raises(UserError, match="levels"):
        upsampler.cascade(base, [(first, cfg1)], aug_sigma=[0.1, 0.2])


# Cascades' sigma_in and the papers' stages ---------------------------------------------------------------

def test_each_cascade_stage_sigma_in_follows_input_scale():
    snap_base, snap_sr = get_preset("snapvideo_500m").validate(), get_preset("snapvideo_sr").validate()
    for cfg in (snap_base, snap_sr):
        d = cfg.data
        assert resolved_sigma_in(cfg) == pytest.approx(input_scale(d.num_frames, d.height, d.width))
    # Snap Video Sec. 3.2 / 3.5: 4 at the 36x64 first stage, 32 at the 288x512 upsampler (16 frames)
    assert resolved_sigma_in(snap_base) == pytest.approx(4.0)
    assert resolved_sigma_in(snap_sr) == pytest.approx(32.0)
    toy = get_preset("cascade_sr")
    toy.diffusion.sigma_in, toy.diffusion.sigma_in_base_h, toy.diffusion.sigma_in_base_w = 0.0, 16, 16
    assert resolved_sigma_in(toy) == pytest.approx((8 * 16) ** 0.5)  # T s^2 = 8 frames x 4^2


@pytest.mark.parametrize("name", sorted(CASCADE_PARAMETERS))
def test_paper_stages_build_on_meta_with_their_counts(name):
    cfg = get_preset(name).validate()
    with torch.device("meta"):
        model = build_denoiser(cfg)
    inner = model.backbone.inner
    total = count_parameters(model.backbone)
    # the stage = its backbone for 2C input channels + the augmentation branch (+ depth-to-space)
    branch = count_parameters(inner.noise_embedder().augmentation)
    d2s = count_parameters(model.backbone.depth_to_space) if model.backbone.depth_to_space is not None else 0
    assert total == count_parameters(inner) + d2s and branch > 0
    with torch.device("meta"):
        plain = build_denoiser(Config.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "sr_factor": 1}}))
    # C more input channels (W.A.L.T reads x twice: x and known * x) and C more output channels (cropped off)
    patch, dim = 3 * cfg.model.patch_size**2, cfg.model.dim
    reads = {"walt": 2, "fit": 1}[cfg.model.backbone]
    extra = reads * patch * dim + patch * (dim + 1)
    assert total - count_parameters(plain.backbone) == extra + branch + d2s
    print(f"{name}: {total / 1e6:.1f}M parameters")


def test_toy_cascade_presets_chain():
    base, stage_cfg = get_preset("cascade_base").validate, get_preset("cascade_sr")
    b = get_preset("cascade_base")
    assert (b.data.height * stage_cfg.model.sr_factor, b.data.width * stage_cfg.model.sr_factor) == stage_cfg.data.size
    assert b.data.num_frames == stage_cfg.data.num_frames
    assert get_preset("cascade_sr").run.init_from == "out/cascade_sr_frames/ckpt.pt"
    assert set(CASCADE_PRESETS) >= {"cascade_base_frames", "cascade_base", "cascade_sr_frames", "cascade_sr"}


# Temporal layers under other image weights (Video LDM Sec. 4) --------------------------------------------

@pytest.mark.parametrize("wrapped", [False, True])
def test_swapping_image_weights_keeps_temporal_parameters_bit_exact(wrapped):
    """Video LDM Sec. 4: other image weights (a fine-tune) under the same temporal layers, bit-exact."""
    import copy
    from helpers import small_unet
    from nano_videodiff.backbones.temporal_alignment import VideoLDM
    video_model = stage("videoldm")[0].backbone.inner if wrapped else randomise(VideoLDM(small_unet()), seed=1)
    before = {n: p.detach().clone() for n, p in video_model.named_parameters() if not n.startswith("unet.")}
    other = randomise(copy.deepcopy(video_model.unet), seed=9)  # e.g. fine-tuned on another domain
    video_model.load_image_model({"backbone." + k: v for k, v in other.state_dict().items()})
    after = dict(video_model.named_parameters())
    assert before and all(torch.equal(after[n], p) for n, p in before.items())
    assert all(torch.equal(after["unet." + n], p) for n, p in other.state_dict().items())


# sample.py --upsampler: base -> stage in one command ----------------------------------------------------

def test_sample_chains_a_base_model_and_an_upsampler(tmp_path):
    import sample
    import train
    common = ["--config=smoke", "--max_steps=2", "--preview_every=0", "--backbone=unet", "--unet_channels=8",
              "--unet_channel_mult=1,2", "--unet_attn_resolutions=8", "--num_frames=2"]
    train.main(common + [f"--out_dir={tmp_path / 'base'}", "--height=8", "--width=16"])
    train.main(common + [f"--out_dir={tmp_path / 'sr'}", "--height=16", "--width=32", "--sr_factor=2",
                         "--sr_crop=8"])
    out = tmp_path / "samples"
    videos = sample.main([f"--ckpt={tmp_path / 'base' / 'ckpt.pt'}", f"--upsampler={tmp_path / 'sr' / 'ckpt.pt'}",
                          "--aug_sigma=0.2", "--steps=2", "--upsampler_steps=2", "--num_videos=2", f"--out_dir={out}"])
    assert videos.shape == (2, 2, 3, 16, 32) and (out / "grid.png").exists()
    with pytest.raises(UserError, match="upsampler"):
        sample.main([f"--ckpt={tmp_path / 'base' / 'ckpt.pt'}", f"--upsampler={tmp_path / 'sr' / 'ckpt.pt'}",
                     "--task=predict", f"--out_dir={tmp_path / 'x'}"])
    with pytest.raises(UserError, match="not a super-resolution stage"):
        sample.main([f"--ckpt={tmp_path / 'base' / 'ckpt.pt'}", f"--upsampler={tmp_path / 'base' / 'ckpt.pt'}",
                     "--steps=2", "--num_videos=1", f"--out_dir={tmp_path / 'y'}"])


# The shipped toy cascade ------------------------------------------------------------------------------------

SHIPPED_BASE, SHIPPED_SR = (Path(__file__).resolve().parents[1] / "checkpoints" / f"{name}.pt"
                            for name in ("cascade_base", "cascade_sr"))


def test_one_sample_command_runs_the_shipped_cascade(tmp_path):
    """The done-when of the cascade issue as a command: base -> 4x aligned upsampler, 64x64 videos out."""
    import sample
    videos = sample.main([f"--ckpt={SHIPPED_BASE}", f"--upsampler={SHIPPED_SR}", "--aug_sigma=0.1", "--steps=2",
                          "--upsampler_steps=2", "--num_videos=1", f"--out_dir={tmp_path}"])
    assert videos.shape == (1, 8, 3, 64, 64) and (tmp_path / "grid.png").exists()


def test_cascade_ablation_runs_on_the_shipped_cascade(tmp_path):
    from benchmarks import cascade_ablation
    results = cascade_ablation.main(["--quick", "--sections=align,transfer", f"--out={tmp_path}"])
    assert {"align/image upsampler/clean/0.1", "align/aligned video upsampler/base-like/0.3"} <= set(results)
    assert set(results["align/image upsampler/clean/0.1"]) == {"input_psnr", "psnr", "flicker", "sharpness",
                                                               "edge_error"}
    assert "transfer/navy/fine-tuned image model + original temporal layers" in results
    assert (tmp_path / "tables.md").read_text().count("|") > 20 and (tmp_path / "cascade_transfer_navy.png").exists()
    # without the no-augmentation run the ablation says what to train instead of failing
    assert cascade_ablation.main(["--quick", "--sections=aug", f"--noaug={tmp_path / 'missing.pt'}",
                                  f"--out={tmp_path}"]) is None
