"""Unified spatial-temporal mask modeling (VDT, Lu et al. 2023, Sec. 3): one model, many tasks.

VDT trains a single video diffusion transformer for unconditional generation, forward and backward
prediction, interpolation, image-to-video ("animation") and spatial-temporal completion. The tasks
differ only in *which* parts of the video are given as clean context. VDT's official code builds the
network input by mixing the clean video ``x_start`` and the noisy one ``x_t`` with a mask:

    model_input = x_start * (1 - mask) + x_t * mask        # mask = 1: generate, mask = 0: given
    loss        = mean(((target - model_output) * mask) ** 2)

The mask is per (latent) pixel and per frame, broadcast over channels; it is *not* fed to the network
as an input channel. During training VDT draws one mask type per call (``VideoMaskGenerator``):
with probability 0.2 a BEiT-style spatial block mask over a range of frames ("complete"), otherwise
one of six temporal types, uniformly (0.8 / 6 each): forward prediction (first 8 of 16 frames
given), backward prediction (last 8 given), interpolation (every 4th frame given), unconditional
generation, a single given frame at a random index, and "MLM" (each frame generated with p = 0.8).

Our convention (``conditioning.py``) is the complement: a boolean ``known`` of shape (B, T, 1, H, W),
True where content is given, so ``known = 1 - mask`` and VDT's input is
``torch.where(known, x_clean, x_noisy)``. Every generator below returns such a tensor and takes an
explicit ``torch.Generator`` (CPU) where it is random, so masks are reproducible. Unlike VDT, our
``MaskMixture`` draws the task per *sample* in the batch rather than once per batch.

This module answers only "which positions are given". How given content enters the denoiser D (clean, at
unit scale), comes back out of it exactly, and is left out of the loss is in ``edm.py``, next to ``Denoiser``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from .errors import UserError

_MIN_BLOCK_CELLS = 4                     # BEiT's min_num_patches: the smallest block it tries
_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))  # BEiT/VDT aspect-ratio range, sampled log-uniformly
_BLOCK_ATTEMPTS = 10                     # BEiT's tries per block before giving up


def _check_sizes(B, T, H, W):
    for name, v in (("B", B), ("T", T), ("H", H), ("W", W)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _frames_to_mask(known_frames: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, T) bool per-frame flags -> (B, T, 1, H, W) bool mask (a real tensor, not a view)."""
    B, T = known_frames.shape
    return known_frames[:, :, None, None, None].expand(B, T, 1, H, W).clone()


def unconditional(B, T, H, W, generator=None):
    """Nothing given: generate the whole video. ``generator`` is accepted (and unused) for uniformity."""
    _check_sizes(B, T, H, W)
    return torch.zeros(B, T, 1, H, W, dtype=torch.bool)


def predict(B, T, H, W, num_context, generator=None):
    """Forward prediction: the first ``num_context`` frames are given (0 <= num_context < T)."""
    _check_sizes(B, T, H, W)
    if not isinstance(num_context, int) or not 0 <= num_context < T:
        raise ValueError(f"num_context must be an int in [0, T-1] = [0, {T - 1}], got {num_context!r}")
    frames = torch.zeros(B, T, dtype=torch.bool)
    frames[:, :num_context] = True
    return _frames_to_mask(frames, H, W)


def backward(B, T, H, W, num_context, generator=None):
    """Backward prediction: the last ``num_context`` frames are given (0 <= num_context < T)."""
    return predict(B, T, H, W, num_context).flip(1)


def interpolate(B, T, H, W, every, include_last=True, generator=None):
    """Frames 0, every, 2*every, ... are given; the model fills in the frames between them.

    ``include_last=True`` also gives frame T-1, so every generated frame lies between two given
    ones. VDT's code uses ``[::4]`` only (``include_last=False``, e.g. frame 15 of 16 is generated).
    """
    _check_sizes(B, T, H, W)
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    frames = torch.zeros(B, T, dtype=torch.bool)
    frames[:, ::every] = True
    if include_last:
        frames[:, -1] = True
    return _frames_to_mask(frames, H, W)


