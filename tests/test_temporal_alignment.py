"""Tests for Video LDM's temporal alignment (nano_videodiff/backbones/temporal_alignment.py)."""
import pytest
import torch
from helpers import gen, randomise, small_unet, video

from nano_videodiff import masking
from nano_videodiff.backbones import temporal_alignment
from nano_videodiff.conditioning import Batch, Cond
from nano_videodiff.training.presets import get_preset
from nano_videodiff.edm import Denoiser
from nano_videodiff.models import build_denoiser
from nano_videodiff.sampler import edm_sigmas, sample
from nano_videodiff.backbones.temporal_alignment import (ALPHA_INIT_LOGIT, Conv3d, TemporalAttentionBlock,
                                               TemporalConvBlock, VideoLDM, interpolation_mask, prediction_mask,
                                               unet_baseline)
from nano_videodiff.backbones.unet import AttentionBlock, ResBlock
from nano_videodiff.backbones.vdt import VDT


def small_videoldm(seed=0, randomised=True, **kw):
    model = VideoLDM(small_unet(seed), **kw)
    return randomise(model, seed=seed + 100) if randomised else model


def spatial_and_temporal(model):
    spatial = {n: p for n, p in model.named_parameters() if n.startswith("unet.")}
    temporal = {n: p for n, p in model.named_parameters() if not n.startswith("unet.")}
    return spatial, temporal


# Structure and alpha --------------------------------------------------------------------------------------

def test_a_temporal_layer_after_every_spatial_layer():
    model = small_videoldm(randomised=False)
    for layer in model.unet.spatial_layers():
        kind = {ResBlock: TemporalConvBlock, AttentionBlock: TemporalAttentionBlock}[type(layer)]
        assert isinstance(model.temporal[str(layer.index)], kind)
    baseline = unet_baseline(in_channels=3, channels=16, channel_mult=(1, 2), num_res_blocks=1,
                             attn_resolutions=(4,), image_size=8, heads=2)
    assert all(isinstance(layer, TemporalAttentionBlock) for layer in baseline.temporal.values())
    assert baseline.context_encoder is None and len(baseline.temporal) == 4  # 1 down + 1 middle + 2 up
    with pytest.raises(ValueError, match="needs temporal_conv"):
        VideoLDM(small_unet(), temporal_conv=False, context=True)


def test_alpha_is_the_sigmoid_of_its_parameter():
    model = small_videoldm(randomised=False)
    assert all(a == pytest.approx(1 / (1 + torch.exp(torch.tensor(-ALPHA_INIT_LOGIT)).item()))
               for a in model.alphas().values())  # SVD's init: sigmoid(0.5) = 0.622
    layer = model.temporal["0"]
    with torch.no_grad():
        layer.mix_logit.fill_(-1.3)
    assert torch.equal(layer.alpha(), torch.sigmoid(torch.tensor([-1.3])))
    assert layer.alpha().item() == pytest.approx(0.21416502)
    per_row = layer.alpha(torch.tensor([True, False, True]))
    assert per_row.tolist() == [1.0, pytest.approx(0.21416502), 1.0]  # images: alpha = 1 exactly


@pytest.mark.parametrize("kind", ["conv", "attention"])
def test_blend_formula(kind):
    """out = alpha * z + (1 - alpha) * z', z' = the temporal layer's own output (Video LDM Sec. 3.1)."""
    b, t, c = 2, 3, 8
    layer = TemporalConvBlock(c, emb_dim=6) if kind == "conv" else TemporalAttentionBlock(c, heads=2)
    randomise(layer, seed=1)
    z, emb = torch.randn(b * t, c, 4, 4, generator=gen(2)), torch.randn(b * t, 6, generator=gen(3))
    is_image = torch.tensor([False] * t + [True] * t)
    z_temporal = layer.temporal(z, emb, t, None)
    alpha = torch.sigmoid(layer.mix_logit)
    out = layer(z, emb, t, is_image)
    assert torch.allclose(out[:t], alpha * z[:t] + (1 - alpha) * z_temporal[:t], atol=1e-6)
    assert torch.equal(out[t:], z[t:])  # the image sample: alpha = 1, exactly the spatial output
    assert not torch.allclose(z_temporal, z)  # a randomised temporal layer really does something


