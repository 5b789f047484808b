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
# # 08 · A causal 3D autoencoder: one latent space for images and videos
#
# Paper: W.A.L.T, "Photorealistic Video Generation with Diffusion Models" (Gupta et al. 2023), Sec. 4.1
# and Table 3e, which takes its autoencoder from MAGVIT-v2 (Yu et al. 2023, "Language Model Beats
# Diffusion: Tokenizer is Key to Visual Generation"). Code: `nano_videodiff/backbones/causal_vae.py`.
#
# W.A.L.T does not diffuse pixels. A 3D CNN first compresses a video of `1 + f_t k` frames of H x W pixels
# into `1 + k` latent frames of (H/f_s) x (W/f_s) x c numbers (paper: 17 x 128^2 x 3 -> 5 x 16^2 x 8), and the
# transformer learns to generate those. The trick is in the "1 +": **the first frame is always encoded
# on its own**. Every convolution is *causal* in time (it reads the current frame and the k_t - 1
# frames before it, never a later one), so latent frame 0 is a function of pixel frame 0 only. An image
# is then simply a one-frame video, and its latent is exactly what the first frame of any video starting
# with it gets: images and videos live in one latent space, and one transformer can train on both.
#
# This tutorial
# 1. measures the receptive field in time of an (untrained) causal encoder and of the same network with
#    ordinary centred 3D convolutions: perturb one pixel frame, see which latent frames move
#    (`causality.png`);
# 2. checks the consequences: an image's latent equals latent frame 0 of a video that starts with it,
#    and 1 + f_t k frames give 1 + k latent frames;
# 3. trains a tiny autoencoder on bouncing balls for under a minute and shows reconstructions of
#    videos and of images (one-frame videos) side by side, then fits the latent normalisation that
#    W.A.L.T finds helpful (Table 3e: FVD 67.9 without vs 60.7 with) (`reconstructions.png`,
#    `latent_stats.png`).
#
# Run it with `python tutorials/08_causal_latents.py` (figures go to `tutorials/out/08/`), or with
# `NANO_VIDEODIFF_QUICK=1` for a seconds-long smoke run with tiny sizes.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch

from _common import QUICK, check, out_dir, save_figure  # also puts the repository root on sys.path

import toy_data
from nano_videodiff.backbones.causal_vae import CausalVAE
from nano_videodiff.training.config import DataConfig
from nano_videodiff.evaluation.metrics import psnr

OUT = out_dir("08")
torch.manual_seed(0)
t_start = time.time()

# f_t = 2 (the paper uses 4), so T must be 1 + 2k: 9 frames -> 5 latent frames. f_s = 4 (the toy default;
# paper: 8) in parts 1-2; part 3 trains with f_s = 2, see there.
T, RES, WIDTH, BATCH, STEPS, LR = 9, 32, 16, 4, 400, 1e-3
if QUICK:
    T, RES, WIDTH, BATCH, STEPS = 5, 16, 8, 2, 5
data_cfg = DataConfig(dataset="bouncing_balls", num_frames=T, height=RES, width=RES)
train_set, test_set = toy_data.build_dataset(data_cfg, "train"), toy_data.build_dataset(data_cfg, "test")
clips = toy_data.get_batch(test_set, range(8))["video"]  # held-out clips (8, T, 3, RES, RES) in [-1, 1]


def make_vae(causal=True, spatial_down=4):
    torch.manual_seed(0)
    return CausalVAE(in_channels=3, channels=WIDTH, channel_mult=(1, 2), latent_channels=4,
                     spatial_down=spatial_down, temporal_down=2, causal=causal)


# %% [markdown]
# ## 1. Who sees whom: the receptive field in time
#
# A regular 3D convolution with a temporal kernel of 3 reads frames t-1, t, t+1, so after a few layers
# every output frame has read every input frame. W.A.L.T (after MAGVIT-v2) pads the k_t - 1 = 2 missing
# frames *before* the clip and none after, so each output frame only reads the present and the past
# (`CausalConv3d`; our pad frames are copies of the first frame). Temporal downsampling by a strided
# causal convolution keeps the rule: latent frame j reads pixel frames 0 .. 2j, and latent frame 0
# reads frame 0 alone.
#
# The experiment: take a clip, replace pixel frame t by the same frame of another clip, and measure how
# much each latent frame j changes, relative to its size. The weights are random: causality is a property
# of the architecture, not something the network learns. We use one set of weights for both the causal
# network and its centred twin (`causal=False`), so only the padding differs.

# %%
causal_vae, centred_vae = make_vae(causal=True), make_vae(causal=False)
centred_vae.load_state_dict(causal_vae.state_dict())
T_lat = causal_vae.latent_shape(T, RES, RES)[0]
x, other = clips[:1], clips[1:2]


@torch.no_grad()
def latent_change(vae):
    """(T, T_lat): relative change of latent frame j when pixel frame t is replaced."""
    z = vae.encode(x)
    change = torch.zeros(T, T_lat)
    for t in range(T):  # a handful of frames: a plain loop is the clearest
        y = x.clone()
        y[:, t] = other[:, t]
        change[t] = (vae.encode(y) - z).flatten(2).norm(dim=-1)[0] / z.flatten(2).norm(dim=-1)[0]
    return change


