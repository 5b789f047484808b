"""The standard Moving MNIST protocol: 10 given -> 10 predicted frames of 64x64, scored as the field does.

``sample.py --eval`` on a Moving MNIST checkpoint runs it::

    python sample.py --ckpt=out/moving_mnist/ckpt.pt --eval --mnist_test_seq=data/mnist_test_seq.npy --eval_clips=10000
    python sample.py --ckpt=out/moving_mnist/ckpt.pt --eval      # no file: our generated offline-digit clips

The test set. With ``--mnist_test_seq`` (the file, or a folder holding it; loaded by
``toy_data.moving_mnist.load_mnist_test_seq``) the clips are the fixed standard test set of Srivastava
et al. 2015 (10,000 sequences of 20 frames, uint8, stored time-major as (20, 10000, 64, 64)); the
first ``--eval_clips`` of them are used, and the published numbers are over all 10,000. Without it the
clips are the checkpoint's own held-out generated clips (the offline font digits unless it was trained
with ``--data_root``), and the table says they are not comparable to the published numbers: the digits,
and with them the difficulty, differ.

The convention (OpenSTL's ``metrics.py``, as PredRNN and SimVP before it), with frames in [0, 1]:

- MSE: per predicted frame the *sum* over the 64x64 pixels of the squared error, averaged over frames
  and sequences (``metrics.mmnist_mse_per_frame``); an MSE of 25 is about 0.006 per pixel. It is taken
  on the prediction as produced (OpenSTL clips only for SSIM; our sampler's output is already in range).
- SSIM: per frame with scikit-image's defaults (7x7 uniform window, sample covariance), L = 1, averaged
  over frames and sequences. (OpenSTL's older code let scikit-image infer L = 2 for float images, its
  current code passes L = 1; the difference is in the third decimal for these mostly-black frames.)

Rows: the model; copy-last-frame (the 10th frame repeated), computed here by the same code; and the
field's published numbers as OpenSTL reports them (SimVP v2, PredRNN, ConvLSTM), which are quoted, not
reproduced here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

import toy_data
from .. import masking
from ..errors import UserError
from ..training.config import Config
from .metrics import copy_last_frame, mmnist_mse_per_frame, ssim
from .physics_eval import context_length, predict_future, save_evaluation

STANDARD = {"num_frames": 20, "num_context": 10, "height": 64, "width": 64, "channels": 1}
STANDARD_NUM_SEQUENCES = 10_000
PUBLISHED_SOURCE = "published (OpenSTL), not reproduced here"
# OpenSTL's Moving MNIST benchmark (Tan et al. 2023, arXiv 2306.11249): MSE / SSIM over the 10,000 sequences.
PUBLISHED = (("SimVP v2", 15.05, 0.967), ("PredRNN", 25.04, 0.944), ("ConvLSTM", 29.88, 0.925))
NOT_COMPARABLE = "not comparable to the published numbers"
EVAL_CHUNK = 500  # clips predicted and scored at a time (the noise seed is seed + chunk index)


def frame_mse(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Per-frame squared error summed over pixels in [0, 1] units, averaged over frames and clips.

    Both (B, T, C, H, W) in [-1, 1] (the frames to score only).
    """
    return float(mmnist_mse_per_frame(pred, truth).mean())


