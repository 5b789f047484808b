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
# # 01 · Why a video diffusion model must scale its input: Snap Video's SNR argument
#
# Paper: Snap Video, "Scaled Spatiotemporal Transformers for Text-to-Video Synthesis" (Menapace et al.,
# CVPR 2024), Sec. 3.2, Fig. 2 and Table 1; the images-as-videos idea of Sec. 3.3. Code:
# `nano_videodiff/edm.py` (`add_noise`, `input_scale`, `snr`, `effective_snr`, `preconditioning`) and
# `nano_videodiff/modality.py` (`image_to_video`).
#
# EDM (Karras et al. 2022) was tuned on 64-pixel images: its noise levels sigma, drawn during training
# as ln sigma ~ N(-1.2, 1.2^2), were chosen so that the denoiser sees every useful signal-to-noise ratio
# (SNR), from "almost pure noise" to "almost clean". Snap Video's observation, in plain words:
#
# 1. A video at a higher resolution, or with more frames, is **redundant**: neighbouring pixels and
#    consecutive frames mostly show the same thing.
# 2. Noise is independent from pixel to pixel. If a denoiser averages a block of T frames x s x s pixels
#    (s = how many times larger than 64 px the video is), the signal stays the same but the noise
#    variance drops by T s^2. So the SNR of the block average is **T s^2 times** the per-pixel SNR
#    (Sec. 3.2, Fig. 2).
# 3. The denoiser learns to use that average. A noise level that EDM meant as "the signal is gone" is,
#    for a 16-frame video, 16 times less noisy than intended. Training then spends little time at truly
#    low SNR, and at the start of sampling, where the average frame holds no well-formed picture yet,
#    the model relies on a signal that is not there (a train/test mismatch).
# 4. The fix: **shrink the signal, not the noise**. The forward process becomes
#    p(x_sigma | x) = N(x / sigma_in, sigma^2 I), i.e. `x_sigma = x / sigma_in + sigma * eps`, with
#    **sigma_in = s sqrt(T)**, so the block average again has EDM's SNR. Table 1 of the paper rewrites
#    EDM's preconditioning for this (`edm.preconditioning`); sigma_in = 1 is plain EDM.
#
# Table 3 shows it matters: on the 64x36, 16-frame stage (sigma_in = s sqrt(T) = 4) FID goes from
# 6.58 (EDM, sigma_in = 1) to 3.07 (sigma_in = 4, sigma_data = 1); sigma_in = 2 lands in between (4.45).
#
# This tutorial
# 1. measures the SNR gain of block averaging on redundant videos and compares it with T s^2 (`snr_gain.png`);
# 2. plots log-SNR against sigma for several sigma_in, with EDM's training distribution (`log_snr.png`);
# 3. shows one video at the same sigma under sigma_in = 1 and sigma_in = s sqrt(T) (`frames.png`).
#
# Run it with `python tutorials/01_edm_snr.py` (a few seconds; figures go to `tutorials/out/01/`), or with
# `NANO_VIDEODIFF_QUICK=1` for a smoke run with tiny sizes.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch

from _common import QUICK, check, out_dir, save_figure  # also puts the repository root on sys.path

from nano_videodiff import edm
from nano_videodiff.modality import image_to_video
from toy_data.bouncing_balls import BouncingBalls

OUT = out_dir("01")
t_start = time.time()
g = torch.Generator().manual_seed(0)

# Sizes. BASE is the "original" resolution (s = 1), standing in for EDM's 64 px.
BASE, NUM_CLIPS = 16, 8
FRAMES, SCALES = [1, 2, 4, 8, 16], [1, 2, 4]
SIGMAS = [0.1, 0.5, 2.0, 10.0]                     # noise levels at which the gain is measured
DEMO_T, DEMO_S, DEMO_SIGMA = 8, 4, 0.5             # part 3: 8 frames at 4x the base resolution
if QUICK:
    BASE, NUM_CLIPS = 8, 2
    FRAMES, SCALES = [1, 2, 4], [1, 2]
    SIGMAS = [0.5, 2.0]
    DEMO_T, DEMO_S = 4, 2