changes = {"causal (W.A.L.T / MAGVIT-v2)": latent_change(causal_vae),
           "centred (a regular 3D conv)": latent_change(centred_vae)}
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, (name, change) in zip(axes, changes.items()):
    im = ax.imshow(change.numpy(), cmap="magma", vmin=0, vmax=float(max(c.max() for c in changes.values())),
                   aspect="auto")
    ax.set_xlabel("latent frame j"), ax.set_ylabel("replaced pixel frame t")
    ax.set_xticks(range(T_lat)), ax.set_yticks(range(T))
    ax.set_title(name)
    for t in range(T):
        for j in range(T_lat):
            if change[t, j] == 0:
                ax.text(j, t, "0", ha="center", va="center", color="white", fontsize=8)
fig.colorbar(im, ax=axes, label="relative change of latent frame j")
fig.suptitle(f"Replace one of {T} pixel frames, watch the {T_lat} latent frames: '0' = bit-exactly unchanged")
save_figure(fig, OUT / "causality.png")

causal_change = changes["causal (W.A.L.T / MAGVIT-v2)"]
for t in range(T):
    unchanged = [j for j in range(T_lat) if causal_change[t, j] == 0]
    print(f"causal: replacing frame {t} leaves latent frames {unchanged} bit-exactly unchanged "
          f"(expected: those before ceil({t}/2) = {math.ceil(t / 2)})")
print("centred: latent frame 0 moves by", [round(float(v), 3) for v in changes["centred (a regular 3D conv)"][:, 0]])
exact = all((causal_change[t, :math.ceil(t / 2)] == 0).all() and (causal_change[t, math.ceil(t / 2):] > 0).all()
            for t in range(T))
check("the causal encoder's latent frame j reads pixel frames up to 2j only (W.A.L.T Sec. 4.1)", bool(exact),
      f"replacing frame t changed exactly latent frames ceil(t/2).. for every t of {T}; the centred "
      f"encoder's latent frame 0 moved for {int((changes['centred (a regular 3D conv)'][:, 0] > 0).sum())} of {T} frames")

# %% [markdown]
# Causal: a lower triangle. Replacing frame t moves latent frames ceil(t/2) and later, and never latent
# frame 0 unless t = 0. Centred: every frame moves latent frame 0 (a few layers suffice for the receptive
# field to cover 9 frames), so "the first frame" has no latent of its own and an image could not be
# encoded like a video.
#
# ## 2. Consequences: images are one-frame videos
#
# Because latent frame 0 depends on frame 0 alone, an image (B, C, H, W) encodes, as a one-frame video,
# to exactly latent frame 0 of any video that starts with it. For samples that are images repeated over
# T frames (`modality.image_to_video`, marked `is_image` in a joint batch), `encode(x, is_image)` encodes
# frame 0 alone and repeats its latent; because the pad frames copy the first frame, a still video gets
# that very latent in every latent frame even without the flag. Other frame counts than 1 + 2k are
# refused with a message that lists the valid ones.

# %%
with torch.no_grad():
    image = clips[2:3, 0]  # (1, C, H, W)
    z_image = causal_vae.encode(image)  # (1, 1, c, h, w)
    video_from_image = torch.cat([image[:, None], clips[3:4, 1:]], dim=1)  # frame 0 = the image, then another clip
    z_video = causal_vae.encode(video_from_image)
    still = causal_vae.encode(image[:, None].expand(-1, T, -1, -1, -1))
print(f"image {tuple(image.shape)} -> latent {tuple(z_image.shape)}; video {tuple(video_from_image.shape)} -> "
      f"latent {tuple(z_video.shape)}")
print("max |latent(image) - latent frame 0 of a video starting with it| =",
      f"{(z_image[:, 0] - z_video[:, 0]).abs().max().item():.2e}")
print("max |latent(image) - latent frames of the image as a still video| =",
      f"{(z_image - still).abs().max().item():.2e}")
for frames in (1, 3, 5, 9, 17):
    print(f"{frames:2d} frames -> {causal_vae.latent_shape(frames, RES, RES)} (latent frames, c, h, w)")
try:
    causal_vae.latent_shape(16, RES, RES)
except ValueError as err:
    print("16 frames ->", err)

# %% [markdown]
# ## 3. Training a tiny autoencoder on bouncing balls
#
# Stage 1 of W.A.L.T: train the autoencoder alone. Our loss is the per-element mean squared error of the
# reconstruction plus `kl_weight` (1e-6) times the KL divergence of the diagonal-Gaussian latent to N(0, I),
# which keeps the latent from drifting without costing reconstruction quality. The paper adds GAN and
# perceptual (LPIPS) losses; we leave them out (LPIPS needs downloaded weights; on flat toy frames they
# buy little). Training runs a fixed number of steps (about two minutes on a 2-core CPU in fp32), so it
# learns the same on any machine.
#
# Two minutes of CPU is little for an autoencoder: with the toy default f_s = 4 (latent 8 x 8 x 4 per latent
# frame) the first ~150 steps barely beat an all-black reconstruction, and it takes ~1000 steps to reach
# ~25 dB PSNR. Here we train with f_s = 2 (latent 16 x 16 x 4, still 5.4x fewer numbers than the pixels),
# which gives recognisable reconstructions within the two minutes. Causality does not depend on f_s.

