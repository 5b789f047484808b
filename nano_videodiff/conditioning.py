"""What a model is given: ``Cond``, a backbone's conditioning besides the noisy video and the noise level,
and ``Batch``, everything one training step of any model sees (``loss = model.loss(batch)``).

Every backbone is called as ``backbone(x, c_noise, cond)`` (the contract is written in ``backbone.py``), and
``cond`` is this small dataclass. A backbone reads the fields it knows and ignores the rest; fields left
``None`` mean "not given". Adding a field later (e.g. for a new backbone) does not break the others.

Conventions shared by the whole package
---------------------------------------
- Videos are tensors (B, T, C, H, W) (einops ``b t c h w``), values in [-1, 1] in data space; an image
  batch (B, C, H, W) appears only where a docstring says so.
- The noise level ``sigma`` is a float tensor (B,) in EDM units; backbones receive ``ln(sigma) / 4``.
- Frame rate is a frame interval in seconds, ``1 / fps``; an image, a video at infinite frame rate
  (Snap Video Sec. 3.3), has interval 0, a number like any other.
- Given content is marked by a boolean ``known`` broadcastable to (B, T, 1, H, W): True where the
  content is given (clean context), False where the model generates. This is the complement of VDT's
  ``mask`` (``masking.py``).
- The diffusion arithmetic (``edm.py``, ``sampler.py``) runs in float32 even under autocast.
- Whatever must be reproducible (data sets, masks, sampling) takes an explicit seed or ``torch.Generator``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch

# The label value that means "no label": the unconditional branch of classifier-free guidance.
# Backbones map it to a learned "null" embedding (Ho & Salimans 2022; Snap Video drops labels w.p. 0.1).
DROPPED_LABEL = -1


@dataclass
class Cond:
    """Per-sample conditioning for a batch of B videos.

    labels:         (B,) long, class / scenario id, or DROPPED_LABEL for "unconditional".
    frame_interval: (B,) float, seconds between frames (1/fps). An image treated as a video has
                    interval 0 (infinite frame rate, Snap Video Sec. 3.3): a number, not a special case.
    known:          bool, broadcastable to (B, T, 1, H, W): True where the content is given (VDT masks).
    known_x:        (B, T, C, H, W) clean content in data units, read only where ``known`` is True.
    self_cond:      state carried from the previous sampler step (e.g. FIT/RIN latents); None at the start.
    is_image:       (B,) bool, True for samples whose T frames are independent images, not a video.
                    Backbones with temporal layers must not mix their frames: W.A.L.T's identity
                    attention mask (Sec. 4.2), Video LDM's alpha = 1 (Sec. 3.1). None = all videos.
    stage:          (B,) long, which stage of Video LDM's interpolation stack (Sec. 4: one model for T -> 4T
                    and 4T -> 16T, told apart by a binary conditioning; ``interpolation.py``), 0 = the lowest
                    frame rate. Read by backbones built with ``num_stages > 0``; None = stage 0.
    captions:       tuple of B strings (text-to-video); "" = the text dropped (the unconditional branch).
    text, text_mask: (B, L, D) text tokens and (B, L) bool (True = a real token), encoded from ``captions``
                    by the denoiser's text encoder (text.py) before the backbone reads them.
    low_res:        (B, T, C, H/f, W/f) the low-resolution video a super-resolution stage is conditioned on,
                    in data units, already noise-augmented (upsampler.py). None = not an upsampler.
    aug_sigma:      (B,) float, the EDM noise level that augmentation added to ``low_res`` (0 = clean); the
                    noise embedding of an upsampler's backbone is told it (layers.NoiseEmbedder). None = 0.
    """

    labels: Optional[torch.Tensor] = None
    frame_interval: Optional[torch.Tensor] = None
    known: Optional[torch.Tensor] = None
    known_x: Optional[torch.Tensor] = None
    self_cond: Any = None
    is_image: Optional[torch.Tensor] = None
    stage: Optional[torch.Tensor] = None
    captions: Optional[tuple] = None
    text: Optional[torch.Tensor] = None
    text_mask: Optional[torch.Tensor] = None
    low_res: Optional[torch.Tensor] = None
    aug_sigma: Optional[torch.Tensor] = None

    def replace(self, **changes) -> "Cond":
        return dataclasses.replace(self, **changes)

    def unconditional(self) -> "Cond":
        """The branch classifier-free guidance compares against: labels and text dropped (captions ""),
        everything else kept."""
        out = self
        if self.labels is not None:
            out = out.replace(labels=torch.full_like(self.labels, DROPPED_LABEL))
        if self.captions is not None:
            out = out.replace(captions=("",) * len(self.captions), text=None, text_mask=None)
        return out

    def take(self, index) -> "Cond":
        """The conditioning of a sub-batch: every per-sample tensor indexed along the batch dimension.

        ``known`` may be shared by the whole batch (its batch dimension 1); it is then kept as it is.
        """
        def part(v):
            if isinstance(v, tuple):  # captions: one string per sample
                return tuple(v[i] for i in torch.arange(len(v))[index].reshape(-1).tolist())
            if not torch.is_tensor(v) or v.ndim == 0 or v.shape[0] == 1:
                return v
            return v[index]
        return Cond(**{f.name: part(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def to(self, device) -> "Cond":
        moved = {f.name: (v.to(device) if torch.is_tensor(v) else v)
                 for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}
        return Cond(**moved)


@dataclass
class Batch:
    """One training batch, by name: what ``train.py`` hands to ``model.loss(batch)`` for every model.

    x:              (B, T, C, H, W) clean videos in data units: pixels, or normalised latents (latent.py).
    cond:           their conditioning (labels after dropout, frame intervals, given content, image flags).
    sigma:          (B,) noise levels, EDM's ln(sigma) ~ N(P_mean, P_std^2); None = the loss draws them.
    noise:          (B, T, C, H, W) unit Gaussian noise; None = the loss draws it.
    self_cond_draw: (B,) uniform numbers in [0, 1), one per sample: which samples RIN's latent
                    self-conditioning uses (edm.Denoiser.loss); None = the loss draws them.
    The trainer draws sigma, noise and self_cond_draw from its per-step generator (batches.py), so a
    resumed run and a DDP run see exactly the numbers a single uninterrupted run sees.
    """

    x: torch.Tensor
    cond: Cond = dataclasses.field(default_factory=Cond)
    sigma: Optional[torch.Tensor] = None
    noise: Optional[torch.Tensor] = None
    self_cond_draw: Optional[torch.Tensor] = None
