"""The backbone registry (EDM's F for every paper) and the EDM/Snap Video denoiser built around it.

The only place that maps a model's name to its kind: ``build_denoiser(cfg)`` for diffusion,
``build_autoencoder(cfg)`` for W.A.L.T's stage 1, ``build_objective(cfg)`` for what ``train.py`` trains.
"""
from __future__ import annotations

import importlib

from torch import nn

from .checkpoint import load_checkpoint, load_model_state
from .config import Config
from .edm import Denoiser, input_scale
from .latent import build_frozen_autoencoder, latent_data_config, uses_latents

# backbone name -> "module:Class"; the class is a ``backbone.Backbone`` (with ``from_config(model_cfg,
# data_cfg)``). New backbones register here. Imported on first use, so one backbone's module never slows
# down another's start.
BACKBONES = {
    "vdt": "vdt:VDT",                                # VDT (Lu et al. 2024), vdt.py
    "fit": "fit:FIT",                                # Snap Video's FIT (Menapace et al. 2024), fit.py
    "walt": "walt:WALT",                             # W.A.L.T's window-attention transformer, walt.py
    "unet": "unet:UNet",                             # ADM-style image U-Net applied per frame, unet.py
    "videoldm": "temporal_alignment:VideoLDM",       # Video LDM: U-Net + temporal layers, temporal_alignment.py
}
# Backbones whose state is their latents, so RIN's latent self-conditioning applies (--fit_self_cond_prob).
SELF_CONDITIONING = ("fit",)


def backbone_class(name: str):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def is_autoencoder(cfg) -> bool:
    """``--backbone=causal_vae`` names W.A.L.T's stage-1 autoencoder, not a diffusion backbone."""
    return cfg.model.backbone == "causal_vae"


def build_backbone(cfg) -> nn.Module:
    """The backbone for the tensors it will see: pixels, or latents with ``--autoencoder`` (latent.py)."""
    if is_autoencoder(cfg):
        raise ValueError("causal_vae is an autoencoder, not a diffusion backbone: train.py trains it with a "
                         "reconstruction loss; use it for diffusion through --autoencoder=<its ckpt.pt>")
    return backbone_class(cfg.model.backbone).from_config(cfg.model, latent_data_config(cfg))


def resolved_sigma_in(cfg) -> float:
    """``diffusion.sigma_in``, or for 0 ("auto") Snap Video's ``s * sqrt(T)`` from the data shape."""
    d, data = cfg.diffusion, latent_data_config(cfg)
    if d.sigma_in > 0:
        return d.sigma_in
    return input_scale(data.num_frames, data.resolution, data.resolution, d.sigma_in_base_h, d.sigma_in_base_w)


def build_denoiser(cfg) -> Denoiser:
    """EDM's denoiser around the backbone; for latent diffusion it also holds the frozen autoencoder."""
    d = cfg.diffusion
    self_cond = cfg.model.fit_self_cond_prob if cfg.model.backbone in SELF_CONDITIONING else 0.0
    autoencoder = build_frozen_autoencoder(cfg) if uses_latents(cfg) else None  # weights: latent.py loads them
    return Denoiser(build_backbone(cfg), sigma_data=d.sigma_data, sigma_in=resolved_sigma_in(cfg),
                    P_mean=d.P_mean, P_std=d.P_std,
                    self_condition_prob=self_cond, autoencoder=autoencoder)


def build_autoencoder(cfg) -> nn.Module:
    """Stage 1 of latent diffusion (W.A.L.T Sec. 4.1): ``--backbone=causal_vae`` trains this."""
    from .causal_vae import CausalVAE
    return CausalVAE.from_config(cfg.model, cfg.data)


def build_objective(cfg):
    """What ``train.py`` trains (objectives.py): the autoencoder for ``--backbone=causal_vae``, else a denoiser."""
    from .objectives import AutoencoderObjective, DiffusionObjective
    if is_autoencoder(cfg):
        return AutoencoderObjective(build_autoencoder(cfg))
    return DiffusionObjective(build_denoiser(cfg))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def load_model(ckpt_path, use_ema: bool = True, device="cpu"):
    """(the denoiser of a train.py checkpoint with its (EMA) weights, in eval mode, its Config): rebuilt from the
    config saved in the file. ``sample.py``, the evaluation and the tutorials load trained models this way."""
    ckpt = load_checkpoint(ckpt_path)
    which = "ema" if use_ema else "model"
    if "config" not in ckpt or which not in ckpt:
        shipped = "" if use_ema else " (a shipped checkpoint holds only the EMA weights: drop --use_ema=false)"
        raise ValueError(f"{ckpt_path} is not a nano-videodiff checkpoint with config and {which} weights{shipped}")
    cfg = Config.from_dict(ckpt["config"])
    model = build_denoiser(cfg)
    load_model_state(model, ckpt[which], "EMA" if use_ema else "model")
    return model.to(device).eval(), cfg
