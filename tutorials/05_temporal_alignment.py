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
# # 05 · Temporal alignment: turn a frozen image model into a video model
#
# Paper: Video LDM, "Align your Latents: High-Resolution Video Synthesis with Latent Diffusion Models"
# (Blattmann et al., CVPR 2023), Sec. 3.1 (temporal layers, the mixing factor alpha, training only the
# temporal layers), Sec. 3.1.1 (context frames) and Fig. 2. Code: `nano_videodiff/backbones/unet.py` (the image
# model, an ADM U-Net), `nano_videodiff/backbones/temporal_alignment.py` (`VideoLDM`), `nano_videodiff/edm.py`,
# `nano_videodiff/sampler.py`.
#
# Image data is plentiful and image models are good. Video LDM reuses one:
#
# - **Train an image model** (here a small U-Net on single frames). Run on the T frames of a video, it
#   treats them as T unrelated images: every frame is a good picture, but nothing ties frame t to t+1.
# - **Insert temporal layers** after each of its layers (its *spatial* layers): 3D convolutions and
#   attention across the T frames at every pixel. After each one the spatial output z and the temporal
#   output z' are blended, `alpha z + (1 - alpha) z'`, with a learned `alpha = sigmoid(mix_logit)` per
#   layer.
# - **Align**: train only the temporal layers on videos; the image model is frozen. It keeps its image
#   quality (setting alpha = 1 gives it back exactly) and the video model learns only how frames relate.
#   Fig. 2 of the paper shows the effect: samples of the image model are incoherent across frames, the
#   aligned model's are one video.
#
# Our temporal layers start as the identity (zero-initialised last layers), so the aligned model *starts*
# as the image model and training moves it away only as far as the videos ask. `VideoLDM` can also be
# told which frames are given (Sec. 3.1.1: the masked frames and the mask go through a small learned
# downsampling into every 3D-conv block, for prediction and interpolation); this tutorial keeps to
# unconditional generation, the paper's Fig. 2.
#
# This tutorial
# 1. trains a small image U-Net on single frames of bouncing balls;
# 2. wraps it into a `VideoLDM`, freezes it and aligns the temporal layers on 8-frame clips;
# 3. samples from the same noise with the image model and with the aligned model (`samples.png`),
#    measures how alike consecutive frames are, and checks that the image model is untouched;
# 4. plots the learned alpha of every temporal layer (`alphas.png`).
#
# Run it with `python tutorials/05_temporal_alignment.py` (figures go to `tutorials/out/05/`), or with
# `NANO_VIDEODIFF_QUICK=1` for a seconds-long smoke run with tiny sizes.

# %%
import copy
import time

import matplotlib.pyplot as plt
import torch

from _common import QUICK, check, out_dir, save_figure  # also puts the repository root on sys.path

import toy_data
from nano_videodiff.conditioning import Batch
from nano_videodiff.training.config import DataConfig
from nano_videodiff.edm import Denoiser
from nano_videodiff.sampler import edm_sigmas, sample
from nano_videodiff.backbones.temporal_alignment import TemporalConvBlock, VideoLDM
from nano_videodiff.backbones.unet import UNet
from nano_videodiff.evaluation.video_io import frames_grid, save_png

OUT = out_dir("05")
t_start = time.time()

# Sizes. Normal: 16x16 frames, a 0.19M-parameter U-Net, 8-frame clips. Each training phase runs a fixed
# number of steps, so the models are the same on any machine (about 2 minutes in all on a 2-core CPU).
RES, T, NUM_BALLS = 16, 8, 2
UNET = dict(in_channels=3, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
            image_size=RES, heads=2)
IMAGE = dict(steps=400, batch=32, lr=3e-3)    # single frames
ALIGN = dict(steps=300, batch=4, lr=1e-2)     # 8-frame clips, temporal layers only
NUM_SAMPLES, SAMPLE_STEPS = 4, 16
if QUICK:
    T = 4
    UNET.update(channels=8)
    IMAGE.update(steps=3, batch=4)
    ALIGN.update(steps=3, batch=2)
    NUM_SAMPLES, SAMPLE_STEPS = 2, 3
SIGMA_DATA = 0.5
torch.manual_seed(0)

