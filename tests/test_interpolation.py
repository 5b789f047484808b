"""Video LDM's interpolation stack (nano_videodiff/interpolation.py) and the stage conditioning of every backbone."""
import pytest
import torch
from helpers import randomise, video

import toy_data
from nano_videodiff import generation, interpolation, masking
from nano_videodiff.backbones import BACKBONES, backbone_class
from nano_videodiff.conditioning import Cond
from nano_videodiff.errors import UserError
from nano_videodiff.training.batches import TrainingData, make_batch
from nano_videodiff.training.presets import get_preset


def small_interp_config(**changes):
    cfg = get_preset("bouncing_balls_interp")
    cfg.data.height = cfg.data.width = 8
    cfg.model.dim, cfg.model.depth, cfg.model.heads, cfg.optim.batch_size = 16, 1, 2, 6
    for key, value in changes.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg.validate()


# ---- training windows: the rates, the masks and the stage flag -------------------------------------------

def test_windows_take_every_4th_frame_for_the_lowest_stage_and_consecutive_frames_for_the_last():
    cfg = small_interp_config()
    T = cfg.data.num_frames
    L = interpolation.source_frames(T, 2)
    assert L == 4 * (T - 1) + 1 and interpolation.stride_of(0, 2) == 4 and interpolation.stride_of(1, 2) == 1
    # frame f of clip b holds the number 100 b + f: the window's frame indices can be read back
    clips = (100 * torch.arange(5)[:, None] + torch.arange(L)[None]).float()[:, :, None, None, None]
    interval = torch.full((5,), 1 / 32)
    videos, new_interval, stage = interpolation.training_windows(clips, interval, cfg, 5, slice(0, 5),
                                                                 torch.Generator().manual_seed(3))
    for b in range(5):
        frames = videos[b, :, 0, 0, 0] - 100 * b
        stride = 4 ** (1 - int(stage[b]))
        assert torch.equal(frames, frames[0] + stride * torch.arange(T).float())  # equally spaced at the stride
        assert 0 <= frames[0] and frames[-1] <= L - 1
        assert new_interval[b] == pytest.approx(stride / 32)
    # the draws are for the global batch: a rank's rows are the same rows of the one-process batch
    part = interpolation.training_windows(clips[2:4], interval[2:4], cfg, 5, slice(2, 4),
                                          torch.Generator().manual_seed(3))
    assert torch.equal(part[0], videos[2:4]) and torch.equal(part[2], stage[2:4])


def test_training_batches_see_both_stages_with_the_sampling_masks():
    cfg = small_interp_config()
    data = TrainingData(cfg)
    stages, T = [], cfg.data.num_frames
    assert data.videos.num_frames == 4 * (T - 1) + 1  # clips long enough for the lowest stage's window
    for step in range(3):
        batch = make_batch(cfg, data, step, 0, 1, "cpu")
        assert batch.x.shape[1] == T
        # the masks training draws are the ones fill_in samples with: every 4th frame, the last included
        assert torch.equal(batch.cond.known, interpolation.window_known(len(batch.x), cfg))
        assert batch.cond.known[0, :, 0, 0, 0].nonzero().flatten().tolist() == list(range(0, T, 4))
        expected = (4 ** (1 - batch.cond.stage)).float() / cfg.data.fps
        assert torch.allclose(batch.cond.frame_interval, expected)
        stages += batch.cond.stage.tolist()
    assert set(stages) == {0, 1}


def test_the_stage_window_content_is_the_clip_at_that_rate():
    cfg = small_interp_config()
    data = TrainingData(cfg)
    batch = make_batch(cfg, data, 0, 0, 1, "cpu")
    from nano_videodiff.training.batches import step_indices
    clips = toy_data.get_batch(data.videos, step_indices(cfg, 0)[1].tolist())["video"]
    T, L = cfg.data.num_frames, clips.shape[1]
    for b in range(len(batch.x)):
        stride = 4 ** (1 - int(batch.cond.stage[b]))
        matches = [s for s in range(L - stride * (T - 1)) if torch.equal(batch.x[b], clips[b, s::stride][:T])]
        assert matches, f"sample {b}: its window is not the clip at stride {stride}"


def test_ball_speed_slows_the_same_clip():
    cfg = get_preset("bouncing_balls")
    fast = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), [0])
    cfg.data.ball_speed = 0.25
    slow = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), [0])
    speed_fast, speed_slow = (clip["velocities"][0, 0].norm(dim=-1) for clip in (fast, slow))
    assert torch.allclose(speed_slow, speed_fast / 4, rtol=1e-5)  # the same clip's balls, a quarter as fast
    assert torch.allclose(slow["positions"][0, 0], fast["positions"][0, 0])


def test_bad_interpolation_settings_are_one_line_errors():
    with pytest.raises(UserError, match="4 \\(K - 1\\) \\+ 1"):
        interpolation.check_config(small_interp_config(data__num_frames=8))
    with pytest.raises(UserError, match="--masking=interpolate"):
        interpolation.check_config(small_interp_config(task__masking="predict"))
    cfg = small_interp_config()
    with pytest.raises(UserError, match="do not split into windows"):
        interpolation.fill_in(None, cfg, torch.zeros(1, 4, 3, 8, 8), stage=0)


# ---- sampling: windows, stitching, the stack, the baselines ------------------------------------------------

