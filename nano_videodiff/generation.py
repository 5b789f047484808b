"""Generate videos from a trained denoiser, with or without given content (VDT tasks).

Used by ``sample.py`` and by ``train.py``'s previews, so both sample the same way:

    videos = generate(model, cfg, num_videos, known=..., known_x=..., steps=24, seed=0)

``known`` / ``known_x`` follow the mask convention of ``conditioning.py`` (True = given, clean content in
data units); the sampler returns given content bit-exactly. Guidance can be over the label (drop the label)
or over the context (drop the given content: Video LDM's "context guidance", VDT's unconditional branch).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from . import latent, masking
from .conditioning import Cond
from .sampler import edm_sigmas, sample
from .errors import UserError


@torch.no_grad()
def generate(model, cfg, num_videos: int, known: Optional[torch.Tensor] = None,
             known_x: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
             steps: int = 0, solver: str = "", seed: int = 0, cfg_scale: float = 1.0,
             guidance: str = "label", S_churn: float = 0.0, dtype: str = "fp32", batch_size: int = 8,
             device=None, progress: bool = False, frame_interval: Optional[float] = None,
             stage: Optional[int] = None, captions: Optional[Sequence[str]] = None,
             extra_cond: Optional[dict] = None, dynamic_threshold: float = 0.0,
             cfg_oscillate_to: Optional[float] = None) -> torch.Tensor:
    """Sample ``num_videos`` videos (N, T, C, H, W), clamped to [-1, 1]; the noise depends only on seed.

    ``frame_interval`` in seconds defaults to the data's 1/fps; 0 asks for images (infinite-fps videos,
    Snap Video Sec. 3.3) from a model trained jointly on images and videos. ``stage``: the interpolation
    stage a model with ``--num_stages`` is told (``Cond.stage``, interpolation.py); None = not given.
    ``captions`` (one string per video) prompt a text-to-video model (text.py); label guidance then drops
    the text (caption ""). ``extra_cond``: more ``Cond`` fields of (N, ...) tensors, e.g. an upsampler's
    ``low_res`` and ``aug_sigma`` (upsampler.py). ``dynamic_threshold`` (a percentile, 0 = off) and
    ``cfg_oscillate_to`` (None = off): Snap Video Sec. 3.6 (sampler.py).
    """
    d, diff = cfg.data, cfg.diffusion
    device = torch.device(device or "cpu")
    if guidance not in ("label", "context"):
        raise UserError(f"guidance must be 'label' or 'context', got {guidance!r}")
    if cfg_scale != 1.0 and guidance == "label" and d.num_classes == 0 and captions is None:
        raise UserError("label guidance needs a model trained with labels or captions; use guidance='context' for a "
                        "masked model, or cfg_scale=1")
    if cfg_scale != 1.0 and guidance == "context" and known is None:
        raise UserError("context guidance needs given content (a task other than 'generate')")
    check_guidance_branch_trained(cfg, cfg_scale, guidance)
    vae = model.autoencoder  # latent diffusion (latent.py): sample latents, then decode; None = pixels
    if dynamic_threshold and vae is not None:
        raise UserError("--dynamic_threshold clips D to the pixels' [-1, 1]: it is for pixel-space models, not "
                        "latents (their range is not [-1, 1])")
    pixel_known, pixel_known_x = known, known_x
    if vae is not None:
        d = latent.latent_data_config(cfg)
        if known is not None:
            known = latent.latent_known(known, cfg.data.num_frames, cfg.model.vae_temporal_down)
            latent.check_latent_task(pixel_known, known, cfg.data.num_frames, cfg.model.vae_temporal_down)
            known_x = torch.cat([latent.encode(vae, part.to(device)).cpu() for part in known_x.split(batch_size)])
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_videos, d.num_frames, d.channels, d.height, d.width, generator=g)
    sigmas = edm_sigmas(steps or diff.sample_steps, diff.sigma_min, diff.sigma_max, diff.rho, device=device)
    churn_gen = torch.Generator(device=device).manual_seed(seed + 1)
    out = []
    for start in range(0, num_videos, batch_size):
        part = slice(start, start + batch_size)
        n = noise[part].shape[0]

        def take(t):
            return None if t is None else t[part].to(device)
        interval = 1.0 / d.fps if frame_interval is None else float(frame_interval)
        cond = Cond(labels=take(labels), frame_interval=torch.full((n,), interval, device=device),
                    known=take(known), known_x=take(known_x),
                    stage=None if stage is None else torch.full((n,), int(stage), device=device),
                    captions=None if captions is None else tuple(captions[part]))
        cond = cond.replace(**{name: take(value) for name, value in (extra_cond or {}).items()})
        uncond = cond.replace(known=None, known_x=None) if guidance == "context" else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            videos = sample(model.forward_with_state, noise[part].to(device), sigmas, cond, solver=solver or diff.solver,
                            S_churn=S_churn, sigma_in=model.sigma_in, cfg_scale=cfg_scale, uncond=uncond,
                            generator=churn_gen, progress=progress, cfg_oscillate_to=cfg_oscillate_to,
                            dynamic_threshold_percentile=dynamic_threshold)
        if vae is not None:
            is_image = None if interval > 0 else torch.ones(n, dtype=torch.bool, device=device)
            videos = latent.decode(vae, videos, is_image)
        out.append(videos.cpu())
    # Data lives in [-1, 1]; clamping the final sample is standard (and leaves given content untouched).
    videos = torch.cat(out).clamp(-1, 1)
    if vae is not None and pixel_known is not None:  # given frames as given, not as reconstructed
        videos = torch.where(pixel_known.expand_as(videos), pixel_known_x, videos)
    return videos


def check_guidance_branch_trained(cfg, cfg_scale: float, guidance: str) -> None:
    """Guidance extrapolates from the branch without the label (or without the context): refuse it when
    training never showed the model that branch, since its output there is untrained noise."""
    if cfg_scale == 1.0:
        return
    if guidance == "context" and not masking.trains_without_context(cfg.task, cfg.data.num_frames):
        raise UserError(f"--guidance=context with --cfg_scale={cfg_scale}: this model was trained with "
                        f"--context_dropout=0 and --masking={cfg.task.masking}, so it never saw a clip without "
                        "context and its context-free branch is untrained; use --cfg_scale=1, or train with "
                        "--context_dropout=0.1")
    if guidance == "label" and cfg.diffusion.label_dropout == 0:
        raise UserError(f"--guidance=label with --cfg_scale={cfg_scale}: this model was trained with "
                        "--label_dropout=0, so its label-free branch is untrained; use --cfg_scale=1, or train "
                        "with --label_dropout=0.1")


def show_known(known_x: torch.Tensor, known: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """The given content as a picture: known pixels as they are, the rest grey (``fill``)."""
    return torch.where(known.expand_as(known_x), known_x, torch.full_like(known_x, fill))


@torch.no_grad()
def regenerate(model, cfg, videos: torch.Tensor, sigma: float, steps: int = 0, seed: int = 0) -> torch.Tensor:
    """SDEdit (Meng et al. 2021, arXiv 2108.01073, Sec. 3): ``videos`` noised to ``sigma`` and denoised by the
    model from there down (``steps`` Heun steps from sigma to sigma_min): the model's own version of them, with
    its own errors, while they keep what the noise did not drown. Pixel-space models, no given content."""
    d = cfg.diffusion
    noise = torch.randn(videos.shape, generator=torch.Generator().manual_seed(seed))
    sigmas = edm_sigmas(steps or d.sample_steps, d.sigma_min, sigma, d.rho)
    cond = Cond(frame_interval=torch.full((videos.shape[0],), 1 / cfg.data.fps))
    # the sampler starts from x_sigma = x / sigma_in + sigma eps, handed to it divided by sigma (its unit noise)
    x_sigma = videos.float() / model.sigma_in + sigma * noise
    return sample(model.forward_with_state, x_sigma / sigma, sigmas, cond, sigma_in=model.sigma_in).clamp(-1, 1)
