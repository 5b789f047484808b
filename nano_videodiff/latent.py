"""Latent diffusion: the denoiser works on the normalised latents of a frozen causal autoencoder.

W.A.L.T (Sec. 3 and 4.1) trains in two stages: (1) the causal 3D autoencoder of ``causal_vae.py`` on
pixels, (2) the diffusion transformer on its latents. Here both stages go through ``train.py``:

    python train.py --config=walt_vae_physion   # stage 1: --backbone=causal_vae, a reconstruction loss
    python train.py --config=walt_physion       # stage 2: --autoencoder=out/walt_vae_physion/ckpt.pt

Stage 2's config carries the same ``vae_*`` fields as stage 1 (presets share them), so the latent shape
follows from the config alone: ``1 + f_t k`` frames of ``H x W`` pixels -> ``1 + k`` latent frames of
``H/f_s x W/f_s`` with ``c`` channels. The autoencoder's weights are copied into the denoiser's checkpoint
(as ``autoencoder.*``, frozen), so a stage-2 checkpoint samples on its own.

**Given content in latent space.** A causal encoder's latent frame ``j`` depends on pixel frames
``0 .. f_t j`` only. So latent frame ``j`` is exactly known when all those pixel frames are given: a
prefix rule (``latent_known``). Forward prediction with ``1 + f_t m`` given frames gives ``1 + m`` latent
frames (W.A.L.T: "encode the last 5 frames into 2 latent frames", f_t = 4); image-to-video gives latent
frame 0. Tasks whose given frames are not a prefix (interpolation, backward prediction, spatial
completion) have no exact latent counterpart, and are refused with an explanation.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .backbones.causal_vae import CausalVAE, latent_frames
from .training.checkpoint import load_checkpoint, load_model_state
from .training.config import square_to_height_width
from .errors import UserError

VAE_FIELDS = ("vae_channels", "vae_channel_mult", "vae_latent_channels", "vae_spatial_down",
              "vae_temporal_down")


def uses_latents(cfg) -> bool:
    return bool(cfg.data.autoencoder)


def latent_data_config(cfg):
    """The DataConfig of the tensors the backbone sees: the latent shape if ``--autoencoder`` is set."""
    d, m = cfg.data, cfg.model
    if not uses_latents(cfg):
        return d
    f = m.vae_spatial_down
    if d.height % f or d.width % f:
        raise UserError(f"frames of {d.height}x{d.width} must be divisible by --vae_spatial_down={f} in both "
                        "directions; change --height/--width (or --resolution)")
    return replace(d, num_frames=latent_frames(d.num_frames, m.vae_temporal_down),
                   height=d.height // f, width=d.width // f, channels=m.vae_latent_channels)


def latent_task_config(cfg):
    """The TaskConfig in latent frames: ``num_context`` given pixel frames = 1 + f_t m -> 1 + m latent frames."""
    t, f = cfg.task, cfg.model.vae_temporal_down
    if not uses_latents(cfg) or t.num_context == 0:
        return t
    if (t.num_context - 1) % f:
        raise UserError(f"--num_context={t.num_context}: with a causal autoencoder (f_t = {f}) the given frames "
                        f"must be 1 + {f}m (1, {1 + f}, {1 + 2 * f}, ...), so that they make whole latent frames")
    return replace(t, num_context=1 + (t.num_context - 1) // f)


def build_frozen_autoencoder(cfg) -> CausalVAE:
    """The stage-1 architecture from ``cfg``'s vae_* fields, frozen: stage 2 never trains it.

    ``models.build_denoiser`` keeps it as ``denoiser.autoencoder`` (a submodule, so its weights are saved
    with the denoiser's); it has no dropout or batch statistics, so train/eval mode does not matter.
    """
    vae = CausalVAE.from_config(cfg.model, cfg.data)
    return vae.requires_grad_(False).eval()


@torch.no_grad()
def encode(vae: CausalVAE, video: torch.Tensor, is_image=None) -> torch.Tensor:
    """Pixels -> normalised latents (the posterior mean), in float32 whatever the autocast."""
    with torch.autocast(video.device.type, enabled=False):
        return vae.to_latent(video.float(), is_image)


@torch.no_grad()
def decode(vae: CausalVAE, z: torch.Tensor, is_image=None) -> torch.Tensor:
    with torch.autocast(z.device.type, enabled=False):
        return vae.from_latent(z.float(), is_image)


def autoencoder_is_trained(path) -> bool:
    """True if ``path`` holds a finished stage-1 checkpoint (its latent statistics fitted after the last step)."""
    return Path(path).is_file() and bool(load_checkpoint(path).get("latent_stats_fitted", False))


def load_autoencoder_weights(vae: CausalVAE, path: str, cfg) -> None:
    """Stage 1's EMA weights (and fitted latent statistics) into ``vae``, after checking they match."""
    ckpt = load_checkpoint(path)
    saved = ckpt.get("config", {})
    saved_model, saved_data = saved.get("model", {}), saved.get("data", {})
    if saved_model.get("backbone") != "causal_vae":
        raise UserError(f"--autoencoder={path} is not an autoencoder checkpoint (its backbone is "
                        f"{saved_model.get('backbone')!r}); train one with --backbone=causal_vae")
    differ = [f"{k}: {saved_model.get(k)!r} vs {getattr(cfg.model, k)!r}" for k in VAE_FIELDS
              if saved_model.get(k) != getattr(cfg.model, k)]
    saved_data = square_to_height_width(saved_data)
    differ += [f"{k}: {saved_data.get(k)!r} vs {getattr(cfg.data, k)!r}" for k in ("channels", "height", "width")
               if saved_data.get(k) != getattr(cfg.data, k)]
    if differ:
        raise UserError(f"--autoencoder={path} was trained with other settings ({'; '.join(differ)}); "
                        "pass the same vae_* values (the walt_* presets share them with their stage 1)")
    load_model_state(vae, ckpt["ema"], f"autoencoder ({path})")
    if not ckpt.get("latent_stats_fitted", False):
        raise UserError(f"{path} has no fitted latent statistics: its training did not finish. Resume it "
                        "(--resume) to the end; train.py fits them after the last step")


def latent_known(known: torch.Tensor, num_frames: int, temporal_down: int) -> torch.Tensor:
    """Pixel mask (B, T, 1, H, W) -> latent-frame mask (B, 1 + k, 1, 1, 1) by the causal prefix rule.

    Latent frame j = 0, 1, ..., k summarises pixel frames up to f_t j, so it is known iff every pixel
    of frames 0 .. f_t j is known.
    """
    known = known.expand(known.shape[0], num_frames, *known.shape[2:])
    frame_given = known.flatten(2).all(-1)                       # (B, T): the whole frame is given
    prefix_given = frame_given.long().cumprod(1).bool()          # frames 0..t all given
    latent_frame_last_pixel = torch.arange(0, num_frames, temporal_down, device=known.device)
    return prefix_given[:, latent_frame_last_pixel][:, :, None, None, None]


def check_latent_task(known: torch.Tensor, known_latent: torch.Tensor, num_frames: int,
                      temporal_down: int) -> None:
    """Refuse given pixels that no known latent frame carries: they would be silently ignored.

    Known latent frames 0..j cover pixel frames 0..f_t j; anything given beyond them is refused, with
    the frame counts that work (see the module docstring).
    """
    known = known.expand(known.shape[0], num_frames, *known.shape[2:])
    covered_frames = known_latent.flatten(1).sum(1) * temporal_down - (temporal_down - 1)  # (B,) 1 + f_t j
    frame_index = torch.arange(num_frames, device=known.device)
    outside = known.flatten(2).any(-1) & (frame_index[None] >= covered_frames.clamp(min=0)[:, None])
    if outside.any():
        raise UserError("in the latent space of a causal autoencoder only a prefix of 1 + f_t*m whole frames "
                        f"can be given (f_t = {temporal_down}; latent frame j needs pixel frames 0..f_t*j): "
                        f"use predict with --num_context in {{1, {1 + temporal_down}, {1 + 2 * temporal_down}, "
                        "...}, animate with frame 0, or generate; interpolation, backward prediction and "
                        "completion need a pixel-space model")
