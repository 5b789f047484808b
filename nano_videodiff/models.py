"""Build a model from a config: the backbone registry and the EDM/Snap Video denoiser around it.

The backbone contract
---------------------
Every class registered in ``BACKBONES`` is an ``nn.Module`` that the ``edm.Denoiser`` calls as

    out = backbone(x, c_noise, cond)

- ``x``: (B, T, C, H, W), the noisy video already multiplied by ``c_in(sigma)``, so of unit variance.
- ``c_noise``: (B,), ``ln(sigma) / 4`` (EDM Table 1); a backbone never sees ``sigma`` itself.
- ``cond``: a ``conditioning.Cond`` (labels, frame interval, known mask and content, sampler state,
  image flags). A backbone reads the fields it uses and ignores the others.
- ``out``: the network output F with ``out.shape == x.shape``; a backbone that hands state on to the
  next sampler step (FIT's latents for self-conditioning) returns ``(out, state)`` instead.
- ``from_config(model_cfg, data_cfg)`` builds it from the config sections (``config.py``).

The tensor conventions that ``cond`` and the data follow are written in ``conditioning.py``.
"""
from __future__ import annotations

import importlib

from torch import nn

from .edm import Denoiser, input_scale
from .latent import build_frozen_autoencoder, latent_data_config, uses_latents

# backbone name -> "module:Class"; the class has ``from_config(model_cfg, data_cfg)``. New backbones
# register here. Imported on first use, so one backbone's module never slows down another's start.
BACKBONES = {
    "vdt": "vdt:VDT",                                # VDT (Lu et al. 2024), vdt.py
    "fit": "fit:FIT",                                # Snap Video's FIT (Menapace et al. 2024), fit.py
    "walt": "walt:WALT",                             # W.A.L.T's window-attention transformer, walt.py
    "unet": "unet:UNet",                             # ADM-style image U-Net applied per frame, unet.py
    "videoldm": "temporal_alignment:VideoLDM",       # Video LDM: U-Net + temporal layers, temporal_alignment.py
}


def backbone_class(name: str):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def build_backbone(cfg) -> nn.Module:
    """The backbone for the tensors it will see: pixels, or latents with ``--autoencoder`` (latent.py)."""
    if cfg.model.backbone == "causal_vae":
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
    denoiser = Denoiser(build_backbone(cfg), sigma_data=d.sigma_data, sigma_in=resolved_sigma_in(cfg),
                        P_mean=d.P_mean, P_std=d.P_std)
    if uses_latents(cfg):
        denoiser.autoencoder = build_frozen_autoencoder(cfg)  # weights: train.py loads them (latent.py)
    return denoiser


def build_autoencoder(cfg) -> nn.Module:
    """Stage 1 of latent diffusion (W.A.L.T Sec. 4.1): ``--backbone=causal_vae`` trains this."""
    from .causal_vae import CausalVAE
    return CausalVAE.from_config(cfg.model, cfg.data)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
