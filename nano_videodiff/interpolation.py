"""Video LDM's temporal interpolation stack, and Snap Video's hierarchical order of generation.

Video LDM (Blattmann et al. 2023, "Align your Latents", arXiv 2304.08818), Sec. 3.1 and 4: a temporal
interpolation model is trained with the *same mask conditioning* as prediction (Sec. 3.1.1: the given
frames are the key frames), to generate 3 new frames between every two key frames, T -> 4T. One model does
T -> 4T and 4T -> 16T, "distinguished by a binary conditioning": here the learned stage embedding
``Cond.stage`` (0 = the lowest frame rate), which every backbone built with ``--num_stages`` adds to its
noise embedding (``backbones/layers.py``, ``StageEmbedder``). Chaining the stages turns key frames at a low
frame rate into a video at 16x that rate.

Snap Video (Menapace et al. 2024, arXiv 2402.14797) App. C.5, hierarchical generation: generate
autoregressively at the lowest frame rate first, then fill in the higher frame rates conditioned on what
was generated (``hierarchical``).

The model's window has T = 4 (K - 1) + 1 frames: K key frames (every 4th frame, first and last included,
``masking.interpolate(every=4)``) and 3 frames to fill between each pair. Training (``training_windows``,
called by ``training/batches.py``): every sample draws a stage s uniformly; its T frames are taken with
stride ``4 ** (num_stages - 1 - s)`` from a clip at the finest frame rate (``cfg.data.fps``), so stage 0
sees the lowest rate, the last stage consecutive frames, and the frame interval says which rate it is. The
key-frame masks are drawn by ``--masking=interpolate`` (every 4th frame), the ones sampling uses.
At sampling (``fill_in``) a longer sequence of key frames is cut into windows of K key frames that share
their end frames, all windows are generated in one batch, and the stitched result holds the given frames
bit-exactly. The baselines are the plain linear blend of the two neighbouring key frames and the nearest
key frame (``blend``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from . import masking
from .errors import UserError

FACTOR = 4  # Video LDM: 3 new frames between each pair of key frames, T -> 4T


def stride_of(stage: int, num_stages: int) -> int:
    """Frames of the finest rate between two frames of ``stage``'s window: 4 ** (num_stages - 1 - stage)."""
    return FACTOR ** (num_stages - 1 - stage)


def source_frames(num_frames: int, num_stages: int) -> int:
    """Frames at the finest rate that one window of the lowest stage spans: (T - 1) 4^(S-1) + 1."""
    return (num_frames - 1) * stride_of(0, num_stages) + 1


def keys_per_window(num_frames: int) -> int:
    return (num_frames - 1) // FACTOR + 1


