"""Tests for nano_videodiff.edm: EDM / Snap Video preconditioning, the SNR argument, the denoiser and its loss,
and how the denoiser applies a ``known`` mask (edm.network_input / paste_known / mean_over_generated).

Every expected value is written here from the paper formulas (EDM Table 1, Snap Video Table 1 and Sec. 3.2),
never computed with the module's own helpers.
"""
import math

import pytest
import torch
from torch import nn

from nano_videodiff import edm
from nano_videodiff.conditioning import Batch, Cond
from nano_videodiff.edm import Denoiser

SIGMAS = [0.002, 0.01, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0]
B, T, C, H, W = 4, 3, 2, 4, 5


def gen(seed):
    return torch.Generator().manual_seed(seed)


def per_sample(v, ndim=5):
    return v.reshape(-1, *([1] * (ndim - 1)))


# Independent reference formulas (float64) ------------------------------------------------------------

def ref_edm(s, sd):
    """EDM Table 1, "Ours" column."""
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / torch.sqrt(s**2 + sd**2)
    c_in = 1 / torch.sqrt(s**2 + sd**2)
    c_noise = torch.log(s) / 4
    return c_skip, c_out, c_in, c_noise


def ref_snap(s, sd, si):
    """Snap Video Table 1 ("Our" column), |c_out| (the paper's sign is negative, edm.py flips it)."""
    c_skip = si * sd**2 / (si * s**2 + sd**2)
    c_out = si * s * sd * torch.sqrt(s**2 + sd**2) / (sd**2 + si * s**2)
    c_in = 1 / torch.sqrt(sd**2 / si**2 + s**2)
    return c_skip, c_out, c_in


def sigma_grid():
    # the float32 values the code will see, promoted to float64 for the reference
    return torch.tensor(SIGMAS, dtype=torch.float32).double()


# Preconditioning ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_preconditioning_is_edm_table1_at_sigma_in_1(sd):
    s = sigma_grid()
    got = edm.preconditioning(s.float(), sd)  # sigma_in defaults to 1
    for name, g, e in zip(["c_skip", "c_out", "c_in", "c_noise"], got, ref_edm(s, sd)):
        assert g.dtype == torch.float32, name
        torch.testing.assert_close(g.double(), e, rtol=2e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("sd", [0.5, 1.0])
@pytest.mark.parametrize("si", [2.0, 4.0, 32.0])
def test_preconditioning_is_snap_table1(sd, si):
    s = sigma_grid()
    c_skip, c_out, c_in, c_noise = edm.preconditioning(s.float(), sd, si)
    e_skip, e_out, e_in = ref_snap(s, sd, si)
    torch.testing.assert_close(c_skip.double(), e_skip, rtol=2e-6, atol=0)
    torch.testing.assert_close(c_out.abs().double(), e_out, rtol=2e-6, atol=0)
    assert (c_out > 0).all(), "edm.py's documented sign: c_out > 0 so that sigma_in = 1 is EDM exactly"
    torch.testing.assert_close(c_in.double(), e_in, rtol=2e-6, atol=0)
    torch.testing.assert_close(c_noise.double(), torch.log(s) / 4, rtol=2e-6, atol=1e-7)  # unchanged by sigma_in
    # and these really differ from EDM's column, so the test above can tell the two apart
    assert not torch.allclose(c_skip.double(), ref_edm(s, sd)[0], rtol=1e-3)


@pytest.mark.parametrize("si", [1.0, 2.0, 4.0, 32.0])
@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_f_space_weight(si, sd):
    """lambda * c_out^2 = (s^2+sd^2)^2 / (s^2+sd^2/si)^2 (Snap Video's w), = 1 at sigma_in = 1 (EDM Eq. 8)."""
    s = sigma_grid()
    _, c_out, _, _ = edm.preconditioning(s.float(), sd, si)
    w = edm.loss_weight(s.float(), sd).double() * c_out.double() ** 2
    expected = (s**2 + sd**2) ** 2 / (s**2 + sd**2 / si) ** 2
    torch.testing.assert_close(w, expected, rtol=1e-5, atol=0)
    if si == 1.0:
        torch.testing.assert_close(w, torch.ones_like(w), rtol=1e-5, atol=0)


@pytest.mark.parametrize("si", [1.0, 4.0])
def test_d_space_loss_equals_f_space_loss(si):
    """lambda ||D - x||^2 = w ||F - F_target||^2 for any network output F (EDM Eq. 8, Snap Video Eq. 3)."""
    sd = 0.5
    g = gen(0)
    x = torch.randn(B, T, C, H, W, generator=g) * sd
    eps = torch.randn(B, T, C, H, W, generator=g)
    F_any = torch.randn(B, T, C, H, W, generator=g)
    sigma = torch.tensor([0.02, 0.4, 3.0, 50.0])
    c_skip, c_out, _, _ = (per_sample(c) for c in edm.preconditioning(sigma, sd, si))
    D = c_skip * edm.add_noise(x, eps, sigma, si) + c_out * F_any
    s64 = sigma.double()
    lam = (s64**2 + sd**2) / (s64 * sd) ** 2
    w = (s64**2 + sd**2) ** 2 / (s64**2 + sd**2 / si) ** 2
    lhs = lam * ((D - x).double() ** 2).flatten(1).sum(1)
    rhs = w * ((F_any - edm.training_target(x, eps, sigma, sd)).double() ** 2).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=0)


