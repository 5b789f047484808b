# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Images as infinite-frame-rate videos: one model for images and videos
#
# Paper: Snap Video, "Scaled Spatiotemporal Transformers for Text-to-Video Synthesis" (Menapace et al.,
# CVPR 2024), Sec. 3.3 and the ablation of Table 3 (row iv vs. "Ours"). Code: `nano_videodiff/modality.py`
# (`image_to_video`, `variable_frame_rate`, `joint_batch`), `nano_videodiff/training/batches.py` (`TrainingData`, `make_batch`),
# `nano_videodiff/backbones/vdt.py` (`conditioning_vector`), `nano_videodiff/generation.py` (`frame_interval`).
#
# Video models are trained on images too: image data sets are larger and more varied than video ones.
# The usual way gives images a mode of their own, without a time axis. Snap Video argues that this
# splits one problem in two: after its input scaling `sigma_in = s sqrt(T)` (tutorial 01) a single
# image would even need its own diffusion process. Its answer:
#
# - **An image is a video shot at infinite frame rate.** In zero time nothing moves, so its T frames
#   are identical: the image repeated T times. It has a video's shape, is noised with the same
#   `sigma_in` and goes through the same network.
# - **The model is told how much time separates two frames.** Here that is the frame interval in
#   seconds, `Cond.frame_interval`: `1/fps` for a video, `0` for an image. Zero is an ordinary number,
#   not a special case.
# - **Videos are trained at a variable frame rate.** Frames are taken with a random stride k from
#   longer clips (interval `k/fps`), so the model learns what the interval means, and an image
#   (interval 0) is the end of that range.
#
# Half of every training batch is images (Snap Video's mix). Table 3: treating images as
# infinite-fps videos improves FID from 3.50 to 3.07.
#
# This tutorial
# 1. shows a video at its frame rate, the same footage at half the rate, and an image as a video
#    (`intervals.png`);
# 2. looks at a joint training batch from `batches.make_batch`;
# 3. shows how VDT hears the frame interval: the interval term of its conditioning vector;
# 4. trains one small model jointly on images and videos (under a minute on 2 CPU cores);
# 5. samples videos (interval 1/fps) and images (interval 0) from it with the same noise
#    (`samples.png`), measures how static the interval-0 samples are, and compares the interval
#    embedding before and after training (`interval_embedding.png`).
#
# Run it with `python tutorials/02_images_as_videos.py` (figures go to `tutorials/out/02/`), or with
# `NANO_VIDEODIFF_QUICK=1` for a seconds-long smoke run with tiny sizes.

# %%
import time
from dataclasses import replace

import matplotlib.pyplot as plt
import torch

from _common import QUICK, check, out_dir, save_figure, shipped_or_trained  # also puts the repo root on sys.path

import toy_data
from nano_videodiff import modality
from nano_videodiff.training.batches import TrainingData, make_batch
from nano_videodiff.conditioning import Cond
from nano_videodiff.training.presets import resolve
from nano_videodiff.edm import relative_P_mean
from nano_videodiff.generation import generate
from nano_videodiff.models import build_denoiser

OUT = out_dir("02")
t_start = time.time()

# Sizes. Normal: 8 frames of 16x16, a 0.26M-parameter VDT shipped trained in checkpoints/ (4000 steps;
# NANO_VIDEODIFF_TRAIN=1 retrains it here: 3.6 min on one Zen 4 core in bf16, ~8 on one AVX2 core in fp32).
# Quick: a handful of steps.
T, RES, MAX_STRIDE = 8, 16, 2
TRAIN = dict(num_frames=T, resolution=RES, dim=64, depth=2, heads=4, patch_size=4, batch_size=8,
             max_steps=4000, warmup_steps=20, lr=3e-3, ema_halflife=40)
NUM_SAMPLES, SAMPLE_STEPS = 6, 16
if QUICK:
    T = 4
    TRAIN.update(num_frames=T, dim=32, depth=1, heads=2, batch_size=4, max_steps=4, warmup_steps=1,
                 ema_halflife=2)
    NUM_SAMPLES, SAMPLE_STEPS = 2, 3

