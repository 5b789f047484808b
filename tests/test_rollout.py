"""Autoregressive rollout (nano_videodiff/rollout.py): exact stitching, window count, context guidance, and
W.A.L.T's re-encoding of the last decoded frames for a latent model."""
import math

import pytest
import torch
from helpers import FakeModel

from nano_videodiff import latent
from nano_videodiff.errors import UserError
from nano_videodiff.rollout import num_windows, rollout
from nano_videodiff.training.presets import get_preset

STEP = 0.03  # the fake denoiser's brightness increase per generated frame


def known_frames(cond):
    return int(cond.known[0].flatten(1).all(1).sum())


def last_plus_ramp(x, sigma, cond):
    """x0 of every generated frame t: the last given frame + STEP * (t - k + 1) (independent of x)."""
    if cond.known is None:  # the context-free branch of context guidance: a grey video
        return torch.zeros_like(x)
    k = known_frames(cond)
    j = torch.arange(x.shape[1], dtype=x.dtype).clamp(min=k - 1) - (k - 1)
    return cond.known_x[:, k - 1:k] + STEP * j[None, :, None, None, None]


def pixel_cfg(t=8, k=3, size=8, context_dropout=0.0):
    cfg = get_preset("smoke")
    d = cfg.data
    d.num_frames, d.height, d.width, d.channels, d.num_classes, d.autoencoder = t, size, size, 3, 0, ""
    cfg.task.masking, cfg.task.num_context, cfg.task.context_dropout = "predict", k, context_dropout
    cfg.diffusion.sigma_max = 1.0  # small numbers: the fake's x0 comes back to ~1e-7
    return cfg


