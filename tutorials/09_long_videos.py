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
# # 09 · Longer than the model: rollout, temporal interpolation, convolutional-in-time sampling
#
# Papers: Video LDM ("Align your Latents", Blattmann et al. 2023, arXiv 2304.08818) Sec. 3.1 and 4: long
# videos by re-using the latest predictions as context, a temporal interpolation model (T -> 4T -> 16T,
# one model told the rate by a binary conditioning), and "convolutional in time" sampling with the temporal
# attention masked to the trained distance; Snap Video (Menapace et al. 2024, arXiv 2402.14797) App. C.5:
# the lowest frame rate first, then the higher rates filled in. Code: `nano_videodiff/interpolation.py`,
# `nano_videodiff/conv_time.py`, `nano_videodiff/rollout.py`, `sample.py --method=...`.
#
# A video diffusion model makes exactly the T frames it was trained on. Three ways past that:
# 1. **interpolation**: a model that fills 3 frames between each pair of given key frames, applied twice
#    (x4, then x16), turns a few key frames into a long, smooth clip;
# 2. **autoregressive rollout**: predict the next T - k frames from the last k, again and again;
# 3. **convolutional in time**: run the model once over 4T frames, every frame attending only to frames at
#    most T - 1 away, the neighbourhood it was trained with.
#
# Two shipped models: tutorial 06's VDT (8 frames of 16x16 bouncing balls at 8 fps, VDT's task mixture:
# it predicts 4 frames from 4) for rollout and convolutional-in-time sampling, and this tutorial's
# interpolation VDT (`--config=bouncing_balls_interp`: 9-frame windows, frames 0, 4, 8 given, two rates;
# 1500 steps, then 1500 fine-tuning steps at EDM's P_mean -1.2, the two commands in
# checkpoints/manifest.json; NANO_VIDEODIFF_TRAIN=1 retrains the first run only, about 10 minutes on a core).
# Run `python tutorials/09_long_videos.py` (figures in `tutorials/out/09/`); `NANO_VIDEODIFF_QUICK=1`
# runs every line with tiny untrained models in seconds.

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import torch

from _common import QUICK, check, out_dir, save_figure, shipped_checkpoint, shipped_or_trained

import toy_data
from nano_videodiff import conv_time, interpolation, masking
from nano_videodiff.evaluation.metrics import psnr
from nano_videodiff.evaluation.video_io import frames_grid
from nano_videodiff.models import load_model

try:  # the autoregressive rollout (nano_videodiff/rollout.py)
    from nano_videodiff.rollout import num_windows, rollout
except ImportError:  # a checkout without it: the rollout parts are skipped, and say so
    rollout = None

OUT = out_dir("09")
t_start = time.time()
NUM_CLIPS, STEPS = 8, 12  # held-out clips, Heun steps (2 * 12 - 1 = 23 network calls per window)
INTERP_TRAIN = []         # the shipped model's command is the preset itself: python train.py --config=bouncing_balls_interp
PRED_TRAIN = None         # tutorial 06's shipped model (tutorials/06_mask_modeling.py trains it)
if QUICK:
    NUM_CLIPS, STEPS = 2, 2
    tiny = ["--dim=16", "--depth=1", "--heads=2", "--batch_size=2", "--max_steps=3", "--warmup_steps=1"]
    INTERP_TRAIN = tiny
    PRED_TRAIN = ["--config=bouncing_balls_tasks", "--num_frames=8", "--resolution=16", "--patch_size=4", *tiny]


