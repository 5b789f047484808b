"""Non-square frames (H != W) from the command line through every backbone, the autoencoder, windows,
sampling and the written videos; ``--resolution`` as the square shorthand; older square checkpoints."""
import imageio.v3 as iio
import pytest
import torch

import sample as sample_script
import toy_data
import train
from nano_videodiff.backbones.fit import FIT, snapvideo_config
from nano_videodiff.conditioning import Cond
from nano_videodiff.errors import UserError
from nano_videodiff.models import build_denoiser
from nano_videodiff.training.config import Config, apply_overrides, fields_help, split_args
from nano_videodiff.training.presets import get_preset

from helpers import randomise, video

H, W = 16, 24  # 4x6 patches of 4 px: rows and columns differ, so a transposed axis cannot pass
BACKBONE_ARGS = {"vdt": [], "fit": ["--fit_group_h=2", "--fit_group_w=2", "--fit_num_latents=12"],
                 "walt": ["--walt_window_h=2", "--walt_window_w=3"],
                 "unet": ["--unet_channels=8", "--unet_channel_mult=1,2", "--unet_num_res_blocks=1"],
                 "videoldm": ["--unet_channels=8", "--unet_channel_mult=1,2", "--unet_num_res_blocks=1",
                              "--freeze_image_model=false"]}


def config(*args):
    cfg = get_preset("smoke")
    apply_overrides(cfg, split_args(list(args))[0])
    return cfg.validate()


def test_resolution_is_shorthand_for_square_frames():
    assert config("--resolution=24").data.size == (24, 24)
    assert config("--height=36", "--width=64", "--patch_size=4").data.size == (36, 64)
    # the shorthand first, then the explicit sides, whatever the order on the command line
    assert config("--height=36", "--resolution=64", "--patch_size=4").data.size == (36, 64)
    assert "--resolution=<int>" in fields_help(Config())
    with pytest.raises(UserError, match="divisible by --patch_size=4 in both"):
        config("--height=16", "--width=18")


def test_checkpoints_of_square_runs_still_load():
    """A config written before height/width (one ``resolution``) reads as H = W; both at once is an error."""
    saved = Config().to_dict()
    saved["data"].pop("height"), saved["data"].pop("width")
    saved["data"]["resolution"] = 48
    assert Config.from_dict(saved).data.size == (48, 48)
    saved["data"]["height"] = 48
    with pytest.raises(UserError, match="both resolution and height"):
        Config.from_dict(saved)


@pytest.mark.parametrize("backbone", sorted(BACKBONE_ARGS))
def test_every_backbone_keeps_height_and_width_apart(backbone):
    """Each backbone maps a (B, T, C, H, W) video with H != W to the same shape (a model that mixed up the
    two axes would fail to reshape its tokens, or return W x H frames)."""
    cfg = config(f"--backbone={backbone}", f"--height={H}", f"--width={W}", *BACKBONE_ARGS[backbone])
    model = build_denoiser(cfg)
    randomise(model, seed=1)
    x = video(2, cfg.data.num_frames, 3, H, W)
    with torch.no_grad():
        out = model(x, torch.full((2,), 0.7), Cond())
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("backbone", ["vdt", "fit", "walt", "unet"])
def test_train_and_sample_non_square_clips(tmp_path, backbone):
    run = tmp_path / "run"
    train.main(["--config=smoke", f"--out_dir={run}", "--preview_every=0", "--max_steps=2", "--ckpt_every=2",
                f"--backbone={backbone}", f"--height={H}", f"--width={W}", "--masking=predict",
                *BACKBONE_ARGS[backbone]])
    out = tmp_path / "samples"
    videos = sample_script.main([f"--ckpt={run / 'ckpt.pt'}", f"--out_dir={out}", "--task=predict",
                                 "--num_videos=2", "--steps=2"])
    assert videos.shape == (2, 4, 3, H, W)
    gif = iio.imread(out / "video_000.gif", index=None)  # [given | model | truth] side by side, 4x upscaled
    assert gif.shape[:2] == (4, 4 * H) and 3 * 4 * W <= gif.shape[2] <= 3 * 4 * (W + 2)
    png = iio.imread(out / "grid.png")  # 2 videos x 3 panels = 6 rows of T = 4 frames, 1-px gaps, 2x upscaled
    assert png.shape[:2] == (2 * (6 * (H + 1) + 1), 2 * (4 * (W + 1) + 1))


