"""What a training run shows while it runs: EDM samples (Alg. 1) from the EMA model, and the loss curve.

``train.py`` calls them at its checkpoints through its objective (objectives.py): a denoiser writes samples,
the autoencoder (W.A.L.T stage 1) reconstructions. They only read the model and write files (rank 0 only).
"""
from __future__ import annotations

from pathlib import Path

import torch

import toy_data
from toy_data import captions

from .. import masking
from ..generation import generate, show_known
from ..evaluation.video_io import frames_grid, save_gif, save_png, video_grid
from .runs import read_log


def _write(path: Path, panels: list, fps: float, one_column: bool) -> None:
    """One GIF of the panels side by side (videos in rows) and a PNG of their frames."""
    save_gif(path.with_suffix(".gif"), video_grid(torch.cat(panels, dim=-1), ncol=1 if one_column else None), fps=fps)
    save_png(path.with_suffix(".png"), frames_grid(torch.stack(panels, 1).flatten(0, 1)), scale=2)


@torch.no_grad()
def write_reconstructions(cfg, autoencoder, device, path: Path) -> None:
    """The autoencoder (W.A.L.T stage 1) on held-out clips: [input | reconstruction]."""
    n, d = cfg.run.num_preview, cfg.data
    clips = toy_data.get_batch(toy_data.build_dataset(d, "test"), range(n))["video"]
    _write(path, [clips, autoencoder.reconstruct(clips.to(device)).clamp(-1, 1).cpu()], d.fps, one_column=True)


@torch.no_grad()
def write_samples(cfg, ema, device, dtype: str, path: Path) -> None:
    """Sample a few videos from the EMA model with fixed noise; write one GIF and a PNG of frames.

    A masked model (``--masking``) is shown predicting held-out clips: [given | output | truth].
    ``dtype`` is the precision the run resolved (bf16 | fp16 | fp32; hardware.resolve_dtype).
    """
    n, d = cfg.run.num_preview, cfg.data
    labels = torch.arange(n) % d.num_classes if d.num_classes > 0 else None
    known = known_x = None
    if cfg.task.masking != "none":
        batch = toy_data.get_batch(toy_data.build_dataset(d, "test"), range(n))
        known_x = batch["video"]
        k = cfg.task.num_context or d.num_frames // 2
        known = masking.predict(n, d.num_frames, d.height, d.width, num_context=k)
        labels = batch["labels"].long() if labels is not None else None
    # text-to-video: prompted with the held-out clips' captions in held-out phrasings (toy_data/captions.py)
    texts = captions.held_out_captions(d, n) if cfg.model.text_encoder else None
    videos = generate(ema, cfg, n, known=known, known_x=known_x, labels=labels, steps=cfg.run.preview_steps,
                      seed=0, dtype=dtype, batch_size=n, device=device, captions=texts)
    panels = [videos] if known is None else [show_known(known_x, known), videos, known_x]
    _write(path, panels, d.fps, one_column=known is not None)


def plot_losses(log_path: Path, png_path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read_log(log_path)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set(xlabel="step", ylabel="training loss (EDM-weighted)", yscale="log", title=png_path.parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