images = toy_data.build_dataset(DataConfig(num_frames=1, height=RES, width=RES, num_balls=NUM_BALLS))
clips = toy_data.build_dataset(DataConfig(num_frames=T, height=RES, width=RES, num_balls=NUM_BALLS))
test_clips = toy_data.get_batch(toy_data.build_dataset(
    DataConfig(num_frames=T, height=RES, width=RES, num_balls=NUM_BALLS), "test"), range(NUM_SAMPLES))["video"]


def train(denoiser, data, steps, batch, lr, name=""):
    """AdamW on the trainable parameters, a fresh batch of clips per step; returns the losses."""
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    losses, t0 = [], time.time()
    for step in range(steps):
        x = toy_data.get_batch(data, range(step * batch, (step + 1) * batch))["video"]
        loss = denoiser.loss(Batch(x), generator=g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"{name}: {len(losses)} steps in {time.time() - t0:.0f} s, {sum(p.numel() for p in params) / 1e6:.3f}M "
          f"trainable parameters, loss {sum(losses[:10]) / len(losses[:10]):.3f} -> "
          f"{sum(losses[-10:]) / len(losses[-10:]):.3f} (first / last 10 steps)")
    return losses


# %% [markdown]
# ## 1. The image model
#
# An ADM-style U-Net (`unet.UNet`): residual blocks with scale-shift norm from the noise embedding,
# self-attention at 8x8, one down/up-sampling step with skip connections. Its `forward` folds the frames
# into the batch, so on a (B, 1, C, H, W) "video" it is a plain image model. It trains with EDM's loss
# (`edm.Denoiser`) on single frames of bouncing balls (`num_frames = 1`).

# %%
image_model = Denoiser(UNet(**UNET), sigma_data=SIGMA_DATA)
image_losses = train(image_model, images, **IMAGE, name="image model")

# %% [markdown]
# ## 2. Wrap, freeze, align
#
# `VideoLDM(unet)` inserts a temporal layer after every spatial layer: a 3D-conv block (kernel 3x1x1, so
# across neighbouring frames at one pixel) after each residual block, and a temporal transformer block
# (attention across all T frames at one pixel, sinusoidal frame positions, an MLP) after each attention
# block. `freeze_image_model()` sets `requires_grad = False` on every U-Net parameter, and the optimizer
# gets only the trainable (temporal) parameters.

# %%
video_model = Denoiser(VideoLDM(copy.deepcopy(image_model.backbone)).freeze_image_model(), sigma_data=SIGMA_DATA)
ldm = video_model.backbone
frozen_before = {k: v.clone() for k, v in ldm.unet.state_dict().items()}
x_check = test_clips[:2]
with torch.no_grad():  # zero-initialised temporal layers: the video model starts as the image model
    start_gap = (video_model(x_check, torch.full((2,), 0.5)) - image_model(x_check, torch.full((2,), 0.5))).abs().max()
print(f"temporal layers: {len(ldm.temporal)} ({sum(isinstance(l, TemporalConvBlock) for l in ldm.temporal.values())} "
      f"3D-conv, the rest attention); before alignment max |video - image model| = {start_gap:.1e}")

align_losses = train(video_model, clips, **ALIGN, name="alignment")
unchanged = all(torch.equal(v, frozen_before[k]) for k, v in ldm.unet.state_dict().items())
print(f"image model weights bit-identical after alignment: {unchanged}")

# %% [markdown]
# ## 3. Image model vs aligned video model
#
# Both sample with EDM's Heun sampler from the **same noise**. The image model denoises each frame on
# its own, so its frames are unrelated pictures; the aligned model denoises the clip as one video. Real
# held-out clips for comparison.
#
# How alike are consecutive frames? The cosine similarity of their pixel intensities (``(x + 1) / 2``, the
# black background counts 0): 1 for identical frames, near 0 for frames whose balls do not overlap. It
# does not reward a model for drawing fainter balls, as a mean frame difference would.

# %%
noise = torch.randn(NUM_SAMPLES, T, 3, RES, RES, generator=torch.Generator().manual_seed(7))
sigmas = edm_sigmas(SAMPLE_STEPS)
with torch.no_grad():
    from_image = sample(image_model.forward_with_state, noise, sigmas).clamp(-1, 1)
    from_video = sample(video_model.forward_with_state, noise, sigmas).clamp(-1, 1)


def frame_similarity(videos):
    """Mean cosine similarity of consecutive frames' intensities (x + 1) / 2: 1 = identical frames."""
    v = ((videos + 1) / 2).flatten(2)
    return torch.nn.functional.cosine_similarity(v[:, 1:], v[:, :-1], dim=-1).mean().item()