# Snap Video's framework: sigma_data = 1, sigma_in = s sqrt(T) ("0" = auto), half the batch images,
# videos at frame strides 1..MAX_STRIDE. The config is what `python train.py` would run with these flags.
# EDM's training noise P_mean = -1.2 belongs to sigma_data = 0.5: with sigma_data = 1 the same noise-to-signal
# ratios need P_mean = -1.2 + ln 2 (edm.relative_P_mean).
SNAP = dict(sigma_data=1.0, sigma_in=0, image_fraction=0.5, max_frame_stride=MAX_STRIDE,
            P_mean=round(relative_P_mean(1.0), 4))
argv = ["--config=bouncing_balls", f"--out_dir={OUT / 'train'}", "--overwrite", "--preview_every=0",
        "--log_every=25", "--ckpt_every=100000", *(f"--{k}={v}" for k, v in {**TRAIN, **SNAP}.items())]
cfg, _, _ = resolve(argv)
FPS = cfg.data.fps

# Held-out clips, long enough to be shown at stride MAX_STRIDE.
long_data = toy_data.build_dataset(replace(cfg.data, num_frames=modality.clip_length(T, MAX_STRIDE)), "test")
long_clips = toy_data.get_batch(long_data, range(NUM_SAMPLES))["video"]  # (N, L, C, H, W) at FPS
print(f"{NUM_SAMPLES} held-out clips of {long_clips.shape[1]} frames, {RES}x{RES}, at {FPS:g} fps")


def mean_frame_difference(videos: torch.Tensor) -> float:
    """Mean absolute change from one frame to the next, in data units ([-1, 1]): 0 = a still picture."""
    return (videos[:, 1:] - videos[:, :-1]).abs().mean().item()


