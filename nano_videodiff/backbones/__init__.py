"""The backbones: EDM's F for every paper (VDT, FIT, W.A.L.T, the U-Net, Video LDM), and their registry.

Each backbone fulfils the contract of ``base.Backbone`` (``forward(x, c_noise, cond) -> (out, state)``,
``from_config``, ``load_pretrained``, ``image_model``); ``layers.py`` and ``window_attention.py`` hold the
blocks they share, ``causal_vae.py`` W.A.L.T's stage-1 autoencoder (not a diffusion backbone).

This registry is the one place that maps a model's name to its kind; ``models.py`` builds the EDM denoiser
around the backbone it names.
"""
from __future__ import annotations

import importlib

from .base import Backbone
from ..errors import UserError

# backbone name -> "module:Class"; the class is a ``Backbone``. New backbones register here. Imported on
# first use, so one backbone's module never slows down another's start.
BACKBONES = {
    "vdt": "vdt:VDT",                                # VDT (Lu et al. 2024), vdt.py
    "fit": "fit:FIT",                                # Snap Video's FIT (Menapace et al. 2024), fit.py
    "walt": "walt:WALT",                             # W.A.L.T's window-attention transformer, walt.py
    "unet": "unet:UNet",                             # ADM-style image U-Net applied per frame, unet.py
    "videoldm": "temporal_alignment:VideoLDM",       # Video LDM: U-Net + temporal layers, temporal_alignment.py
}
# Backbones whose state is their latents, so RIN's latent self-conditioning applies (--fit_self_cond_prob).
SELF_CONDITIONING = ("fit",)
# ``--backbone=causal_vae`` names W.A.L.T's stage-1 autoencoder (causal_vae.py), trained on its own loss.
AUTOENCODER = "causal_vae"


def backbone_class(name: str) -> type:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def is_autoencoder(cfg) -> bool:
    """True for W.A.L.T's stage-1 autoencoder, which is not a diffusion backbone."""
    return cfg.model.backbone == AUTOENCODER