def frame_ssim(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """SSIM per frame with scikit-image's defaults (7x7 uniform window, sample covariance) on [0, 1]
    frames with L = 1, averaged over frames and clips. ``metrics.ssim`` on [-1, 1] data with L = 2 is the
    same number (SSIM is unchanged when the data and L scale together)."""
    return float(ssim(pred.clamp(-1, 1), truth, gaussian_weights=False, window_size=7).mean())


def _check_standard(cfg: Config, k: int, path: str) -> None:
    """The standard file fixes the clip shape: the model must be a 10 -> 10, 64x64 grey one."""
    d = cfg.data
    have = {"num_frames": d.num_frames, "num_context": k, "height": d.height, "width": d.width,
            "channels": d.channels}
    if have != STANDARD:
        raise UserError(f"--mnist_test_seq={path} holds the standard 10 -> 10 clips of 20 grey 64x64 frames, but "
                        f"this checkpoint works on {d.num_frames} frames ({k} given) of {d.channels} x "
                        f"{d.height}x{d.width}; train with --config=moving_mnist, or evaluate "
                        "without --mnist_test_seq on generated clips")


def protocol_clips(cfg: Config, test_seq: str, num_clips: int, data_seed: Optional[int] = None) -> tuple:
    """(clips (N, T, 1, H, W) in [-1, 1], a description of them, comparable to the published numbers?)."""
    if test_seq:
        from toy_data.moving_mnist import load_mnist_test_seq
        try:
            clips = load_mnist_test_seq(test_seq, num_sequences=num_clips)
        except (FileNotFoundError, ValueError) as e:  # a missing or malformed file: the user's to fix
            raise UserError(f"--mnist_test_seq: {e}") from e
        n = clips.shape[0]
        what = f"the standard Moving MNIST test set ({test_seq})"
        if n < STANDARD_NUM_SEQUENCES:
            what += (f", its first {n} sequences (the published numbers use all {STANDARD_NUM_SEQUENCES}: "
                     f"--eval_clips={STANDARD_NUM_SEQUENCES})")
        return clips, what, True
    data_cfg = Config.from_dict(cfg.to_dict()).data  # a copy: the caller's config stays as it is
    if data_seed is not None:
        data_cfg.data_seed = data_seed
    dataset = toy_data.build_dataset(data_cfg, "test")
    clips = toy_data.get_batch(dataset, range(min(num_clips, len(dataset))))["video"]
    digits = ("offline font digits" if dataset.digits == "glyphs"
              else "MNIST test digits in our generator (not mnist_test_seq.npy)")
    return clips, f"generated held-out clips of {digits}, {NOT_COMPARABLE}", False


def evaluate(model, cfg: Config, test_seq: str = "", num_clips: int = 64, steps: int = 0, seed: int = 0,
             device="cpu", batch_size: int = 16, dtype: str = "fp32", data_seed: Optional[int] = None,
             return_clips: bool = False, keep_clips: int = 8, progress: bool = False, **generate_kwargs) -> dict:
    """Predict the last T - k frames of each test clip from its first k and score model and copy-last.

    Returns {"rows": [{"method", "mse", "ssim", "source"}, ...] (model, copy last frame, then the published
    rows), "model_mse_per_frame": [...], "num_clips", "test_set", "comparable", "config"}; with
    ``return_clips`` also "clips" {"video", "pred", "known"} of the first ``keep_clips`` clips, for
    ``physics_eval.save_evaluation``. Other keywords (solver, cfg_scale, guidance, S_churn) go to
    ``generation.generate``.
    """
    d = cfg.data
    if d.dataset != "moving_mnist":
        raise UserError(f"the Moving MNIST protocol needs a Moving MNIST checkpoint; this one is {d.dataset}")
    k = context_length(cfg)
    if test_seq:
        _check_standard(cfg, k, test_seq)
    truth, test_set, comparable = protocol_clips(cfg, test_seq, num_clips, data_seed)
    n, t = truth.shape[:2]
    # The full test set is 3.3 GB of float frames: predict and score it in chunks, so that the predictions
    # never all exist at once. Sums over clips, divided by n at the end, make the chunking invisible.
    sums = {"model": [torch.zeros(t - k), 0.0], "copy last frame": [torch.zeros(t - k), 0.0]}
    kept = []
    for chunk, start in enumerate(range(0, n, EVAL_CHUNK)):
        clips = truth[start:start + EVAL_CHUNK]
        pred = predict_future(model, cfg, clips, k, steps=steps, seed=seed + chunk, device=device,
                              batch_size=batch_size, dtype=dtype, progress=progress, **generate_kwargs)
        future = clips[:, k:]
        scored = {"model": pred[:, k:], "copy last frame": copy_last_frame(clips[:, :k], t - k)}
        for name, video in scored.items():
            sums[name][0] += mmnist_mse_per_frame(video, future) * len(clips)
            sums[name][1] += frame_ssim(video, future) * len(clips)
        if start < keep_clips:
            kept.append(pred[:keep_clips - start])
    rows = [{"method": name, "mse": float(mse.mean()) / n, "ssim": ssim_sum / n, "source": "computed here"}
            for name, (mse, ssim_sum) in sums.items()]
    rows += [{"method": name, "mse": mse, "ssim": s, "source": PUBLISHED_SOURCE} for name, mse, s in PUBLISHED]
    result = {"rows": rows, "model_mse_per_frame": (sums["model"][0] / n).tolist(),
              "num_clips": int(n), "test_set": test_set, "comparable": comparable,
              "config": {"dataset": d.dataset, "num_frames": t, "num_context": k, "height": d.height, "width": d.width,
                         "steps": steps or cfg.diffusion.sample_steps, "seed": seed,
                         "solver": generate_kwargs.get("solver") or cfg.diffusion.solver}}
    if return_clips:
        video = truth[:keep_clips]
        known = masking.predict(*video.shape[:2], *video.shape[-2:], num_context=k)
        result["clips"] = {"video": video, "pred": torch.cat(kept), "known": known}
    return result


def format_table(result: dict) -> str:
    """What was scored (first, so that a non-standard test set cannot be missed), then a markdown table of
    MSE per frame, SSIM and where each number comes from, then the convention."""
    c = result["config"]
    title = (f"Moving MNIST {c['num_context']} -> {c['num_frames'] - c['num_context']} prediction at "
             f"{c['height']}x{c['width']}, {result['num_clips']} clips: {result['test_set']}.")
    lines = [title, "", "| method | MSE/frame | SSIM | numbers |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['mse']:.2f} | {r['ssim']:.3f} | {r['source']} |" for r in result["rows"]]
    lines += ["", "MSE/frame: squared error summed over each frame's pixels in [0, 1], averaged over frames and "
              f"clips; SSIM: 7x7 uniform window, L = 1. The model sampled with {c['steps']} steps ({c['solver']})."]
    return "\n".join(lines)


def run(model, cfg: Config, args, out_dir, device) -> dict:
    """``sample.py --eval`` on a Moving MNIST checkpoint: score, print, write eval.json and the videos."""
    result = evaluate(model, cfg, test_seq=args.mnist_test_seq, num_clips=args.eval_clips, steps=args.steps,
                      seed=args.seed, device=device, batch_size=args.batch_size, dtype=args.dtype,
                      data_seed=args.data_seed, return_clips=True, keep_clips=args.num_videos, progress=True,
                      solver=args.solver,
                      cfg_scale=args.cfg_scale, guidance=args.guidance, S_churn=args.S_churn)
    print(format_table(result))
    save_evaluation(result, out_dir, num_videos=args.num_videos, fps=cfg.data.fps)
    n = min(args.num_videos, result["num_clips"])
    print(f"wrote {Path(out_dir) / 'eval.json'} and {n} videos [given | model | truth]")
    return result