def show_rows(rows, title, path):
    """rows: list of (label, video (T, C, H, W)); one row of frames per video."""
    n_frames = max(v.shape[0] for _, v in rows)
    fig, axes = plt.subplots(len(rows), n_frames, figsize=(1.25 * n_frames + 1.2, 1.35 * len(rows) + 0.5),
                             squeeze=False)
    for r, (label, video) in enumerate(rows):
        for t in range(n_frames):
            ax = axes[r, t]
            ax.set_xticks([])
            ax.set_yticks([])
            if t < video.shape[0]:
                ax.imshow(((video[t].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# %% [markdown]
# ## 1. Three videos: at the clip's frame rate, at half of it, and an image
#
# The same bouncing-balls footage, three ways:
#
# - at its own frame rate: frames 0, 1, 2, ... of the clip, interval `1/fps`;
# - at half the frame rate: frames 0, 2, 4, ... (stride 2), interval `2/fps`. The balls move twice as far
#   per frame. This is what variable frame-rate training feeds the model (`modality.variable_frame_rate`
#   draws the stride at random);
# - an image as a video: frame 0 repeated T times (`modality.image_to_video`), interval `0`: infinite
#   frame rate, nothing moves.
#
# The row labels give the frame interval; the mean absolute frame-to-frame difference below is 0 exactly
# for the image.

# %%
clip = long_clips[0]
image_video, image_interval = modality.image_to_video(clip[None, 0], T)
strided = clip[::2][:T]
examples = [(f"at {FPS:g} fps\ninterval 1/fps\n= {1 / FPS:.3f} s", clip[:T]),
            (f"stride 2\ninterval 2/fps\n= {2 / FPS:.3f} s", strided),
            (f"an image\ninterval {image_interval[0].item():g} s\n(infinite fps)", image_video[0])]
show_rows(examples, "The same footage at three frame intervals", OUT / "intervals.png")
for label, video in examples:
    print(f"  {label.splitlines()[0]:<12} mean |frame difference| = {mean_frame_difference(video[None]):.4f}")

# %% [markdown]
# ## 2. A joint training batch
#
# `make_batch(cfg, data, step, rank, world, device)` (batches.py) builds the global batch of a training step, a
# `Batch` with named fields (`x`, `cond`, `sigma`, `noise`, ...).
# With `image_fraction = 0.5` exactly half the rows are images (T identical frames, interval 0), in a
# random order; the other half are videos at interval `k/fps` with k in `1..max_frame_stride`. The
# batch is a function of the step alone (a generator seeded by (seed, step)), so a resumed run sees the
# same batches.

# %%
data = TrainingData(cfg)
batch = make_batch(cfg, data, 0, 0, 1, "cpu")
x, cond = batch.x, batch.cond
static = (x == x[:, :1]).flatten(1).all(1)
print(f"batch of {x.shape[0]} rows {tuple(x.shape[1:])}:")
print("  frame interval (s):", [round(v, 3) for v in cond.frame_interval.tolist()])
print("  all frames equal:  ", [int(s) for s in static.tolist()])
print(f"  images: {int((cond.frame_interval == 0).sum())}, all of them static: "
      f"{bool(static[cond.frame_interval == 0].all())}; videos at 1/fps: "
      f"{int((cond.frame_interval - 1 / FPS).abs().lt(1e-6).sum())}, at 2/fps: "
      f"{int((cond.frame_interval - 2 / FPS).abs().lt(1e-6).sum())}")

# %% [markdown]
# ## 3. How the model hears the frame interval
#
# VDT turns its conditioning into one vector per video, `conditioning_vector(c_noise, cond)`, which
# modulates every block (adaLN). It is a sum: an embedding of the noise level plus an embedding of the
# frame interval (Fourier features of the number, then a small MLP: `layers.ScalarEmbedder`), plus a
# label embedding when there are labels. The interval term is what makes an image different from a video
# for the network. We take it out of `conditioning_vector` (subtracting the noise term) for a few
# intervals, including 0, and compare the vectors by cosine similarity. Before training the MLP is
# random: nearby intervals get similar vectors only because their Fourier features are similar. After
# training (part 5) we look again.

# %%
INTERVALS = [0.0, 1 / 64, 1 / 32, 1 / 16, 1 / FPS, 2 / FPS, 4 / FPS]


def interval_similarity(denoiser) -> torch.Tensor:
    """Cosine similarities (K, K) of the frame-interval terms of VDT's conditioning vector."""
    net = denoiser.backbone
    k = len(INTERVALS)
    c_noise = torch.zeros(k)  # any noise level: the interval term does not depend on it
    with torch.no_grad():
        full = net.conditioning_vector(c_noise, Cond(frame_interval=torch.tensor(INTERVALS)), k)
        term = full - net.noise_embed(c_noise)  # = net.interval_embed(intervals)
    term = torch.nn.functional.normalize(term, dim=1)
    return term @ term.T


torch.manual_seed(cfg.run.seed)  # the same initialisation train.py will use
similarity_before = interval_similarity(build_denoiser(cfg))
print("cosine similarity of the interval terms at initialisation (rows/cols: intervals in s):")
print("        " + " ".join(f"{v:>6.3f}" for v in INTERVALS))
for v, row in zip(INTERVALS, similarity_before.tolist()):
    print(f"  {v:>6.3f}" + " ".join(f"{s:>6.2f}" for s in row))

# %% [markdown]
# ## 4. Train one model on images and videos
#
# `train.main` is `python train.py` as a function, called with the flags set up at the top (`argv`): the
# `bouncing_balls` preset with small overrides:
# 8 frames of 16x16 in 4x4 patches, a two-block VDT, batches of 8 of which 4 are images, videos at
# stride 1 or 2, Snap Video's `sigma_data = 1` and `sigma_in = s sqrt(T)` (`--sigma_in=0`), the training noise
# at EDM's noise-to-signal ratios (`--P_mean=-0.5069`), 4000 steps.
# The run is a fixed number of steps, so it learns the same on any machine (a slow one takes longer). The
# checkpoint shipped in checkpoints/ is this run's model (its manifest entry names the command); it is
# loaded instead of training unless you set NANO_VIDEODIFF_TRAIN=1. Expect coloured blobs rather than
# crisp balls: the model is tiny.

# %%
model, cfg, steps_trained = shipped_or_trained("tutorial02_images_as_videos", argv)
print(f"sigma_in {model.sigma_in:.3f}")

# %% [markdown]
# ## 5. Videos and images from one model
#
# `generate(model, cfg, n, frame_interval=...)` samples with EDM's Heun sampler; the interval is the only
# difference between asking for a video and asking for an image. We use the **same noise** (the same
# seed) for every interval, so each column of samples starts from the same random video: at `1/fps` and
# `2/fps` the model should make it move (faster at `2/fps`), at `0` it should make it still.

# %%
samples = {}
for name, interval in (("1/fps", 1 / FPS), ("2/fps", 2 / FPS), ("0 (image)", 0.0)):
    samples[name] = generate(model, cfg, NUM_SAMPLES, steps=SAMPLE_STEPS, seed=0, frame_interval=interval,
                             batch_size=NUM_SAMPLES)
rows = [(f"real video\ninterval 1/fps\n= {1 / FPS:.3f} s", long_clips[0, :T])]
for i in range(min(2, NUM_SAMPLES)):
    rows += [(f"sample {i}\ninterval {name}", samples[name][i]) for name in samples]
show_rows(rows, f"One model ({steps_trained} training steps), the same noise per sample, three frame intervals",
          OUT / "samples.png")

# %% [markdown]
# How static is a sample? The mean absolute frame-to-frame difference (data units, [-1, 1]): exactly 0
# for a still picture, larger the more the content moves. Real videos move more at stride 2 than at
# stride 1. A model that learned what the interval means should order its samples the same way, with the
# interval-0 samples close to still. (A model trained this briefly still flickers a little: part of
# every number below is leftover noise, not motion.)

# %%
real_1 = long_clips[:, :T]
real_2 = long_clips[:, ::2][:, :T]
table = [("real videos, interval 1/fps", real_1), ("real videos, interval 2/fps", real_2),
         ("real images as videos, interval 0", modality.image_to_video(long_clips[:, 0], T)[0]),
         *((f"samples, interval {name}", v) for name, v in samples.items())]
print(f"mean |frame-to-frame difference| ({NUM_SAMPLES} videos each):")
diffs = {}
for name, v in table:
    diffs[name] = mean_frame_difference(v)
    print(f"  {name:<36} {diffs[name]:.4f}")
ratio = diffs["samples, interval 0 (image)"] / max(diffs["samples, interval 1/fps"], 1e-12)
print(f"interval-0 samples change {ratio:.2f}x as much from frame to frame as the 1/fps samples")
check("interval-0 samples are static", ratio < 0.5,
      f"frame-to-frame change {ratio:.0%} of the 1/fps samples' (real images: 0%), model trained {steps_trained} steps")
check("samples at 2/fps move more than at 1/fps, as real videos do",
      diffs["samples, interval 2/fps"] > diffs["samples, interval 1/fps"],
      f"{diffs['samples, interval 2/fps']:.4f} vs {diffs['samples, interval 1/fps']:.4f} "
      f"(real: {diffs['real videos, interval 2/fps']:.4f} vs {diffs['real videos, interval 1/fps']:.4f})")

# %% [markdown]
# Finally the interval embedding after training, next to the one at initialisation. Training saw only
# the intervals 0, 1/fps and 2/fps (marked with *); the others show how the learned embedding treats
# intervals it never saw. Expect every similarity to rise after training: the vectors share a large
# common part (the MLP's output bias, the same for every interval), and what tells the intervals apart
# is the smaller rest. In our runs interval 0 ends up as the least similar to the two video intervals,
# and 1/fps and 2/fps close to each other: "still" versus "moving" is the distinction the data taught.
# Intervals outside the trained range (0.5 s) are an extrapolation that the model was never asked about.

# %%
similarity_after = interval_similarity(model)
seen = {0.0, 1 / FPS, 2 / FPS}
ticks = [f"{v:.3f}" + ("*" if any(abs(v - s) < 1e-9 for s in seen) else "") for v in INTERVALS]
fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.8))
for ax, sim, title in ((axes[0], similarity_before, "at initialisation"),
                       (axes[1], similarity_after, "after joint training")):
    im = ax.imshow(sim.numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(INTERVALS)), ticks, rotation=45, fontsize=8)
    ax.set_yticks(range(len(INTERVALS)), ticks, fontsize=8)
    for i in range(len(INTERVALS)):
        for j in range(len(INTERVALS)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(sim[i, j]) > 0.6 else "black")
    ax.set(xlabel="frame interval (s)", title=title)
    ax.title.set_fontsize(10)
axes[0].set_ylabel("frame interval (s)")
fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
fig.suptitle("Frame-interval term of VDT's conditioning vector (* = seen in training; 0 = image)", fontsize=10)
save_figure(fig, OUT / "interval_embedding.png")
print(f"tutorial 02 done in {time.time() - t_start:.1f} s; figures in {OUT}")

# %% [markdown]
# ## What to try next
#
# - Train with `image_fraction = 0` and sample at interval 0: a model that never saw an image has no
#   reason to keep its samples still.
# - Take the images from other data than the videos, e.g. toy Physion with
#   `--image_scenario=drop` while the videos are `collide`: the images then teach content the videos do
#   not have, which is why Snap Video trains on images at all.
# - `benchmarks/snap_ablation.py` trains Table 3's five settings at toy scale, including row (iv):
#   images *not* treated as videos.
