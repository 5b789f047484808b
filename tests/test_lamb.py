"""Tests for the LAMB optimizer (nano_videodiff/training/lamb.py) against Algorithm 2 of You et al. 2019."""
import io
import math

import pytest
import torch

from nano_videodiff.training.lamb import LAMB


def tiny_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 2, generator=g).requires_grad_()
    b = torch.randn(3, generator=g).requires_grad_()
    x, y = torch.randn(5, 2, generator=g), torch.randn(5, 3, generator=g)
    return w, b, lambda: ((x @ w.T + b - y) ** 2).sum()


def expected_step(p, grad, m, v, t, lr, beta1, beta2, eps, wd):
    """Algorithm 2 written out element by element, with plain Python floats."""
    p, grad, m, v = p.flatten().tolist(), grad.flatten().tolist(), m.flatten().tolist(), v.flatten().tolist()
    m = [beta1 * mi + (1 - beta1) * gi for mi, gi in zip(m, grad)]
    v = [beta2 * vi + (1 - beta2) * gi * gi for vi, gi in zip(v, grad)]
    u = [(mi / (1 - beta1**t)) / (math.sqrt(vi / (1 - beta2**t)) + eps) + wd * pi
         for mi, vi, pi in zip(m, v, p)]
    w_norm, u_norm = math.sqrt(sum(q * q for q in p)), math.sqrt(sum(q * q for q in u))
    ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
    return [pi - lr * ratio * ui for pi, ui in zip(p, u)], m, v


def test_two_steps_match_algorithm_2():
    lr, betas, eps, wd = 0.1, (0.9, 0.99), 1e-6, 0.01
    w, b, loss_fn = tiny_problem()
    opt = LAMB([w, b], lr=lr, betas=betas, eps=eps, weight_decay=wd)
    moments = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in (w, b)}
    for t in (1, 2):  # step 2 checks the moment accumulation and the bias correction at t = 2
        opt.zero_grad()
        loss_fn().backward()
        expected = {}
        for p in (w, b):
            m, v = moments[id(p)]
            new_p, new_m, new_v = expected_step(p.detach(), p.grad, m, v, t, lr, *betas, eps, wd)
            expected[id(p)] = torch.tensor(new_p).reshape(p.shape)
            moments[id(p)] = (torch.tensor(new_m).reshape(p.shape), torch.tensor(new_v).reshape(p.shape))
        before = w.detach().clone()
        opt.step()
        for p in (w, b):
            assert torch.allclose(p.detach(), expected[id(p)], atol=1e-6, rtol=1e-5)
        # the trust ratio makes each layer's step exactly lr * ||w||
        assert math.isclose((w.detach() - before).norm().item(), lr * before.norm().item(), rel_tol=1e-5)


def test_trust_ratio_is_one_for_zero_weights():
    w = torch.zeros(4, 3, requires_grad=True)
    grad = torch.arange(12.0).reshape(4, 3) - 5.0  # one zero entry: a zero update there
    w.grad = grad.clone()
    opt = LAMB([w], lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01)
    opt.step()
    m_hat, v_hat = grad, grad**2  # bias-corrected moments after one step are g and g^2
    adam = m_hat / (v_hat.sqrt() + 1e-6)
    assert torch.allclose(w.detach(), -0.05 * adam, atol=1e-7)  # plain Adam step of size lr
    assert w.detach().abs().max() > 0.049


def test_state_survives_a_safe_checkpoint_round_trip_and_bad_args_fail():
    w, b, loss_fn = tiny_problem()
    opt = LAMB([w, b])
    loss_fn().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = LAMB([w, b])
    fresh.load_state_dict(state)
    assert fresh.state[w]["step"] == 1 and torch.equal(fresh.state[w]["exp_avg"], opt.state[w]["exp_avg"])
    group = fresh.param_groups[0]  # Snap Video Table 9 defaults
    assert (group["lr"], group["betas"], group["weight_decay"]) == (5e-3, (0.9, 0.99), 0.01)
    with pytest.raises(ValueError, match="betas"):
        LAMB([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr"):
        LAMB([w], lr=-1.0)
