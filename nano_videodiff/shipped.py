"""The pretrained toy checkpoints shipped in ``checkpoints/``: how they are made, and the check each passes.

Each entry of ``checkpoints/manifest.json`` names a checkpoint file, the exact command that trained it, the
commit it was trained at, the metrics it scored, and a *check*: numbers that anyone can recompute in seconds
from the file alone (``tests/test_shipped_checkpoints.py`` does, on every CPU):

- ``held_out_loss``: the EDM training loss (``Denoiser.loss``) on the first clips of the held-out split, at
  fixed noise levels and noise. A trained model scores far below an untrained one, and the number is a
  deterministic function of the weights, so it reproduces to float rounding on any machine.
- ``prediction_psnr`` (prediction models): PSNR of the predicted frames of a few held-out clips, sampled
  with a few deterministic Heun steps.
- ``upsampling_psnr`` (super-resolution stages): PSNR of the stage's outputs for box-downsampled held-out
  clips against the clips, a few deterministic Heun steps.
- ``reconstruction_psnr`` (autoencoders): PSNR of the reconstructions of a few held-out clips.

Shipped files hold only what sampling needs (``checkpoint.export_weights``: config, step, EMA weights in
half precision). To ship a newly trained model (run from the repository root)::

    python -m nano_videodiff.shipped --name=physion_collide_main --ckpt=out/physion_collide_main/ckpt.pt \\
        --command="python train.py" [--eval=out/eval/eval.json]
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import torch

import toy_data
from . import latent, masking, upsampler
from .training.checkpoint import export_weights, load_checkpoint, load_model_state
from .conditioning import Batch, Cond
from .training.config import Config
from .edm import sample_training_sigma
from .errors import UserError, run_script
from .files import atomic_write
from .evaluation.metrics import psnr

from .training.presets import CHECKPOINTS  # the one place that names the folder

ROOT = CHECKPOINTS.parent
MANIFEST = CHECKPOINTS / "manifest.json"
CHECK_CLIPS = 8         # held-out clips in the loss check
CHECK_PREDICTIONS = 4   # clips and Heun steps in the prediction check
CHECK_STEPS = 4


def read_manifest(path: Path = MANIFEST) -> Dict[str, dict]:
    return json.loads(path.read_text()) if path.exists() else {}


def load_shipped(path):
    """(the model with the file's EMA weights in float32, its Config), rebuilt from the config inside the file:
    a denoiser, or for a stage-1 checkpoint (``--backbone=causal_vae``) the autoencoder."""
    from .training.objectives import build_objective
    ckpt = load_checkpoint(path)
    cfg = Config.from_dict(ckpt["config"])
    model = build_objective(cfg).model
    load_model_state(model, ckpt["ema"], f"EMA weights of {path}")
    return model.eval(), cfg


@torch.no_grad()
def reconstruction_psnr(vae, cfg: Config, num_clips: int = CHECK_CLIPS) -> float:
    """Mean per-frame PSNR (dB) of the autoencoder's reconstructions of the first held-out clips."""
    x = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(num_clips))["video"]
    frames = lambda v: v.flatten(0, 1)[:, None]
    return float(psnr(frames(vae.reconstruct(x).clamp(-1, 1)), frames(x)).mean())


@torch.no_grad()
def held_out_loss(model, cfg: Config, num_clips: int = CHECK_CLIPS, seed: int = 0) -> float:
    """The denoising loss on the first ``num_clips`` held-out clips, at noise levels and noise drawn from ``seed``.

    Given content follows the config's task (for ``predict``: the first frames, in latent frames for a latent
    model), labels are the clips' own; no label or context dropout: the model at its best.
    """
    clips = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(num_clips))
    x = clips["video"]
    if latent.uses_latents(cfg):
        x = latent.encode(model.autoencoder, x)
    g = torch.Generator().manual_seed(seed)
    sigma = sample_training_sigma(len(x), cfg.diffusion.P_mean, cfg.diffusion.P_std, generator=g)
    noise = torch.randn(x.shape, generator=g)
    cond = Cond(labels=clips["labels"].long() if cfg.data.num_classes > 0 else None,
                frame_interval=clips["frame_interval"])
    if upsampler.is_upsampler(cfg):  # a super-resolution stage: its noised low-res input, as in training
        x, low_res, aug_sigma = upsampler.training_inputs(cfg, x, len(x), g, slice(None))
        noise = noise[..., :x.shape[-2], :x.shape[-1]]  # the crop's size (--sr_crop)
        cond = cond.replace(low_res=low_res, aug_sigma=aug_sigma)
    mixture = masking.mixture_from_config(latent.latent_task_config(cfg), x.shape[1])
    if mixture is not None:
        known, _ = mixture.sample(len(x), *x.shape[1:2], *x.shape[3:], generator=g)
        cond = cond.replace(known=known, known_x=x)
    return float(model.loss(Batch(x, cond, sigma=sigma, noise=noise)))


