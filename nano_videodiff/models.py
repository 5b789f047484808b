"""A model from a config: EDM's denoiser D (Eq. 7, edm.py) around the backbone the registry names.

``build_denoiser(cfg)`` for diffusion (with its frozen autoencoder for latent diffusion), ``build_autoencoder``
for W.A.L.T's stage 1, ``load_model(path)`` for a trained checkpoint. The registry itself (name -> backbone
class) is ``backbones/__init__.py``; what train.py trains is ``training/objectives.py``.
"""
from __future__ import annotations

from torch import nn

from .backbones import SELF_CONDITIONING, backbone_class, is_autoencoder
from .edm import Denoiser, input_scale
from .text import build_text_encoder
from .latent import build_frozen_autoencoder, latent_data_config, uses_latents
from .training.checkpoint import load_checkpoint, load_model_state
from .training.config import Config
from .errors import UserError


def build_backbone(cfg) -> nn.Module:
    """The backbone for the tensors it will see: pixels, or latents with ``--autoencoder`` (latent.py)."""
    if is_autoencoder(cfg):
        raise UserError("causal_vae is an autoencoder, not a diffusion backbone: train.py trains it with a "
                        "reconstruction loss; use it for diffusion through --autoencoder=<its ckpt.pt>")
    if cfg.model.sr_factor > 1:  # a super-resolution stage around the backbone (upsampler.py)
        from .upsampler import Upsampler
        return Upsampler.from_config(cfg.model, cfg.data)
    return backbone_class(cfg.model.backbone).from_config(cfg.model, latent_data_config(cfg))


def resolved_sigma_in(cfg) -> float:
    """``diffusion.sigma_in``, or for 0 ("auto") Snap Video's ``s * sqrt(T)`` from the data shape."""
    d, data = cfg.diffusion, latent_data_config(cfg)
    if d.sigma_in > 0:
        return d.sigma_in
    return input_scale(data.num_frames, data.height, data.width, d.sigma_in_base_h, d.sigma_in_base_w)


def build_denoiser(cfg) -> Denoiser:
    """EDM's denoiser around the backbone; for latent diffusion it also holds the frozen autoencoder."""
    d = cfg.diffusion
    self_cond = cfg.model.fit_self_cond_prob if cfg.model.backbone in SELF_CONDITIONING else 0.0
    autoencoder = build_frozen_autoencoder(cfg) if uses_latents(cfg) else None  # weights: latent.py loads them
    from .upsampler import denoiser_class  # a super-resolution stage diffuses the residual (upsampler.py)
    return denoiser_class(cfg)(build_backbone(cfg), sigma_data=d.sigma_data, sigma_in=resolved_sigma_in(cfg),
                               P_mean=d.P_mean, P_std=d.P_std,
                               self_condition_prob=self_cond, autoencoder=autoencoder,
                               text_encoder=build_text_encoder(cfg.model, cfg.data))


def build_autoencoder(cfg) -> nn.Module:
    """Stage 1 of latent diffusion (W.A.L.T Sec. 4.1): ``--backbone=causal_vae`` trains this."""
    from .backbones.causal_vae import CausalVAE
    return CausalVAE.from_config(cfg.model, cfg.data)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def load_model(ckpt_path, use_ema: bool = True, device="cpu"):
    """(the denoiser of a train.py checkpoint with its (EMA) weights, in eval mode, its Config): rebuilt from the
    config saved in the file. ``sample.py``, the evaluation and the tutorials load trained models this way."""
    ckpt = load_checkpoint(ckpt_path)
    which = "ema" if use_ema else "model"
    if "config" not in ckpt or which not in ckpt:
        shipped = "" if use_ema else " (a shipped checkpoint holds only the EMA weights: drop --use_ema=false)"
        raise UserError(f"{ckpt_path} is not a nano-videodiff checkpoint with config and {which} weights{shipped}")
    cfg = Config.from_dict(ckpt["config"])
    model = build_denoiser(cfg)
    load_model_state(model, ckpt[which], "EMA" if use_ema else "model", str(ckpt_path))
    return model.to(device).eval(), cfg
