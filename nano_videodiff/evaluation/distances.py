"""Distances between sets of features: the Frechet distance of FID/FVD, and the kernel distance of KID.

Both compare the features of real and generated samples (rows of (N, D) matrices) and are what FVD
(``fvd.py``: I3D features) and the offline toy-feature distance (``toy_features.py``) are computed with.

**Frechet distance** (Frechet 1957; FID: Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update
Rule Converge to a Local Nash Equilibrium", arXiv 1706.08500, Sec. 4; FVD: Unterthiner et al. 2018,
"Towards Accurate Generative Models of Video: A New Metric & Challenges", arXiv 1812.01717, Sec. 3):
the 2-Wasserstein distance between Gaussians N(mu_1, S_1), N(mu_2, S_2) fitted to the two sets,

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)).

The matrix square root is where implementations go wrong: ``scipy.linalg.sqrtm(S_1 @ S_2)`` works on a
non-symmetric product, can return complex values and, for rank-deficient covariances (fewer samples than
dimensions, the usual case with 400-d I3D features), loses accuracy. Here the trace is computed from a
symmetric matrix with the same eigenvalues: S_1 S_2 = R (R S_2 R) R^-1 with R = S_1^(1/2), so
tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i(R S_2 R)), and R S_2 R is symmetric positive semi-definite:
two ``eigh`` calls in float64, eigenvalues clipped at 0 (they are >= 0 in exact arithmetic).

**Kernel Inception Distance** (Binkowski et al. 2018, "Demystifying MMD GANs", arXiv 1801.01401, Sec. 4
and App. D): the unbiased estimator of the squared maximum mean discrepancy with the cubic polynomial
kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets of both sets; unlike the Frechet distance it
has an unbiased estimator, so its expectation for two samples of one distribution is 0 at any set size
(estimates can be slightly negative).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def gaussian_fit(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), covariance (D, D)) in float64 of the rows of ``features`` (N, D); the covariance is the
    unbiased one (N - 1), as ``numpy.cov`` and the FID/FVD references compute it."""
    x = features.detach().double().reshape(features.shape[0], -1)
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {x.shape[0]}")
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding-error
    eigenvalues clipped to 0)."""
    sym = (matrix + matrix.T) / 2
    w, v = torch.linalg.eigh(sym)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """tr((S_1 S_2)^(1/2)) = sum of sqrt(eigenvalues of S_1^(1/2) S_2 S_1^(1/2)) (module docstring)."""
    root = psd_sqrt(s1.double())
    inner = root @ s2.double() @ root
    return torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()


def frechet_from_stats(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """The squared Frechet distance between N(mu1, s1) and N(mu2, s2)."""
    mu1, mu2, s1, s2 = mu1.double(), mu2.double(), s1.double(), s2.double()
    d2 = (mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * trace_sqrt_product(s1, s2)
    return float(d2.clamp(min=0))  # >= 0 in exact arithmetic; rounding may leave -1e-12


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Frechet distance (as FID/FVD report it: the squared 2-Wasserstein distance) between Gaussians
    fitted to two feature sets (N1, D) and (N2, D)."""
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"feature sets of different widths: {tuple(real.shape)} vs {tuple(fake.shape)}")
    return frechet_from_stats(*gaussian_fit(real), *gaussian_fit(fake))


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 with the cubic polynomial kernel (Gretton et al. 2012, Lemma 6; Binkowski et al. 2018):
    the means of k over distinct pairs within each set, minus twice the mean over cross pairs."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("the unbiased MMD needs at least 2 samples in each set")
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * kxy.mean()


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0, generator: Optional[torch.Generator] = None) -> Tuple[float, float]:
    """KID: (mean, std) of the unbiased MMD^2 over ``num_subsets`` random subsets of min(``subset_size``, N)
    rows drawn without replacement from each set (the reference implementations' 100 x 1000)."""
    x, y = real.detach().double().flatten(1), fake.detach().double().flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sets of different widths: {x.shape[1]} vs {y.shape[1]}")
    size = min(subset_size, x.shape[0], y.shape[0])
    g = generator or torch.Generator().manual_seed(seed)
    values = torch.stack([mmd2_unbiased(x[torch.randperm(x.shape[0], generator=g)[:size]],
                                        y[torch.randperm(y.shape[0], generator=g)[:size]])
                          for _ in range(num_subsets)])
    return float(values.mean()), float(values.std()) if num_subsets > 1 else 0.0
