"""The optimizer side of a training step: AdamW or LAMB, the warm-up + cosine schedule, and the EMA of weights.

- ``build_optimizer``: AdamW (Loshchilov & Hutter 2019) or LAMB (You et al. 2019, ``lamb.py``; Snap Video
  Table 9 trains FIT with it), weight decay on matrices only.
- ``lr_at``: linear warm-up, then cosine decay to ``lr * min_lr_ratio``.
- ``ema_update``: an exponential moving average of the weights with a half-life in steps (as EDM's training
  loop sets its EMA by a half-life, ``ema_halflife_kimg``), which is what sampling uses.
Used by ``train.py`` and the benchmarks, so a benchmark's step is the trainer's step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .lamb import LAMB
from ..errors import UserError


def lr_at(step: int, o) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps`` (``o``: OptimConfig)."""
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def ema_update(ema: nn.Module, parameters, buffers, step: int, halflife: float) -> None:
    """EMA of the weights with half-life ``halflife`` steps; the warm-up (1+t)/(10+t) lets early EMA track.

    ``parameters``: the model's parameters as full tensors, in order (under FSDP, gathered on every rank).
    """
    decay = min(0.5 ** (1.0 / max(halflife, 1e-8)), (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), parameters):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(ema.buffers(), buffers):
        e.copy_(b)


def build_optimizer(parameters, o):
    """AdamW or LAMB; weight decay on matrices only, not on biases, norms and embedding vectors."""
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2))
    if o.optimizer == "lamb":  # layer-wise trust ratios (You et al. 2019); Snap Video's FIT optimizer
        return LAMB(groups, lr=o.lr, betas=(o.beta1, o.beta2))
    raise UserError(f"--optimizer must be adamw or lamb, got {o.optimizer!r}")