@torch.no_grad()
def prediction_psnr(model, cfg: Config, num_clips: int = CHECK_PREDICTIONS, steps: int = CHECK_STEPS) -> float:
    """Mean PSNR (dB) of the predicted frames of the first held-out clips (seed 0, ``steps`` Heun steps)."""
    from .evaluation.physics_eval import context_length, held_out_clips, predict_future
    clips = held_out_clips(cfg, num_clips)
    k = context_length(cfg)
    labels = clips["labels"].long() if cfg.data.num_classes > 0 else None
    pred = predict_future(model, cfg, clips["video"], k, labels=labels, steps=steps, seed=0, batch_size=num_clips)
    return float(psnr(pred[:, k:].flatten(0, 1)[:, None], clips["video"][:, k:].flatten(0, 1)[:, None]).mean())


@torch.no_grad()
def upsampling_psnr(model, cfg: Config, num_clips: int = CHECK_PREDICTIONS, steps: int = CHECK_STEPS) -> float:
    """Mean PSNR (dB) of a super-resolution stage's outputs for the box-downsampled first held-out clips
    (no augmentation, seed 0, ``steps`` Heun steps) against the clips themselves."""
    x = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(num_clips))["video"]
    out = upsampler.upsample_videos(model, cfg, upsampler.downsample(x, cfg.model.sr_factor), 0.0, steps=steps)
    return float(psnr(out.flatten(0, 1), x.flatten(0, 1)).mean())


def measure_check(model, cfg: Config) -> Dict[str, float]:
    """The numbers the manifest records and the test recomputes."""
    from .backbones import is_autoencoder
    if is_autoencoder(cfg):
        return {"reconstruction_psnr": reconstruction_psnr(model, cfg)}
    check = {"held_out_loss": held_out_loss(model, cfg)}
    if cfg.task.masking == "predict":
        check["prediction_psnr"] = prediction_psnr(model, cfg)
    if upsampler.is_upsampler(cfg):
        check["upsampling_psnr"] = upsampling_psnr(model, cfg)
    return check


def ship(name: str, ckpt: str, command: str, eval_json: Optional[str] = None, note: str = "") -> dict:
    """Export ``ckpt`` to checkpoints/<name>.pt and record it in the manifest (see the module docstring)."""
    out = CHECKPOINTS / f"{name}.pt"
    source = load_checkpoint(ckpt)
    export_weights(ckpt, out)
    entry = {"file": out.name, "command": command, "steps": int(source["step"]),
             "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                      text=True).stdout.strip() or "unknown",
             "preset_backbone": source["config"]["model"]["backbone"], "note": note}
    if eval_json:
        result = json.loads(Path(eval_json).read_text())
        entry["metrics"] = {"num_clips": result["num_clips"], "rows": result["rows"]}
    model, cfg = load_shipped(out)  # the check is measured on the shipped (half-precision) weights
    entry["check"] = measure_check(model, cfg)
    manifest = read_manifest()
    manifest[name] = entry
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(MANIFEST, lambda f: f.write(text.encode()))  # a kill must not leave half a manifest
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and its manifest entry: {entry['check']}")
    return entry


def main(argv=None) -> None:
    args = dict(arg[2:].partition("=")[::2] for arg in (sys.argv[1:] if argv is None else argv))
    missing = {"name", "ckpt", "command"} - set(args)
    if missing:
        raise UserError(f"usage: python -m nano_videodiff.shipped --name=NAME --ckpt=PATH --command=CMD "
                        f"[--eval=eval.json] [--note=TEXT] (missing {', '.join(sorted(missing))})")
    ship(args["name"], args["ckpt"], args["command"], args.get("eval"), args.get("note", ""))


if __name__ == "__main__":
    sys.exit(run_script(main))
