"""Tests for nano_videodiff.sampler: EDM's schedule (Eq. 5), Heun/Euler (Alg. 1), churn (Alg. 2),
Snap Video's sigma_in, classifier-free guidance, the state hook and known content.

The main check drives the sampler with the analytic optimal denoiser of Gaussian data, for which the
probability-flow ODE has a closed-form solution written in this file.
"""
import math

import pytest
import torch

from nano_videodiff.conditioning import DROPPED_LABEL, Cond
from nano_videodiff.sampler import edm_sigmas, sample

MU, S = 0.3, 0.5  # data x ~ N(MU, S^2) per dimension
SIGMA_MAX = 80.0


def gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian_denoiser(si, mu=MU, s=S):
    """E[x | y] for y = x / si + sigma eps, x ~ N(mu, s^2): with mu' = mu/si, s' = s/si,
    E[x | y] = si (mu' + s'^2 / (s'^2 + sigma^2) (y - mu'))."""
    m, sp = mu / si, s / si

    def denoise(y, sigma, cond):
        sg = sigma.reshape(-1, *([1] * (y.ndim - 1)))
        return si * (m + sp**2 / (sp**2 + sg**2) * (y - m)), None  # the sampler's contract: (x0, state)

    return denoise


def exact_flow(z, si, mu=MU, s=S, sigma_max=SIGMA_MAX):
    """Closed-form solution of the ODE dy/dsigma = (y - E[x|y]/si)/sigma from y = sigma_max z to sigma = 0:
    y - mu' scales like sqrt(s'^2 + sigma^2), so x = si y(0) = mu + s (sigma_max z - mu') / sqrt(s'^2 + sigma_max^2)."""
    m, sp = mu / si, s / si
    return si * (m + sp * (sigma_max * z.double() - m) / math.sqrt(sp**2 + sigma_max**2))


def unit_noise(n, seed=0, shape_tail=(1,)):
    """Standard normal noise standardised to exactly mean 0 / std 1, so sample statistics carry no
    Monte-Carlo error and the test measures the solver alone."""
    z = torch.randn(n, *shape_tail, generator=gen(seed), dtype=torch.float64)
    return ((z - z.mean()) / z.std()).float()


# Schedule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("N,smin,smax,rho", [(2, 0.002, 80.0, 7.0), (5, 0.002, 80.0, 7.0),
                                              (18, 0.002, 80.0, 7.0), (40, 0.01, 10.0, 3.0)])
