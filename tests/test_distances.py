"""Frechet distance and KID (evaluation/distances.py) and bootstrap intervals (evaluation/stats.py)."""
import numpy as np
import pytest
import torch

from nano_videodiff.evaluation import distances, stats


def gaussian_set(n, d, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64)  # correlated features
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + shift


@pytest.mark.parametrize("n,d", [(200, 6), (40, 12), (15, 30)])  # the last: rank-deficient covariances
def test_frechet_matches_scipy_sqrtm(n, d):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = gaussian_set(n, d, 0).numpy(), gaussian_set(n + 5, d, 1, shift=0.5).numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy_linalg.sqrtm(s_a @ s_b)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(root).real
    got = distances.frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6 * np.trace(s_a))


def test_frechet_is_zero_for_identical_sets_and_analytic_for_shift_and_scale():
    a = gaussian_set(100, 5, 3)
    assert distances.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    assert distances.frechet_distance(a, a + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-9)
    # b = 2 (a - mean) + mean: S_b = 4 S_a, so d^2 = tr S + 4 tr S - 2 tr(2 S) = tr S
    centred = a - a.mean(0)
    _, cov = distances.gaussian_fit(a)
    assert distances.frechet_distance(a, a.mean(0) + 2 * centred) == pytest.approx(float(cov.trace()), rel=1e-9)


def test_frechet_from_stats_of_diagonal_gaussians():
    """Diagonal covariances: d^2 = |mu|^2 + sum (sqrt(s1) - sqrt(s2))^2, written independently."""
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    mu1, mu2 = torch.zeros(3), torch.tensor([1.0, 1.0, 0.0])
    expected = 2.0 + sum((s1.sqrt() - s2.sqrt()) ** 2)
    got = distances.frechet_from_stats(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(float(expected), rel=1e-9)


def test_unbiased_mmd_matches_a_loop_over_pairs():
    x, y = gaussian_set(7, 3, 4), gaussian_set(6, 3, 5, shift=1.0)
    k = lambda u, v: (float(u @ v) / 3 + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(6)) / (7 * 6)
    assert float(distances.mmd2_unbiased(x, y)) == pytest.approx(xx + yy - 2 * xy, rel=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    a, b = (gaussian_set(600, 4, 6) / 4).split(300)  # two samples of one distribution
    same, same_std = distances.kernel_distance(a, b, num_subsets=20, subset_size=100)
    shifted, _ = distances.kernel_distance(a, b + 1.0, num_subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 10 * max(abs(same), same_std)


def test_bootstrap_interval_contains_the_mean_and_covers_the_true_mean():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(60, generator=g) + 3
    mean, lo, hi = stats.mean_interval(values)
    assert lo < mean < hi and mean == pytest.approx(float(values.mean()))
    # about 95% of intervals from independent samples of N(3, 1) contain 3 (the percentile bootstrap
    # runs a little narrow for small n: 0.95 * (1 - 1/n) roughly)
    covered = 0
    for trial in range(200):
        sample = torch.randn(40, generator=g) + 3
        _, lo, hi = stats.mean_interval(sample, num_resamples=400, seed=trial)
        covered += lo <= 3 <= hi
    assert 0.86 <= covered / 200 <= 0.99
    # the interval narrows as 1/sqrt(n)
    wide = stats.mean_interval(torch.randn(25, generator=g))
    narrow = stats.mean_interval(torch.randn(2500, generator=g))
    assert (narrow[2] - narrow[1]) < 0.2 * (wide[2] - wide[1])


def test_set_interval_is_the_bias_corrected_percentile_interval():
    """For the mean: the percentile interval of the same resamples, shifted by mean(resamples) - value."""
    values = torch.randn(30, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 5
    value, lo, hi = stats.set_interval(lambda idx: float(values[idx].mean()), 30, num_resamples=300, seed=5)
    mean, p_lo, p_hi = stats.mean_interval(values, num_resamples=300, seed=5)
    bias = float(values[stats.resample_indices(30, 300, seed=5)].mean()) - mean
    assert value == pytest.approx(mean) and lo == pytest.approx(p_lo - bias) and hi == pytest.approx(p_hi - bias)
    assert stats.format_interval(value, lo, hi).count("[") == 1


def test_set_interval_of_a_biased_statistic_contains_it():
    """Resampling with replacement repeats clips, which raises a Frechet distance by more than its spread;
    the bias-corrected interval still contains the distance between two samples of one distribution."""
    from nano_videodiff.evaluation import distances
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(64, 4, generator=g, dtype=torch.float64), torch.randn(64, 4, generator=g, dtype=torch.float64)
    mu, cov = distances.gaussian_fit(real)
    value, lo, hi = stats.set_interval(lambda idx: distances.frechet_from_stats(mu, cov, *distances.gaussian_fit(fake[idx])), 64)
    assert lo <= value <= hi
