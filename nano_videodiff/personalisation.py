"""Temporal layers on other image weights: personalised video generation for free (Video LDM Sec. 4).

Paper: Blattmann et al. 2023, "Align your Latents" (Video LDM, arXiv 2304.08818), Sec. 4 ("Personalized
Text-to-Video"): the temporal layers trained once on top of an image model are inserted, unchanged, into a
*fine-tuned* copy of that image model (there a DreamBooth fine-tune), and the result generates videos with
the new appearance and the old motion.

Here, for a Video LDM denoiser (``--backbone=videoldm``, backbones/temporal_alignment.py):

1. ``image_denoiser``: the video model's frozen spatial layers as a stand-alone image model of single frames
   (a ``--backbone=unet`` denoiser with the same weights);
2. ``fine_tune``: train that image model alone, with its ordinary EDM loss, on single frames of a changed
   domain (``APPEARANCES``: toy changes of the bouncing balls' look);
3. ``with_image_weights``: a copy of the video model whose spatial layers hold the fine-tuned weights; its
   temporal layers are bit-exact the original's (tests/test_personalisation.py).

``evaluation/upsampling.motion`` then says whether the motion carried over (docs/cascades.md).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Tuple

import torch

import toy_data
from .conditioning import Batch, Cond
from .errors import UserError
from .training.config import Config

NAVY = torch.tensor([-1.0, -1.0, -0.2]).reshape(3, 1, 1)
BLACK, WHITE = -torch.ones(3, 1, 1), torch.ones(3, 1, 1)

# A changed toy domain: (what it does to a clip of bouncing balls on black, its background colour).
APPEARANCES: Dict[str, Tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = {
    # the background turns navy, the balls stay as they were: a light change (as a DreamBooth fine-tune)
    "navy": (lambda v: torch.where(v.amax(-3, keepdim=True) < -0.9, NAVY, v), NAVY),
    # every colour inverted: white background, complementary balls: a drastic change
    "invert": (lambda v: -v, WHITE),
}


def appearance(name: str) -> Tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    if name not in APPEARANCES:
        raise UserError(f"unknown appearance {name!r}: choose one of {', '.join(APPEARANCES)}")
    return APPEARANCES[name]


def _require_videoldm(cfg: Config) -> None:
    if cfg.model.backbone != "videoldm":
        raise UserError(f"personalisation swaps the image model under Video LDM's temporal layers: it needs a "
                        f"--backbone=videoldm model, not {cfg.model.backbone!r}")


def image_config(video_cfg: Config) -> Config:
    """The image model's config: the video model's U-Net settings, ``--backbone=unet``, single frames."""
    _require_videoldm(video_cfg)
    cfg = Config.from_dict(video_cfg.to_dict())
    cfg.model.backbone, cfg.data.num_frames, cfg.run.init_from = "unet", 1, ""
    return cfg.validate()


def image_denoiser(video_model, video_cfg: Config):
    """(an image-model denoiser holding a copy of the video model's spatial weights, its config)."""
    from .models import build_denoiser
    cfg = image_config(video_cfg)
    model = build_denoiser(cfg)
    model.backbone.load_state_dict(video_model.backbone.unet.state_dict())
    return model.eval(), cfg


def fine_tune(image_model, cfg: Config, look: str, steps: int, batch_size: int = 16, lr: float = 1e-3,
              seed: int = 0):
    """A copy of ``image_model`` trained ``steps`` AdamW steps on single training frames changed by ``look``."""
    change, _ = appearance(look)
    model = copy.deepcopy(image_model).train().requires_grad_(True)  # an EMA copy may come frozen
    dataset = toy_data.build_dataset(cfg.data, "train")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        frames = toy_data.get_batch(dataset, range(step * batch_size, (step + 1) * batch_size))["video"]
        cond = Cond(frame_interval=torch.full((batch_size,), 1 / cfg.data.fps))
        loss = model.loss(Batch(x=change(frames), cond=cond), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def with_image_weights(video_model, image_model):
    """A copy of the Video LDM denoiser ``video_model`` with ``image_model``'s weights in its spatial layers."""
    swapped = copy.deepcopy(video_model)
    swapped.backbone.load_image_model(image_model.state_dict())
    return swapped
