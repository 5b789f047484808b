"""What one training step sees: the global batch of a step, and this rank's slice of it.

Everything random in a step (which clips, the noise levels, the noise, the masks, label dropout,
self-conditioning) is drawn from a generator seeded by (seed, step), for the *global* batch, and each
DDP rank takes its slice. So a resumed run continues bit-exactly, and 2 processes see exactly what one
process with the same global batch sees (tests/test_train.py checks both).
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Dict

import torch
from tqdm.auto import tqdm

import toy_data
from toy_data import captions

from .. import interpolation, latent, masking, modality, upsampler
from ..conditioning import DROPPED_LABEL, Batch, Cond
from ..data.shards import ENCODE_BATCH, LatentShards
from ..errors import UserError
from ..edm import sample_training_sigma


# The per-step generators are seeded from (run seed, step). STEP_SEED_STRIDE is a prime above any step count,
# so seed * STRIDE + step gives every (seed, step) pair of a run its own stream. The noise has a stream of its
# own (NOISE_SEED_STRIDE, another prime), so that it does not shift when the draws before it change with the
# data (task masks, strides, windows). Changing either value changes every run's random numbers.
STEP_SEED_STRIDE = 1_000_003
NOISE_SEED_STRIDE = 7919


class TrainingData:
    """The training videos, and (for joint image+video training) the source of images.

    Snap Video Sec. 3.3 (modality.py): with ``max_frame_stride > 1`` clips are loaded long enough for the
    largest stride and re-sampled at a random frame rate; with ``image_fraction > 0`` that fraction of
    every batch is single frames turned into infinite-fps videos (frame interval 0).

    Latent diffusion (latent.py) with a fixed training set of plain clips: the frozen ``autoencoder``
    encodes every clip once, here, and the steps read the cached latents (``self.latents``, (N, 1 + k, c,
    h, w) float32) instead of running the encoder on every batch. The encoder is deterministic (posterior
    mean), so a step sees the same latents either way. Varied batches (images, frame strides) and fresh
    procedural clips are encoded per step, as they are drawn. With ``--latent_shards`` the latents were
    encoded once ahead of time (data/shards.py ``encode``) and are read from disk, never held all in memory.
    """

    def __init__(self, cfg, autoencoder=None, device="cpu"):
        d = cfg.data
        # Real videos take their frames with a random stride themselves (their files differ in length and
        # frame rate, data/videos.py); toy clips are loaded long and re-sampled here.
        self.own_frame_rate = d.dataset in toy_data.OWN_FRAME_RATE
        self.varied = d.image_fraction > 0 or (d.max_frame_stride > 1 and not self.own_frame_rate)
        self.loader = None  # a DataLoader of this rank's batches, step by step (prefetching)
        self.autoencoder, self.latents = autoencoder, None
        self.clip_info: Dict[str, torch.Tensor] = {}  # cached latents: each clip's labels, frame interval, ...
        if d.latent_shards:  # latents encoded once, ahead of time (data/shards.py encode): no pixels at all
            if autoencoder is None or self.varied:
                raise UserError("--latent_shards are the latents of whole clips for latent diffusion: pass the "
                                "--autoencoder they were encoded with, and no --image_fraction/--max_frame_stride")
            self.latents = self.videos = LatentShards(d.latent_shards, cfg, autoencoder)
        else:
            long_clips = replace(d, num_frames=modality.clip_length(d.num_frames, d.max_frame_stride))
            self.videos = toy_data.build_dataset(long_clips if self.varied and not self.own_frame_rate else
                                                 interpolation.training_source(d, cfg.model), "train")
        if autoencoder is not None and not self.varied and d.num_train_clips > 0 and self.latents is None:
            self.latents, self.clip_info = encode_dataset(autoencoder, self.videos, d.num_train_clips, device)
        self.images = None
        if d.image_fraction > 0:
            image_data = replace(d, scenario=d.image_scenario) if d.image_scenario else d
            self.images = modality.ImageSource(toy_data.build_dataset(image_data, "train"))

    @contextlib.contextmanager
    def prefetching(self, cfg, start_step: int, rank: int, world: int, device="cpu"):
        """``with data.prefetching(...):`` around the training loop. With ``--num_workers > 0``, worker
        processes decode the clips of the coming steps (data/loader.py); leaving the block stops them.

        The loader's sampler draws each step's indices as ``make_batch`` does, so the batches are the same
        as without workers. Only plain clip batches go through it (not cached latents or joint batches).
        Stopping the workers matters beyond memory: forked workers hold copies of the parent's open files,
        among them the run folder's lock (files.FolderLock), which would outlive the run in this process.
        """
        if cfg.data.num_workers == 0 or self.varied or self.latents is not None:
            yield self
            return
        from ..data.loader import StepIndices, step_loader
        from .distributed import micro_batches

        slices = [(r, w) for _, r, w in micro_batches(rank, world, cfg.optim.grad_accum_steps)]
        sampler = StepIndices(lambda step: step_indices(cfg, step)[1], start_step, cfg.optim.max_steps, slices)
        self.loader = iter(step_loader(self.videos, sampler, cfg.data.num_workers,
                                       pin_memory=torch.device(device).type == "cuda"))
        try:
            yield self
        finally:
            self.loader = None  # the last reference: the iterator's __del__ shuts the workers down and joins them

    def load(self, indices: torch.Tensor) -> dict:
        """The clips of ``indices``: the loader's next batch if there is a loader, else loaded here."""
        if self.loader is None:
            return toy_data.get_batch(self.videos, indices.tolist())
        batch = next(self.loader)
        if not torch.equal(batch.pop("indices"), indices):
            raise RuntimeError("the DataLoader is out of step with training: make_batch must be called for "
                               "every micro-batch of every step, in order, inside prefetching")
        return batch

    def global_batch(self, cfg, indices, g) -> dict:
        """video (B, T, C, H, W), frame_interval (B,) and labels (B,) if any, for the whole global batch."""
        if not self.varied:
            return toy_data.get_batch(self.videos, indices.tolist())
        d, B = cfg.data, len(indices)
        n_img, n_vid = modality.split_counts(B, d.image_fraction)
        clips = toy_data.get_batch(self.videos, indices[:n_vid].tolist())
        if self.own_frame_rate:  # strides already taken by the dataset
            video, interval = clips["video"], clips["frame_interval"]
        else:
            video, interval, _ = modality.variable_frame_rate(clips["video"], d.num_frames,
                                                              1 / clips["frame_interval"], d.max_frame_stride, g)
        if n_img == 0:
            return {"video": video, "frame_interval": interval, "labels": clips.get("labels")}
        images = self.images.sample_batch(n_img, g)
        return modality.joint_batch(video, interval, images["image"], d.image_fraction, g, batch_size=B,
                                    video_labels=clips.get("labels"), image_labels=images.get("labels"))


