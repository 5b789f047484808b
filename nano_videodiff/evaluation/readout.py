"""Physion's readout protocol: a logistic-regression readout of object contact from a model's features.

Physion (Bear et al. 2021, "Physion: Evaluating Physical Prediction from Vision in Humans and Machines",
arXiv 2106.08261, Sec. 3.3 and 4) scores a model's physical understanding by training a linear readout on
its features: features of the readout-training clips -> L2-regularised logistic regression on their Object
Contact Prediction labels (does the red agent touch the yellow patient?) -> accuracy on held-out clips,
per scenario. Its protocols differ in what the features see: *observed* (only the given frames), *observed
+ simulated* (the given frames and the model's own rollout of the future) and *full* (the whole true
clip: the ceiling of a feature space). This module is the readout; ``scenarios.py`` builds the features
(the toy-feature network of ``toy_features.py`` on observed, simulated and full clips) and the table.

The readout: features standardised by the training clips' mean and std, a logistic regression with an
L2 penalty ``l2 * |w|^2 / 2`` (bias not penalised) fitted by Newton's method, ``l2`` picked from a grid
by ``folds``-fold cross-validation on the training clips (as sklearn's LogisticRegressionCV, which Physion's
code uses), then refitted on all training clips. A feature that encodes the label perfectly scores 1;
features that are noise score chance (tests/test_readout.py).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

L2_GRID = (1e-2, 1e-1, 1.0, 10.0)


def _penalised_loss(x1, y, theta, l2):
    return F.binary_cross_entropy_with_logits(x1 @ theta, y) + 0.5 * l2 * theta[:-1].pow(2).sum()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, iterations: int = 30) -> Tuple[torch.Tensor, torch.Tensor]:
    """(w (D,), b ()) minimising mean BCE(x w + b, y) + l2 |w|^2 / 2 on standardised features x (N, D), by
    Newton's method with step halving (the loss is convex; a 1e-8 ridge keeps the Hessian invertible)."""
    x1 = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    y = y.double()
    ridge = torch.full((x1.shape[1],), float(l2), dtype=torch.float64)
    ridge[-1] = 0.0  # the bias is not penalised
    theta = torch.zeros(x1.shape[1], dtype=torch.float64)
    loss = _penalised_loss(x1, y, theta, l2)
    for _ in range(iterations):
        p = torch.sigmoid(x1 @ theta)
        grad = x1.T @ (p - y) / len(y) + ridge * theta
        hess = (x1.T * (p * (1 - p))) @ x1 / len(y) + torch.diag(ridge + 1e-8)
        step = torch.linalg.solve(hess, grad)
        scale, new = 1.0, _penalised_loss(x1, y, theta - step, l2)
        while new > loss and scale > 1e-4:  # step halving: never increase the loss
            scale /= 2
            new = _penalised_loss(x1, y, theta - scale * step, l2)
        if new > loss:
            break
        theta, improvement, loss = theta - scale * step, loss - new, new
        if improvement < 1e-12:
            break
    return theta[:-1], theta[-1]


def _standardise(train: torch.Tensor, *others: torch.Tensor):
    mean, std = train.double().mean(0), train.double().std(0, correction=0).clamp(min=1e-8)
    return [(t.double() - mean) / std for t in (train, *others)]


def _accuracy(x, y, w, b) -> float:
    return float(((x @ w + b > 0) == y.bool()).double().mean())


def choose_l2(x: torch.Tensor, y: torch.Tensor, grid: Sequence[float] = L2_GRID, folds: int = 4, seed: int = 0) -> float:
    """The penalty of ``grid`` with the best mean cross-validated accuracy (the largest among ties: the
    simplest readout that does as well)."""
    n = len(y)
    folds = max(2, min(folds, n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = order.chunk(folds)
    scores = []
    for l2 in grid:
        acc = []
        for i, held in enumerate(parts):
            fit_idx = torch.cat([p for j, p in enumerate(parts) if j != i])
            xf, xh = _standardise(x[fit_idx], x[held])
            acc.append(_accuracy(xh, y[held], *fit_logistic(xf, y[fit_idx], l2)))
        scores.append(sum(acc) / len(acc))
    best = max(scores)
    return max(l2 for l2, s in zip(grid, scores) if s >= best - 1e-12)


def readout(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
            grid: Sequence[float] = L2_GRID, folds: int = 4) -> Dict[str, object]:
    """Fit the readout on (train_x (N, D), train_y (N,) in {0, 1}) and score it on the test clips:
    {"accuracy", "l2", "predictions" (test,) bool}. A single-class training set predicts that class."""
    train_y, test_y = train_y.double(), test_y.double()
    if train_y.min() == train_y.max():
        pred = torch.full(test_y.shape, bool(train_y[0]))
        return {"accuracy": float((pred == test_y.bool()).double().mean()), "l2": None, "predictions": pred}
    l2 = choose_l2(train_x, train_y, grid, folds)
    xtr, xte = _standardise(train_x, test_x)
    w, b = fit_logistic(xtr, train_y, l2)
    pred = xte @ w + b > 0
    return {"accuracy": float((pred == test_y.bool()).double().mean()), "l2": l2, "predictions": pred}


def readout_per_group(train_x, train_y, train_group, test_x, test_y, test_group) -> Dict[int, dict]:
    """One readout per group (scenario), trained on that group's training clips, scored on its test clips."""
    out = {}
    for g in sorted(set(test_group.tolist())):
        tr, te = train_group == g, test_group == g
        if tr.sum() >= 2 and te.any():
            out[g] = readout(train_x[tr], train_y[tr], test_x[te], test_y[te])
    return out
