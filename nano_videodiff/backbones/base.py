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
- ``has_unused_parameters`` (class attribute): True for a backbone of which some training step leaves a
  trainable parameter without a gradient (an input it may not be given, e.g. FIT's ``known_embed`` without
  given frames). DDP then needs ``find_unused_parameters=True`` (an extra autograd traversal per step);
  train.py passes it only for such backbones (tests/test_backbone_contract.py checks every declaration).
- ``image_model()``: a context in which the backbone runs as the image model it was built on (Video LDM's
  "alpha = 1", Sec. 3.1). Backbones that are not built on an image model refuse, saying so.
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

    @contextlib.contextmanager
    def image_model(self):
        """Run as the image model inside (Video LDM Sec. 3.1). Only Video LDM has one; the others refuse."""
        raise UserError(f"{type(self).__name__} is not built on an image model: only Video LDM "
                        "(--backbone=videoldm) can be sampled without its temporal layers")
        yield  # unreachable: makes this a generator for contextmanager