data = BouncingBalls(num_frames=max(FRAMES), resolution=BASE, num_balls=3, seed=0)
clips = data.get_batch(range(NUM_CLIPS))["video"]  # (N, T, 3, BASE, BASE) in [-1, 1]
print(f"{NUM_CLIPS} bouncing-balls clips {tuple(clips.shape[1:])} (T, C, H, W)")


def upsample(x: torch.Tensor, s: int) -> torch.Tensor:
    """Each pixel becomes an s x s block of equal pixels: a redundant high-resolution version."""
    return x.repeat_interleave(s, -2).repeat_interleave(s, -1)


def block_mean(video: torch.Tensor, s: int) -> torch.Tensor:
    """Average every T x s x s block of (N, T, C, sH, sW): one (N, C, H, W) picture at base resolution."""
    n, t, c, hs, ws = video.shape
    return video.reshape(n, t, c, hs // s, s, ws // s, s).mean(dim=(1, 4, 6))


# %% [markdown]
# ## 1. Measuring the gain of block averaging
#
# The most redundant video there is: an image repeated over T frames, i.e. an image as a video at
# infinite frame rate (Sec. 3.3, `modality.image_to_video`), upsampled by s. We add noise at several
# sigma (`edm.add_noise` with sigma_in = 1, plain EDM), average every T x s x s block, and compare
#
#     gain = (mean squared noise of a single pixel) / (mean squared error of the block average)
#
# with the prediction T s^2 (`edm.block_average_snr_gain`). The signal is unchanged by the averaging
# (every pixel of a block is the same), so this ratio is the SNR gain.
#
# A real video is not perfectly redundant: the balls move. For the second panel we average T
# consecutive frames of the moving clips (s = 1) and measure the error against each frame. Averaging
# still divides the noise by T, but it also blurs the motion. At high noise the first effect wins and
# the gain approaches T: the denoiser profits from the average exactly at the high noise levels where
# sampling starts, which is where Snap Video locates the mismatch.

# %%
rows = []  # (T, s, T s^2, gain per sigma)
for T in FRAMES:
    for s in SCALES:
        video, _ = image_to_video(upsample(clips[:, 0], s), T)  # (N, T, C, sH, sW), frames identical
        gains = []
        for sigma in SIGMAS:
            eps = torch.randn(video.shape, generator=g)
            noisy = edm.add_noise(video, eps, torch.full((NUM_CLIPS,), sigma))
            before = (noisy - video).pow(2).mean()                 # = sigma^2 (per-pixel noise power)
            after = (block_mean(noisy, s) - clips[:, 0]).pow(2).mean()  # noise power of the block average
            gains.append((before / after).item())
        rows.append((T, s, T * s * s, gains))

print("SNR gain of T x s x s block averaging on redundant videos (image repeated, upsampled):")
print(f"  {'T':>3} {'s':>2} {'T s^2':>6} | " + " ".join(f"{'sigma=' + str(sg):>11}" for sg in SIGMAS)
      + f" | {'mean':>7} {'ratio':>6}")
for T, s, predicted, gains in rows:
    mean_gain = sum(gains) / len(gains)
    print(f"  {T:>3} {s:>2} {predicted:>6} | " + " ".join(f"{x:>11.2f}" for x in gains)
          + f" | {mean_gain:>7.2f} {mean_gain / predicted:>6.3f}")
worst = max(abs(sum(gains) / len(gains) / predicted - 1) for _, _, predicted, gains in rows)
check("averaging a T x s x s block of redundant pixels multiplies the SNR by T s^2 (Snap Video Sec. 3.2)",
      worst < 0.05, f"measured gain within {worst:.1%} of T s^2 for all {len(rows)} (T, s) pairs")

# Moving clips, s = 1: gain against sigma for each T.
curve_sigmas = torch.logspace(math.log10(0.02), math.log10(80), 25 if not QUICK else 6)
moving = {}
for T in [t for t in FRAMES if t > 1]:
    video = clips[:, :T]
    frame_avg = video.mean(1, keepdim=True)
    gains = []
    for sigma in curve_sigmas.tolist():
        noisy = edm.add_noise(video, torch.randn(video.shape, generator=g), torch.full((NUM_CLIPS,), sigma))
        estimate = noisy.mean(1, keepdim=True).expand_as(video)  # every frame replaced by the T-frame mean
        gains.append(((noisy - video).pow(2).mean() / (estimate - video).pow(2).mean()).item())
    moving[T] = gains

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.6))
xs = [r[2] for r in rows]
line = torch.logspace(0, math.log10(max(xs) * 1.5), 50)
ax1.plot(line, line, "k--", lw=1, label="y = x (Sec. 3.2: gain = T s$^2$)")
for j, sigma in enumerate(SIGMAS):
    ax1.scatter(xs, [r[3][j] for r in rows], s=28, alpha=0.8, label=f"measured, $\\sigma$ = {sigma}")