@pytest.mark.parametrize("si", [1.0, 2.0, 4.0, 32.0])
@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_skip_plus_target_reconstructs_x(si, sd):
    g = gen(1)
    n = 64
    x = torch.randn(n, T, C, H, W, generator=g) * sd
    eps = torch.randn(n, T, C, H, W, generator=g)
    sigma = torch.exp(torch.linspace(math.log(0.002), math.log(80.0), n))
    s = per_sample(sigma)

    x_sigma = edm.add_noise(x, eps, sigma, si)
    torch.testing.assert_close(x_sigma, x / si + s * eps, rtol=1e-6, atol=1e-6)

    target = edm.training_target(x, eps, sigma, sd)
    v = sd**2 * eps - s * x  # Snap Video's v-target
    c_nrm = 1 / (sd * torch.sqrt(s**2 + sd**2))
    torch.testing.assert_close(target, -c_nrm * v, rtol=1e-5, atol=1e-6)

    c_skip, c_out, _, _ = (per_sample(c) for c in edm.preconditioning(sigma, sd, si))
    torch.testing.assert_close(c_skip * x_sigma + c_out * target, x, rtol=0, atol=2e-5)


@pytest.mark.parametrize("si", [1.0, 4.0, 32.0])
@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_network_input_and_target_have_unit_variance(si, sd):
    g = gen(2)
    n = 200_000
    x = torch.randn(n, generator=g) * sd  # data of std sigma_data
    eps = torch.randn(n, generator=g)
    for s in [0.005, 0.05, 0.2, 1.0, 10.0, 80.0]:
        sigma = torch.tensor(s)
        _, _, c_in, _ = edm.preconditioning(sigma, sd, si)
        net_in = c_in * edm.add_noise(x, eps, sigma, si)
        target = edm.training_target(x, eps, sigma, sd)
        # the std of a 200k sample has relative error ~ 1/sqrt(2n) = 0.0016
        assert abs(net_in.std().item() - 1) < 0.01, (s, net_in.std().item())
        assert abs(target.std().item() - 1) < 0.01, (s, target.std().item())


def test_loss_weight():
    s = sigma_grid()
    for sd in [0.5, 1.0]:
        got = edm.loss_weight(s.float(), sd)
        torch.testing.assert_close(got.double(), 1 / sd**2 + 1 / s**2, rtol=2e-6, atol=0)


@pytest.mark.parametrize("P_mean,P_std", [(-1.2, 1.2), (0.4, 0.5)])
def test_sample_training_sigma_statistics(P_mean, P_std):
    sigma = edm.sample_training_sigma(200_000, P_mean, P_std, generator=gen(3))
    assert sigma.shape == (200_000,) and sigma.dtype == torch.float32
    assert (sigma > 0).all()
    log_s = sigma.double().log()
    # standard errors: P_std / sqrt(n) ~ 0.0027 for the mean, P_std / sqrt(2n) ~ 0.002 for the std
    assert abs(log_s.mean().item() - P_mean) < 0.015
    assert abs(log_s.std().item() - P_std) < 0.015


