"""Tests for Snap Video's FIT backbone (nano_videodiff/backbones/fit.py)."""
from types import SimpleNamespace

import pytest
import torch
from helpers import gen, randomise, video

from nano_videodiff.conditioning import DROPPED_LABEL, Cond
from nano_videodiff.training.config import Config
from nano_videodiff.models import build_denoiser
from nano_videodiff.edm import Denoiser
from nano_videodiff.backbones.fit import (FIT, PAPER_PARAMETERS, group_patches, snapvideo_config,
                                ungroup_patches)
from nano_videodiff.sampler import edm_sigmas, sample



def small_fit(seed=0, **kw):
    """2 frames of 8x8, patch 2 -> 4x4 grid, 2x2-patch groups -> 4 groups, 2 latents per group."""
    torch.manual_seed(seed)
    cfg = dict(in_channels=3, num_frames=2, height=8, width=8, patch_size=2, dim=16, heads=2,
               latent_dim=24, latent_heads=2, num_latents=8, group_size=(2, 2), depth=1, global_layers=1)
    cfg.update(kw)
    return FIT(**cfg)




# Grouping ----------------------------------------------------------------------------------------------------

def test_group_ungroup_are_exact_inverses_and_groups_are_tiles():
    b, t, grid_h, grid_w, d, (gh, gw) = 2, 3, 4, 6, 5, (2, 3)
    tokens = torch.randn(b, t, grid_h * grid_w, d, generator=gen(0))
    groups = group_patches(tokens, grid_h, (gh, gw))
    assert groups.shape == (b * 4, t * gh * gw, d)
    assert torch.equal(ungroup_patches(groups, b, grid_h, grid_w, (gh, gw)), tokens)
    # group 1 of sample 1 = every frame of the tile rows 0-1, columns 3-5 (tiles numbered row-major)
    grid = tokens.reshape(b, t, grid_h, grid_w, d)
    expected = grid[1, :, 0:2, 3:6].reshape(t * gh * gw, d)
    assert torch.equal(groups[4 + 1], expected)
    back = group_patches(ungroup_patches(groups, b, grid_h, grid_w, (gh, gw)), grid_h, (gh, gw))
    assert torch.equal(back, groups)


def test_each_group_reads_only_its_own_patches():
    """Perturb the pixels of one group (tile 1 = rows 0-3, columns 4-7, every frame): only that group's
    latents and pixels change. With a global layer, the latents of every group see the change."""
    model = randomise(small_fit(local_layers=1, global_layers=0))
    x = video(2, 2, 3, 8, 8)
    c_noise = torch.tensor([0.1, -0.3])
    x2 = x.clone()
    x2[:, :, :, 0:4, 4:8] += torch.randn(2, 2, 3, 4, 4, generator=gen(1))
    with torch.no_grad():
        out, lat = model(x, c_noise, Cond())
        out2, lat2 = model(x2, c_noise, Cond())
    lat, lat2 = lat.reshape(2, 4, 2, -1), lat2.reshape(2, 4, 2, -1)  # (B, groups, latents per group, Dl)
    assert (lat2[:, 1] - lat[:, 1]).abs().max() > 1e-3
    others = [0, 2, 3]
    assert torch.allclose(lat2[:, others], lat[:, others], atol=1e-6)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[0:4, 4:8] = False
    assert torch.allclose(out2[..., outside], out[..., outside], atol=1e-6)
    assert (out2[..., ~outside] - out[..., ~outside]).abs().max() > 1e-3

    model = randomise(small_fit(global_layers=1))  # global self-attention mixes the groups
    with torch.no_grad():
        _, lat = model(x, c_noise, Cond())
        _, lat2 = model(x2, c_noise, Cond())
    assert (lat2.reshape(2, 4, 2, -1)[:, 0] - lat.reshape(2, 4, 2, -1)[:, 0]).abs().max() > 1e-3


# Shapes, init, errors ----------------------------------------------------------------------------------------

SHAPES = [  # (T, H, W, patch, group (gh, gw), num_latents)
    (1, 8, 8, 2, (2, 2), 8), (3, 8, 12, 2, (2, 3), 8), (2, 12, 8, 4, (3, 1), 4), (4, 4, 16, 2, (1, 4), 4),
]


