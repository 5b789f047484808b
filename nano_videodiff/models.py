"""Build a model from a config: the backbone registry and the EDM/Snap Video denoiser around it."""
from __future__ import annotations

from torch import nn

from .edm import Denoiser
from .fit import FIT
from .vdt import VDT

# backbone name -> class with ``from_config(model_cfg, data_cfg)``. New backbones register here.
BACKBONES = {"vdt": VDT, "fit": FIT}


def build_backbone(cfg) -> nn.Module:
    name = cfg.model.backbone
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name].from_config(cfg.model, cfg.data)


def build_denoiser(cfg) -> Denoiser:
    d = cfg.diffusion
    return Denoiser(build_backbone(cfg), sigma_data=d.sigma_data, sigma_in=d.sigma_in,
                    P_mean=d.P_mean, P_std=d.P_std)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
