"""The backbone contract: EDM's F in ``D = c_skip x + c_out F(c_in x; c_noise)`` (EDM Eq. 7, Table 1).

Every backbone (VDT, FIT, W.A.L.T, the U-Net, Video LDM) derives from ``Backbone`` and fulfils the whole
interface, so nothing outside the registry ever asks "which kind is this?" (the way EDM's Precond classes
all carry ``sigma_min``, ``sigma_max`` and ``round_sigma``). A backbone that needs a hook overrides it; the
others inherit the trivial one.

- ``forward(x, c_noise, cond) -> (out, state)``, called by ``edm.Denoiser``:
  ``x`` (B, T, C, H, W) is the noisy video already multiplied by ``c_in(sigma)``, so of unit variance;
  ``c_noise`` (B,) is ``ln(sigma) / 4`` (EDM Table 1): a backbone never sees ``sigma`` itself;
  ``cond`` is a ``conditioning.Cond`` (labels, frame interval, known mask and content, sampler state, image
  flags), of which a backbone reads the fields it uses and ignores the others (the tensor conventions are
  written in ``conditioning.py``); ``out`` is the network output F with ``out.shape == x.shape``, ``state``
  what the next sampler step should receive as ``cond.self_cond`` (FIT's latents, RIN's latent
  self-conditioning), or None.
- ``from_config(model_cfg, data_cfg)``: build from the config sections (the registry, ``backbones/__init__.py``).
- ``load_pretrained(state, what)``: ``--init_from``'s weights. By default the whole backbone (fine-tuning,
  same architecture); Video LDM takes an image U-Net into its spatial layers (Video LDM Sec. 3.1).
- ``noise_embedder()``: the ``layers.NoiseEmbedder`` that embeds ``c_noise``; a super-resolution stage
  (``upsampler.py``) enables its noise-augmentation branch, so every backbone is told ``cond.aug_sigma``.
- ``has_unused_parameters`` (class attribute): True for a backbone of which some training step leaves a
  trainable parameter without a gradient (an input it may not be given, e.g. FIT's ``known_embed`` without
  given frames). DDP then needs ``find_unused_parameters=True`` (an extra autograd traversal per step);
  train.py passes it only for such backbones (tests/test_backbone_contract.py checks every declaration).
- ``image_model()``: a context in which the backbone runs as the image model it was built on (Video LDM's
  "alpha = 1", Sec. 3.1). Backbones that are not built on an image model refuse, saying so.
- ``conv_in_time(max_distance)``: a context in which the temporal attention of frame i reads only frames j
  with |i - j| <= max_distance, so the temporal layers run over more frames than the model was trained on
  (Video LDM Sec. 3.1 / 4, "convolutional in time"; conv_time.py). Backbones whose frames mix only through
  attention over the time axis declare ``temporal_attention = True`` (VDT, Video LDM) and read
  ``self.temporal_distance``; the others (FIT's latents, W.A.L.T's windows, the U-Net) refuse.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..training.checkpoint import load_model_state
from ..conditioning import Cond
from ..errors import UserError


class Backbone(nn.Module):
    """Base class of every diffusion backbone: the contract above, with the trivial hooks."""

    temporal_attention = False  # True: conv_in_time may mask the attention over frames to a band
    temporal_distance: Optional[int] = None  # inside conv_in_time: the band's half-width in frames
    has_unused_parameters = False  # every trainable parameter gets a gradient in every training step

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor,
                cond: Optional[Cond] = None) -> Tuple[torch.Tensor, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, model_cfg, data_cfg) -> "Backbone":
        raise NotImplementedError

    def load_pretrained(self, state: Dict[str, torch.Tensor], what: str = "pretrained") -> None:
        """Start from another run's weights of the same architecture (strict, with a clear error)."""
        load_model_state(self, state, what)

    def noise_embedder(self):
        """The module that embeds c_noise (a ``layers.NoiseEmbedder``); backbones that nest it override this."""
        return self.noise_embed

    @contextlib.contextmanager
    def image_model(self):
        """Run as the image model inside (Video LDM Sec. 3.1). Only Video LDM has one; the others refuse."""
        raise UserError(f"{type(self).__name__} is not built on an image model: only Video LDM "
                        "(--backbone=videoldm) can be sampled without its temporal layers")
        yield  # unreachable: makes this a generator for contextmanager

    @contextlib.contextmanager
    def conv_in_time(self, max_distance: int):
        """Temporal attention masked to |i - j| <= max_distance inside (Video LDM Sec. 3.1; conv_time.py)."""
        if not self.temporal_attention:
            raise UserError(f"{type(self).__name__} has no temporal attention to mask: convolutional-in-time "
                            "sampling needs --backbone=vdt or videoldm")
        if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < 1:
            raise UserError(f"the temporal attention distance must be an int >= 1, got {max_distance!r}")
        previous, self.temporal_distance = self.temporal_distance, max_distance
        try:
            yield self
        finally:
            self.temporal_distance = previous
