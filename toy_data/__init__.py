"""The datasets: procedural toy data (nothing is downloaded, every clip a pure function of (seed, index)),
and ``videos``, your own clips (``nano_videodiff/data/videos.py``).

``build_dataset(data_cfg, split)`` turns the ``data`` section of a config into a dataset, and
``get_batch(dataset, indices)`` returns a dict with at least ``video`` (B, T, C, H, W) in [-1, 1] and
``frame_interval`` (B,) seconds; ``labels`` (B,) when the dataset has classes.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from nano_videodiff.errors import UserError

# Offset added to the data seed for held-out clips, so train and test never share a clip.
TEST_SEED_OFFSET = 1_000_003


def build_dataset(data_cfg, split: str = "train", clip_frames: int = 0):
    """The dataset a config's ``data`` section names, for the train or the held-out test split.

    ``clip_frames`` > num_frames: longer clips of the procedural datasets (the long-horizon evaluation);
    toy Physion still builds its scenes for ``num_frames``, so a clip starts as the training clips do.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = data_cfg
    frames = clip_frames or d.num_frames
    if frames != d.num_frames and d.dataset not in ("bouncing_balls", "physion", "moving_mnist"):
        raise UserError(f"clips longer than the model's come only from the toy datasets, not {d.dataset!r}")
    if d.dataset == "bouncing_balls":
        from .bouncing_balls import BouncingBalls
        return BouncingBalls(num_frames=frames, resolution=d.size, num_balls=d.num_balls, fps=d.fps,
                             seed=d.data_seed + (TEST_SEED_OFFSET if split == "test" else 0),
                             channels=d.channels, speed=tuple(d.ball_speed * v for v in BouncingBalls.SPEED),
                             # a fresh clip per sample (--num_train_clips=0) must not run out in a long run
                             length=10**9 if split == "train" else 100_000)
    if d.dataset == "physion":
        from .physion import SIM_FPS, PhysionDataset
        stride = SIM_FPS / d.fps
        if abs(stride - round(stride)) > 1e-6:
            raise UserError(f"toy Physion runs at {SIM_FPS} fps: fps must divide it (e.g. 10 -> every 3rd frame)")
        num = d.num_train_clips if split == "train" else d.num_test_clips
        return PhysionDataset(scenario=d.scenario, num_clips=num or 2048, num_frames=frames,
                              resolution=d.size, seed=d.data_seed, split=split, scene_frames=d.num_frames,
                              frame_stride=int(round(stride)), cache_dir=d.cache_dir or None)
    if d.dataset == "moving_mnist":
        from .moving_mnist import MovingMNIST
        return MovingMNIST(num_frames=frames, resolution=d.size, num_digits=d.num_balls,
                           root=d.data_root or None, seed=d.data_seed, split=split,
                           frame_interval=1.0 / d.fps, length=10**9 if split == "train" else 10_000)
    if d.dataset == "videos":  # your own clips: a folder or a manifest (nano_videodiff/data/videos.py)
        from nano_videodiff.data.videos import VideoDataset
        return VideoDataset.from_config(d, split)
    if d.dataset == "webdataset":  # clips written by `python -m nano_videodiff.data.shards write`
        from nano_videodiff.data.shards import ShardDataset
        dataset = ShardDataset((d.test_data_root or d.data_root) if split == "test" else d.data_root,
                               num_frames=d.num_frames, size=d.size, channels=d.channels,
                               seed=d.data_seed, shuffle_epochs=split == "train" and d.num_train_clips == 0)
        if split == "train" and d.num_train_clips > len(dataset):
            raise UserError(f"--num_train_clips={d.num_train_clips} but the shards {d.data_root} hold "
                            f"{len(dataset)} clips: pass at most that many (0 = all, in shuffled passes)")
        return dataset
    raise UserError(f"unknown dataset {d.dataset!r}; available: {', '.join(DATASETS)}")


DATASETS = ("bouncing_balls", "physion", "moving_mnist", "videos", "webdataset")
# Datasets that take each clip's frames with a random stride themselves (--max_frame_stride), because
# their files differ in length and frame rate; the toy clips are re-sampled by training/batches.py.
OWN_FRAME_RATE = ("videos",)


def get_batch(dataset, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
    """A batch as a dict of tensors; uses the dataset's vectorised ``get_batch`` when it has one."""
    indices = [int(i) for i in indices]
    if hasattr(dataset, "get_batch"):
        batch = dict(dataset.get_batch(indices))
    else:
        items = [dataset[i] for i in indices]
        batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]
                 if torch.is_tensor(items[0][k]) or isinstance(items[0][k], (int, float))}
    if "scenario_id" in batch:  # toy Physion: the scenario is the class label
        batch["labels"] = batch["scenario_id"].long()
    elif "labels" in batch and batch["labels"].ndim > 1:  # Moving MNIST's per-digit classes: not a label
        batch["digit_labels"] = batch.pop("labels")
    batch["frame_interval"] = torch.as_tensor(batch["frame_interval"], dtype=torch.float32).reshape(len(indices))
    return batch