ax1.set(xscale="log", yscale="log", xlabel="T s$^2$ (pixels averaged per block)",
        ylabel="measured SNR gain", title="Redundant video: an image repeated over T frames, upsampled by s")
ax1.title.set_fontsize(10)
ax1.legend(fontsize=9)
ax1.grid(True, which="both", alpha=0.3)
for T, gains in moving.items():
    (handle,) = ax2.plot(curve_sigmas, gains, marker="o", ms=3, label=f"T = {T}")
    ax2.axhline(T, color=handle.get_color(), ls=":", lw=1)
ax2.axvspan(math.exp(-1.2 - 1.2), math.exp(-1.2 + 1.2), color="0.85",
            label="EDM training: ln $\\sigma$ in $\\mu \\pm$ 1 std")
ax2.set(xscale="log", yscale="log", xlabel="noise level $\\sigma$ (data in [-1, 1])",
        ylabel="gain of the T-frame mean", title="Moving bouncing balls, s = 1: gain vs. noise level (dotted: T)")
ax2.title.set_fontsize(10)
ax2.legend(fontsize=9, loc="lower right")
ax2.grid(True, which="both", alpha=0.3)
fig.tight_layout()
save_figure(fig, OUT / "snr_gain.png")

# %% [markdown]
# The redundant points sit on y = x: averaging T s^2 copies multiplies the SNR by T s^2, at every noise
# level. For the moving clips the gain is close to T at high sigma and falls below 1 at low sigma,
# where the motion blur of the average costs more than the noise it removes.
#
# ## 2. Log-SNR against sigma, for several sigma_in
#
# With data of standard deviation sigma_data, the per-pixel SNR of `x / sigma_in + sigma * eps` is
#
#     SNR(sigma) = sigma_data^2 / (sigma_in^2 sigma^2)        (`edm.snr`)
#
# so on a log scale sigma_in shifts the whole curve down by 2 ln sigma_in. The shaded bands mark where
# EDM draws its training noise, ln sigma ~ N(-1.2, 1.2^2) (EDM Table 1, kept by Snap Video): dark = 1
# std, light = 2 std. The dotted line is what the denoiser effectively sees on a 16-frame redundant video
# with sigma_in = 1 (`edm.effective_snr`): 16 times the designed SNR, ln 16 = 2.8 above the sigma_in = 1
# curve. sigma_in = sqrt(16) = 4 lowers it by exactly 2 ln 4 = ln 16, back onto the curve EDM was tuned
# for. We use Snap Video's sigma_data = 1.

