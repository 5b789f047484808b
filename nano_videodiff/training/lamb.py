"""LAMB: Adam with a layer-wise trust ratio (You et al. 2019, "Large Batch Optimization for Deep Learning:
Training BERT in 76 minutes", Algorithm 2). Snap Video trains FIT with it (Table 9: lr 5e-3,
betas (0.9, 0.99), weight decay 0.01, batch 4096); RIN and FIT use it too.

Hand-written on purpose: the optimizer *is* the lesson (it fits in ~40 lines), and torch.optim has no
LAMB (third-party versions exist but are not kept together with PyTorch).

For every parameter tensor x (a "layer") with gradient g, at step t:

    m_t = beta1 m_{t-1} + (1 - beta1) g                 v_t = beta2 v_{t-1} + (1 - beta2) g^2
    r_t = (m_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + eps)      (Adam's bias-corrected step)
    u_t = r_t + weight_decay * x                                          (decoupled weight decay)
    x  <- x - lr * (||x|| / ||u_t||) * u_t                                (trust ratio; 1 if a norm is 0)

The trust ratio makes each layer's step a fixed fraction ``lr`` of its own weight norm, whatever the
scale of its gradients: this is what keeps very large batches (large lr) stable. A layer whose weights
are all zero (e.g. a zero-initialised output layer) takes a plain Adam step of size lr.
Like AdamW, put biases and norm gains in a parameter group with weight_decay = 0 (the caller's job).
"""
from __future__ import annotations

import torch


class LAMB(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 5e-3, betas=(0.9, 0.99), eps: float = 1e-6,
                 weight_decay: float = 0.01):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0; got {lr}, {eps}, {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1); got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients")
                state = self.state[p]
                if not state:  # lazy init: first and second moments
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                update = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + group["eps"])
                update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.sub_(group["lr"] * trust * update)
        return loss