def animate(B, T, H, W, frame_index=None, generator=None):
    """Image-to-video: exactly one frame is given, at ``frame_index`` or (None) a random index per sample."""
    _check_sizes(B, T, H, W)
    if frame_index is None:
        idx = torch.randint(0, T, (B,), generator=generator)
    elif isinstance(frame_index, int) and 0 <= frame_index < T:
        idx = torch.full((B,), frame_index, dtype=torch.long)
    else:
        raise ValueError(f"frame_index must be None or an int in [0, {T - 1}], got {frame_index!r}")
    frames = torch.zeros(B, T, dtype=torch.bool)
    frames[torch.arange(B), idx] = True
    return _frames_to_mask(frames, H, W)


def random_frames(B, T, H, W, p_generate=0.8, generator=None):
    """VDT's "MLM" type: each frame is generated independently with probability ``p_generate``.

    A sample that drew no generated frame gets one random frame to generate, so there is always
    something to learn (the rate is then p + (1-p)^T / T, e.g. 0.8 + 4e-13 for T = 16).
    """
    _check_sizes(B, T, H, W)
    if not 0 < p_generate <= 1:
        raise ValueError(f"p_generate must be in (0, 1], got {p_generate!r}")
    generate = torch.rand(B, T, generator=generator) < p_generate
    fallback = torch.randint(0, T, (B,), generator=generator)
    none_generated = ~generate.any(dim=1)
    generate[torch.arange(B), fallback] |= none_generated
    return _frames_to_mask(~generate, H, W)


def _block_cells(gh: int, gw: int, target: int, generator) -> torch.Tensor:
    """BEiT-style block masking on a (gh, gw) grid of cells: exactly ``target`` cells hidden (True).

    Rectangles with a random area in [4, still-to-hide] and a log-uniform aspect ratio in
    [0.3, 1/0.3] are placed at random; one is accepted if it hides new cells without overshooting.
    When all attempts of a round fail (small grids), one random free cell is hidden instead, so the
    count is always exact (BEiT would stop short).
    """
    cells = torch.zeros(gh, gw, dtype=torch.bool)
    count = 0
    while count < target:
        remaining = target - count
        lo = min(_MIN_BLOCK_CELLS, remaining)
        added = 0
        for u_area, u_aspect, u_top, u_left in torch.rand(_BLOCK_ATTEMPTS, 4, generator=generator).tolist():
            area = lo + u_area * (remaining - lo)
            aspect = math.exp(_LOG_ASPECT[0] + u_aspect * (_LOG_ASPECT[1] - _LOG_ASPECT[0]))
            h = min(gh, max(1, round(math.sqrt(area * aspect))))
            w = min(gw, max(1, round(math.sqrt(area / aspect))))
            top, left = int(u_top * (gh - h + 1)), int(u_left * (gw - w + 1))
            new = h * w - int(cells[top:top + h, left:left + w].sum())
            if 0 < new <= remaining:
                cells[top:top + h, left:left + w] = True
                added = new
                break
        if added == 0:
            free = (~cells).flatten().nonzero().squeeze(1)
            cells.view(-1)[free[torch.randint(0, len(free), (1,), generator=generator)]] = True
            added = 1
        count += added
    return cells


def block_completion(B, T, H, W, ratio=0.5, block=4, max_trim=2, generator=None):
    """Spatial-temporal completion: the same rectangular blocks are hidden in a contiguous frame range.

    Per sample, a BEiT block mask hides round(ratio * cells) of the (H/block) x (W/block) cells (at
    least one), aligned to ``block`` pixels so it matches the patch grid. It applies to frames
    [start, T - end) with start, end drawn uniformly from [0, max_trim] (clamped so at least one frame
    is hidden); all other frames are fully given. VDT draws start, end in {0, 1, 2} and slices
    ``[start:-end]``, so end = 0 gives an empty slice and no mask at all; we slice up to ``T - end``.
    """
    _check_sizes(B, T, H, W)
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    if not isinstance(block, int) or block < 1 or H % block or W % block:
        raise ValueError(f"block must be a positive int dividing H={H} and W={W}, got {block!r}")
    if not isinstance(max_trim, int) or max_trim < 0:
        raise ValueError(f"max_trim must be an int >= 0, got {max_trim!r}")
    gh, gw = H // block, W // block
    target = max(1, round(ratio * gh * gw))
    start = torch.randint(0, min(max_trim, T - 1) + 1, (B,), generator=generator)
    # end in [0, min(max_trim, T - 1 - start)]: scale a uniform draw per sample (vectorised)
    end_hi = torch.clamp(T - 1 - start, max=max_trim) + 1
    end = (torch.rand(B, generator=generator) * end_hi).long()
    t = torch.arange(T)
    in_range = (t[None] >= start[:, None]) & (t[None] < (T - end)[:, None])  # (B, T)
    hidden = torch.stack([_block_cells(gh, gw, target, generator) for _ in range(B)])  # (B, gh, gw)
    hidden = hidden.repeat_interleave(block, 1).repeat_interleave(block, 2)  # (B, H, W) pixels
    return ~(in_range[:, :, None, None, None] & hidden[:, None, None])