# %%
SIGMA_DATA = 1.0
sig = torch.logspace(math.log10(0.002), math.log10(80), 400)
fig, ax = plt.subplots(figsize=(7.5, 4.8))
ax.axvspan(math.exp(-1.2 - 2.4), math.exp(-1.2 + 2.4), color="0.92", label="EDM training, $\\pm$2 std")
ax.axvspan(math.exp(-1.2 - 1.2), math.exp(-1.2 + 1.2), color="0.8", label="EDM training, $\\pm$1 std")
for sigma_in in (1, 2, 4, 8):
    ax.plot(sig, torch.log(edm.snr(sig, SIGMA_DATA, sigma_in)), lw=2, label=f"$\\sigma_{{in}}$ = {sigma_in}")
ax.plot(sig, torch.log(edm.effective_snr(sig, SIGMA_DATA, 16, 1, 1.0)), "k:", lw=1.5,
        label="16 redundant frames, $\\sigma_{in}$ = 1 (effective)")
ax.axhline(0, color="k", lw=0.6)
ax.set(xscale="log", xlabel="noise level $\\sigma$",
       ylabel="log SNR = ln($\\sigma_{data}^2$ / ($\\sigma_{in}^2 \\sigma^2$))",
       title="Per-pixel log-SNR (sigma_data = 1); sigma_in shifts it down by 2 ln sigma_in")
ax.title.set_fontsize(10)
ax.legend(fontsize=8.5, loc="lower left")
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()
save_figure(fig, OUT / "log_snr.png")

# Where does training put its noise levels? SNR > 1 (signal dominates) <=> sigma < sigma_data / sigma_in.
training_sigma = edm.sample_training_sigma(200_000, generator=g)
print(f"share of EDM training noise levels with SNR > 1 (signal stronger than noise), sigma_data = {SIGMA_DATA}:")
for sigma_in in (1, 2, 4, 8):
    exact = 0.5 * (1 + math.erf((math.log(SIGMA_DATA / sigma_in) + 1.2) / (1.2 * math.sqrt(2))))
    drawn = (edm.snr(training_sigma, SIGMA_DATA, sigma_in) > 1).float().mean().item()
    print(f"  sigma_in = {sigma_in}: {100 * exact:5.1f}% (drawn: {100 * drawn:5.1f}%)")

# %% [markdown]
# With sigma_in = 4, fewer than half of the training noise levels leave the signal stronger than the
# noise, against 84% for EDM: training moves towards the low-SNR regime that high-resolution, many-frame
# videos need.
#
# ## 3. One video at the same sigma, with and without input scaling
#
# A moving clip upsampled by s, T frames, noised at the same sigma with the same eps, once with
# sigma_in = 1 and once with sigma_in = `edm.input_scale(T, sH, sW, BASE, BASE)` = s sqrt(T). Every panel
# is shown in data units (`sigma_in * x_sigma`, so the signal always has the same contrast and only the
# noise differs), clipped to [-1, 1]. The last column is the T x s x s block average: what a denoiser
# can compute from the whole block. Below it is the reference: the clean block average, i.e. the
# base-resolution picture, with noise sigma added once, the situation EDM was designed for.

# %%
T, s = DEMO_T, DEMO_S
video = upsample(clips[:1, :T], s)                                   # (1, T, C, sH, sW)
sigma_in = edm.input_scale(T, BASE * s, BASE * s, BASE, BASE)        # = s sqrt(T)
eps = torch.randn(video.shape, generator=g)
sigma = torch.full((1,), DEMO_SIGMA)
shown = {"clean": video}
for name, si in (("sigma_in = 1 (EDM)", 1.0), (f"sigma_in = s sqrt(T) = {sigma_in:.1f}", sigma_in)):
    shown[name] = si * edm.add_noise(video, eps, sigma, si)          # back to data units for display
reference = block_mean(video, s) + DEMO_SIGMA * torch.randn(clips[:1, 0].shape, generator=g)  # EDM at base res

