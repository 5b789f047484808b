"""Tests for W.A.L.T's causal 3D autoencoder (nano_videodiff/backbones/causal_vae.py; W.A.L.T Sec. 4.1, MAGVIT-v2)."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import gen, video

from nano_videodiff.backbones.causal_vae import CausalConv3d, CausalVAE, DiagonalGaussian, latent_frames
from nano_videodiff.conditioning import Batch, Cond
from nano_videodiff.training.config import DataConfig, ModelConfig
from nano_videodiff.modality import image_to_video


def tiny_vae(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(in_channels=3, channels=8, channel_mult=(1, 2), latent_channels=4, spatial_down=2, temporal_down=2)
    cfg.update(kw)
    return CausalVAE(**cfg)


def first_changed(a, b):
    """Index along dim 1 of the first frame where a and b differ (len if none)."""
    differs = (a != b).flatten(2).any(-1).any(0)
    return int(differs.nonzero()[0]) if differs.any() else a.shape[1]


# CausalConv3d -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,stride", [(3, 1), ((2, 3, 3), 1), ((4, 1, 1), 1), (3, (2, 1, 1)), (3, (2, 2, 2))])
def test_causal_conv_equals_conv_on_first_frame_padded_input(kernel, stride):
    """Padding = k_t - 1 copies of the first frame before the clip, none after; zeros in space."""
    torch.manual_seed(0)
    conv = CausalConv3d(3, 5, kernel, stride)
    w = conv.conv.weight
    kt, kh, kw = w.shape[2:]
    x = torch.randn(2, 3, 7, 6, 6)
    padded = torch.cat([x[:, :, :1]] * (kt - 1) + [x], dim=2)
    expected = F.conv3d(padded, w, conv.conv.bias, stride=conv.conv.stride, padding=(0, kh // 2, kw // 2))
    out = conv(x)
    st = conv.conv.stride[0]
    assert out.shape[2] == (7 - 1) // st + 1  # (T - 1) // s_t + 1 frames
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kernel", [3, 4, (2, 3, 3)])
def test_causal_conv_output_never_sees_the_future(kernel):
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, kernel)
    centred = CausalConv3d(2, 3, kernel, causal=False)
    centred.load_state_dict(conv.state_dict())
    x = torch.randn(1, 2, 8, 5, 5)
    for t in range(8):
        y = x.clone()
        y[:, :, t] += torch.randn(2, 5, 5)
        a, b = conv(x), conv(y)
        assert torch.equal(a[:, :, :t], b[:, :, :t]), f"frames before {t} changed"
        assert not torch.allclose(a[:, :, t], b[:, :, t]), f"frame {t} did not change"
        if t > 0:  # the regular centred conv leaks frame t into frame t - 1: what causality removes
            assert not torch.allclose(centred(x)[:, :, t - 1], centred(y)[:, :, t - 1])


# The whole autoencoder: causality ------------------------------------------------------------------------------

@pytest.mark.parametrize("ft", [2, 4])
def test_latent_frame_j_sees_only_pixel_frames_up_to_j_ft(ft):
    """Latent frame 0 depends on frame 0 alone; changing frame t changes no latent frame before ceil(t/f_t)."""
    vae = tiny_vae(temporal_down=ft)
    T = 1 + 2 * ft
    x = video(2, T, 3, 8, 8)
    z = vae.encode(x)
    for t in range(1, T):
        y = x.clone()
        y[:, t] = torch.rand(2, 3, 8, 8, generator=gen(t)) * 2 - 1
        zy = vae.encode(y)
        assert torch.equal(z[:, 0], zy[:, 0])
        assert first_changed(z, zy) == math.ceil(t / ft), f"frame {t}"


def test_a_non_causal_encoder_mixes_later_frames_into_latent_frame_0():
    """Control: the same network with centred convolutions loses the property tested above."""
    vae = tiny_vae(causal=False)
    x = video(1, 5, 3, 8, 8)
    y = x.clone()
    y[:, 3] = 0.0
    assert not torch.allclose(vae.encode(x)[:, 0], vae.encode(y)[:, 0])


@pytest.mark.parametrize("ft", [2, 4])
def test_decoder_is_causal(ft):
    """Latent frame j (> 0) becomes frames f_t (j-1) + 1 .. f_t j: earlier output frames do not change."""
    vae = tiny_vae(temporal_down=ft)
    z = video(2, 4, 4, 4, 4)
    out = vae.decode(z)
    torch.testing.assert_close(vae.decode(z[:, :1]), out[:, :1], rtol=0, atol=1e-5)
    for j in range(1, 4):
        w = z.clone()
        w[:, j] += 1.0
        assert first_changed(out, vae.decode(w)) == ft * (j - 1) + 1


# Frame counts and shapes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ft", [1, 2, 4])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_one_plus_ft_k_frames_give_one_plus_k_latent_frames_and_back(ft, k):
    vae = tiny_vae(temporal_down=ft, spatial_down=2)
    T = 1 + ft * k
    x = video(2, T, 3, 8, 12)
    assert vae.latent_shape(T, 8, 12) == (1 + k, 4, 4, 6)
    z = vae.encode(x)
    assert z.shape == (2, 1 + k, 4, 4, 6)
    assert vae.decode(z).shape == x.shape


def test_spatial_factor_eight_and_paper_channel_mult():
    vae = tiny_vae(spatial_down=8, temporal_down=4, channel_mult=(1, 2, 2, 4), channels=4)
    x = video(1, 5, 3, 16, 16)
    z = vae.encode(x)
    assert z.shape == (1, 2, 4, 2, 2)  # (1 + 4/4) x 16/8 x 16/8: the paper's 17x128^2 -> 5x16^2 pattern
    assert vae.decode(z).shape == x.shape


@pytest.mark.parametrize("ft,T,valid", [(2, 2, "1, 3, 5, 9, 17"), (2, 16, "1, 3, 5, 9, 17"),
                                        (4, 8, "1, 5, 9, 17, 33"), (2, 0, "1, 3, 5")])
def test_other_frame_counts_fail_with_the_valid_ones(ft, T, valid):
    vae = tiny_vae(temporal_down=ft)
    with pytest.raises(ValueError, match=rf"use 1 \+ {ft}k frames: {valid}"):
        vae.latent_shape(T, 8, 8)
    if T > 0:
        with pytest.raises(ValueError, match="frames cannot be encoded"):
            vae.encode(video(1, T, 3, 8, 8))
    assert latent_frames(1 + 3 * ft, ft) == 4


def test_bad_sizes_and_factors_fail_clearly():
    with pytest.raises(ValueError, match="divisible by the spatial factor"):
        tiny_vae().latent_shape(3, 8, 7)
    with pytest.raises(ValueError, match="power of 2"):
        tiny_vae(temporal_down=3)
    with pytest.raises(ValueError, match="channel_mult"):
        tiny_vae(channel_mult=(1, 2, 2, 4))  # f_s = 2 has 2 levels, not 4


def test_from_config_reads_the_vae_fields_and_checks_the_clips():
    vae = CausalVAE.from_config(ModelConfig(), DataConfig(num_frames=9, height=32, width=32))
    assert vae.latent_shape(9, 32, 32) == (5, 4, 8, 8)  # defaults: f_s = 4, f_t = 2, c = 4
    assert vae.encoder[0].conv.in_channels == 3 and vae.kl_weight == ModelConfig().vae_kl_weight
    with pytest.raises(ValueError, match="use 1 \\+ 2k frames"):
        CausalVAE.from_config(ModelConfig(), DataConfig(num_frames=16, height=32, width=32))


# Images: a one-frame video, and the first frame of any video ---------------------------------------------------

def test_an_image_is_a_one_frame_video_and_the_first_frame_of_every_video_starting_with_it():
    vae = tiny_vae()
    image = video(2, 1, 3, 8, 8)[:, 0]
    z_image = vae.encode(image)
    assert z_image.shape == (2, 1, 4, 4, 4)
    torch.testing.assert_close(z_image, vae.encode(image[:, None]), rtol=0, atol=0)
    for seed in range(3):
        clip = video(2, 5, 3, 8, 8, seed=seed + 10)
        clip[:, 0] = image
        torch.testing.assert_close(vae.encode(clip)[:, :1], z_image, rtol=0, atol=1e-5)
        torch.testing.assert_close(vae.posterior(clip).logvar[:, :1], vae.posterior(image).logvar,
                                   rtol=0, atol=1e-5)
    assert vae.reconstruct(image).shape == image.shape


def test_is_image_encodes_frame_0_alone_and_repeats():
    vae = tiny_vae()
    image = video(2, 1, 3, 8, 8)[:, 0]
    as_video, _ = image_to_video(image, 5)
    z = vae.encode(as_video, is_image=torch.tensor([True, True]))
    assert torch.equal(z, vae.encode(image).expand(-1, 3, -1, -1, -1))
    out = vae.decode(z, is_image=torch.tensor([True, True]))
    assert out.shape == as_video.shape
    assert torch.equal(out, vae.decode(z[:, :1]).expand(-1, 5, -1, -1, -1))


def test_a_still_video_gets_the_image_latent_in_every_latent_frame():
    """Why the pad frames copy the first frame: an image repeated over T frames then needs no special case
    in the encoder (with zero padding, latent frame 0 would see black pad frames, the others would not)."""
    vae = tiny_vae()
    image = video(2, 1, 3, 8, 8)[:, 0]
    still, _ = image_to_video(image, 9)
    torch.testing.assert_close(vae.encode(still), vae.encode(image).expand(-1, 5, -1, -1, -1), rtol=0, atol=1e-5)
    zero_padded = tiny_vae()
    for conv in [m for m in zero_padded.modules() if isinstance(m, CausalConv3d)]:
        conv.forward = lambda x, conv=conv: conv.conv(F.pad(x, (0, 0, 0, 0, conv.time_pad[0], 0)))
    z = zero_padded.encode(still)
    assert not torch.allclose(z[:, 0], z[:, 1], atol=1e-3)


def test_mixed_image_video_batch_equals_each_sample_alone():
    vae = tiny_vae()
    clips = video(4, 5, 3, 8, 8)
    clips[1] = clips[1, :1]  # samples 1 and 3 are images as videos
    clips[3] = clips[3, :1]
    is_image = torch.tensor([False, True, False, True])
    z = vae.encode(clips, is_image)
    out = vae.decode(z, is_image)
    for b in range(4):
        flag = is_image[b:b + 1]
        torch.testing.assert_close(z[b:b + 1], vae.encode(clips[b:b + 1], flag), rtol=0, atol=1e-5)
        torch.testing.assert_close(out[b:b + 1], vae.decode(z[b:b + 1], flag), rtol=0, atol=1e-5)
    assert torch.equal(z[1, 0], z[1, 2]) and not torch.equal(z[0, 0], z[0, 2])
    loss = vae.loss(Batch(clips, Cond(is_image=is_image)), generator=gen(0))
    loss.backward()
    grads = [p.grad for p in vae.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# Posterior and loss --------------------------------------------------------------------------------------------------

def test_kl_is_the_closed_form_gaussian_kl():
    mean = torch.randn(2, 3, 4, 2, 2, generator=gen(0))
    logvar = torch.randn(2, 3, 4, 2, 2, generator=gen(1)) * 2
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mean, torch.exp(0.5 * logvar)),
                                                 torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(DiagonalGaussian(mean, logvar).kl(), expected)
    assert DiagonalGaussian(torch.zeros(3), torch.zeros(3)).kl().abs().max() == 0  # q = prior


def test_sample_is_mean_plus_std_times_noise():
    mean, logvar = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    eps = torch.randn(mean.shape, generator=gen(5))
    z = DiagonalGaussian(mean, logvar).sample(gen(5))
    torch.testing.assert_close(z, mean + torch.exp(logvar / 2) * eps)


def test_loss_is_mse_plus_weighted_kl_per_element():
    vae = tiny_vae(kl_weight=0.25)
    x = video(2, 3, 3, 8, 8).clamp(-1, 1)
    post = vae.posterior(x)
    z = post.mean + torch.exp(post.logvar / 2) * torch.randn(post.mean.shape, generator=gen(3))
    mse = (vae.decode(z) - x).pow(2).mean()
    kl = (0.5 * (post.mean ** 2 + post.logvar.exp() - 1 - post.logvar)).mean()
    terms = vae.loss_terms(x, generator=gen(3))
    torch.testing.assert_close(terms["reconstruction"], mse)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(vae.loss(Batch(x), generator=gen(3)), mse + 0.25 * kl)
    # per-element means, not sums: the same data twice (or a clip of 3 times the length) is the same KL
    torch.testing.assert_close(vae.loss_terms(torch.cat([x, x]))["kl"], kl)
    still = x[:, :1].expand(-1, 7, -1, -1, -1)  # a still 7-frame clip: 4 identical latent frames...
    torch.testing.assert_close(vae.loss_terms(still)["kl"], post.kl()[:, :1].mean(), rtol=1e-4, atol=1e-6)


# Latent normalisation ---------------------------------------------------------------------------------------------

def test_fitted_latent_stats_give_zero_mean_unit_std_per_channel():
    vae = tiny_vae()
    data = video(6, 5, 3, 8, 8) * 0.5 + 0.3
    raw = vae.encode(data)
    assert (raw.mean(dim=(0, 1, 3, 4)).abs() > 0.01).any()  # not already normalised
    mean, std = vae.fit_latent_stats(data, batch_size=4)
    z = vae.to_latent(data)
    torch.testing.assert_close(z.mean(dim=(0, 1, 3, 4)), torch.zeros(4), rtol=0, atol=1e-5)
    torch.testing.assert_close(z.std(dim=(0, 1, 3, 4), unbiased=False), torch.ones(4), rtol=0, atol=1e-4)
    torch.testing.assert_close(mean, raw.mean(dim=(0, 1, 3, 4)), rtol=0, atol=1e-6)
    torch.testing.assert_close(vae.denormalize(vae.normalize(raw)), raw, rtol=0, atol=1e-5)
    torch.testing.assert_close(vae.from_latent(z), vae.decode(raw), rtol=0, atol=1e-5)
    # an iterable of batches gives the same statistics; the buffers travel in the state_dict
    other = tiny_vae()
    other.fit_latent_stats(iter(data.split(2)))
    torch.testing.assert_close(other.latent_std, std)
    flags = torch.tensor([True, False, True, False, False, True])
    z_mixed = vae.encode(data, flags)
    other.fit_latent_stats(data, is_image=flags, batch_size=4)
    torch.testing.assert_close(other.latent_mean, z_mixed.mean(dim=(0, 1, 3, 4)), rtol=0, atol=1e-6)
    torch.testing.assert_close(other.latent_std, z_mixed.std(dim=(0, 1, 3, 4), unbiased=False), rtol=0, atol=1e-5)
    fresh = tiny_vae()
    fresh.load_state_dict(vae.state_dict())
    assert torch.equal(fresh.latent_mean, mean) and torch.equal(fresh.latent_std, std)


# Training --------------------------------------------------------------------------------------------------------

def test_a_few_adam_steps_reduce_the_reconstruction_loss():
    import toy_data
    batch = toy_data.get_batch(toy_data.build_dataset(DataConfig(num_frames=5, height=16, width=16)), [0, 1])["video"]
    vae = tiny_vae(channels=8)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    with torch.no_grad():
        before = (vae.reconstruct(batch) - batch).abs().mean()
    for step in range(40):
        loss = vae.loss(Batch(batch), generator=gen(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = (vae.reconstruct(batch) - batch).abs().mean()
    assert after < 0.5 * before, (before, after)