def check_config(cfg) -> None:
    """The settings an interpolation model needs (one-line UserErrors)."""
    d, T = cfg.data, cfg.data.num_frames
    checks = [
        (cfg.model.num_stages >= 1, "an interpolation model needs --num_stages >= 1"),
        ((T - 1) % FACTOR == 0 and T > FACTOR,
         f"--num_frames={T}: an interpolation window is 4 (K - 1) + 1 frames for K >= 2 key frames (e.g. 17)"),
        (cfg.task.masking == "interpolate", f"--num_stages trains interpolation: use --masking=interpolate, "
                                            f"not {cfg.task.masking!r}"),
        (not d.autoencoder and d.image_fraction == 0 and d.max_frame_stride == 1 and d.train_window == 0,
         "--num_stages takes its own frame rates from pixel clips: no --autoencoder, --image_fraction, "
         "--max_frame_stride or --train_window"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def training_source(data_cfg, model_cfg):
    """The data config of the clips training loads: long enough for the lowest stage's window."""
    if model_cfg.num_stages == 0:
        return data_cfg
    return dataclasses.replace(data_cfg, num_frames=source_frames(data_cfg.num_frames, model_cfg.num_stages))


def training_windows(clips: torch.Tensor, frame_interval: torch.Tensor, cfg, batch_size: int, rows: slice,
                     generator: torch.Generator):
    """(videos (b, T, C, H, W), frame_interval (b,), stage (b,)) from this rank's clips at the finest rate.

    The stages and window starts are drawn for the whole global batch of ``batch_size`` (so any number of
    DDP ranks sees the same samples); ``rows`` is this rank's part of it.
    """
    check_config(cfg)
    T, S = cfg.data.num_frames, cfg.model.num_stages
    stage = torch.randint(S, (batch_size,), generator=generator)
    stride = FACTOR ** (S - 1 - stage)
    room = clips.shape[1] - stride * (T - 1)  # positions a window of this stride can start at
    start = (torch.rand(batch_size, generator=generator) * room).long()
    stage, stride, start = stage[rows], stride[rows], start[rows]
    frames = start[:, None] + stride[:, None] * torch.arange(T)
    videos = clips[torch.arange(clips.shape[0])[:, None], frames]
    return videos, frame_interval * stride.to(frame_interval.dtype), stage


def window_known(n: int, cfg) -> torch.Tensor:
    """The key-frame mask of one window (n, T, 1, H, W): the same as training's ``--masking=interpolate``."""
    d = cfg.data
    mixture = masking.mixture_from_config(cfg.task, d.num_frames)
    return masking.make_mask("interpolate", n, d.num_frames, d.height, d.width,
                             **mixture.kwargs_for("interpolate", d.num_frames))


@torch.no_grad()
def fill_in(model, cfg, frames: torch.Tensor, stage: int, stage_flag: Optional[int] = None,
            **generate_kwargs) -> torch.Tensor:
    """(N, K, C, H, W) frames at ``stage``'s key rate -> (N, 4 (K - 1) + 1, ...): 3 new frames between each pair.

    ``stage_flag`` overrides the stage the model is told (an ablation: the wrong flag); the frame interval
    is always the true one. Other keywords go to ``generation.generate`` (steps, seed, dtype, device, ...).
    """
    from .generation import generate
    check_config(cfg)
    T = cfg.data.num_frames
    per, n, k = keys_per_window(T), frames.shape[0], frames.shape[1]
    if not 0 <= stage < cfg.model.num_stages:
        raise UserError(f"stage {stage} is not one of the model's {cfg.model.num_stages} stages")
    if k < 2 or (k - 1) % (per - 1):
        raise UserError(f"{k} key frames do not split into windows of {per} key frames sharing their ends: "
                        f"pass 1 + {per - 1} m key frames (e.g. {per} or {2 * per - 1})")
    windows = (k - 1) // (per - 1)
    keys = torch.stack([frames[:, w * (per - 1): w * (per - 1) + per] for w in range(windows)], 1).flatten(0, 1)
    known = window_known(n * windows, cfg)
    known_x = torch.zeros(n * windows, T, *frames.shape[2:])
    known_x[:, ::FACTOR] = keys
    interval = stride_of(stage, cfg.model.num_stages) / cfg.data.fps
    out = generate(model, cfg, n * windows, known=known, known_x=known_x, frame_interval=interval,
                   stage=stage if stage_flag is None else stage_flag, **generate_kwargs).unflatten(0, (n, windows))
    return torch.cat([out[:, 0]] + [out[:, w, 1:] for w in range(1, windows)], dim=1)


def stack(model, cfg, key_frames: torch.Tensor, first_stage: int = 0, **generate_kwargs) -> list:
    """Video LDM's chain: key frames -> x4 -> x16 (one ``fill_in`` per stage from ``first_stage`` on, whose
    key-frame rate ``key_frames`` must have); the video after every stage."""
    videos, frames = [], key_frames
    for stage in range(first_stage, cfg.model.num_stages):
        frames = fill_in(model, cfg, frames, stage, **generate_kwargs)
        videos.append(frames)
    return videos


def hierarchical(model, cfg, low_rate: torch.Tensor, num_low: int = 0,
                 predict: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None, first_stage: int = 0,
                 **generate_kwargs):
    """Snap Video App. C.5: the lowest frame rate first, autoregressively, then every higher rate filled in.

    ``low_rate`` (N, K, ...) frames at the key-frame rate of ``first_stage``; with ``predict(frames, num_low)
    -> (N, num_low, ...)`` (e.g. an autoregressive rollout of a prediction model at that rate) they are first
    continued to ``num_low`` frames. Returns the videos after each interpolation stage (``stack``).
    """
    if predict is not None and num_low > low_rate.shape[1]:
        low_rate = predict(low_rate, num_low)
    return stack(model, cfg, low_rate, first_stage, **generate_kwargs)


def blend(key_frames: torch.Tensor, factor: int = FACTOR, nearest: bool = False) -> torch.Tensor:
    """The baselines: between key frames a and b, frame j of ``factor`` is (1 - j/f) a + (j/f) b (linear blend),
    or with ``nearest`` the closer key frame (the earlier one at a tie). (N, K, ...) -> (N, f (K - 1) + 1, ...)."""
    a, b = key_frames[:, :-1, None], key_frames[:, 1:, None]  # (N, K - 1, 1, ...)
    w = torch.arange(factor, dtype=key_frames.dtype) / factor
    w = w.reshape(1, 1, factor, *([1] * (key_frames.ndim - 2)))
    if nearest:
        w = (w > 0.5).to(key_frames.dtype)
    between = ((1 - w) * a + w * b).flatten(1, 2)
    return torch.cat([between, key_frames[:, -1:]], dim=1)


# ---- evaluation: the model against the linear blend and the nearest key frame -------------------------------

def test_clips(cfg, num_clips: int, num_key_frames: int = 0, data_seed: int = 0) -> torch.Tensor:
    """Held-out clips at the finest rate (N, 4^S (K - 1) + 1, C, H, W) whose every 4^S-th frame is a key frame;
    K = ``num_key_frames`` (default: two windows of the lowest stage, 2 (T - 1) / 4 + 1)."""
    import toy_data
    k = num_key_frames or 2 * keys_per_window(cfg.data.num_frames) - 1
    length = (k - 1) * FACTOR ** cfg.model.num_stages + 1
    data = dataclasses.replace(cfg.data, num_frames=length, data_seed=data_seed)
    return toy_data.get_batch(toy_data.build_dataset(data, "test"), range(num_clips))["video"]


def _scores(video: torch.Tensor, truth: torch.Tensor, factor: int) -> dict:
    """PSNR / SSIM over the generated frames only (those between key frames, ``t % factor != 0``)."""
    from .evaluation.metrics import psnr, ssim
    new = [t for t in range(truth.shape[1]) if t % factor]
    return {"psnr": float(psnr(video[:, new], truth[:, new]).mean()),
            "ssim": float(ssim(video[:, new], truth[:, new]).mean())}


def evaluate(model, cfg, num_clips: int = 16, num_key_frames: int = 0, data_seed: int = 0,
             **generate_kwargs) -> dict:
    """Each stage from true key frames, and the whole chain from the key frames alone, scored on held-out clips
    against the linear blend and the nearest key frame (and the model told the wrong stage: does the flag
    matter?). Returns {"rows": [{"what", "method", "psnr", "ssim"}, ...], "num_clips", "num_key_frames"}."""
    check_config(cfg)
    S = cfg.model.num_stages
    clips = test_clips(cfg, num_clips, num_key_frames, data_seed)
    rows = []

    def add(what, truth, factor, videos):
        for method, video in videos.items():
            rows.append({"what": what, "method": method, **_scores(video, truth, factor)})

    for stage in range(S):
        truth = clips[:, ::stride_of(stage, S)]  # this stage's output rate
        keys = truth[:, ::FACTOR]
        videos = {"model": fill_in(model, cfg, keys, stage, **generate_kwargs)}
        if S > 1:
            videos["model, wrong stage flag"] = fill_in(model, cfg, keys, stage, stage_flag=S - 1 - stage,
                                                        **generate_kwargs)
        videos.update({"linear blend": blend(keys), "nearest key frame": blend(keys, nearest=True)})
        add(f"stage {stage}: x4 from true frames at 1/{FACTOR * stride_of(stage, S)} of the rate", truth,
            FACTOR, videos)
    if S > 1:
        keys, factor = clips[:, ::FACTOR ** S], FACTOR ** S
        add(f"chain: key frames -> x{factor} through every stage", clips, factor,
            {"model": stack(model, cfg, keys, **generate_kwargs)[-1], "linear blend": blend(keys, factor),
             "nearest key frame": blend(keys, factor, nearest=True)})
    return {"rows": rows, "num_clips": num_clips, "num_key_frames": clips[:, ::FACTOR ** S].shape[1]}


def format_table(result: dict) -> str:
    lines = [f"{result['num_clips']} held-out clips, {result['num_key_frames']} key frames each; PSNR / SSIM "
             "over the generated frames only", "| what | method | PSNR (dB) | SSIM |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} |" for r in result["rows"]]
    return "\n".join(lines)