def test_sample_training_sigma_reproducible():
    a = edm.sample_training_sigma(16, generator=gen(7))
    b = edm.sample_training_sigma(16, generator=gen(7))
    c = edm.sample_training_sigma(16, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# The SNR argument (Snap Video Sec. 3.2) -------------------------------------------------------------

def test_input_scale_snap_video_numbers():
    # Snap Video Sec. 3.5: 16 frames; 64x36 is the base (s = 1) -> 4; 512x288 (s = 8) -> 32.
    assert edm.input_scale(16, 36, 64, base_height=36, base_width=64) == pytest.approx(4.0, rel=1e-12)
    assert edm.input_scale(16, 288, 512, base_height=36, base_width=64) == pytest.approx(32.0, rel=1e-12)
    # an image (T = 1) at the base resolution is plain EDM
    assert edm.input_scale(1, 64, 64, base_height=64, base_width=64) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("T_,s_,bh,bw", [(1, 2, 16, 16), (4, 1, 8, 12), (8, 3, 10, 6), (5, 0.5, 32, 64)])
def test_input_scale_is_s_sqrt_T(T_, s_, bh, bw):
    h, w = int(bh * s_), int(bw * s_)
    assert edm.input_scale(T_, h, w, bh, bw) == pytest.approx(s_ * math.sqrt(T_), rel=1e-12)


def test_input_scale_default_base_is_snap_video_first_stage():
    # the default base is 64x36 (W x H): Snap Video's s = 1 resolution
    assert edm.input_scale(16, 36, 64) == pytest.approx(4.0)
    assert edm.input_scale(16, 288, 512) == pytest.approx(32.0)


@pytest.mark.parametrize("args", [(0, 64, 64), (16, 0, 64), (16, 64, -1), (16, 64, 64, 0, 64)])
def test_input_scale_rejects_nonpositive(args):
    with pytest.raises(ValueError, match="positive"):
        edm.input_scale(*args)


@pytest.mark.parametrize("T_,s_", [(4, 2), (1, 3), (8, 1)])
def test_block_average_snr_gain_measured(T_, s_):
    """Redundant data (each base pixel repeated over a T x s x s block) + noise, then block-average:
    the measured SNR gain is T s^2 (Snap Video Sec. 3.2)."""
    g = gen(4)
    n, hb, wb, sd, sigma = 64, 16, 16, 0.5, 0.7
    base = torch.randn(n, hb, wb, generator=g, dtype=torch.float64) * sd
    video = base[:, None].repeat_interleave(s_, 2).repeat_interleave(s_, 3).expand(n, T_, hb * s_, wb * s_)
    noisy = video + sigma * torch.randn(video.shape, generator=g, dtype=torch.float64)
    averaged = noisy.reshape(n, T_, hb, s_, wb, s_).mean(dim=(1, 3, 5))  # back to (n, hb, wb)

    snr_before = video.var() / (noisy - video).var()
    snr_after = base.var() / (averaged - base).var()
    gain = (snr_after / snr_before).item()
    # the noise variance after averaging is estimated from n*hb*wb = 16384 values: ~1.1% relative error
    assert gain == pytest.approx(T_ * s_**2, rel=0.05)
    assert edm.block_average_snr_gain(T_, s_) == pytest.approx(gain, rel=0.05)
    # the plain per-pixel SNR before averaging is sd^2 / sigma^2 (snr at sigma_in = 1)
    assert edm.snr(sigma, sd).item() == pytest.approx(snr_before.item(), rel=0.05)


def test_snr_with_sigma_in_measured():
    g = gen(5)
    sd, sigma, si = 0.5, 0.1, 4.0
    x = torch.randn(200_000, generator=g, dtype=torch.float64) * sd
    noise = sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
    measured = (x / si).var() / noise.var()  # x_sigma = x / si + sigma eps
    assert edm.snr(sigma, sd, si).item() == pytest.approx(measured.item(), rel=0.02)
    assert edm.snr(sigma, sd, si).item() == pytest.approx(sd**2 / (si**2 * sigma**2), rel=1e-6)


@pytest.mark.parametrize("T_,s_", [(16, 1), (16, 8), (1, 4), (5, 1.5)])
def test_effective_snr_undone_by_sigma_in(T_, s_):
    sd = 0.5
    s = sigma_grid()
    si = s_ * math.sqrt(T_)
    eff = edm.effective_snr(s.float(), sd, T_, s_, si).double()
    plain = sd**2 / s**2  # EDM's snr at sigma_in = 1
    torch.testing.assert_close(eff, plain, rtol=1e-5, atol=0)
    if T_ * s_**2 != 1:  # without the scaling the denoiser sees T s^2 times more SNR
        unscaled = edm.effective_snr(s.float(), sd, T_, s_, 1.0).double()
        torch.testing.assert_close(unscaled, T_ * s_**2 * plain, rtol=1e-5, atol=0)


# The denoiser ---------------------------------------------------------------------------------------

class ZeroNet(nn.Module):
    def forward(self, x, c_noise, cond):
        return torch.zeros_like(x), None  # the backbone contract: (out, state)


class Recorder(nn.Module):
    """Returns a fixed output (or zeros) and records what the denoiser fed it."""

    def __init__(self, out=None, state=None):
        super().__init__()
        self.out, self.state = out, state
        self.seen = []

    def forward(self, x, c_noise, cond):
        self.seen.append((x.detach().clone(), c_noise.detach().clone(), cond))
        out = torch.zeros_like(x) if self.out is None else self.out
        return out, self.state


class LinearNet(nn.Module):
    """A tiny differentiable backbone: a linear map over W of the input shifted by alpha * c_noise."""

    def __init__(self, width=W, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(width, width)
        self.alpha = nn.Parameter(torch.tensor(0.3))
        self.last_out = None

    def forward(self, x, c_noise, cond):
        out = self.lin(x + self.alpha * c_noise.reshape(-1, 1, 1, 1, 1))  # bf16 under autocast
        self.last_out = out
        return out, None  # the backbone contract: (out, state)


def ref_denoise(net, x_sigma, sigma, sd, si):
    """D written from Snap Video's Table 1 in float64 around the test's own network call."""
    s = per_sample(sigma.double())
    c_in = 1 / torch.sqrt(sd**2 / si**2 + s**2)
    c_skip = si * sd**2 / (si * s**2 + sd**2)
    c_out = si * s * sd * torch.sqrt(s**2 + sd**2) / (sd**2 + si * s**2)
    F_out, _ = net((c_in * x_sigma.double()).float(), (torch.log(sigma.double()) / 4).float(), Cond())
    return c_skip * x_sigma.double() + c_out * F_out.double()


def sample_batch(seed, sd=0.5, b=B):
    g = gen(seed)
    x = torch.randn(b, T, C, H, W, generator=g) * sd
    eps = torch.randn(b, T, C, H, W, generator=g)
    return x, eps


@pytest.mark.parametrize("si", [1.0, 4.0])
def test_zero_backbone_gives_skip_connection(si):
    sd = 0.5
    x, eps = sample_batch(10)
    sigma = torch.tensor([0.01, 0.5, 2.0, 80.0])
    x_sigma = edm.add_noise(x, eps, sigma, si)
    D = Denoiser(ZeroNet(), sigma_data=sd, sigma_in=si)(x_sigma, sigma)
    c_skip = edm.preconditioning(sigma, sd, si)[0]
    assert torch.equal(D, per_sample(c_skip) * x_sigma)  # exactly: c_out * 0 adds nothing
    s = per_sample(sigma.double())
    torch.testing.assert_close(D.double(), si * sd**2 / (si * s**2 + sd**2) * x_sigma.double(), rtol=2e-6, atol=0)


@pytest.mark.parametrize("si", [1.0, 4.0])
@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_oracle_backbone_recovers_x(si, sd):
    x, eps = sample_batch(11, sd)
    sigma = torch.tensor([0.003, 0.3, 3.0, 60.0])
    s = per_sample(sigma)
    oracle = (s * x - sd**2 * eps) / (sd * torch.sqrt(s**2 + sd**2))  # the true F target, written here
    x_sigma = x / si + s * eps
    net = Recorder(oracle)
    D = Denoiser(net, sigma_data=sd, sigma_in=si)(x_sigma, sigma)
    torch.testing.assert_close(D, x, rtol=0, atol=3e-5)
    # the backbone saw c_in x_sigma and c_noise = ln(sigma)/4, never sigma itself
    seen_x, seen_c, _ = net.seen[0]
    torch.testing.assert_close(seen_x, x_sigma / torch.sqrt(sd**2 / si**2 + s**2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen_c, torch.log(sigma) / 4, rtol=1e-6, atol=1e-7)
    assert seen_c.shape == (B,)


def test_scalar_sigma_broadcasts_over_batch():
    x, eps = sample_batch(12)
    x_sigma = x + 0.7 * eps
    net = LinearNet()
    den = Denoiser(net)
    a = den(x_sigma, torch.tensor(0.7))
    b = den(x_sigma, torch.full((B,), 0.7))
    assert torch.equal(a, b)


def test_denoiser_returns_backbone_state():
    x, eps = sample_batch(13)
    den = Denoiser(Recorder(state="latents"))
    x0, state = den.forward_with_state(x + eps, torch.ones(B))  # what the sampler calls: D and the state
    assert state == "latents" and x0.shape == x.shape
    assert torch.is_tensor(den(x + eps, torch.ones(B)))  # forward is just D
    assert torch.equal(den(x + eps, torch.ones(B)), x0)
    _, no_state = Denoiser(Recorder()).forward_with_state(x + eps, torch.ones(B))
    assert no_state is None
    assert torch.is_tensor(Denoiser(Recorder())(x + eps, torch.ones(B)))  # no state: a plain tensor


def test_denoiser_float32_under_bf16_autocast():
    sd, si = 0.5, 4.0
    x, eps = sample_batch(14)
    sigma = torch.tensor([0.02, 0.5, 5.0, 80.0])
    x_sigma = edm.add_noise(x, eps, sigma, si)

    zero_lin = LinearNet()
    nn.init.zeros_(zero_lin.lin.weight), nn.init.zeros_(zero_lin.lin.bias)
    zero_lin.alpha.data.zero_()
    den0 = Denoiser(zero_lin, sigma_data=sd, sigma_in=si)
    plain = den0(x_sigma, sigma)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = den0(x_sigma, sigma)
        assert zero_lin.last_out.dtype == torch.bfloat16  # the backbone did run in bf16
    assert auto.dtype == torch.float32
    assert torch.equal(auto, plain)  # the diffusion math itself stayed float32

    den = Denoiser(LinearNet(seed=1), sigma_data=sd, sigma_in=si)
    plain = den(x_sigma, sigma)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = den(x_sigma, sigma)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=0.02, atol=0.02)  # only the network's bf16 rounding


@pytest.mark.parametrize("si", [1.0, 4.0])
def test_loss_is_hand_computed_lambda_weighted_mean(si):
    sd = 0.5
    x, eps = sample_batch(15)
    sigma = torch.tensor([0.01, 0.2, 1.5, 40.0])
    net = LinearNet(seed=2)
    den = Denoiser(net, sigma_data=sd, sigma_in=si)
    loss = den.loss(Batch(x, sigma=sigma, noise=eps))

    s64 = sigma.double()
    x_sigma = x.double() / si + per_sample(s64) * eps.double()
    with torch.no_grad():
        D = ref_denoise(net, x_sigma, sigma, sd, si)
    lam = 1 / sd**2 + 1 / s64**2
    expected = (lam * ((D - x.double()) ** 2).flatten(1).mean(1)).mean()
    assert loss.ndim == 0 and torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)

    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_loss_draws_sigma_and_noise_reproducibly():
    x, _ = sample_batch(16)
    den = Denoiser(LinearNet(seed=3))
    a = den.loss(Batch(x), generator=gen(1))
    b = den.loss(Batch(x), generator=gen(1))
    c = den.loss(Batch(x), generator=gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_loss_rejects_non_finite_batch(bad):
    x, _ = sample_batch(17)
    x[1, 0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="NaN"):
        Denoiser(ZeroNet()).loss(Batch(x))


# Applying a mask (edm.network_input, paste_known, mean_over_generated) -------------------------------

def frame_mask(known_frames, b=B, t=T):
    """(B, T, 1, H, W) bool, True on the given frames of every sample."""
    known = torch.zeros(b, t, 1, H, W, dtype=torch.bool)
    known[:, known_frames] = True
    return known


def random_mask(seed, ratio, b=B):
    return torch.rand(b, T, 1, H, W, generator=gen(seed)) < ratio


@pytest.mark.parametrize("si", [1.0, 4.0])
def test_known_positions_come_back_exactly(si):
    x, eps = sample_batch(20)
    sigma = torch.tensor([0.01, 0.5, 5.0, 80.0])
    known = random_mask(0, 0.4)
    known_x = x + 0.1  # anything: it is the given content
    den = Denoiser(LinearNet(seed=4), sigma_in=si)
    D = den(edm.add_noise(x, eps, sigma, si), sigma, Cond(known=known, known_x=known_x))
    k = known.expand_as(x)
    assert torch.equal(D[k], known_x[k])
    assert not torch.equal(D[~k], known_x[~k])


@pytest.mark.parametrize("si", [1.0, 4.0])
def test_network_sees_known_content_at_unit_scale(si):
    sd = 0.5
    x, eps = sample_batch(21)
    sigma = torch.tensor([0.002, 0.1, 1.0, 80.0])
    known = frame_mask([0])
    known_x = torch.randn(x.shape, generator=gen(22)) * sd
    net = Recorder()
    x_sigma = edm.add_noise(x, eps, sigma, si)
    Denoiser(net, sigma_data=sd, sigma_in=si)(x_sigma, sigma, Cond(known=known, known_x=known_x))
    seen = net.seen[0][0]
    k = known.expand_as(x)
    torch.testing.assert_close(seen[k], (known_x / sd)[k], rtol=1e-6, atol=0)  # same at every sigma
    s = per_sample(sigma)
    noisy_in = x_sigma / torch.sqrt(sd**2 / si**2 + s**2)
    torch.testing.assert_close(seen[~k], noisy_in[~k], rtol=1e-5, atol=1e-6)


def test_loss_gradient_is_zero_at_known_positions():
    x, eps = sample_batch(23)
    net = LinearNet(seed=5)

    class Hooked(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.out = None

        def forward(self, x_, c_noise, cond):
            self.out, _ = self.net(x_, c_noise, cond)
            self.out.retain_grad()
            return self.out, None

    hooked = Hooked()
    known = random_mask(1, 0.5)
    loss = Denoiser(hooked).loss(Batch(x, Cond(known=known, known_x=x), sigma=torch.tensor([0.1, 0.5, 1.0, 4.0]), noise=eps))
    loss.backward()
    grad = hooked.out.grad
    k = known.expand_as(x)
    assert torch.all(grad[k] == 0)
    assert (grad[~k] != 0).float().mean() > 0.99


def test_mean_over_generated_constant_error_independent_of_mask_ratio():
    per_position = torch.full((B, T, C, H, W), 2.5)
    for ratio in [0.0, 0.2, 0.5, 0.8]:
        known = random_mask(2, ratio)
        known[:, :, :, 0, 0] = False  # every sample has something to generate
        got = edm.mean_over_generated(per_position, Cond(known=known, known_x=torch.zeros_like(per_position)))
        torch.testing.assert_close(got, torch.full((B,), 2.5), rtol=1e-6, atol=0)
    # and it is a mean over the generated positions only, not over all positions
    known = frame_mask([0])
    values = torch.randn(B, T, C, H, W, generator=gen(3))
    got = edm.mean_over_generated(values, Cond(known=known, known_x=torch.zeros_like(values)))
    torch.testing.assert_close(got, values[:, 1:].flatten(1).mean(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("si", [1.0, 4.0])
def test_loss_with_constant_f_error_does_not_depend_on_mask_ratio(si):
    """Backbone = true target + delta: D - x = c_out delta on generated positions, so the loss is
    mean_b w(sigma_b) delta^2, with Snap Video's w, whatever the mask."""
    sd, delta = 0.5, 0.1
    x, eps = sample_batch(24)
    sigma = torch.tensor([0.05, 0.5, 2.0, 20.0])
    s = per_sample(sigma)
    target = (s * x - sd**2 * eps) / (sd * torch.sqrt(s**2 + sd**2))
    s64 = sigma.double()
    expected = ((s64**2 + sd**2) ** 2 / (s64**2 + sd**2 / si) ** 2 * delta**2).mean()
    for frames in [[], [0], [0, 1]]:
        cond = Cond(known=frame_mask(frames), known_x=x) if frames else None
        loss = Denoiser(Recorder(target + delta), sigma_data=sd, sigma_in=si).loss(Batch(x, cond, sigma=sigma, noise=eps))
        torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=0)


def test_mask_errors_are_clear():
    x, eps = sample_batch(25)
    den = Denoiser(ZeroNet())
    sigma = torch.ones(B)
    with pytest.raises(ValueError, match="broadcast"):
        den(x, sigma, Cond(known=torch.ones(B, T, 1, H + 1, W, dtype=torch.bool), known_x=x))
    with pytest.raises(ValueError, match="known_x"):
        den(x, sigma, Cond(known=frame_mask([0])))
    with pytest.raises(ValueError, match="known_x"):
        den.loss(Batch(x, Cond(known=frame_mask([0]))))
    with pytest.raises(TypeError, match="bool"):
        den(x, sigma, Cond(known=frame_mask([0]).float(), known_x=x))


class SelfCondRecorder(nn.Module):
    """A backbone with RIN-style state: returns zeros and 'latents' = mean of its input, records self_cond."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, c_noise, cond):
        self.seen.append(None if cond is None or cond.self_cond is None else cond.self_cond.clone())
        latents = x.flatten(1).mean(1, keepdim=True)[:, :, None] + 0 * self.scale
        return torch.zeros_like(x) * self.scale, latents


def test_loss_self_conditioning_two_passes():
    x, eps = sample_batch(21)
    sigma = torch.full((B,), 0.7)
    backbone = SelfCondRecorder()
    den = Denoiser(backbone, self_condition_prob=0.5)  # the rate is the denoiser's, given when it is built
    draw = torch.tensor([0.1, 0.9, 0.3, 0.7])[:B]
    den.loss(Batch(x, sigma=sigma, noise=eps, self_cond_draw=draw))
    first, second = backbone.seen  # a no-grad pass without state, then the trained pass with it
    assert first is None
    x_sigma = edm.add_noise(x, eps, sigma)
    c_in = edm.preconditioning(sigma, 0.5)[2].reshape(-1, 1, 1, 1, 1)
    expected = (c_in * x_sigma).flatten(1).mean(1)[:, None, None] * (draw < 0.5).float()[:, None, None]
    assert torch.allclose(second, expected, atol=1e-6)
    backbone.seen.clear()
    den.eval().loss(Batch(x, sigma=sigma, noise=eps))  # not training: a single pass
    assert backbone.seen == [None]
    no_sc = SelfCondRecorder()
    Denoiser(no_sc, self_condition_prob=0.0).loss(Batch(x, sigma=sigma, noise=eps))
    assert no_sc.seen == [None]


@pytest.mark.parametrize("sigma_data", [0.25, 1.0, 3.0])
def test_relative_P_mean_keeps_edm_noise_to_signal_distribution(sigma_data):
    """With the same random numbers, sigma / sigma_data at relative_P_mean(sigma_data) equals EDM's
    sigma / 0.5 at P_mean = -1.2 exactly: the noise-to-signal ratios the denoiser trains on are EDM's."""
    ours = edm.sample_training_sigma(64, edm.relative_P_mean(sigma_data), 1.2, generator=gen(5)) / sigma_data
    edms = edm.sample_training_sigma(64, -1.2, 1.2, generator=gen(5)) / 0.5
    torch.testing.assert_close(ours, edms, rtol=1e-5, atol=0)
    assert edm.relative_P_mean(0.5) == -1.2
    assert abs(edm.relative_P_mean(1.0) - (-1.2 + math.log(2))) < 1e-12
    with pytest.raises(ValueError, match="sigma_data"):
        edm.relative_P_mean(0.0)