@pytest.mark.parametrize("t,h,w,p,group,m", SHAPES)
def test_output_shape_and_zero_output_at_init(t, h, w, p, group, m):
    model = small_fit(num_frames=t, height=h, width=w, patch_size=p, group_size=group, num_latents=m)
    x = video(2, t, 3, h, w)
    out, latents = model(x, torch.tensor([-0.5, 0.7]), Cond())
    assert out.shape == x.shape and torch.all(out == 0)  # zero-initialised output layer
    assert latents.shape == (2, m, 24)
    randomise(model)
    out, latents = model(x, torch.tensor([-0.5, 0.7]), Cond())
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


def test_clear_errors_for_shapes_the_model_cannot_take():
    # A patch grid that the group tiles do not divide is padded (tests/test_non_square.py checks the values)
    assert small_fit(height=10, num_latents=12).padding == (2, 0)  # 5x4 patch grid -> 6x4 (6 groups)
    assert small_fit(height=8, width=8, group_size=(3, 2)).padding == (4, 0)  # 4x4 grid -> 6x4 for 3x2 tiles
    with pytest.raises(ValueError, match="num_latents"):
        small_fit(num_latents=6)  # 4 groups
    with pytest.raises(ValueError, match="patch size"):
        small_fit(height=9)
    model = small_fit()
    with pytest.raises(ValueError, match="built for 2 frames of 8x8"):
        model(video(1, 2, 3, 8, 12), torch.zeros(1), Cond())
    with pytest.raises(ValueError, match="built for"):
        model(video(1, 3, 3, 8, 8), torch.zeros(1), Cond())
    with pytest.raises(ValueError, match="self_cond"):
        model(video(1, 2, 3, 8, 8), torch.zeros(1), Cond(self_cond=torch.zeros(1, 4, 24)))


def test_labels_known_and_interval_reach_the_output():
    model = randomise(small_fit(num_classes=3))
    x, c_noise = video(2, 2, 3, 8, 8), torch.zeros(2)
    with pytest.raises(ValueError, match="labels"):
        model(x, c_noise, Cond())
    base = Cond(labels=torch.tensor([0, 2]))
    with torch.no_grad():
        out = model(x, c_noise, base)[0]
        dropped = model(x, c_noise, base.replace(labels=torch.tensor([DROPPED_LABEL, 2])))[0]
        known = torch.zeros(2, 2, 1, 8, 8, dtype=torch.bool)
        no_known = model(x, c_noise, base.replace(known=known))[0]
        known[:, 0] = True
        with_known = model(x, c_noise, base.replace(known=known))[0]
        other_fps = model(x, c_noise, base.replace(frame_interval=torch.tensor([0.5, 0.0])))[0]
    assert not torch.allclose(out[0], dropped[0]) and torch.allclose(out[1], dropped[1], atol=1e-6)
    assert torch.allclose(no_known, out, atol=1e-6) and not torch.allclose(with_known, out)
    assert not torch.allclose(other_fps[0], out[0]) and torch.allclose(other_fps[1], out[1], atol=1e-6)


# Latent self-conditioning (RIN) -------------------------------------------------------------------------------

def test_self_conditioning_does_nothing_at_init_and_learns():
    model = small_fit()
    with torch.no_grad():  # random output layer, so the output depends on everything before it
        model.final.weight.normal_(0, 0.2, generator=gen(3))
    x, c_noise = video(2, 2, 3, 8, 8), torch.tensor([0.2, -1.0])
    prev = torch.randn(2, 8, 24, generator=gen(4))
    out0, lat0 = model(x, c_noise, Cond())
    out1, lat1 = model(x, c_noise, Cond(self_cond=prev))
    assert out0.abs().sum() > 0
    assert torch.equal(out0, out1) and torch.equal(lat0, lat1)  # zero LayerNorm: the path adds nothing

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    target = video(2, 2, 3, 8, 8, seed=5)
    loss = (model(x, c_noise, Cond(self_cond=prev))[0] - target).square().mean()
    loss.backward()
    assert model.self_cond_norm.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        out0, _ = model(x, c_noise, Cond())
        out1, _ = model(x, c_noise, Cond(self_cond=prev))
        out_zeros, _ = model(x, c_noise, Cond(self_cond=torch.zeros_like(prev)))
    assert (out1 - out0).abs().max() > 1e-4
    assert torch.equal(out0, out_zeros)  # None means "no previous latents" = zeros


