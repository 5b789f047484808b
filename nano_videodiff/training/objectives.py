"""What ``train.py`` trains: one objective per trainable model, behind the same five calls.

EDM's ``training_loop`` calls one loss and takes a step; so does ours, for a denoiser of any backbone
(EDM Eq. 8 with Snap Video's scaling, ``edm.Denoiser.loss``) and for W.A.L.T's stage-1 causal autoencoder
(its reconstruction + KL loss, W.A.L.T Sec. 4.1, ``causal_vae.CausalVAE.loss``):

    objective = build_objective(cfg)                 # the registry picks the model; nothing else does
    loss = objective(batch)                          # forward = model.loss(batch): DDP/FSDP hook forward
    objective.load_pretrained(state, what)           # --init_from
    objective.preview(cfg, ema, device, dtype, path) # what a run shows at its checkpoints
    extra = objective.finish(cfg, ema, device)       # once, after the last step; saved in the checkpoint

``objective.model`` is the model itself (what the EMA copies and the checkpoint holds), ``network`` the
part that learns (parameter counts, activation checkpointing), ``autoencoder`` the frozen encoder the
training data goes through (latent diffusion), or None, and ``has_unused_parameters`` whether DDP must look
for parameters without a gradient (the backbone's declaration, backbones/base.py).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

import toy_data

from ..backbones import is_autoencoder
from ..models import build_autoencoder, build_denoiser
from . import previews
from .checkpoint import load_model_state

# W.A.L.T normalises its latents per channel (Sec. 5.2) with statistics of this many training clips.
LATENT_STATS_CLIPS = 256


class DiffusionObjective(nn.Module):
    """EDM's denoising loss of a ``Denoiser`` (pixels, or the latents of its frozen autoencoder)."""

    def __init__(self, denoiser):
        super().__init__()
        self.model = denoiser

    @property
    def network(self) -> nn.Module:  # properties, not attributes: no module is registered twice
        return self.model.backbone

    @property
    def autoencoder(self):
        return self.model.autoencoder

    @property
    def has_unused_parameters(self) -> bool:  # DDP's find_unused_parameters (backbones/base.py)
        return self.model.backbone.has_unused_parameters

    def forward(self, batch) -> torch.Tensor:
        return self.model.loss(batch)

    def describe(self) -> str:
        return f"sigma_in {self.model.sigma_in:.3f}"

    def load_pretrained(self, state: Dict[str, torch.Tensor], what: str) -> None:
        """Another run's denoiser weights: its backbone part goes into ours (Video LDM: into the image model)."""
        prefix = "backbone."
        self.model.backbone.load_pretrained({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                            what)

    def preview(self, cfg, ema, device, dtype: str, path) -> None:
        previews.write_samples(cfg, ema, device, dtype, path)

    def finish(self, cfg, ema, device) -> dict:
        return {}  # nothing to do after the last step


class AutoencoderObjective(nn.Module):
    """W.A.L.T's stage 1: the causal autoencoder's reconstruction + KL loss on pixels (causal_vae.py)."""

    def __init__(self, autoencoder):
        super().__init__()
        self.model = autoencoder

    @property
    def network(self) -> nn.Module:
        return self.model

    @property
    def autoencoder(self):
        return None  # stage 1 trains on pixels

    @property
    def has_unused_parameters(self) -> bool:
        return self.model.has_unused_parameters

    def forward(self, batch) -> torch.Tensor:
        return self.model.loss(batch)

    def describe(self) -> str:
        return f"latents {self.model.latent_channels} channels, f_s {self.model.spatial_down}, " \
               f"f_t {self.model.temporal_down}"

    def load_pretrained(self, state: Dict[str, torch.Tensor], what: str) -> None:
        load_model_state(self.model, state, what)

    def preview(self, cfg, ema, device, dtype: str, path) -> None:
        previews.write_reconstructions(cfg, ema, device, path)

    @torch.no_grad()
    def finish(self, cfg, ema, device) -> dict:
        """Fit the latent statistics (W.A.L.T Sec. 5.2) with the EMA weights, which stage 2 uses."""
        fit_data = toy_data.build_dataset(cfg.data, "train")
        clips = toy_data.get_batch(fit_data, range(min(LATENT_STATS_CLIPS, len(fit_data))))["video"].to(device)
        ema.fit_latent_stats(clips)
        self.model.latent_mean.copy_(ema.latent_mean)
        self.model.latent_std.copy_(ema.latent_std)
        return {"latent_stats_fitted": True}  # latent.autoencoder_is_trained looks for this


def build_objective(cfg):
    """What ``train.py`` trains: the autoencoder for ``--backbone=causal_vae``, else a denoiser."""
    if is_autoencoder(cfg):
        return AutoencoderObjective(build_autoencoder(cfg))
    return DiffusionObjective(build_denoiser(cfg))
