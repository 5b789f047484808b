"""Turn a checkpoint into videos: GIFs (one per video, plus a grid) and a PNG of all frames.

    python sample.py --ckpt=out/bouncing_balls/ckpt.pt --out_dir=out/samples
    python sample.py --ckpt=... --num_videos=16 --steps=32 --solver=euler --seed=3 --cfg_scale=2 --label=1

The model is rebuilt from the config saved in the checkpoint (loaded with ``weights_only=True``), so no
flags about the architecture are needed. ``python sample.py --help`` lists every option.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from nano_videodiff.checkpoint import load_checkpoint, load_model_state
from nano_videodiff.conditioning import DROPPED_LABEL, Cond
from nano_videodiff.config import Config, parse_value
from nano_videodiff.models import build_denoiser
from nano_videodiff.sampler import edm_sigmas, sample
from nano_videodiff.video_io import frames_grid, save_gif, save_png, video_grid


@dataclass
class SampleArgs:
    ckpt: str = ""                # checkpoint written by train.py (OUT_DIR/ckpt.pt)
    out_dir: str = "out/samples"  # where GIFs and PNGs go
    num_videos: int = 8
    steps: int = 0                # sampler steps; 0 = the checkpoint config's sample_steps
    solver: str = ""              # heun | euler; "" = the config's solver
    seed: int = 0                 # noise seed: same seed, same videos
    cfg_scale: float = 1.0        # classifier-free guidance weight (1 = none; needs a labelled model)
    label: int = -1               # class/scenario label for every video; -1 = cycle over classes
    S_churn: float = 0.0          # EDM Alg. 2 stochasticity (0 = deterministic)
    use_ema: bool = True          # sample from the EMA weights (recommended)
    batch_size: int = 8           # videos per sampler call
    device: str = "auto"
    dtype: str = "fp32"           # fp32 | bf16 (autocast for the network; the sampler math stays fp32)
    overwrite: bool = False       # allow writing into an out_dir that already holds samples


def parse_sample_args(argv) -> SampleArgs:
    args = SampleArgs()
    valid = {f.name: f for f in fields(SampleArgs)}
    for arg in argv:
        if arg in ("-h", "--help"):
            print("usage: python sample.py --ckpt=PATH [--key=value ...]")
            for f in fields(SampleArgs):
                print(f"  --{f.name}=<{f.type}>  (default {getattr(args, f.name)!r})")
            sys.exit(0)
        if not arg.startswith("--"):
            raise ValueError(f"arguments look like --key=value; got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        if key not in valid:
            raise ValueError(f"unknown option --{key}. Valid: {', '.join(valid)}")
        setattr(args, key, parse_value(value if eq else "true", valid[key].type, key))
    if not args.ckpt:
        raise ValueError("pass --ckpt=PATH, the checkpoint written by train.py (e.g. out/bouncing_balls/ckpt.pt)")
    if args.dtype not in ("fp32", "bf16"):
        raise ValueError(f"--dtype must be fp32 or bf16, got {args.dtype!r}")
    return args


def load_model(ckpt_path, use_ema: bool = True, device="cpu"):
    """Rebuild the denoiser from a checkpoint's own config and load its (EMA) weights."""
    ckpt = load_checkpoint(ckpt_path)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{ckpt_path} is not a nano-videodiff training checkpoint (no config/model inside)")
    cfg = Config.from_dict(ckpt["config"])
    model = build_denoiser(cfg)
    load_model_state(model, ckpt["ema" if use_ema else "model"], "EMA" if use_ema else "model")
    return model.to(device).eval(), cfg


@torch.no_grad()
def generate(model, cfg: Config, args: SampleArgs, device) -> torch.Tensor:
    """Sample ``args.num_videos`` videos (N, T, C, H, W) in [-1, 1], in batches."""
    d = cfg.data
    g = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(args.num_videos, d.num_frames, d.channels, d.resolution, d.resolution, generator=g)
    if d.num_classes > 0:
        if args.label >= d.num_classes:
            raise ValueError(f"--label must be < {d.num_classes} (the model's number of classes)")
        labels = (torch.full((args.num_videos,), args.label) if args.label >= 0
                  else torch.arange(args.num_videos) % d.num_classes)
    else:
        if args.cfg_scale != 1.0:
            raise ValueError("--cfg_scale needs a model trained with labels (num_classes > 0)")
        labels = None
    sigmas = edm_sigmas(args.steps or cfg.diffusion.sample_steps, cfg.diffusion.sigma_min,
                        cfg.diffusion.sigma_max, cfg.diffusion.rho, device=device)
    churn_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    out = []
    for start in range(0, args.num_videos, args.batch_size):
        part = slice(start, start + args.batch_size)
        n = noise[part].shape[0]
        cond = Cond(labels=None if labels is None else labels[part].to(device),
                    frame_interval=torch.full((n,), 1.0 / d.fps, device=device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            out.append(sample(model, noise[part].to(device), sigmas, cond,
                              solver=args.solver or cfg.diffusion.solver, S_churn=args.S_churn,
                              sigma_in=cfg.diffusion.sigma_in, cfg_scale=args.cfg_scale,
                              generator=churn_gen, progress=True).cpu())
    return torch.cat(out)


def main(argv=None):
    args = parse_sample_args(sys.argv[1:] if argv is None else argv)
    from train import pick_device  # one device rule for both scripts
    device = pick_device(args.device)
    out_dir = Path(args.out_dir)
    if (out_dir / "grid.gif").exists() and not args.overwrite:
        raise FileExistsError(f"{out_dir} already holds samples; pass --overwrite or another --out_dir")
    model, cfg = load_model(args.ckpt, args.use_ema, device)
    videos = generate(model, cfg, args, device)
    fps = cfg.data.fps
    for i, video in enumerate(videos):
        save_gif(out_dir / f"video_{i:03d}.gif", video, fps=fps)
    save_gif(out_dir / "grid.gif", video_grid(videos), fps=fps)
    save_png(out_dir / "grid.png", frames_grid(videos), scale=2)  # one row per video, frames left to right
    print(f"wrote {len(videos)} videos to {out_dir} (video_*.gif, grid.gif, grid.png)")
    return videos


if __name__ == "__main__":
    main()