print(f"part 3: T = {T}, s = {s}, {BASE * s}x{BASE * s} px, sigma = {DEMO_SIGMA}, sigma_in = {sigma_in:.2f}")
print(f"  {'':<34} {'noise std per frame':>20} {'noise std of block mean':>24}")
for name, v in list(shown.items())[1:]:
    n = v - video
    print(f"  {name:<34} {n.std().item():>20.3f} {block_mean(n, s).std().item():>24.3f}")
print(f"  {'EDM, one base frame (reference)':<34} {DEMO_SIGMA:>20.3f} {'':>24}")


def to_rgb(x: torch.Tensor):
    return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


fig, axes = plt.subplots(4, T + 1, figsize=(1.45 * (T + 1), 1.45 * 4 + 0.9), squeeze=False)
labels = ["clean", "$\\sigma_{in}$ = 1\n(EDM)", f"$\\sigma_{{in}} = s\\sqrt{{T}}$\n= {sigma_in:.1f}"]
for r, (label, v) in enumerate(zip(labels, shown.values())):
    for t in range(T):
        axes[r, t].imshow(to_rgb(v[0, t]), interpolation="nearest")
        if r == 0:
            axes[r, t].set_title(f"frame {t}", fontsize=9)
    axes[r, T].imshow(to_rgb(upsample(block_mean(v, s), s)[0]), interpolation="nearest")
    axes[r, 0].set_ylabel(label, fontsize=9)
axes[0, T].set_title(f"{T}x{s}x{s} block mean", fontsize=9)
axes[3, T].imshow(to_rgb(upsample(reference, s)[0]), interpolation="nearest")
axes[3, T].set_title("reference", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
for ax in axes[3, :T]:
    ax.axis("off")
fig.suptitle(f"The same video and noise at $\\sigma$ = {DEMO_SIGMA} ({T} frames at {s}x the base resolution), "
             "shown in data units", fontsize=10)
fig.tight_layout()
# The note spans the empty panels of the last row; added after tight_layout, which would shrink the grid.
note = (f"reference: the clean block mean\nat the base resolution ({BASE} px)\n"
        f"+ noise $\\sigma$ = {DEMO_SIGMA} (plain EDM)  $\\rightarrow$")
axes[3, T - 1].text(1.0, 0.5, note, ha="right", va="center", fontsize=9, transform=axes[3, T - 1].transAxes)
save_figure(fig, OUT / "frames.png")
print(f"tutorial 01 done in {time.time() - t_start:.1f} s; figures in {OUT}")

# %% [markdown]
# With sigma_in = 1 each frame is noisy, but the block mean is almost clean: the denoiser is handed a
# far easier problem than sigma = 0.5 is meant to be. With sigma_in = s sqrt(T) each frame drowns in
# noise, and the block mean looks like the reference, the base-resolution picture under plain EDM:
# the SNR the framework was designed for is restored.
#
# ## Images are videos too (Sec. 3.3)
#
# Part 1's redundant video was an image repeated over T frames. That is how Snap Video trains on images:
# as T-frame videos at infinite frame rate (frame interval 0 s), with the **same** sigma_in as the videos.
# Averaging an image-video's frames gives exactly the T-fold gain sigma_in = s sqrt(T) undoes, so one
# diffusion process fits both modalities, and the paper rejects a separate sigma_in per modality.
# `nano_videodiff/modality.py` builds such joint image+video batches.
#
# ## What to try next
#
# - Set `SIGMA_DATA = 0.5` (EDM's value) in part 2: every curve moves down by ln 4, the same shift as
#   doubling sigma_in. Snap Video's Table 3 prefers sigma_data = 1 together with sigma_in = 4.
# - In part 1, replace `clips[:, 0]` by white noise (`torch.randn`): the gain of the block mean is still
#   T s^2 for the repeated, upsampled version; redundancy, not the picture, is what matters.
# - Train a model with `--sigma_in` set to `edm.input_scale(T, H, W, ...)` and compare samples with
#   `--sigma_in=1`.