def test_toy_datasets_render_non_square_frames():
    for dataset, channels in (("bouncing_balls", 3), ("physion", 3), ("moving_mnist", 1)):
        cfg = config(f"--dataset={dataset}", f"--channels={channels}", "--height=32", "--width=48",
                     "--num_test_clips=2", "--fps=10", "--num_balls=1")
        clips = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(2))["video"]
        assert clips.shape == (2, 4, channels, 32, 48), dataset
        assert (clips > -1).any(), dataset  # something is drawn


def test_moving_mnist_digits_travel_the_whole_wide_canvas():
    from toy_data.moving_mnist import MovingMNIST
    ds = MovingMNIST(num_frames=60, resolution=(32, 80), num_digits=1, digit_size=14, digits="glyphs",
                     length=8)
    corners = torch.cat([ds[i]["positions"][:, 0] for i in range(8)])  # (x, y) top-left corners
    assert corners[:, 0].max() > 32 - 14  # beyond what a square canvas of the height allows
    assert corners[:, 0].max() <= 80 - 14 and corners[:, 1].max() <= 32 - 14


def test_latent_diffusion_on_non_square_clips(tmp_path):
    """The causal autoencoder and a latent W.A.L.T on 16x24 frames: 4x6 latents, windows over them."""
    vae_args = ["--num_frames=5", f"--height={H}", f"--width={W}", "--vae_channels=8", "--vae_channel_mult=1",
                "--vae_latent_channels=4", "--vae_spatial_down=2", "--vae_temporal_down=2"]
    train.main(["--config=smoke", f"--out_dir={tmp_path / 'vae'}", "--preview_every=0", "--backbone=causal_vae",
                "--max_steps=2", "--ckpt_every=2", *vae_args])
    result = train.main(["--config=smoke", f"--out_dir={tmp_path / 'walt'}", "--preview_every=0",
                         "--backbone=walt", "--patch_size=2", "--walt_window_h=2", "--walt_window_w=3",
                         f"--autoencoder={tmp_path / 'vae' / 'ckpt.pt'}", "--max_steps=1", "--ckpt_every=1",
                         "--masking=predict", "--num_context=3", *vae_args])
    walt = result["model"].backbone
    assert (walt.num_frames, *walt.grid) == (3, 4, 6)  # latent frames x token rows x token columns
    videos = sample_script.main([f"--ckpt={tmp_path / 'walt' / 'ckpt.pt'}", f"--out_dir={tmp_path / 's'}",
                                 "--num_videos=1", "--steps=2"])
    assert videos.shape == (1, 5, 3, H, W)


def test_fit_pads_a_grid_that_does_not_tile_into_groups():
    """FIT on 12x16 frames with 2x2-patch groups: 3 patch rows are padded to 4 (Snap Video App. A pads
    64x36 to 64x40 the same way). Independent check: the same weights built for 16x16 frames, fed the
    zero-padded video and cropped, give the same output (the resolution token, which alone differs between
    the two, is switched off)."""
    kwargs = dict(patch_size=4, dim=32, heads=2, latent_dim=32, latent_heads=2, num_latents=8, group_size=(2, 2),
                  depth=1, global_layers=1, num_frames=2)
    padded, reference = FIT(height=12, width=16, **kwargs), FIT(height=16, width=16, **kwargs)
    assert padded.padding == (4, 0) and padded.grid == (4, 4)
    randomise(padded, seed=3)
    for model in (padded, reference):
        for embed in (model.height_embed, model.width_embed):
            for p in embed.parameters():
                torch.nn.init.zeros_(p)
    reference.load_state_dict(padded.state_dict())
    x = video(2, 2, 3, 12, 16, seed=4)
    known = torch.zeros(2, 2, 1, 12, 16)
    known[:, 0] = 1
    with torch.no_grad():
        out, _ = padded(x, torch.zeros(2), Cond(known=known))
        want, _ = reference(torch.nn.functional.pad(x, (0, 0, 0, 4)), torch.zeros(2),
                            Cond(known=torch.nn.functional.pad(known, (0, 0, 0, 4))))
    assert out.shape == x.shape
    assert torch.allclose(out, want[..., :12, :], atol=1e-5)


def test_snap_video_first_stage_is_36x64_padded_to_40x64():
    with torch.device("meta"):
        model = FIT(**snapvideo_config("snapvideo_500m"))
    assert (model.height, model.width, model.padding, model.grid) == (36, 64, (4, 0), (10, 16))
    cfg = get_preset("snapvideo_500m")
    assert cfg.data.size == (36, 64) and (cfg.model.fit_group_h, cfg.model.fit_group_w) == (5, 4)
    assert get_preset("unet_284m").data.size == (40, 64)  # Table 7: the U-Net baseline's 16x40x64 input
