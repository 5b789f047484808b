"""Convolutional-in-time sampling (nano_videodiff/conv_time.py): temporal attention masked to a band."""
import pytest
import torch
from helpers import randomise, small_unet, video

from nano_videodiff import conv_time, masking
from nano_videodiff.backbones import backbone_class
from nano_videodiff.backbones.temporal_alignment import TemporalAttentionBlock, VideoLDM
from nano_videodiff.backbones.vdt import VDT
from nano_videodiff.conditioning import Cond
from nano_videodiff.errors import UserError
from nano_videodiff.models import build_denoiser
from nano_videodiff.training.presets import get_preset


def test_band_mask_is_the_set_of_pairs_at_most_d_apart():
    mask = conv_time.band_mask(5, 1)
    expected = torch.tensor([[abs(i - j) <= 1 for j in range(5)] for i in range(5)])
    assert torch.equal(mask, expected)
    assert conv_time.band_mask(5, None) is None and conv_time.band_mask(4, 3).all()


def small_vdt(depth=2, seed=0):
    torch.manual_seed(seed)
    return randomise(VDT(in_channels=3, patch_size=4, dim=32, depth=depth, heads=2), seed=seed).eval()


def small_videoldm():
    return randomise(VideoLDM(small_unet()), seed=5).eval()


@pytest.mark.parametrize("make", [small_vdt, small_videoldm], ids=["vdt", "videoldm"])
def test_the_band_at_full_distance_is_the_ordinary_forward_pass(make):
    model = make()
    t = 6
    x = video(2, t, 3, 8, 8) if isinstance(model, VideoLDM) else video(2, t, 3, 16, 16)
    cond = Cond(frame_interval=torch.full((2,), 0.125))
    plain = model(x, torch.zeros(2), cond)[0]
    with model.conv_in_time(t - 1):
        assert model.temporal_distance == t - 1
        banded = model(x, torch.zeros(2), cond)[0]
    assert model.temporal_distance is None  # restored on leaving
    assert torch.allclose(banded, plain, atol=1e-6)
    with model.conv_in_time(1):  # a narrower band is a different function
        assert not torch.allclose(model(x, torch.zeros(2), cond)[0], plain, atol=1e-4)


def test_keys_outside_the_band_have_no_influence_on_vdt():
    """One VDT block: frames mix only in its temporal attention, so with band d, changing frame T - 1 changes
    exactly the outputs of frames within d of it (and, without the band, every frame)."""
    model, t, d = small_vdt(depth=1), 8, 2
    x = video(1, t, 3, 16, 16)
    y = x.clone()
    y[:, -1] += torch.randn(3, 16, 16)
    with model.conv_in_time(d):
        a, b = model(x, torch.zeros(1))[0], model(y, torch.zeros(1))[0]
    changed = (a - b).flatten(2).abs().amax(-1)[0]  # (T,)
    assert torch.all(changed[:t - 1 - d] == 0)
    assert torch.all(changed[t - 1 - d:] > 1e-4)
    a, b = model(x, torch.zeros(1))[0], model(y, torch.zeros(1))[0]
    assert torch.all((a - b).flatten(2).abs().amax(-1)[0] > 1e-5)  # full attention: every frame reads frame T-1


def test_keys_outside_the_band_have_no_influence_in_video_ldm_temporal_attention():
    block = randomise(TemporalAttentionBlock(16, 2), seed=3)
    t, d = 7, 2
    z = torch.randn(t, 16, 2, 2)  # (B*T, C, H, W) with B = 1
    z2 = z.clone()
    z2[0] += torch.randn(16, 2, 2)  # frame 0 (a random change: LayerNorm would remove a constant one)
    band = conv_time.band_mask(t, d)
    a, b = block.temporal(z, None, t, None, band), block.temporal(z2, None, t, None, band)
    changed = (a - b).flatten(1).abs().amax(-1)
    assert torch.all(changed[d + 1:] == 0) and torch.all(changed[:d + 1] > 1e-5)


@pytest.mark.parametrize("name", ["fit", "walt", "unet"])
def test_backbones_without_temporal_attention_refuse(name):
    cfg = get_preset("smoke")
    cfg.model.backbone, cfg.model.unet_channels, cfg.model.unet_channel_mult = name, 16, "1,2"
    model = backbone_class(name).from_config(cfg.model, cfg.data)
    with pytest.raises(UserError, match="no temporal attention"):
        with model.conv_in_time(3):
            pass


def test_bad_distance_is_refused():
    with pytest.raises(UserError, match="int >= 1"):
        with small_vdt().conv_in_time(0):
            pass


def test_generate_long_makes_more_frames_than_trained_with_given_frames_exact():
    cfg = get_preset("smoke")  # 4 frames of 16x16
    cfg.task.masking = "predict"
    model = build_denoiser(cfg).eval()
    randomise(model.backbone, seed=1)
    n = 16
    known = masking.predict(2, n, 16, 16, num_context=2)
    known_x = video(2, n, 3, 16, 16).clamp(-1, 1)
    out = conv_time.generate_long(model, cfg, n, 2, known=known, known_x=known_x, steps=2)
    assert out.shape == (2, n, 3, 16, 16) and torch.isfinite(out).all()
    assert torch.equal(out[:, :2], known_x[:, :2])
    assert model.backbone.temporal_distance is None
    with pytest.raises(UserError, match="shorter than"):
        conv_time.generate_long(model, cfg, 3, 1)
