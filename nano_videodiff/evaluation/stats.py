"""Confidence intervals by the bootstrap over clips, so that a table says when a difference is noise.

The percentile bootstrap (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", Ch. 13): draw the
evaluation's N clips N times with replacement, recompute the statistic, repeat B times; the central
``level`` share of the B values is the interval. It needs no assumption about the statistic's distribution
and works as well for a mean of per-clip scores (PSNR, a contact verdict) as for a set statistic (a Frechet
distance, recomputed on each resampled set). It measures the spread due to *which clips* were scored, not
due to training seeds: ``benchmarks/*.py --seeds`` repeat the training for that.

    mean, lo, hi = mean_interval(per_clip_psnr)                 # a per-clip score (percentile interval)
    d, lo, hi = set_interval(lambda idx: frechet(f[idx]), n)    # a set statistic (bias-corrected)
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch

NUM_RESAMPLES = 1000
LEVEL = 0.95


def resample_indices(n: int, num_resamples: int = NUM_RESAMPLES, seed: int = 0) -> torch.Tensor:
    """(num_resamples, n) indices drawn with replacement from range(n), reproducibly from ``seed``."""
    if n < 1:
        raise ValueError("the bootstrap needs at least one clip")
    return torch.randint(n, (num_resamples, n), generator=torch.Generator().manual_seed(seed))


def _percentiles(values: torch.Tensor, level: float) -> Tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=values.dtype)
    lo, hi = torch.quantile(values, q)
    return float(lo), float(hi)


def mean_interval(values, num_resamples: int = NUM_RESAMPLES, level: float = LEVEL,
                  seed: int = 0) -> Tuple[float, float, float]:
    """(mean, low, high): the mean of per-clip ``values`` (N,) and its percentile-bootstrap interval."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    means = v[resample_indices(len(v), num_resamples, seed)].mean(1)
    return (float(v.mean()), *_percentiles(means, level))


def set_interval(statistic: Callable[[torch.Tensor], float], n: int, num_resamples: int = 200,
                 level: float = LEVEL, seed: int = 0) -> Tuple[float, float, float]:
    """(value v on all n clips, low, high) of ``statistic(indices)``, recomputed on resampled index sets
    (fewer resamples by default: a set statistic such as a Frechet distance costs an eigendecomposition).

    A resampled set repeats clips, which biases a Frechet distance upwards (fewer distinct clips), often by
    more than its spread, so neither the percentile interval nor the basic one (which reflects it about v)
    reliably contains v. Here the resampled values are bias-corrected first (each minus the bootstrap bias
    estimate mean(resamples) - v, Efron & Tibshirani 1993, Sec. 10.2), and the interval is their central
    ``level`` share: the resampling spread placed around v. Clipped at 0 from below (distances are >= 0)."""
    values = torch.tensor([statistic(idx) for idx in resample_indices(n, num_resamples, seed)], dtype=torch.float64)
    value = float(statistic(torch.arange(n)))
    lo, hi = _percentiles(values - (float(values.mean()) - value), level)
    return value, max(lo, 0.0), max(hi, 0.0)


def format_interval(mean: float, lo: float, hi: float, spec: str = ".3f") -> str:
    """'0.812 [0.750, 0.875]'."""
    return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def seed_spread(values: Sequence[float]) -> Tuple[float, float]:
    """(mean, sample standard deviation) over training seeds (std 0 for a single seed)."""
    v = torch.tensor(list(values), dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0