def test_temporal_conv_block_formula_with_context():
    """z' = z + conv2(SiLU(GN(h) (1 + scale) + shift)), h = conv1(SiLU(GN([z, context]))), over b c t h w."""
    b, t, c, k = 2, 3, 4, 2
    layer = randomise(TemporalConvBlock(c, emb_dim=5, context_channels=k), seed=14)
    z, context = torch.randn(b * t, c, 2, 3, generator=gen(15)), torch.randn(b * t, k, 2, 3, generator=gen(16))
    emb = torch.randn(b, 5, generator=gen(17)).repeat_interleave(t, 0)
    x = z.reshape(b, t, c, 2, 3).transpose(1, 2)  # (b, c, t, h, w)
    h = torch.cat([x, context.reshape(b, t, k, 2, 3).transpose(1, 2)], dim=1)
    h = torch.nn.Conv3d.forward(layer.conv1, torch.nn.functional.silu(layer.norm1(h)))
    scale, shift = layer.emb_proj(torch.nn.functional.silu(emb[::t])).split(c, dim=1)
    h = layer.norm2(h) * (1 + scale[:, :, None, None, None]) + shift[:, :, None, None, None]
    expected = x + torch.nn.Conv3d.forward(layer.conv2, torch.nn.functional.silu(h))
    assert torch.allclose(layer.temporal(z, emb, t, context), expected.transpose(1, 2).reshape(b * t, c, 2, 3),
                          atol=1e-5)


def test_temporal_layers_start_as_the_identity():
    """Zero-initialised branch outputs: z' = z, so the video model starts as the image model."""
    t = 4
    z, emb = torch.randn(2 * t, 8, 4, 4, generator=gen(4)), torch.randn(2 * t, 6, generator=gen(5))
    torch.manual_seed(0)
    assert torch.equal(TemporalAttentionBlock(8, heads=2).temporal(z, emb, t, None), z)
    assert torch.equal(TemporalConvBlock(8, emb_dim=6, context_channels=3).temporal(
        z, emb, t, torch.randn(2 * t, 3, 4, 4)), z)
    model = VideoLDM(randomise(small_unet(), seed=6))  # a trained image model, fresh temporal layers
    x = video(2, t, 3, 8, 8)
    assert torch.allclose(model(x, torch.zeros(2))[0], model.unet(x, torch.zeros(2))[0], atol=1e-5)


def test_temporal_conv_mixes_neighbouring_frames_at_one_pixel():
    """Kernel (3, 1, 1): a change at (frame 0, pixel p) reaches frames 0-2 (two convs) at pixel p only."""
    layer = randomise(TemporalConvBlock(4, emb_dim=2), seed=7)
    layer.norm1, layer.norm2 = torch.nn.Identity(), torch.nn.Identity()  # GroupNorm couples all positions
    t = 5
    z, emb = torch.randn(t, 4, 3, 3, generator=gen(8)), torch.zeros(t, 2)
    z1 = z.clone()
    z1[0, :, 1, 2] += 1.0
    with torch.no_grad():
        moved = (layer.temporal(z1, emb, t, None) - layer.temporal(z, emb, t, None)).abs().sum(1)  # (T, H, W)
    assert (moved[:3, 1, 2] > 0).all() and torch.all(moved[3:] == 0)
    moved[:, 1, 2] = 0
    assert torch.all(moved == 0)


