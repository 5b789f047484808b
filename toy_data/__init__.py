"""Procedural toy datasets: nothing is downloaded, every clip is a pure function of (seed, index).

``build_dataset(data_cfg, split)`` turns the ``data`` section of a config into a dataset, and
``get_batch(dataset, indices)`` returns a dict with at least ``video`` (B, T, C, H, W) in [-1, 1] and
``frame_interval`` (B,) seconds; ``labels`` (B,) when the dataset has classes.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

# Offset added to the data seed for held-out clips, so train and test never share a clip.
TEST_SEED_OFFSET = 1_000_003


def build_dataset(data_cfg, split: str = "train"):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    seed = data_cfg.data_seed + (TEST_SEED_OFFSET if split == "test" else 0)
    if data_cfg.dataset == "bouncing_balls":
        from .bouncing_balls import BouncingBalls
        return BouncingBalls(num_frames=data_cfg.num_frames, resolution=data_cfg.resolution,
                             num_balls=data_cfg.num_balls, fps=data_cfg.fps, seed=seed,
                             channels=data_cfg.channels)
    raise ValueError(f"unknown dataset {data_cfg.dataset!r}; available: bouncing_balls")


def get_batch(dataset, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
    """A batch as a dict of tensors; uses the dataset's vectorised ``get_batch`` when it has one."""
    indices = [int(i) for i in indices]
    if hasattr(dataset, "get_batch"):
        batch = dict(dataset.get_batch(indices))
    else:
        items = [dataset[i] for i in indices]
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]
                 if torch.is_tensor(items[0][k]) or isinstance(items[0][k], (int, float))}
    batch["frame_interval"] = torch.as_tensor(batch["frame_interval"], dtype=torch.float32).reshape(len(indices))
    return batch