def test_blend_and_nearest_key_frame_baselines():
    keys = video(2, 3, 3, 4, 4)
    lin, near = interpolation.blend(keys), interpolation.blend(keys, nearest=True)
    assert lin.shape[1] == near.shape[1] == 9
    assert torch.equal(lin[:, ::4], keys) and torch.equal(near[:, ::4], keys)
    assert torch.allclose(lin[:, 2], (keys[:, 0] + keys[:, 1]) / 2)
    assert torch.allclose(lin[:, 7], 0.25 * keys[:, 1] + 0.75 * keys[:, 2])
    assert torch.equal(near[:, 1], keys[:, 0]) and torch.equal(near[:, 2], keys[:, 0])  # tie: the earlier one
    assert torch.equal(near[:, 3], keys[:, 1])


def test_fill_in_cuts_key_frames_into_windows_and_stitches_them(monkeypatch):
    """A fake model that fills every window with the linear blend of its key frames: the stitched video must
    be the blend of the whole key sequence, the given frames bit-exact, and each call told stage and rate."""
    cfg = small_interp_config()
    calls = []

    def fake_generate(model, cfg_, n, known, known_x, stage, frame_interval, **kwargs):
        calls.append((n, stage, frame_interval))
        assert torch.equal(known, interpolation.window_known(n, cfg_))
        return interpolation.blend(known_x[:, ::4])

    monkeypatch.setattr(generation, "generate", fake_generate)
    per = interpolation.keys_per_window(cfg.data.num_frames)  # 3 key frames a window: frames 0, 4, 8
    keys = video(2, 2 * per - 1, 3, 8, 8).clamp(-1, 1)  # 2 windows sharing their middle key frame
    out = interpolation.fill_in(None, cfg, keys, stage=1)
    assert out.shape[1] == 4 * (2 * per - 2) + 1 and torch.equal(out[:, ::4], keys)
    assert torch.allclose(out, interpolation.blend(keys))
    assert calls == [(4, 1, pytest.approx(1 / 32))]  # both videos' windows in one batch, stage 1's rate
    chain = interpolation.stack(None, cfg, keys[:, :per])
    assert [v.shape[1] for v in chain] == [4 * (per - 1) + 1, 16 * (per - 1) + 1]
    assert [c[1:] for c in calls[1:]] == [(0, pytest.approx(4 / 32)), (1, pytest.approx(1 / 32))]
    # Snap Video's order: the low rate is continued first (here by a stand-in predictor), then filled in
    chain = interpolation.hierarchical(None, cfg, keys[:, :2], num_low=2 * per - 1,
                                       predict=lambda frames, n: keys[:, :n])
    assert torch.allclose(chain[-1], interpolation.blend(keys, 16), atol=1e-6) and torch.equal(chain[-1][:, ::16], keys)


def test_a_trained_step_interpolates_with_given_frames_exact():
    """The real path: a (tiny, untrained) model through generate; the key frames come back bit-exactly."""
    from nano_videodiff.models import build_denoiser
    cfg = small_interp_config()
    model = build_denoiser(cfg).eval()
    keys = video(1, interpolation.keys_per_window(cfg.data.num_frames), 3, 8, 8).clamp(-1, 1)
    out = interpolation.fill_in(model, cfg, keys, stage=0, steps=2)
    assert out.shape == (1, cfg.data.num_frames, 3, 8, 8) and torch.equal(out[:, ::4], keys)


# ---- the stage conditioning reaches every backbone ------------------------------------------------------

def stage_config(name):
    cfg = get_preset("smoke")
    cfg.model.backbone, cfg.model.num_stages = name, 2
    cfg.model.unet_channels, cfg.model.unet_channel_mult, cfg.model.freeze_image_model = 16, "1,2", False
    return cfg


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_the_stage_flag_changes_every_backbones_output(name):
    cfg = stage_config(name)
    model = randomise(backbone_class(name).from_config(cfg.model, cfg.data)).eval()
    x, c_noise = video(2, 4, 3, 16, 16), torch.zeros(2)
    outs = [model(x, c_noise, Cond(frame_interval=torch.full((2,), 0.1), stage=torch.full((2,), s)))[0]
            for s in (0, 1)]
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)
    default = model(x, c_noise, Cond(frame_interval=torch.full((2,), 0.1)))[0]
    assert torch.allclose(default, outs[0], atol=1e-6)  # not given = stage 0
    with pytest.raises(ValueError, match="cond.stage"):
        model(x, c_noise, Cond(stage=torch.full((2,), 2)))
    cfg.model.num_stages = 0  # models without stages have no stage parameters: old checkpoints load
    plain = backbone_class(name).from_config(cfg.model, cfg.data)
    assert not any("stage_embed" in key for key in plain.state_dict())


def test_video_ldm_reads_the_stage_in_its_temporal_layers_only():
    cfg = stage_config("videoldm")
    model = randomise(backbone_class("videoldm").from_config(cfg.model, cfg.data)).eval()
    assert not any("stage_embed" in key for key in model.unet.state_dict())  # the image model is unchanged
    x, c_noise = video(1, 4, 3, 16, 16), torch.zeros(1)
    with model.image_model():
        outs = [model(x, c_noise, Cond(stage=torch.tensor([s])))[0] for s in (0, 1)]
    assert torch.equal(outs[0], outs[1])