def test_sampler_carries_latents_between_steps():
    torch.manual_seed(0)
    denoiser = Denoiser(randomise(small_fit()), sigma_data=0.5)
    received, returned = [], []

    def hook(module, args, output):
        received.append(args[2].self_cond)
        returned.append(output[1])

    denoiser.backbone.register_forward_hook(hook)
    noise = torch.randn(2, 2, 3, 8, 8, generator=gen(1))
    result, nfe = sample(denoiser.forward_with_state, noise, edm_sigmas(3),
                         cond=Cond(), return_nfe=True)
    assert result.shape == noise.shape and len(received) == nfe == 5  # Heun: 2N - 1 calls
    assert received[0] is None
    for k in range(1, len(received)):
        assert received[k] is not None and torch.equal(received[k], returned[k - 1])
        assert not torch.equal(returned[k], returned[k - 1])  # the latents do change between calls


# Configs and paper presets ------------------------------------------------------------------------------------

def test_from_config_with_and_without_fit_fields():
    cfg = Config()  # default data: 16 frames of 32x32 RGB
    model = FIT.from_config(cfg.model, cfg.data)
    assert (model.num_frames, model.height, model.width) == (16, 32, 32)
    assert model.num_groups == 4 and model.num_latents == 64
    fields = dict(vars(cfg.model), fit_latent_dim=48, fit_num_latents=8, fit_group_h=8, fit_group_w=4,
                  fit_global_layers=3, fit_self_cond_prob=0.5)
    model = FIT.from_config(SimpleNamespace(**fields), cfg.data)
    assert model.num_groups == 2 and model.latent_dim == 48
    assert len(model.blocks[0].compute) == 3
    # RIN's self-conditioning rate is the denoiser's (a constructor argument), read from --fit_self_cond_prob
    cfg.model.backbone = "fit"
    assert build_denoiser(cfg).self_condition_prob == 0.9
    cfg.model.fit_self_cond_prob = 0.5
    assert build_denoiser(cfg).self_condition_prob == 0.5
    cfg.model.backbone = "vdt"  # a backbone without latents to condition on: off
    assert build_denoiser(cfg).self_condition_prob == 0.0


@pytest.mark.parametrize("name", ["snapvideo_500m", "snapvideo_3.9b"])
def test_paper_presets_on_meta_match_parameter_counts(name):
    with torch.device("meta"):
        model = FIT(**snapvideo_config(name))
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / PAPER_PARAMETERS[name] - 1) < 0.05, count
    # Table 8: 16x40x64 input, 1x4x4 patches -> 16x10x16 grid; 16x5x4-patch groups -> 8 groups of 320
    assert model.grid == (10, 16) and model.num_groups == 8
    assert model.num_latents // model.num_groups == {"snapvideo_500m": 64, "snapvideo_3.9b": 96}[name]
    assert len(model.blocks) == 6 and all(len(b.compute) == 4 and len(b.local) == 0 for b in model.blocks)
    head_channels = {"snapvideo_500m": (48, 64), "snapvideo_3.9b": (64, 128)}[name]
    block = model.blocks[0]
    assert (block.write.attn.head_dim, block.read.attn.head_dim) == head_channels


def test_toy_preset_runs():
    cfg = snapvideo_config("toy")
    cfg.update(num_frames=2)  # keep the test fast; the preset itself is 16 frames
    model = FIT(**cfg)
    out, latents = model(video(1, 2, 3, 32, 32), torch.zeros(1), Cond())
    assert out.shape == (1, 2, 3, 32, 32) and latents.shape == (1, 64, 128) and model.num_groups == 4
    with pytest.raises(ValueError, match="unknown FIT preset"):
        snapvideo_config("walt")
