"""Frechet Video Distance with the standard I3D network, computed our way, from weights the user supplies.

FVD (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video: A New Metric & Challenges",
arXiv 1812.01717, Sec. 3) is the Frechet distance (``distances.py``) between Gaussians fitted to the I3D
features (``i3d.py``: the 400 Kinetics logits) of real and of generated clips. The number depends on the
protocol as much as on the model, so the protocol is fixed here and recorded with every result:

- **clip length 16**: the first ``CLIP_LENGTH`` frames of each clip (StyleGAN-V's protocol and the FVD
  paper's own experiments score 16-frame clips); shorter clips are refused rather than scored
  differently;
- **resizing to 224**: each frame's shorter side is resized to 224 pixels (bilinear, no antialiasing), then
  centre-cropped to 224 x 224, as StyleGAN-V's PyTorch port does (the TF original resizes straight to
  224 x 224: the same for square frames); grey clips are repeated to three channels;
- **value range [-1, 1]**: this project's clips already are (the I3D's input range), so there is no
  rescaling, and the TorchScript file is called with ``rescale=False, resize=False``;
- **number of samples**: all clips passed (``sample.py --eval --eval_clips=N`` uses N generated and the same
  N true clips). The Frechet distance of a finite sample is biased upwards, more for fewer clips (the
  papers use 2048 to 10k), so FVDs are comparable only at equal N; the result records N, and a bootstrap
  interval over clips (``stats.py``).

Toy clips of 32 x 32 upsampled to 224 are far from Kinetics, so FVD here ranks models of this project
against each other; it does not put a toy model next to the papers' UCF-101 numbers.

    extractor = i3d.load_i3d("i3d_torchscript.pt")
    result = fvd(real_videos, fake_videos, extractor)   # {"fvd", "fvd_ci", "num_real", "num_fake", ...}
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import distances, stats
from ..errors import UserError

CLIP_LENGTH = 16
RESOLUTION = 224


def preprocess(videos: torch.Tensor, clip_length: int = CLIP_LENGTH, resolution: int = RESOLUTION) -> torch.Tensor:
    """(B, T, C, H, W) in [-1, 1] -> I3D's input (B, 3, clip_length, resolution, resolution) (module docstring)."""
    b, t, c, h, w = videos.shape
    if t < clip_length:
        raise UserError(f"FVD's protocol scores {clip_length}-frame clips; these have {t} frames")
    if c not in (1, 3):
        raise UserError(f"FVD needs RGB or grey clips, got {c} channels")
    x = videos[:, :clip_length].float().expand(-1, -1, 3, -1, -1).flatten(0, 1)
    scale = resolution / min(h, w)
    size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[..., top:top + resolution, left:left + resolution]
    return x.reshape(b, clip_length, 3, resolution, resolution).transpose(1, 2).clamp(-1, 1).contiguous()


@torch.no_grad()
def i3d_features(videos: torch.Tensor, extractor, batch_size: int = 4, device="cpu") -> torch.Tensor:
    """(N, 400) I3D features of clips (N, T, C, H, W), ``batch_size`` clips at a time (224 x 224 x 16 each)."""
    out = [extractor(preprocess(videos[i:i + batch_size]).to(device)).float().cpu()
           for i in range(0, len(videos), batch_size)]
    return torch.cat(out)


def frechet_with_interval(real: torch.Tensor, fake: torch.Tensor, num_resamples: int = 200, seed: int = 0) -> dict:
    """The Frechet distance of two feature sets and a bootstrap interval over the generated clips (the real
    set fixed: the spread due to which generated clips were drawn)."""
    mu, cov = distances.gaussian_fit(real)
    value, lo, hi = stats.set_interval(lambda idx: distances.frechet_from_stats(mu, cov, *distances.gaussian_fit(fake[idx])),
                                       len(fake), num_resamples=num_resamples, seed=seed)
    return {"value": value, "ci": [lo, hi]}


def fvd(real: torch.Tensor, fake: torch.Tensor, extractor, batch_size: int = 4, device="cpu") -> dict:
    """FVD between real and generated clips (N, T, C, H, W) in [-1, 1], with the protocol recorded."""
    if len(real) < 2 or len(fake) < 2:
        raise UserError("FVD needs at least 2 real and 2 generated clips")
    f_real = i3d_features(real, extractor, batch_size, device)
    f_fake = i3d_features(fake, extractor, batch_size, device)
    d = frechet_with_interval(f_real, f_fake)
    return {"fvd": d["value"], "fvd_ci": d["ci"], "num_real": len(real), "num_fake": len(fake),
            "clip_length": CLIP_LENGTH, "resolution": RESOLUTION, "weights": extractor.source}