@torch.no_grad()
def encode_dataset(autoencoder, dataset, num_clips: int, device, batch_size: int = ENCODE_BATCH):
    """``(latents, info)`` of clips 0 .. num_clips - 1 of ``dataset``: normalised latents (N, 1 + k, c, h, w),
    float32 on the CPU, and the clips' other fields (labels, frame interval: (N,) each), kept so that a step
    never loads a clip's pixels again just to read them."""
    chunks, infos = [], []
    starts = range(0, num_clips, batch_size)
    for start in tqdm(starts, desc=f"encoding {num_clips} training clips once", leave=False, dynamic_ncols=True):
        batch = toy_data.get_batch(dataset, range(start, min(start + batch_size, num_clips)))
        chunks.append(latent.encode(autoencoder, batch.pop("video").to(device)).cpu())
        infos.append(batch)
    return torch.cat(chunks), {key: torch.cat([info[key] for info in infos]) for key in infos[0]}


def step_indices(cfg, step: int):
    """``(generator, indices)``: the step's generator, after drawing the global batch's clip indices (B,)."""
    g = torch.Generator().manual_seed(cfg.run.seed * STEP_SEED_STRIDE + step)
    B = cfg.optim.batch_size
    if cfg.data.num_train_clips > 0:  # a fixed training set of N clips, sampled with replacement
        return g, torch.randint(cfg.data.num_train_clips, (B,), generator=g)
    return g, step * B + torch.arange(B)  # a fresh clip for every sample