def test_edm_sigmas_is_eq5(N, smin, smax, rho):
    sig = edm_sigmas(N, sigma_min=smin, sigma_max=smax, rho=rho)
    assert sig.shape == (N + 1,) and sig.dtype == torch.float32
    assert sig[-1].item() == 0.0
    assert sig[0].item() == pytest.approx(smax, rel=1e-6)
    assert sig[N - 1].item() == pytest.approx(smin, rel=1e-5)
    assert (sig[1:] < sig[:-1]).all()
    expected = [(smax ** (1 / rho) + i / (N - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(N)]
    torch.testing.assert_close(sig[:-1].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_edm_sigmas_single_step():
    sig = edm_sigmas(1)
    assert sig.shape == (2,) and sig[-1].item() == 0.0 and sig[0].item() == pytest.approx(80.0)


@pytest.mark.parametrize("N", [0, -3])
def test_edm_sigmas_rejects_fewer_than_one_step(N):
    with pytest.raises(ValueError, match="num_steps"):
        edm_sigmas(N)


# The analytic Gaussian test ----------------------------------------------------------------------------

# Tolerances: heun (2nd order) with 32 steps is within ~1e-2 of the exact flow in std; euler (1st order)
# within ~6e-2. A sampler that mishandles sigma_in misses by far more (see the wrong-sigma_in test).
@pytest.mark.parametrize("si", [1.0, 4.0])
@pytest.mark.parametrize("solver,tol_std,tol_flow", [("heun", 0.02, 0.06), ("euler", 0.08, 0.25)])
def test_analytic_gaussian_data(si, solver, tol_std, tol_flow):
    z = unit_noise(4000)
    x = sample(gaussian_denoiser(si), z, edm_sigmas(32), solver=solver, sigma_in=si)
    assert x.shape == z.shape and x.dtype == torch.float32
    assert abs(x.mean().item() - MU) < 5e-3
    assert abs(x.std().item() - S) < tol_std
    # the deterministic sampler approximates the ODE's exact solution sample by sample
    assert (x.double() - exact_flow(z, si)).abs().max().item() < tol_flow


def test_analytic_gaussian_on_video_shaped_batch():
    z = unit_noise(64, seed=1, shape_tail=(3, 2, 4, 4))  # (B, T, C, H, W)
    x = sample(gaussian_denoiser(4.0), z, edm_sigmas(32), sigma_in=4.0)
    assert x.shape == z.shape
    assert abs(x.mean().item() - MU) < 5e-3
    assert abs(x.std().item() - S) < 0.02


@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_wrong_sigma_in_gives_clearly_wrong_samples(solver):
    z = unit_noise(2000)
    for trained, used in [(4.0, 1.0), (1.0, 4.0)]:
        x = sample(gaussian_denoiser(trained), z, edm_sigmas(32), solver=solver, sigma_in=used)
        bad = (not torch.isfinite(x).all()) or abs(x.std().item() - S) > 0.3 or abs(x.mean().item() - MU) > 0.2
        assert bad, (trained, used, x.mean().item(), x.std().item())


@pytest.mark.parametrize("solver,order", [("heun", 2), ("euler", 1)])
def test_convergence_order(solver, order):
    """Doubling the steps divides the error by 2^order (EDM Sec. 3: Heun is 2nd order, Euler 1st)."""
    si = 4.0
    z = unit_noise(1000, seed=2)
    ref = exact_flow(z, si)
    errs = [(sample(gaussian_denoiser(si), z, edm_sigmas(n), solver=solver, sigma_in=si).double() - ref)
            .abs().max().item() for n in (32, 64)]
    ratio = errs[1] / errs[0]
    assert 0.6 * 0.5**order < ratio < 1.4 * 0.5**order, errs


# Network evaluations ------------------------------------------------------------------------------------

class Counter:
    def __init__(self, inner):
        self.inner, self.calls, self.sigmas, self.conds = inner, 0, [], []

    def __call__(self, x, sigma, cond):
        self.calls += 1
        self.sigmas.append(sigma.clone())
        self.conds.append(cond)
        return self.inner(x, sigma, cond)


@pytest.mark.parametrize("N", [1, 3, 10])
@pytest.mark.parametrize("solver,nfe", [("heun", lambda n: 2 * n - 1), ("euler", lambda n: n)])
def test_number_of_denoiser_calls(N, solver, nfe):
    den = Counter(gaussian_denoiser(1.0))
    x, reported = sample(den, unit_noise(8), edm_sigmas(N), solver=solver, return_nfe=True)
    assert den.calls == nfe(N)
    assert reported == nfe(N)
    assert x.shape == (8, 1)


def test_denoiser_is_called_with_batch_sigma_at_schedule_points():
    den = Counter(gaussian_denoiser(1.0))
    sig = edm_sigmas(4)
    sample(den, unit_noise(5), sig, solver="heun")
    # Alg. 1: first evaluation at sigma_i, the correction at sigma_{i+1} (none on the last step)
    expected = [sig[0], sig[1], sig[1], sig[2], sig[2], sig[3], sig[3]]
    assert len(den.sigmas) == len(expected)
    for got, e in zip(den.sigmas, expected):
        assert got.shape == (5,) and got.dtype == torch.float32
        assert torch.equal(got, torch.full((5,), e.item()))


# Churn (Alg. 2) -----------------------------------------------------------------------------------------

def test_churn_reproducible_with_generator():
    kw = dict(sigmas=edm_sigmas(8), S_churn=10.0, sigma_in=1.0)
    z = unit_noise(100)
    a = sample(gaussian_denoiser(1.0), z, generator=gen(1), **kw)
    b = sample(gaussian_denoiser(1.0), z, generator=gen(1), **kw)
    c = sample(gaussian_denoiser(1.0), z, generator=gen(2), **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_no_churn_is_deterministic_without_generator():
    z = unit_noise(100)
    torch.manual_seed(0)
    a = sample(gaussian_denoiser(1.0), z, edm_sigmas(8))
    torch.manual_seed(123)  # a different global RNG state must not matter
    b = sample(gaussian_denoiser(1.0), z, edm_sigmas(8))
    assert torch.equal(a, b)


def test_churn_noise_levels_follow_alg2():
    """gamma_i = min(S_churn/N, sqrt 2 - 1) inside [S_min, S_max], else 0; the first evaluation of step i
    is at sigma_hat = sigma_i (1 + gamma_i)."""
    N, S_churn, S_min, S_max = 6, 3.0, 0.05, 10.0
    sig = edm_sigmas(N)
    den = Counter(gaussian_denoiser(1.0))
    sample(den, unit_noise(4), sig, solver="euler", S_churn=S_churn, S_min=S_min, S_max=S_max, generator=gen(0))
    gamma = min(S_churn / N, math.sqrt(2) - 1)
    for i in range(N):
        s = sig[i].item()
        expected = s * (1 + gamma) if S_min <= s <= S_max else s
        assert den.sigmas[i][0].item() == pytest.approx(expected, rel=1e-6), i
    # large S_churn is clamped at sqrt(2) - 1
    den = Counter(gaussian_denoiser(1.0))
    sample(den, unit_noise(4), sig, solver="euler", S_churn=100.0, generator=gen(0))
    assert den.sigmas[0][0].item() == pytest.approx(sig[0].item() * math.sqrt(2), rel=1e-6)


@pytest.mark.parametrize("S_noise", [1.0, 2.0])
def test_churn_adds_noise_of_the_right_size(S_noise):
    """x_hat = x + sqrt(s_hat^2 - s^2) S_noise eps: from x = sigma_0 z its std is sqrt(s0^2 + (s_hat^2 - s0^2) S_noise^2)."""
    seen = []

    def den(x, sigma, cond):
        seen.append(x.clone())
        return torch.zeros_like(x), None

    s0, S_churn = 2.0, 0.3
    z = torch.randn(200_000, generator=gen(3))
    sample(den, z, torch.tensor([s0, 0.0]), solver="euler", S_churn=S_churn, S_noise=S_noise, generator=gen(4))
    s_hat = s0 * (1 + S_churn)
    expected = math.sqrt(s0**2 + (s_hat**2 - s0**2) * S_noise**2)
    assert seen[0].std().item() == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("si", [1.0, 4.0])
def test_analytic_gaussian_with_churn(si):
    z = torch.randn(20_000, 1, generator=gen(5))
    x = sample(gaussian_denoiser(si), z, edm_sigmas(64), S_churn=10.0, S_noise=1.0, sigma_in=si, generator=gen(6))
    # Monte-Carlo error ~ 0.004; discretisation error with 64 steps a few 1e-3
    assert abs(x.mean().item() - MU) < 0.02
    assert abs(x.std().item() - S) < 0.02


# Classifier-free guidance ---------------------------------------------------------------------------------

A_VAL, B_VAL = 3.0, 1.0  # conditional / unconditional outputs (exact in binary)


def label_denoiser(log):
    def den(x, sigma, cond):
        log.append(cond)
        uncond = (cond.labels == DROPPED_LABEL).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(uncond, torch.full_like(x, B_VAL), torch.full_like(x, A_VAL)), None
    return den


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, 7.0])
def test_cfg_combines_branches(w):
    """One Euler step from sigma = 1 with zero noise returns the guided D exactly: x1 = 0 - 1 * (0 - D) = D."""
    log = []
    cond = Cond(labels=torch.tensor([0, 2, 1]), frame_interval=torch.tensor([0.1, 0.0, 0.5]))
    x = sample(label_denoiser(log), torch.zeros(3, 2, 1, 2, 2), torch.tensor([1.0, 0.0]), cond=cond,
               solver="euler", cfg_scale=w)
    assert torch.equal(x, torch.full_like(x, B_VAL + w * (A_VAL - B_VAL)))
    n_uncond = sum(bool((c.labels == DROPPED_LABEL).all()) for c in log)
    if w == 1.0:
        assert n_uncond == 0 and len(log) == 1  # the unconditional branch is never evaluated
    else:
        assert n_uncond == 1 and len(log) == 2
        (unc,) = [c for c in log if (c.labels == DROPPED_LABEL).all()]
        assert torch.equal(unc.frame_interval, cond.frame_interval)  # only the labels are dropped


def test_cfg_with_explicit_uncond_and_nfe():
    log = []
    cond = Cond(labels=torch.tensor([0, 1]))
    custom = Cond(labels=torch.tensor([DROPPED_LABEL, DROPPED_LABEL]), frame_interval=torch.tensor([9.0, 9.0]))
    x, nfe = sample(label_denoiser(log), torch.randn(2, 3, generator=gen(0)), edm_sigmas(3), cond=cond,
                    cfg_scale=2.0, uncond=custom, return_nfe=True)
    assert torch.isfinite(x).all()
    assert len(log) == 2 * 5  # both branches at each of the 2N - 1 evaluations
    assert nfe == 5  # a guided evaluation counts once (documented convention)
    assert all(torch.equal(c.frame_interval, custom.frame_interval)
               for c in log if (c.labels == DROPPED_LABEL).all())


def test_cfg_without_cond_raises():
    with pytest.raises(ValueError, match="cfg_scale"):
        sample(gaussian_denoiser(1.0), torch.randn(2, 3), edm_sigmas(3), cond=None, cfg_scale=3.0)


def test_cfg_without_labels_or_uncond_raises():
    """A cond without labels has no unconditional branch to form: guidance would be a silent no-op."""
    with pytest.raises(ValueError, match="cfg_scale"):
        sample(gaussian_denoiser(1.0), torch.randn(2, 3), edm_sigmas(3), cond=Cond(), cfg_scale=3.0)


# State hook (self-conditioning) ---------------------------------------------------------------------------

def stateful_denoiser(seen):
    def den(x, sigma, cond):
        seen.append(None if cond is None else cond.self_cond)
        return torch.zeros_like(x), len(seen) - 1  # state = index of this call
    return den


@pytest.mark.parametrize("solver,N", [("heun", 4), ("euler", 5)])
def test_state_is_carried_to_the_next_call(solver, N):
    seen = []
    sample(stateful_denoiser(seen), torch.randn(2, 3), edm_sigmas(N), cond=Cond(), solver=solver)
    assert seen == [None] + list(range(len(seen) - 1))
    assert len(seen) == (2 * N - 1 if solver == "heun" else N)


def test_state_is_carried_per_guidance_branch():
    states = []

    def den(x, sigma, cond):
        branch = "u" if (cond.labels == DROPPED_LABEL).all() else "c"
        states.append((branch, cond.self_cond))
        count = sum(1 for b, _ in states if b == branch)
        return torch.zeros_like(x), f"{branch}{count}"

    sample(den, torch.randn(2, 3), edm_sigmas(3), cond=Cond(labels=torch.tensor([0, 1])), cfg_scale=2.0)
    for branch in "cu":
        got = [s for b, s in states if b == branch]
        assert got == [None] + [f"{branch}{k}" for k in range(1, len(got))]


def test_state_is_carried_without_cond():
    seen = []
    sample(stateful_denoiser(seen), torch.randn(2, 3), edm_sigmas(3), cond=None)
    assert seen == [None, 0, 1, 2, 3]


# Known content ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", ["heun", "euler"])
@pytest.mark.parametrize("si", [1.0, 4.0])
def test_known_content_is_returned_bit_exactly(solver, si):
    b, t, c, h, w = 2, 4, 1, 3, 3
    known = torch.zeros(b, t, 1, h, w, dtype=torch.bool)
    known[:, :2] = True
    known[1, 3, 0, 1, 1] = True
    known_x = torch.randn(b, t, c, h, w, generator=gen(7)) * 0.37
    base = gaussian_denoiser(si)

    def den(x, sigma, cond):  # a denoiser that (like Denoiser) pastes the known content into D
        return torch.where(cond.known, cond.known_x, base(x, sigma, cond)[0]), None

    cond = Cond(known=known, known_x=known_x)
    x = sample(den, torch.randn(b, t, c, h, w, generator=gen(8)), edm_sigmas(6), cond=cond, solver=solver,
               sigma_in=si)
    k = known.expand_as(x)
    assert torch.equal(x[k], known_x[k])
    assert not torch.equal(x[~k], known_x[~k])


# Errors ---------------------------------------------------------------------------------------------------

def test_bad_solver_name():
    with pytest.raises(ValueError, match="solver"):
        sample(gaussian_denoiser(1.0), torch.randn(2, 3), edm_sigmas(3), solver="rk4")


@pytest.mark.parametrize("sigmas", [torch.tensor([80.0, 1.0, 0.002]), torch.tensor([0.0]),
                                    torch.tensor([[80.0, 0.0]])])
def test_bad_sigmas(sigmas):
    with pytest.raises(ValueError, match="sigmas"):
        sample(gaussian_denoiser(1.0), torch.randn(2, 3), sigmas)


@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_the_sampler_itself_returns_known_content_bit_exactly(solver):
    """With a denoiser that does *not* paste (the Gaussian optimal denoiser knows nothing of the mask), the
    given positions still come back bit-exactly: the sampler's own final paste does it, not the denoiser's."""
    b, t, c, h, w, si = 2, 4, 1, 3, 3, 4.0
    known = torch.zeros(b, t, 1, h, w, dtype=torch.bool)
    known[:, :2] = True
    known_x = torch.randn(b, t, c, h, w, generator=gen(9)) * 0.37
    x = sample(gaussian_denoiser(si), torch.randn(b, t, c, h, w, generator=gen(10)), edm_sigmas(6),
               cond=Cond(known=known, known_x=known_x), solver=solver, sigma_in=si)
    k = known.expand_as(x)
    assert torch.equal(x[k], known_x[k])
    # without the paste the given positions are the denoiser's own samples, far from known_x
    x_free = sample(gaussian_denoiser(si), torch.randn(b, t, c, h, w, generator=gen(10)), edm_sigmas(6),
                    solver=solver, sigma_in=si)
    assert (x_free[k] - known_x[k]).abs().max() > 0.1