def context_clip(b=2, length=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.4 * torch.rand(b, length, 3, size, size, generator=g) - 0.2  # ramps stay inside [-1, 1]


@pytest.mark.parametrize("t,k,given,n,solver", [(8, 3, 4, 30, "heun"), (8, 4, 4, 8, "euler"),
                                                (6, 1, 2, 17, "euler"), (8, 3, 5, 6, "heun")])
def test_stitching_is_exact_and_each_window_continues_the_last(t, k, given, n, solver):
    cfg, context = pixel_cfg(t, k), context_clip(length=given)
    model = FakeModel(last_plus_ramp)
    steps = 3
    out = rollout(model, cfg, context, n, steps=steps, solver=solver)
    assert out.shape == (2, n, 3, 8, 8)
    assert torch.equal(out[:, :given], context)  # the given frames, bit-exactly
    # the analytic clip: every generated frame = last given frame + STEP per frame after it; a window that
    # started from the given frames instead of the previous window's would restart the ramp
    offsets = torch.arange(1, n - given + 1, dtype=torch.float32) * STEP
    expected = context[:, -1:] + offsets[None, :, None, None, None]
    torch.testing.assert_close(out[:, given:], expected, atol=1e-5, rtol=0)
    windows = num_windows(given, n, t, k)
    assert windows == math.ceil((n - given) / (t - k))
    per_sample = 2 * steps - 1 if solver == "heun" else steps  # Heun's last step is Euler (sampler.py)
    assert model.calls == windows * per_sample
    assert len(model.contexts) == windows
    for w, shown in enumerate(model.contexts):  # window w's context is the k frames before its first
        start = given + w * (t - k)
        assert torch.equal(shown[:, :k], out[:, start - k:start])


def test_context_guidance_runs_in_every_window():
    t, k, given, n, scale = 8, 3, 3, 23, 0.5
    cfg, context = pixel_cfg(t, k, context_dropout=0.1), context_clip(length=given)
    model = FakeModel(last_plus_ramp)
    out = rollout(model, cfg, context, n, steps=2, solver="euler", cfg_scale=scale, guidance="context")
    # guided x0 = D_uncond + s (D_cond - D_uncond) with D_uncond = 0: window by window, by hand
    last, frames = context[:, -1:], [context]
    for _ in range(num_windows(given, n, t, k)):
        new = scale * (last + STEP * torch.arange(1, t - k + 1, dtype=torch.float32)[None, :, None, None, None])
        frames.append(new)
        last = new[:, -1:]
    torch.testing.assert_close(out, torch.cat(frames, 1)[:, :n], atol=1e-5, rtol=0)
    assert model.calls == 2 * num_windows(given, n, t, k) * 2  # two branches per evaluation


def test_window_seeds_differ_and_one_window_is_generate():
    from nano_videodiff.generation import generate
    from nano_videodiff import masking
    cfg, context = pixel_cfg(8, 4), context_clip(length=4)
    noisy = FakeModel(lambda x, sigma, cond: x / (1 + sigma.reshape(-1, 1, 1, 1, 1)))  # depends on the noise
    window = torch.cat([context, torch.zeros_like(context)], 1)
    one = generate(noisy, cfg, 2, known=masking.predict(2, 8, 8, 8, num_context=4), known_x=window, steps=2, seed=5)
    out = rollout(noisy, cfg, context, 12, steps=2, seed=5)
    assert torch.equal(out[:, :8], one)  # window 0 is generate with the same seed
    assert not torch.allclose(out[:, 8:12] - out[:, 7:8], out[:, 4:8] - out[:, 3:4])  # fresh noise


def test_generated_first_clip_and_bad_input():
    cfg = pixel_cfg(8, 3)
    cfg.task.masking = "vdt"  # a model that also generates from nothing
    model = FakeModel(lambda x, sigma, cond: torch.full_like(x, 0.1) if cond.known is None
                      else last_plus_ramp(x, sigma, cond))
    out = rollout(model, cfg, None, 13, num_videos=3, steps=1, solver="euler")
    assert out.shape == (3, 13, 3, 8, 8)
    torch.testing.assert_close(out[:, :8], torch.full_like(out[:, :8], 0.1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 12], torch.full_like(out[:, 12], 0.1 + 5 * STEP), atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="at least k = 3"):
        rollout(model, cfg, context_clip(length=2), 12)
    with pytest.raises(UserError, match="leave frames to predict"):
        rollout(model, cfg, context_clip(length=8), 12, num_context=8)
    with pytest.raises(UserError, match="shorter than"):
        rollout(model, cfg, context_clip(length=6), 5)


def test_latent_model_reencodes_the_last_decoded_frames():
    """W.A.L.T App. A: each window encodes the last k = 1 + f_t m frames of the decoded video (a causal
    prefix: 1 + m latent frames), samples the rest and decodes; the given pixels come back exactly."""
    t, k, f = 9, 5, 2
    cfg = pixel_cfg(t, k, size=16)
    m = cfg.model
    m.vae_channels, m.vae_channel_mult, m.vae_latent_channels, m.vae_spatial_down, m.vae_temporal_down = \
        8, "1", 4, 4, f
    cfg.data.autoencoder = "fitted.pt"  # only marks the config as latent; the weights are random here
    torch.manual_seed(0)
    vae = latent.build_frozen_autoencoder(cfg)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(1)
    model = FakeModel(lambda x, sigma, cond: torch.where(cond.known.expand_as(x), cond.known_x,
                                                         torch.randn(x.shape, generator=g)), autoencoder=vae)
    context = context_clip(length=6, size=16)
    n = 22
    out = rollout(model, cfg, context, n, steps=1, solver="euler")
    assert torch.equal(out[:, :6], context)
    windows = num_windows(6, n, t, k)
    assert len(model.contexts) == windows == 4
    for w, shown in enumerate(model.contexts):
        start = 6 + w * (t - k)
        # the context latents are the encoding of the last k output frames alone: 1 + (k - 1) / f latents
        alone = latent.encode(vae, out[:, start - k:start])
        assert alone.shape[1] == 1 + (k - 1) // f
        torch.testing.assert_close(shown[:, :alone.shape[1]], alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="prefix"):
        rollout(model, cfg, context, n, num_context=4, steps=1)  # 4 != 1 + 2m frames