TASKS = {
    "generate": unconditional,
    "predict": predict,
    "backward": backward,
    "interpolate": interpolate,
    "animate": animate,
    "random_frames": random_frames,
    "complete": block_completion,
}


def make_mask(task, B, T, H, W, generator=None, **kwargs):
    """The ``known`` mask (B, T, 1, H, W) for a task name in ``TASKS``; ``kwargs`` go to its generator."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[task](B, T, H, W, generator=generator, **kwargs)


def _vdt_probs() -> dict:
    temporal = ("predict", "backward", "interpolate", "generate", "animate", "random_frames")
    return {"complete": 0.2, **{name: 0.8 / len(temporal) for name in temporal}}


@dataclass
class MaskMixture:
    """The training distribution over tasks; one task is drawn per sample in the batch.

    probs:       task name -> probability; default VDT's 0.2 "complete" + 0.8 spread over 6 temporal types.
    task_kwargs: task name -> extra kwargs for its generator, e.g. {"predict": {"num_context": 4}}.
                 Defaults: predict/backward num_context = T // 2 (VDT: 8 of 16), interpolate every = 4;
                 "complete" uses block = 4 px, so H and W must be multiples of 4 unless overridden.
    """

    probs: dict = field(default_factory=_vdt_probs)
    task_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = [name for name in (*self.probs, *self.task_kwargs) if name not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; valid tasks: {', '.join(TASKS)}")
        if not self.probs:
            raise ValueError("probs must name at least one task")
        negative = {k: p for k, p in self.probs.items() if not p >= 0}
        if negative:
            raise ValueError(f"probabilities must be non-negative, got {negative}")
        total = sum(self.probs.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"probabilities must sum to 1, got {total} from {self.probs}")

    @property
    def task_names(self) -> tuple:
        return tuple(self.probs)

    def kwargs_for(self, task: str, T: int) -> dict:
        defaults = {"predict": {"num_context": T // 2}, "backward": {"num_context": T // 2},
                    "interpolate": {"every": 4}}.get(task, {})
        return {**defaults, **self.task_kwargs.get(task, {})}

    def sample(self, B, T, H, W, generator=None):
        """Returns (known (B, T, 1, H, W) bool, task_ids (B,) long indexing ``self.task_names``)."""
        _check_sizes(B, T, H, W)
        p = torch.tensor([self.probs[name] for name in self.task_names], dtype=torch.float64)
        task_ids = torch.multinomial(p, B, replacement=True, generator=generator)
        known = torch.empty(B, T, 1, H, W, dtype=torch.bool)
        for i, name in enumerate(self.task_names):
            rows = (task_ids == i).nonzero().squeeze(1)
            if len(rows):
                known[rows] = make_mask(name, len(rows), T, H, W, generator, **self.kwargs_for(name, T))
        return known, task_ids


def mixture_from_config(task_cfg, num_frames: int) -> Optional[MaskMixture]:
    """The training mixture a config asks for: None (unconditional), VDT's mixture, or one task."""
    name = task_cfg.masking
    if name == "none":
        return None
    k = task_cfg.num_context or num_frames // 2
    kwargs = {"predict": {"num_context": k}, "backward": {"num_context": k}}
    if name == "vdt":
        return MaskMixture(task_kwargs=kwargs)
    if name not in TASKS:
        raise UserError(f"unknown masking {name!r}; use none, vdt or one of {', '.join(TASKS)}")
    return MaskMixture(probs={name: 1.0}, task_kwargs={name: kwargs[name]} if name in kwargs else {})


def trains_without_context(task_cfg, num_frames: int) -> bool:
    """Whether training shows the model clips with nothing given: the branch context guidance compares
    against (``--context_dropout``, or a mixture that includes unconditional generation, as VDT's does)."""
    mixture = mixture_from_config(task_cfg, num_frames)
    return task_cfg.context_dropout > 0 or mixture is None or mixture.probs.get("generate", 0) > 0
