"""Video LDM Sec. 4's transfer of temporal layers to other image weights (nano_videodiff/personalisation.py)."""
import pytest
import torch
from helpers import randomise

from nano_videodiff import personalisation
from nano_videodiff.errors import UserError
from nano_videodiff.models import build_denoiser
from nano_videodiff.training.presets import get_preset


def tiny_video_model():
    cfg = get_preset("cascade_base")
    cfg.data.num_frames, cfg.data.num_train_clips, cfg.data.num_test_clips = 4, 8, 4
    cfg.model.unet_channels = 8
    cfg.run.init_from = ""
    cfg.model.freeze_image_model = False
    cfg = cfg.validate()
    return randomise(build_denoiser(cfg), seed=3).eval(), cfg


def test_the_image_denoiser_is_the_video_models_spatial_layers_alone():
    video, cfg = tiny_video_model()
    image, image_cfg = personalisation.image_denoiser(video, cfg)
    assert image_cfg.model.backbone == "unet" and image_cfg.data.num_frames == 1
    x = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 2.0])
    with torch.no_grad(), video.backbone.image_model():  # alpha = 1: every temporal layer skipped
        expected = video(x, sigma)
    with torch.no_grad():
        frames = image(x.flatten(0, 1)[:, None], sigma.repeat_interleave(4)).reshape(x.shape)
    assert torch.allclose(frames, expected, atol=1e-5)
    # a copy: changing it leaves the video model alone
    next(image.parameters()).data.add_(1.0)
    assert not torch.equal(next(image.parameters()), next(video.backbone.unet.parameters()))


def test_fine_tune_changes_only_a_copy_and_the_swap_keeps_temporal_layers_bit_exact():
    video, cfg = tiny_video_model()
    image, image_cfg = personalisation.image_denoiser(video, cfg)
    before_image = {k: v.clone() for k, v in image.state_dict().items()}
    tuned = personalisation.fine_tune(image, image_cfg, "navy", steps=2, batch_size=2)
    assert all(torch.equal(image.state_dict()[k], v) for k, v in before_image.items())  # the original untouched
    assert any(not torch.equal(tuned.state_dict()[k], v) for k, v in before_image.items())
    swapped = personalisation.with_image_weights(video, tuned)
    old, new = video.backbone.state_dict(), swapped.backbone.state_dict()
    temporal = [k for k in old if not k.startswith("unet.")]
    assert temporal and all(torch.equal(new[k], old[k]) for k in temporal)
    assert all(torch.equal(new["unet." + k], v) for k, v in tuned.backbone.state_dict().items())


def test_appearances_change_the_look_and_only_videoldm_models_are_accepted():
    change, navy = personalisation.appearance("navy")
    clip = -torch.ones(1, 2, 3, 4, 4)
    clip[..., 0, 0] = 1.0  # one white pixel: a ball
    out = change(clip)
    assert torch.equal(out[..., 0, 0], clip[..., 0, 0])  # the ball as it was
    assert torch.equal(out[0, 0, :, 1, 1], navy.flatten())  # the background navy
    assert torch.equal(personalisation.appearance("invert")[0](clip), -clip)
    with pytest.raises(UserError, match="appearance"):
        personalisation.appearance("sepia")
    with pytest.raises(UserError, match="videoldm"):
        personalisation.image_config(get_preset("smoke"))