def make_batch(cfg, data: TrainingData, step: int, rank: int, world: int, device) -> Batch:
    """The global batch of ``step`` (the same whatever the world size), this rank's slice of it, as a ``Batch``.

    With an autoencoder in ``data`` (latent diffusion, latent.py) the videos are latents (cached, or
    encoded on ``device`` here), and everything after (noise, masks) has the latent shape.
    """
    g, indices = step_indices(cfg, step)
    B = cfg.optim.batch_size
    sigma = sample_training_sigma(B, cfg.diffusion.P_mean, cfg.diffusion.P_std, generator=g)
    drop = torch.rand(B, generator=g) < cfg.diffusion.label_dropout
    # Which samples use RIN self-conditioning (only a Denoiser with self_condition_prob > 0 reads it). Drawn
    # for every model, so that the draws after it (task masks) are the same whatever the backbone.
    self_cond_draw = torch.rand(B, generator=g)
    mine = slice(rank * B // world, (rank + 1) * B // world)
    if data.varied:  # the batch's make-up (images vs videos, strides) is decided for the global batch
        batch = data.global_batch(cfg, indices, g)
        batch = {k: v[mine] for k, v in batch.items() if v is not None}
    elif isinstance(data.latents, LatentShards):  # latent shards: latents, labels and intervals, all read
        batch = toy_data.get_batch(data.latents, indices[mine].tolist())
    elif data.latents is not None:  # cached latents (and the clips' labels and intervals): no pixels loaded
        batch = {key: values[indices[mine]] for key, values in data.clip_info.items()}
        batch["video"] = data.latents[indices[mine]]
    else:  # plain videos: each rank loads only its own clips (in DataLoader workers with --num_workers)
        batch = data.load(indices[mine])
    x = batch["video"]
    if cfg.data.train_window > 0:  # random windows of consecutive frames (drawn for the global batch)
        starts = torch.randint(x.shape[1] - cfg.data.train_window + 1, (B,), generator=g)[mine]
        frames = starts[:, None] + torch.arange(cfg.data.train_window)  # (b, window)
        x = x[torch.arange(x.shape[0])[:, None], frames]
    stage = None
    if cfg.model.num_stages > 0:  # Video LDM's interpolation stack: a window at each sample's rate
        x, batch["frame_interval"], stage = interpolation.training_windows(x, batch["frame_interval"], cfg, B, mine, g)
    low_res = aug_sigma = None
    if cfg.model.sr_factor > 1:  # a super-resolution stage: crops, and the noised low-res clips (upsampler.py)
        x, low_res, aug_sigma = upsampler.training_inputs(cfg, x, B, g, mine)
    # Images as videos (interval 0): joint batches, and the stills of a folder of real videos
    is_image = batch["frame_interval"] == 0 if cfg.data.image_fraction > 0 or data.own_frame_rate else None
    if data.autoencoder is not None and data.latents is None:
        x = latent.encode(data.autoencoder, x.to(device), None if is_image is None else is_image.to(device))
    noise = torch.randn((B, *x.shape[1:]), generator=torch.Generator().manual_seed(cfg.run.seed * NOISE_SEED_STRIDE
                                                                                    + step))
    labels = None
    if cfg.data.num_classes > 0:
        labels = torch.where(drop[mine], DROPPED_LABEL, batch["labels"].long())
    cond = Cond(labels=labels, frame_interval=batch["frame_interval"], stage=stage, low_res=low_res,
                aug_sigma=aug_sigma)
    if is_image is not None:  # images as videos (interval 0): their frames must not be mixed in time
        cond = cond.replace(is_image=is_image)
    mixture = masking.mixture_from_config(latent.latent_task_config(cfg), x.shape[1])
    if mixture is not None:  # VDT mask modeling: which positions are given as clean context
        t, _, h, w = x.shape[1:]
        known, _ = mixture.sample(B, t, h, w, generator=g)
        no_context = torch.rand(B, generator=g) < cfg.task.context_dropout
        known = known & ~no_context[:, None, None, None, None]
        cond = cond.replace(known=known[mine], known_x=x)
    if cfg.model.text_encoder:  # text-to-video: a caption per clip, dropped ("") with the labels (text.py)
        cond = cond.replace(captions=captions.for_training(batch, cfg.data, torch.rand(B, generator=g)[mine],
                                                           drop[mine]))
    return Batch(x=x.to(device), cond=cond.to(device), sigma=sigma[mine].to(device), noise=noise[mine].to(device),
                 self_cond_draw=self_cond_draw[mine].to(device))