panels = [("image model: every frame on its own", from_image),
          ("aligned video model, same noise", from_video), ("real held-out clips", test_clips)]
fig, axes = plt.subplots(len(panels), 1, figsize=(0.9 * T + 0.5, 1.0 * NUM_SAMPLES * len(panels) + 0.8),
                         layout="constrained")
for ax, (title, videos) in zip(axes, panels):
    ax.imshow(((frames_grid(videos) + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(f"{title}\n(consecutive-frame similarity {frame_similarity(videos):.2f})", fontsize=9)
    ax.axis("off")
fig.suptitle("Frames left to right, one video per row", fontsize=10)
save_figure(fig, OUT / "samples.png")
save_png(OUT / "aligned_samples.png", frames_grid(from_video))
for title, videos in panels:
    print(f"  {title:<38} consecutive-frame similarity = {frame_similarity(videos):.3f}")
similarity = {title.split(":")[0].split(",")[0]: frame_similarity(videos) for title, videos in panels}
sim_image, sim_video, sim_real = similarity["image model"], similarity["aligned video model"], similarity["real held-out clips"]
check("aligning the temporal layers makes consecutive frames more alike, closer to real clips",
      sim_image < sim_video and abs(sim_video - sim_real) < abs(sim_image - sim_real),
      f"similarity image model {sim_image:.2f} -> aligned {sim_video:.2f}, real clips {sim_real:.2f}; "
      f"{IMAGE['steps']} + {ALIGN['steps']} steps")

# %% [markdown]
# What to expect: the image model's frames are unrelated (balls jump, colours change: a low
# similarity), the real clips' frames are nearly alike (balls move about a pixel per frame), and the
# aligned model lies in between, closer to the real clips the longer it aligns (a minute of CPU training
# gets part of the way: balls that persist for a few frames, some still flickering). And alpha = 1 gives
# the image model back
# *bit-exactly*: inside `with ldm.image_model():` (it sets `image_only = True`) every temporal layer is skipped,
# and `cond.is_image` does the same per
# sample, which is how images and videos can share one batch.

# %%
with torch.no_grad(), ldm.image_model():
    exact = torch.equal(video_model(x_check, torch.full((2,), 0.5)), image_model(x_check, torch.full((2,), 0.5)))
print(f"VideoLDM with alpha = 1 reproduces the image model bit-exactly: {exact}")

# %% [markdown]
# ## 4. The learned mixing factors
#
# Each temporal layer has its own `alpha = sigmoid(mix_logit)`, initialised at sigmoid(0.5) = 0.62 (SVD's
# default). A layer whose alpha falls leans more on its temporal output, one whose alpha rises keeps
# more of the image model's output. Short runs move them only a little. The paper found
# image quality almost unchanged with the learned alphas (FID 48.26) versus alpha = 1 (47.00).

# %%
alphas = ldm.alphas()
fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw=dict(width_ratios=[1.6, 1]))
ldm.plot_alphas(ax_a)
ax_l.plot(image_losses, lw=0.8, label="image model (single frames)")
ax_l.plot(align_losses, lw=0.8, label="alignment (temporal layers only)")
ax_l.set(xlabel="step", ylabel="loss", yscale="log", title="training losses")
ax_l.legend(fontsize=8)
save_figure(fig, OUT / "alphas.png")
print("alpha per temporal layer:", {i: round(a, 3) for i, a in alphas.items()})
print(f"tutorial 05 done in {time.time() - t_start:.0f} s; figures in {OUT}")

# %% [markdown]
# ## What to try next
#
# - Align longer (raise `ALIGN["steps"]`) and watch the aligned model's frame similarity
#   approach the real clips'.
# - Prediction (Sec. 3.1.1): align with `Cond(known=prediction_mask(...), known_x=clips)` so the model
#   learns to continue 0, 1 or 2 given frames, then sample with the same `Cond` and held-out clips.
# - `VideoLDM(unet, temporal_conv=False, context=False)` keeps only temporal attention: the paper's
#   ablation finds the 3D convolutions help (FVD 704 -> 534).
# - Unfreeze the image model (skip `freeze_image_model()`): end-to-end training, the setting of Snap
#   Video's U-Net baseline (`benchmarks/fit_vs_unet.py`).
