"""``sample.py --method=...``: a video longer than the model's window, written like sample.py's other outputs.

- ``interpolate``: Video LDM's interpolation stack (Blattmann et al. 2023, arXiv 2304.08818, Sec. 4;
  ``interpolation.py``) from key frames at the lowest rate: x4, then x16. A model trained with
  ``--num_stages`` (``--config=bouncing_balls_interp``: 5 key frames -> 17 -> 65 frames).
- ``conv_time``: Video LDM's convolutional-in-time sampling (Sec. 3.1, 4; ``conv_time.py``): 4 T frames
  (or ``--num_frames``) in one pass, temporal attention masked to the trained distance T - 1; with
  ``--task=predict`` the first k frames are given (VDT or Video LDM models).
- ``rollout``: the autoregressive rollout (``rollout.py``) to the same length from the same given frames,
  for comparison (``--task=predict --num_frames=N`` does the same with sample.py's own outputs).

Without ``--context`` the given frames come from held-out toy clips long enough to hold the ground truth,
so PSNR / SSIM over the generated frames go to metrics.json (interpolation: also the linear blend and the
nearest key frame). Panels per video: [baseline or given | model | truth].
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from . import conv_time, interpolation, masking
from .errors import MissingFile, UserError
from .evaluation.metrics import psnr, ssim
from .evaluation.video_io import frames_grid, load_video, save_gif, save_png, video_grid
from .generation import show_known

METHODS = ("interpolate", "conv_time", "rollout")
LENGTH_FACTOR = 4  # conv_time, rollout: frames made per model window, unless --num_frames


def _context_file(args, cfg) -> torch.Tensor:
    if not Path(args.context).exists():
        raise MissingFile(f"--context file {args.context} does not exist")
    clip = load_video(args.context, channels=cfg.data.channels)
    if tuple(clip.shape[1:]) != (cfg.data.channels, *cfg.data.size):
        raise UserError(f"{args.context} has frames {tuple(clip.shape[1:])}, the model works on "
                        f"{(cfg.data.channels, *cfg.data.size)} (C, H, W): resize it first")
    return clip[None].repeat(args.num_videos, 1, 1, 1, 1)


def _scores(video, truth, generated) -> dict:
    """PSNR / SSIM over the frames where ``generated`` (T,) is True."""
    return {"psnr": float(psnr(video[:, generated], truth[:, generated]).mean()),
            "ssim": float(ssim(video[:, generated], truth[:, generated]).mean())}


def _interpolate(model, cfg, args, gen):
    interpolation.check_config(cfg)
    S = cfg.model.num_stages
    truth = None
    if args.context:  # every frame of the file is a key frame at the lowest rate
        keys = _context_file(args, cfg)
    else:
        truth = interpolation.test_clips(cfg, args.num_videos, data_seed=args.data_seed)
        keys = truth[:, ::interpolation.FACTOR ** S]
    video = interpolation.stack(model, cfg, keys, **gen)[-1]
    baseline = interpolation.blend(keys, interpolation.FACTOR ** S)
    scores = {"method": "interpolate", "num_key_frames": keys.shape[1], "num_frames": video.shape[1]}
    if truth is not None:
        generated = torch.arange(truth.shape[1]) % interpolation.FACTOR ** S != 0
        scores.update(model=_scores(video, truth, generated), linear_blend=_scores(baseline, truth, generated),
                      nearest_key_frame=_scores(interpolation.blend(keys, interpolation.FACTOR ** S, nearest=True),
                                                truth, generated))
    print(f"interpolate: {keys.shape[1]} key frames -> {video.shape[1]} frames (stages x4"
          f"{''.join(f' -> x{interpolation.FACTOR ** (s + 1)}' for s in range(1, S))}); panels [linear blend | "
          "model | truth]")
    return video, [baseline, video] + ([truth] if truth is not None else []), scores


def _long(model, cfg, args, gen):
    """conv_time and rollout: N frames from the first k given (or, conv_time, from nothing)."""
    d = cfg.data
    n, frames = args.num_videos, args.num_frames or LENGTH_FACTOR * d.num_frames
    tasks = ("predict",) if args.method == "rollout" else ("generate", "predict")
    if args.task not in tasks:
        raise UserError(f"--method={args.method} does --task={' or '.join(tasks)}, not {args.task!r}")
    known = known_x = truth = labels = None
    if args.task == "predict":
        k = args.num_context or cfg.task.num_context or d.num_frames // 2
        known = masking.predict(n, frames, d.height, d.width, num_context=k)
        if args.context:
            clip = _context_file(args, cfg)
            if clip.shape[1] < k:
                raise UserError(f"{args.context} has {clip.shape[1]} frames; --task=predict gives the first {k}")
            known_x = torch.zeros(n, frames, *clip.shape[2:])
            known_x[:, :k] = clip[:, :k]
        else:
            import toy_data
            data = dataclasses.replace(d, num_frames=frames, data_seed=args.data_seed)
            batch = toy_data.get_batch(toy_data.build_dataset(data, "test"), range(n))
            known_x = truth = batch["video"]
            labels = batch["labels"].long() if "labels" in batch and d.num_classes > 0 else None
    if d.num_classes > 0 and labels is None:
        labels = torch.arange(n) % d.num_classes
    scores = {"method": args.method, "task": args.task, "num_frames": frames}
    if args.method == "rollout":
        from .rollout import rollout
        video = rollout(model, cfg, known_x[:, :k], frames, num_context=k, labels=labels, **gen)
        print(f"rollout: {frames} frames by windows of {d.num_frames}, each from the last {k} frames")
    else:
        video = conv_time.generate_long(model, cfg, frames, n, known=known, known_x=known_x, labels=labels, **gen)
        scores["max_distance"] = d.num_frames - 1
        print(f"conv_time: {frames} frames in one pass, temporal attention masked to {d.num_frames - 1} frames")
    if truth is not None:
        scores["model"] = _scores(video, truth, ~known[0].flatten(1).all(-1))
    panels = [video] if known is None else [show_known(known_x, known), video]
    return video, panels + ([truth] if truth is not None else []), scores


def run(model, cfg, args, out_dir, device, before_writing=lambda: None) -> torch.Tensor:
    """The long videos of ``args.method`` (sample.py's SampleArgs), written to ``out_dir``; returns them."""
    if args.method not in METHODS:
        raise UserError(f"unknown --method={args.method!r}; choose from {', '.join(METHODS)}")
    gen = dict(steps=args.steps, solver=args.solver, seed=args.seed, dtype=args.dtype, S_churn=args.S_churn,
               batch_size=args.batch_size, device=device)
    video, panels, scores = (_interpolate if args.method == "interpolate" else _long)(model, cfg, args, gen)
    if not torch.isfinite(video).all():
        raise UserError("sampling gave NaN or infinite values; try --dtype=fp32")
    before_writing()
    out_dir = Path(out_dir)
    side_by_side = torch.cat(panels, dim=-1)
    for i in range(video.shape[0]):
        save_gif(out_dir / f"video_{i:03d}.gif", side_by_side[i], fps=cfg.data.fps)
    save_gif(out_dir / "grid.gif", video_grid(side_by_side, ncol=1), fps=cfg.data.fps)
    save_png(out_dir / "grid.png", frames_grid(torch.stack(panels, 1).flatten(0, 1)), scale=2)
    (out_dir / "metrics.json").write_text(json.dumps(scores, indent=2))
    for name in ("model", "linear_blend", "nearest_key_frame"):
        if name in scores:
            print(f"{name}: PSNR {scores[name]['psnr']:.2f} dB, SSIM {scores[name]['ssim']:.3f} over generated frames")
    print(f"wrote {video.shape[0]} videos of {video.shape[1]} frames to {out_dir} (video_*.gif, grid.*, metrics.json)")
    return video