@pytest.mark.parametrize("kernel", [(3, 1, 1), (3, 3, 3), (1, 1, 1)])
def test_conv3d_is_a_3d_convolution(kernel):
    """The (k, 1, 1) fast path (a Conv2d over (T, H*W)) computes exactly what nn.Conv3d computes."""
    conv = randomise(Conv3d(4, 5, kernel, padding=tuple(k // 2 for k in kernel)), seed=12)
    x = torch.randn(2, 4, 6, 3, 5, generator=gen(13))
    assert torch.allclose(conv(x), torch.nn.Conv3d.forward(conv, x), atol=1e-5)
    model = small_videoldm(seed=10, temporal_kernel=kernel)
    assert model(video(1, 3, 3, 8, 8), torch.zeros(1))[0].shape == (1, 3, 3, 8, 8)


def test_temporal_attention_mixes_all_frames_at_one_pixel_and_knows_their_order(monkeypatch):
    layer = randomise(TemporalAttentionBlock(8, heads=2), seed=9)
    t = 4
    z, emb = torch.randn(t, 8, 3, 3, generator=gen(10)), torch.zeros(t, 1)
    z1 = z.clone()
    z1[0, :, 2, 0] += torch.randn(8, generator=gen(11))  # not a constant: LayerNorm would remove it
    with torch.no_grad():
        moved = (layer.temporal(z1, emb, t, None) - layer.temporal(z, emb, t, None)).abs().sum(1)
        assert (moved[:, 2, 0] > 0).all()  # every frame at that pixel ...
        moved[:, 2, 0] = 0
        assert torch.all(moved == 0)  # ... and no other pixel
        # the sinusoidal frame positions make the layer order-aware: reversing the frames does not just
        # reverse the output. Without them, attention would be permutation-equivariant.
        flip = torch.arange(t - 1, -1, -1)
        assert not torch.allclose(layer.temporal(z[flip], emb, t, None), layer.temporal(z, emb, t, None)[flip])
        monkeypatch.setattr(temporal_alignment, "sincos_1d", lambda pos, dim: torch.zeros(len(pos), dim))
        assert torch.allclose(layer.temporal(z[flip], emb, t, None), layer.temporal(z, emb, t, None)[flip],
                              atol=1e-6)


# alpha = 1: exactly the image model ------------------------------------------------------------------------

def test_alpha_one_reproduces_the_image_model_bit_exactly():
    model = small_videoldm(seed=1)  # every weight random: the temporal layers are far from the identity
    x, c_noise = video(2, 3, 3, 8, 8, seed=11), torch.tensor([0.2, -0.4])
    image_frames = model.unet(x, c_noise)[0]  # UNet.forward: each frame on its own
    video_out = model(x, c_noise)[0]
    assert not torch.allclose(video_out, image_frames)
    model.image_only = True  # skip every temporal layer
    assert torch.equal(model(x, c_noise)[0], image_frames)
    model.image_only = False
    with model.image_model():  # the declared hook (backbone.py) that sample.py --image_model uses
        assert torch.equal(model(x, c_noise)[0], image_frames)
    assert not model.image_only
    with pytest.raises(ValueError, match="not built on an image model"):  # every other backbone refuses
        with model.unet.image_model():
            pass
    with torch.no_grad():
        for layer in model.temporal.values():
            layer.mix_logit.fill_(float("inf"))  # alpha = sigmoid(inf) = 1 through the blend formula
    assert set(model.alphas().values()) == {1.0}
    assert torch.equal(model(x, c_noise)[0], image_frames)
    # frame by frame: the image model on frame 1 alone (equal up to float rounding: CPU conv kernels may
    # split a batch of 2 frames differently from one of 6)
    assert torch.allclose(model.unet(x[:, 1:2], c_noise)[0][:, 0], image_frames[:, 1], atol=1e-5)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_images_in_a_mixed_batch_are_exactly_the_image_model(dtype):
    model = small_videoldm(seed=2)
    x, c_noise = video(4, 3, 3, 8, 8, seed=12), torch.tensor([0.1, 0.5, -0.7, 0.0])
    is_image = torch.tensor([True, False, True, False])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        out = model(x, c_noise, Cond(is_image=is_image))[0]
        image_frames = model.unet(x, c_noise)[0]
    assert torch.equal(out[is_image], image_frames[is_image])
    assert not torch.allclose(out[~is_image].float(), image_frames[~is_image].float(), atol=1e-3)


def test_video_frames_interact_but_image_frames_do_not():
    model = small_videoldm(seed=3).eval()
    x, c_noise = video(2, 3, 3, 8, 8, seed=13), torch.zeros(2)
    cond = Cond(is_image=torch.tensor([False, True]))
    x1 = x.clone()
    x1[:, 0] += 1.0  # change frame 0 of both samples
    with torch.no_grad():
        moved = (model(x1, c_noise, cond)[0] - model(x, c_noise, cond)[0]).flatten(2).abs().amax(-1)  # (B, T)
    assert (moved[0] > 0).all()  # the video: every frame moves
    assert moved[1, 0] > 0 and torch.all(moved[1, 1:] == 0)  # the image sample: only frame 0


# Loading and freezing the image model ----------------------------------------------------------------------

def test_load_image_model_round_trip_and_clear_errors():
    image = Denoiser(randomise(small_unet(seed=4), seed=14))
    model = small_videoldm(seed=5)
    model.load_image_model(image.state_dict())  # Denoiser keys: "backbone.*"
    for (name, p), q in zip(model.unet.named_parameters(), image.backbone.parameters()):
        assert torch.equal(p, q), name
    model.image_only = True
    x = video(1, 2, 3, 8, 8, seed=15)
    assert torch.equal(Denoiser(model)(x, torch.ones(1)), image(x, torch.ones(1)))
    # a train.py checkpoint: its EMA weights; "_orig_mod." (torch.compile) prefixes are dropped
    ema = Denoiser(randomise(small_unet(seed=4), seed=16))
    ckpt = {"model": image.state_dict(), "ema": {"_orig_mod." + k: v for k, v in ema.state_dict().items()},
            "config": {}, "step": 3}
    model.load_image_model(ckpt)
    assert torch.equal(model.unet.conv_in.weight, ema.backbone.conv_in.weight)
    # a VideoLDM checkpoint: its spatial part
    other = small_videoldm(seed=6)
    model.load_image_model(Denoiser(other).state_dict())
    assert torch.equal(model.unet.conv_out.weight, other.unet.conv_out.weight)
    with pytest.raises(ValueError, match="different architecture.*shape mismatch.*unet_\\* settings"):
        model.load_image_model(Denoiser(small_unet(channels=8)).state_dict())
    with pytest.raises(ValueError, match="missing .*unexpected"):
        model.load_image_model(Denoiser(VDT(patch_size=2, dim=16, depth=1, heads=2)).state_dict())


def test_frozen_image_model_stays_exactly_the_same_while_temporal_layers_learn():
    den = Denoiser(small_videoldm(seed=7).freeze_image_model())
    spatial, temporal = spatial_and_temporal(den.backbone)
    assert all(not p.requires_grad for p in spatial.values()) and all(p.requires_grad for p in temporal.values())
    before = {n: p.detach().clone() for n, p in den.backbone.named_parameters()}
    # even an optimizer over *all* parameters, with weight decay, leaves parameters without gradients alone
    opt = torch.optim.AdamW(den.parameters(), lr=1e-2, weight_decay=0.1)
    x = video(4, 4, 3, 8, 8, seed=17).clamp(-1, 1)
    known = masking.predict(4, 4, 8, 8, num_context=1)
    for step in range(3):
        loss = den.loss(Batch(x, Cond(known=known, known_x=x, is_image=torch.tensor([False, False, False, True]))), generator=gen(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is None for p in spatial.values())
        opt.step()
    for name, p in spatial.items():
        assert torch.equal(p, before[name]), name
    unchanged = [n for n, p in temporal.items() if torch.equal(p, before[n])]
    assert unchanged == []


def test_from_config_registry_and_freezing():
    cfg = get_preset("smoke")
    cfg.model.backbone, cfg.model.heads = "videoldm", 2
    cfg.model.unet_channels, cfg.model.unet_channel_mult, cfg.model.unet_num_res_blocks = 8, "1,2", 1
    den = build_denoiser(cfg)
    assert isinstance(den.backbone, VideoLDM) and den.backbone.unet.num_levels == 2
    assert not any(p.requires_grad for p in den.backbone.unet.parameters())  # freeze_image_model = True
    assert all(p.requires_grad for p in den.backbone.temporal_parameters())
    cfg.model.freeze_image_model = False
    assert all(p.requires_grad for p in build_denoiser(cfg).parameters())


# Context frames: prediction and interpolation --------------------------------------------------------------

def test_context_reaches_the_temporal_layers_and_only_known_content_is_read():
    model = small_videoldm(seed=8).eval()
    b, t = 2, 4
    x, c_noise = video(b, t, 3, 8, 8, seed=18), torch.zeros(b)
    known = masking.predict(b, t, 8, 8, num_context=2)
    with torch.no_grad():
        with_context = model(x, c_noise, Cond(known=known, known_x=x))[0]
        without = model(x, c_noise, Cond())[0]
        assert not torch.allclose(with_context[:, 2:], without[:, 2:])  # the mask is information
        frames, mask = x.flatten(0, 1), known.flatten(0, 1).float()
        features = model.context_encoder(frames, mask)
        changed = x.clone()
        changed[:, 2:] += 1.0  # unknown frames: invisible to the context encoder
        for a, c in zip(features, model.context_encoder(changed.flatten(0, 1), mask)):
            assert torch.equal(a, c)
    assert [f.shape[-1] for f in features] == [8, 4]  # one feature map per U-Net level


@pytest.mark.parametrize("task", ["predict", "interpolate"])
def test_sampler_returns_context_frames_exactly(task):
    den = Denoiser(small_videoldm(seed=9), sigma_data=0.5)
    if task == "predict":
        known = masking.predict(2, 4, 8, 8, num_context=2)
    else:  # Video LDM's T -> 4T: 3 frames generated between two key frames
        known = interpolation_mask(2, num_key_frames=2, H=8, W=8, factor=4)
        assert known[:, :, 0, 0, 0].tolist() == [[True, False, False, False, True]] * 2
    t = known.shape[1]
    context = video(2, t, 3, 8, 8, seed=19).clamp(-1, 1)
    out = sample(den.forward_with_state, torch.randn(2, t, 3, 8, 8, generator=gen(20)), edm_sigmas(3),
                 Cond(known=known, known_x=context))
    given = known.expand_as(out)
    assert torch.equal(out[given], context[given])
    assert torch.isfinite(out).all() and not torch.allclose(out[~given], context[~given])


def test_context_masks():
    known = prediction_mask(300, 5, 2, 3, generator=gen(21))
    assert known.shape == (300, 5, 1, 2, 3) and known.dtype == torch.bool
    frames = known[:, :, 0, 0, 0]
    counts = frames.sum(1)
    assert torch.equal(frames, torch.arange(5)[None] < counts[:, None])  # a prefix of given frames
    assert set(counts.tolist()) == {0, 1, 2}  # "0, 1 or 2 context frames"
    assert torch.all(known == known[..., :1, :1])  # whole frames
    key = interpolation_mask(1, num_key_frames=3, H=2, W=2, factor=4)[0, :, 0, 0, 0]
    assert key.tolist() == [i % 4 == 0 for i in range(9)]  # 3 key frames -> 9 frames, 0, 4, 8 given
    with pytest.raises(ValueError, match="2 key frames"):
        interpolation_mask(1, 1, 2, 2)


def test_plot_alphas_draws_one_bar_per_temporal_layer(tmp_path):
    """The learned-alpha chart (tutorial 05 draws it; sample.py --image_model used to) renders to a file."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    model = small_videoldm(seed=4)
    fig, ax = plt.subplots()
    model.plot_alphas(ax)
    assert len(ax.patches) == len(model.temporal)
    fig.savefig(tmp_path / "alphas.png")
    plt.close(fig)
    assert (tmp_path / "alphas.png").stat().st_size > 0
