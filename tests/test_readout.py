"""Physion's logistic-regression readout (evaluation/readout.py)."""
import pytest
import torch

from nano_videodiff.evaluation import readout


def labels(n, seed):
    return (torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5).double()


def test_features_that_encode_the_label_score_one():
    y_train, y_test = labels(80, 0), labels(60, 1)
    noise = lambda n, s: torch.randn(n, 5, generator=torch.Generator().manual_seed(s))
    x_train = torch.cat([noise(80, 2), (2 * y_train - 1)[:, None]], 1)  # column 5 is the label (+-1)
    x_test = torch.cat([noise(60, 3), (2 * y_test - 1)[:, None]], 1)
    result = readout.readout(x_train, y_train, x_test, y_test)
    assert result["accuracy"] == 1.0
    assert torch.equal(result["predictions"], y_test.bool())


def test_noise_features_score_about_chance():
    accs = []
    for seed in range(6):
        g = torch.Generator().manual_seed(100 + seed)
        x_train, x_test = torch.randn(100, 8, generator=g), torch.randn(200, 8, generator=g)
        accs.append(readout.readout(x_train, labels(100, seed), x_test, labels(200, 50 + seed))["accuracy"])
    mean = sum(accs) / len(accs)
    assert 0.4 < mean < 0.6  # chance is 0.5 (+- 0.015 standard error over 1200 test clips)


def test_logistic_fit_recovers_a_known_direction_and_the_penalty_shrinks_it():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2000, 3, generator=g, dtype=torch.float64)
    true_w = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    y = (torch.rand(2000, generator=g, dtype=torch.float64) < torch.sigmoid(x @ true_w + 0.5)).double()
    w, b = readout.fit_logistic(x, y, l2=0.0)
    assert torch.allclose(w, true_w, atol=0.25) and float(b) == pytest.approx(0.5, abs=0.2)
    w_pen, _ = readout.fit_logistic(x, y, l2=1.0)
    assert w_pen.norm() < 0.7 * w.norm()
    # the optimum: the gradient of the penalised loss vanishes
    w_pen.requires_grad_(True)
    b_pen = torch.tensor(float(readout.fit_logistic(x, y, l2=1.0)[1]), dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w_pen + b_pen, y) + 0.5 * w_pen.pow(2).sum()
    loss.backward()
    assert w_pen.grad.abs().max() < 1e-4 and b_pen.grad.abs() < 1e-4


def test_per_group_readouts_use_each_groups_own_clips():
    """Group 0's label is feature 0, group 1's is the opposite sign: one readout per group gets both right,
    while a single readout over both groups cannot."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 2, generator=g)
    group = torch.arange(200) % 2
    y = ((x[:, 0] > 0) ^ (group == 1)).double()
    per = readout.readout_per_group(x[:100], y[:100], group[:100], x[100:], y[100:], group[100:])
    assert set(per) == {0, 1} and all(r["accuracy"] > 0.95 for r in per.values())
    pooled = readout.readout(x[:100], y[:100], x[100:], y[100:])
    assert pooled["accuracy"] < 0.7