# %%
vae = make_vae(spatial_down=2)
opt = torch.optim.Adam(vae.parameters(), lr=LR)
gen = torch.Generator().manual_seed(0)
losses, step, t_train = [], 0, time.time()
while step < STEPS:
    batch = toy_data.get_batch(train_set, range(step * BATCH, (step + 1) * BATCH))["video"]
    terms = vae.loss_terms(batch, generator=gen)
    opt.zero_grad()
    terms["loss"].backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    opt.step()
    losses.append(terms["reconstruction"].item())
    step += 1
print(f"{step} steps of batch {BATCH} in {time.time() - t_train:.0f} s; reconstruction MSE "
      f"{losses[0]:.3f} -> {sum(losses[-10:]) / len(losses[-10:]):.3f}")

# %% [markdown]
# Reconstructions of held-out clips (as videos) and of single frames of other clips (as images, i.e.
# one-frame videos): the same encoder and decoder, the same latent space.

# %%
with torch.no_grad():
    videos, images = clips[:2], clips[4:8, T // 2]  # two videos; four images (middle frames of other clips)
    video_rec, image_rec = vae.reconstruct(videos), vae.reconstruct(images)
    video_psnr = psnr(vae.reconstruct(clips), clips).mean().item()
    image_psnr = psnr(image_rec[:, None], images[:, None]).mean().item()
print(f"held-out PSNR: videos {video_psnr:.1f} dB, images {image_psnr:.1f} dB")
blank_psnr = psnr(torch.full_like(clips, -1.0), clips).mean().item()  # an all-black "reconstruction"
check("one autoencoder reconstructs both videos and images (frames as one-frame videos) far better than blank",
      min(video_psnr, image_psnr) > blank_psnr + 5,
      f"videos {video_psnr:.1f} dB, images {image_psnr:.1f} dB, blank frames {blank_psnr:.1f} dB; {step} steps")


def show(ax, frame):
    ax.imshow(((frame.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])


rows = 2 * len(videos) + 2
fig, axes = plt.subplots(rows, T, figsize=(1.1 * T, 1.15 * rows), squeeze=False)
for i in range(len(videos)):
    for t in range(T):
        show(axes[2 * i, t], videos[i, t]), show(axes[2 * i + 1, t], video_rec[i, t])
    axes[2 * i, 0].set_ylabel(f"video {i}", rotation=0, ha="right")
    axes[2 * i + 1, 0].set_ylabel("decoded", rotation=0, ha="right")
for t in range(T):
    for r in (rows - 2, rows - 1):
        axes[r, t].axis("off")
for i in range(min(len(images), T // 2)):
    for r, frame in ((rows - 2, images[i]), (rows - 1, image_rec[i])):
        axes[r, 2 * i].axis("on"), show(axes[r, 2 * i], frame)
axes[rows - 2, 0].set_ylabel("images", rotation=0, ha="right")
axes[rows - 1, 0].set_ylabel("decoded", rotation=0, ha="right")
fig.suptitle(f"After {step} steps: videos ({T} frames -> {T_lat} latent frames), PSNR {video_psnr:.1f} dB; "
             f"images (1 frame -> 1 latent frame), PSNR {image_psnr:.1f} dB", fontsize=10)
save_figure(fig, OUT / "reconstructions.png")

# %% [markdown]
# ## 4. Latent normalisation
#
# The diffusion model adds noise of a fixed scale to its inputs, so it wants latents of roughly unit
# variance. The raw latents of an autoencoder are whatever the encoder made of them. W.A.L.T normalises
# them before the transformer (Table 3e: FVD 60.7 with, 67.9 without). After stage 1 we call
# `fit_latent_stats` once on training clips: it stores the per-channel mean and std of the posterior means
# in buffers (saved with the weights), and `to_latent` / `from_latent` apply and undo the normalisation.

# %%
with torch.no_grad():
    fit_clips = toy_data.get_batch(train_set, range(10_000, 10_000 + (8 if QUICK else 64)))["video"]
    raw = vae.encode(clips)
    mean, std = vae.fit_latent_stats(fit_clips)
    normalised = vae.to_latent(clips)
print("per-channel mean", [round(v, 2) for v in mean.tolist()], "std", [round(v, 2) for v in std.tolist()])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
for ax, z, title in ((axes[0], raw, "raw latents"), (axes[1], normalised, "normalised latents")):
    for ch in range(z.shape[2]):
        ax.hist(z[:, :, ch].flatten().numpy(), bins=40, histtype="step", label=f"channel {ch}")
    ax.set_title(f"{title} of held-out clips"), ax.set_xlabel("value"), ax.set_yscale("log")
axes[0].legend(fontsize=8)
save_figure(fig, OUT / "latent_stats.png")
print(f"total time {time.time() - t_start:.0f} s")