def as_image(image):  # (C, H, W) in [-1, 1] -> (H, W, C) in [0, 1] for imshow
    return ((image.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


argv = ["--config=bouncing_balls_interp", f"--out_dir={OUT / 'train_interp'}", "--overwrite", *INTERP_TRAIN]
interp, icfg, _ = shipped_or_trained("tutorial09_interpolation", argv)
if PRED_TRAIN is None:
    pred, pcfg = load_model(shipped_checkpoint("tutorial06_mask_modeling"))
    print("loaded tutorial 06's shipped VDT for rollout and convolutional-in-time sampling")
else:
    import train
    run = train.main(PRED_TRAIN + [f"--out_dir={OUT / 'train_pred'}", "--overwrite", "--preview_every=0"])
    pred, pcfg = run["ema"].eval(), run["config"]
GEN = dict(steps=STEPS, seed=0, batch_size=64)

# %% [markdown]
# ## 1. Video LDM's interpolation stack
#
# The interpolation model's window is 9 frames, of which 0, 4 and 8 are given: the `interpolate` mask of
# VDT's mask modeling (`masking.interpolate(every=4)`), trained with exactly the masks used here. Each
# training sample is a window at one of two rates, and the model is told which by a learned **stage
# embedding** (`Cond.stage`, added to the noise embedding by every backbone): stage 0 sees every 4th frame
# of a 32-fps clip (key frames at 2 fps -> 8 fps), stage 1 consecutive frames (8 -> 32 fps). The frame
# interval tells the rate too; the stage flag is Video LDM's binary conditioning.
#
# At sampling a longer row of key frames is cut into windows of 3 that share their end frames, all
# windows go through one batched sampler call, and the stitched video holds the key frames exactly. Five
# key frames (2 fps) -> 17 frames (8 fps) -> 65 frames (32 fps). The baselines: the **linear blend** of the
# two neighbouring key frames (a cross-fade, what a video player does) and the **nearest key frame**.
# Scores are over the generated frames only.

# %%
t0 = time.time()
result = interpolation.evaluate(interp, icfg, num_clips=NUM_CLIPS, **GEN)
print(interpolation.format_table(result))
print(f"({time.time() - t0:.0f} s)")
score = {(r["what"].split(":")[0], r["method"]): r["psnr"] for r in result["rows"]}
for stage in range(icfg.model.num_stages):
    model_db, blend_db = score[(f"stage {stage}", "model")], score[(f"stage {stage}", "linear blend")]
    check(f"the interpolation model beats the linear blend of the key frames at stage {stage}",
          model_db > blend_db, f"{model_db:.2f} vs {blend_db:.2f} dB (nearest key frame "
          f"{score[(f'stage {stage}', 'nearest key frame')]:.2f})")
wrong = [score[(f"stage {s}", "model, wrong stage flag")] for s in range(2)]
right = [score[(f"stage {s}", "model")] for s in range(2)]
check("the stage flag matters: told the wrong stage, the model interpolates worse at both rates",
      all(w < r for w, r in zip(wrong, right)),
      ", ".join(f"stage {s}: {r:.2f} -> {w:.2f} dB" for s, (r, w) in enumerate(zip(right, wrong))))

# %% [markdown]
# The whole chain on one clip, and the key frames coming back bit-exactly:

# %%
truth = interpolation.test_clips(icfg, 1)
keys = truth[:, ::16]
x4, x16 = interpolation.stack(interp, icfg, keys, **GEN)
check("the chain keeps its key frames bit-exactly", torch.equal(x16[:, ::16], keys) and torch.equal(x4[:, ::4], keys),
      f"{keys.shape[1]} key frames -> {x4.shape[1]} -> {x16.shape[1]} frames")
panels = torch.cat([interpolation.blend(keys, 16, nearest=True), interpolation.blend(keys, 16), x16, truth])
side = icfg.data.height + 1  # a frame and its white gap
fig, ax = plt.subplots(figsize=(14, 2.6))
ax.imshow(as_image(frames_grid(panels[:, :33])), interpolation="nearest")  # rows: videos, columns: frames
ax.set_yticks([side * r + side // 2 for r in range(4)], ["nearest key", "linear blend", "model x16", "truth"])
ax.set_xticks([side * t + side // 2 for t in range(0, 33, 4)], [str(t) for t in range(0, 33, 4)])
ax.set_title("frames 0-32 of 65 at 32 fps: key frames are 0, 16, 32 (the model makes the 15 between each pair)")
save_figure(fig, OUT / "interpolation.png")

# %% [markdown]
# ## 2. Rollout against convolutional-in-time sampling, on the same clips
#
# Tutorial 06's model predicts 4 frames from 4 (T = 8). From the first 4 frames of 32-frame held-out clips
# (4T), the **rollout** makes 7 windows, each continuing from the last 4 frames made so far; the
# **convolutional-in-time** sampler denoises all 32 frames in one pass with the temporal attention masked
# to |i - j| <= 7 (`with model.backbone.conv_in_time(7)`), so every frame sees the neighbourhood it was
# trained with, though frame positions beyond 7 are new to the model. Copying the last given frame is the
# floor. The horizon curve is PSNR per frame.
#
# First the invariant: with the band as wide as the trained window, the banded model *is* the model.

# %%
T, k = pcfg.data.num_frames, 4
x = torch.randn(2, T, 3, pcfg.data.height, pcfg.data.width)
with torch.no_grad():
    plain = pred.backbone(x, torch.zeros(2))[0]
    with pred.backbone.conv_in_time(T - 1):
        banded = pred.backbone(x, torch.zeros(2))[0]
gap = float((plain - banded).abs().max())
check("at the full trained distance the banded temporal attention is the ordinary forward pass", gap < 1e-5,
      f"max difference {gap:.1e} over {T} frames")

long_data = toy_data.build_dataset(dataclasses.replace(pcfg.data, num_frames=4 * T), "test")  # 4T frames
clips = toy_data.get_batch(long_data, range(NUM_CLIPS))["video"]
N = clips.shape[1]
known = masking.predict(NUM_CLIPS, N, pcfg.data.height, pcfg.data.width, num_context=k)
t0 = time.time()
conv = conv_time.generate_long(pred, pcfg, N, NUM_CLIPS, known=known, known_x=clips, **GEN)
print(f"convolutional in time: {N} frames in one pass, {2 * STEPS - 1} network calls, {time.time() - t0:.1f} s")
curves = {"conv in time": psnr(conv, clips, per_frame=True).mean(0),
          "copy last given": psnr(clips[:, k - 1:k].expand_as(clips), clips, per_frame=True).mean(0)}
if rollout is not None:
    t0 = time.time()
    rolled = rollout(pred, pcfg, clips[:, :k], N, num_context=k, **GEN)
    windows = num_windows(k, N, T, k)
    print(f"rollout: {windows} windows x {2 * STEPS - 1} network calls, {time.time() - t0:.1f} s")
    curves["rollout"] = psnr(rolled, clips, per_frame=True).mean(0)
    check("the rollout keeps the given frames bit-exactly", torch.equal(rolled[:, :k], clips[:, :k]),
          f"{k} frames of {NUM_CLIPS} clips")
else:
    print("nano_videodiff/rollout.py is not in this checkout: the rollout curve is skipped")
first, later = slice(k, T), slice(T, N)
for name, curve in curves.items():
    print(f"  {name:<16} PSNR frames {k}-{T - 1}: {curve[first].mean():.2f} dB, frames {T}-{N - 1}: "
          f"{curve[later].mean():.2f} dB")
check("convolutional-in-time sampling beats copying the last given frame within the trained window",
      bool(curves["conv in time"][first].mean() > curves["copy last given"][first].mean()),
      f"{curves['conv in time'][first].mean():.2f} vs {curves['copy last given'][first].mean():.2f} dB")
if rollout is not None:
    conv_db, roll_db = curves["conv in time"][later].mean(), curves["rollout"][later].mean()
    check("beyond the trained window, convolutional-in-time sampling stays as close to the truth as the rollout "
          "(within 0.5 dB)", bool(conv_db > roll_db - 0.5), f"{conv_db:.2f} vs {roll_db:.2f} dB over frames {T}-{N - 1}")

fig, ax = plt.subplots(figsize=(7, 3.6))
for name, curve in curves.items():
    ax.plot(range(k, N), curve[k:].numpy(), marker=".", label=name)
ax.axvline(T - 0.5, color="gray", ls="--", lw=1, label=f"end of the trained window (T = {T})")
ax.set(xlabel="frame", ylabel="PSNR (dB)", title=f"horizon: {k} given frames, {NUM_CLIPS} held-out clips")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
save_figure(fig, OUT / "horizon.png")

# %% [markdown]
# The same trick on the interpolation model, where windows are the alternative: 33 frames at 32 fps with
# every 4th frame given, filled by stage 1 in 4 windows of 9 frames (`fill_in`), or in one pass over all
# 33 frames with the temporal attention masked to the trained 8 frames.

# %%
truth = interpolation.test_clips(icfg, NUM_CLIPS)[:, :33]
stride = interpolation.stride_of(1, icfg.model.num_stages)
filled = torch.arange(33) % 4 != 0
windowed = interpolation.fill_in(interp, icfg, truth[:, ::4], 1, **GEN)
every_4th = masking.interpolate(NUM_CLIPS, 33, *icfg.data.size, every=4)
one_pass = conv_time.generate_long(interp, icfg, 33, NUM_CLIPS, known=every_4th, known_x=truth, stage=1,
                                   frame_interval=stride / icfg.data.fps, **GEN)
win_db, one_db = (float(psnr(v[:, filled], truth[:, filled]).mean()) for v in (windowed, one_pass))
check("on the interpolation model, one convolutional-in-time pass matches the windows (within 0.5 dB)",
      one_db > win_db - 0.5, f"one pass {one_db:.2f} vs 4 windows {win_db:.2f} dB over the 24 filled frames")

# %% [markdown]
# ## 3. Snap Video's order: the lowest frame rate first, then fill in
#
# Snap Video App. C.5 generates autoregressively at a low frame rate and then fills in the higher rates
# conditioned on what it generated. Here: the rollout continues 4 given frames at 8 fps to 17 frames
# (tutorial 06's model), then the interpolation model's stage 1 fills 3 frames between every pair (8 ->
# 32 fps, 65 frames), against the truth filmed at 32 fps. The baseline blends the same rollout frames.

# %%
if rollout is not None:
    truth = interpolation.test_clips(icfg, NUM_CLIPS)  # 65 frames at 32 fps
    low = truth[:, ::4]  # 8 fps, tutorial 06's rate and motion
    video = interpolation.hierarchical(interp, icfg, low[:, :k], num_low=low.shape[1], first_stage=1,
                                       predict=lambda f, n: rollout(pred, pcfg, f, n, num_context=k, **GEN),
                                       **GEN)[-1]
    filled = torch.arange(truth.shape[1]) % 4 != 0
    model_db = float(psnr(video[:, filled], truth[:, filled]).mean())
    blend_db = float(psnr(interpolation.blend(video[:, ::4])[:, filled], truth[:, filled]).mean())
    check("filling in the rollout's frames with the interpolation model beats blending them", model_db > blend_db,
          f"{model_db:.2f} vs {blend_db:.2f} dB over the {int(filled.sum())} filled-in frames")
print(f"tutorial 09 done in {time.time() - t_start:.0f} s; figures in {OUT}")

# %% [markdown]
# ## What to try next
#
# - `python sample.py --ckpt=checkpoints/tutorial09_interpolation.pt --method=interpolate` writes the
#   chain as GIFs, and `--method=conv_time --task=predict` with tutorial 06's model the one-pass long clip.
# - docs/interpolation.md has the numbers of the shipped model, the commands, and what did not work.
