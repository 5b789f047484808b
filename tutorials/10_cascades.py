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
# # 10 · Cascades: a super-resolution stage makes small videos big
#
# Papers: Snap Video (Menapace et al. 2024, arXiv 2402.14797) Sec. 3.5 and App. C (a 36x64 first stage and
# a 288x512 upsampler, sigma_in = 32); W.A.L.T (Gupta et al. 2023, arXiv 2312.06662) Sec. 4.5 (two SR stages,
# depth-to-space input, noise conditioning augmentation t_sr ~ U(0, t_max)); Video LDM (Blattmann et al.
# 2023, arXiv 2304.08818) Sec. 3.2 (an upsampler made video-aware with temporal layers) and Sec. 4 (temporal
# layers on other image weights). Code: `nano_videodiff/upsampler.py`, `training/cascade_configs.py`.
#
# A cascade generates a small video first and then hands it to one or more super-resolution stages. A stage
# is an ordinary denoiser of the big video that also sees the small one: upsampled and concatenated to its
# input channels (or through W.A.L.T's depth-to-space convolution). Two details make it work:
#
# - **Noise conditioning augmentation.** In training the stage sees true downsampled clips; at inference it
#   sees the base model's outputs, which have their own errors. Noising the small video to a level
#   `sigma_aug` (drawn per clip in training, chosen at inference) and telling the model that level makes
#   the stage robust to the mismatch: it learns to trust the small video less when it is noisier.
# - **Residual diffusion.** Our stage diffuses only the residual over the upsampled input (SRDiff), so an
#   untrained stage already returns the bilinear upsampling, and training learns the missing detail.
#
# This tutorial
# 1. shows the stage's input (box-downsampled 4x, bilinear / nearest / depth-to-space) and checks the
#    identities the design promises at init;
# 2. loads (or trains) the toy cascade of `training/cascade_configs.py`: a 16x16 Video LDM base and a
#    16 -> 64 upsampler, image and temporally aligned, and compares them with bilinear upsampling;
# 3. fine-tunes the base's image model on a new appearance (a navy background) and plugs the old temporal
#    layers on top (Video LDM Sec. 4): does the motion carry over?
#
# Run it with `python tutorials/10_cascades.py` (figures in `tutorials/out/10/`); it uses the toy cascade's
# checkpoints in `out/cascade_*` if they exist and trains them otherwise (`training/cascade_configs.py` lists
# the commands). `NANO_VIDEODIFF_QUICK=1` runs every line with 2-step models in seconds.

# %%
import copy
import time

import torch

from _common import QUICK, ROOT, check, out_dir  # also puts the repository root on sys.path

import train
from benchmarks.cascade_ablation import (NAVY, fine_tune_image_model, flicker, gradient_energy, held_out_clips,
                                         motion, new_domain)
from nano_videodiff.conditioning import Cond
from nano_videodiff.evaluation.metrics import psnr
from nano_videodiff.evaluation.video_io import frames_grid, save_png
from nano_videodiff.generation import generate
from nano_videodiff.models import build_denoiser, load_model
from nano_videodiff.training.presets import get_preset
from nano_videodiff.upsampler import DepthToSpace, augment, downsample, upsample, upsample_videos

OUT = out_dir("10")
t_start = time.time()
NUM_CLIPS, STEPS, AUG_SIGMA, FINETUNE_STEPS = (2, 2, 0.1, 2) if QUICK else (2, 16, 0.1, 100)
torch.manual_seed(0)

# %% [markdown]
# ## 1. The stage's input, and what holds at init
#
# `downsample` averages 4x4 blocks; `upsample` is bilinear or nearest; `DepthToSpace` is a 3x3 convolution to
# 16 times the channels, laid out as 4x4 blocks, initialised to *be* nearest upsampling.

# %%
stage_cfg = get_preset("cascade_sr")
truth = held_out_clips(stage_cfg, NUM_CLIPS)  # (N, 8, 3, 64, 64)
low = downsample(truth, 4)
d2s = DepthToSpace(3, 4)
with torch.no_grad():
    nearest, bilinear, lifted = upsample(low, 4, "nearest"), upsample(low, 4, "bilinear"), d2s(low)
check("depth-to-space starts as nearest upsampling", torch.allclose(lifted, nearest, atol=1e-6),
      f"max difference {(lifted - nearest).abs().max():.1e}")
g = torch.Generator().manual_seed(0)
eps = torch.randn(low.shape, generator=g)
noised = [augment(low, torch.full((NUM_CLIPS,), s), eps) for s in (0.0, 0.1, 0.3)]
check("noise augmentation at level 0 is no augmentation", torch.equal(noised[0], low), "bit-exact")
save_png(OUT / "inputs.png", frames_grid(torch.stack([truth[0], nearest[0], bilinear[0]]
                                                     + [upsample(n, 4, "nearest")[0] for n in noised[1:]])), scale=2)
print("inputs.png rows: truth 64x64 | nearest(16x16) | bilinear(16x16) | the 16x16 clip noised to 0.1 | to 0.3")

untrained = build_denoiser(stage_cfg.validate()).eval()
cond = Cond(low_res=low, aug_sigma=torch.zeros(NUM_CLIPS), frame_interval=torch.full((NUM_CLIPS,), 0.125))
with torch.no_grad():
    at_80 = untrained(truth * 80.0, torch.full((NUM_CLIPS,), 80.0), cond)
check("an untrained stage returns the upsampled input at high noise (residual diffusion)",
      (at_80 - bilinear).abs().max() < 0.05, f"max |D - bilinear| {(at_80 - bilinear).abs().max():.4f} at sigma 80")

# %% [markdown]
# ## 2. The toy cascade
#
# Four runs of `train.py` (each a few CPU minutes): the base's image model on single 16x16 frames, its temporal
# layers on 8-frame clips (image model frozen), the upsampler's image model on 16x16 crops of 64x64 frames
# (Video LDM trains its upsampler patch-wise; the U-Net then samples whole frames), and its temporal layers.

# %%


def stage(name):
    path = ROOT / "out" / name / "ckpt.pt"
    if path.exists() and not QUICK:
        print(f"loaded {path}")
        return load_model(path)
    argv = [f"--config={name}", f"--out_dir={OUT / name}", "--overwrite", "--preview_every=0"]
    if name in ("cascade_base", "cascade_sr"):
        argv.append(f"--init_from={OUT / (name + '_frames') / 'ckpt.pt'}")
    if QUICK:
        argv += ["--max_steps=2", "--warmup_steps=1", "--batch_size=2"]
    run = train.main(argv)
    return run["ema"].eval(), run["config"]


models = {name: stage(name) for name in ("cascade_base_frames", "cascade_base", "cascade_sr_frames", "cascade_sr")}
base, base_cfg = models["cascade_base"]
sr, sr_cfg = models["cascade_sr"]
with torch.no_grad():
    aligned = upsample_videos(sr, sr_cfg, low, AUG_SIGMA, steps=STEPS)
    with sr.backbone.image_model():  # the same spatial weights, temporal layers off: the image upsampler
        image = upsample_videos(sr, sr_cfg, low, AUG_SIGMA, steps=STEPS)


def score(v):
    sharpness = gradient_energy(v) / gradient_energy(truth)
    return float(psnr(v.flatten(0, 1), truth.flatten(0, 1)).mean()), flicker(v, truth), sharpness


for name, v in (("bilinear", bilinear), ("image upsampler", image), ("aligned upsampler", aligned)):
    p, f, s = score(v)
    print(f"{name:18s} PSNR {p:5.2f} dB, flicker {f:6.2f}, sharpness {s:.2f} (1 = the truth's)")
check("the upsampler is sharper than bilinear upsampling", abs(score(aligned)[2] - 1) < abs(score(bilinear)[2] - 1),
      f"gradient energy vs the truth's: {score(aligned)[2]:.2f} (upsampler) vs {score(bilinear)[2]:.2f} (bilinear)")
check("the aligned upsampler flickers less than the image upsampler (Video LDM Sec. 3.2)",
      score(aligned)[1] < score(image)[1], f"flicker {score(aligned)[1]:.2f} vs {score(image)[1]:.2f}")
samples = generate(base, base_cfg, NUM_CLIPS, steps=STEPS, seed=1)
big = upsample_videos(sr, sr_cfg, samples, AUG_SIGMA, steps=STEPS, seed=1)
save_png(OUT / "cascade.png", frames_grid(torch.stack([upsample(samples, 4, "nearest")[0], big[0],
                                                       nearest[0], image[0], aligned[0], truth[0]])), scale=2)
print("cascade.png rows: a base sample (nearest) | its upsampled video | a held-out clip: nearest | image "
      "upsampler | aligned upsampler | truth")

# %% [markdown]
# ## 3. Temporal layers on other image weights (Video LDM Sec. 4)
#
# Fine-tune the base's image model alone on single frames of a new domain (a navy background, the balls as they
# were), load it into the spatial layers of the base video model and sample. The temporal layers are untouched.
# (`benchmarks/cascade_ablation.py --domain=invert` shows the limit: after inverting every colour the old
# temporal layers no longer help, docs/cascades.md.)

# %%
image_model, frames_cfg = models["cascade_base_frames"]
tuned = fine_tune_image_model(image_model, frames_cfg, FINETUNE_STEPS, batch=16, lr=1e-3, domain="navy")
transferred = copy.deepcopy(base)
before = {k: v.clone() for k, v in transferred.backbone.state_dict().items() if not k.startswith("unet.")}
transferred.backbone.load_image_model(tuned.state_dict())
after = transferred.backbone.state_dict()
check("the temporal layers are bit-exact after the swap", all(torch.equal(after[k], v) for k, v in before.items()),
      f"{len(before)} temporal tensors compared")
videos = generate(transferred, base_cfg, NUM_CLIPS, steps=STEPS, seed=2)
with transferred.backbone.image_model():
    alone = generate(transferred, base_cfg, NUM_CLIPS, steps=STEPS, seed=2)
(accel_t, _), (accel_a, _) = motion(videos, NAVY), motion(alone, NAVY)
accel_real = motion(new_domain(held_out_clips(base_cfg, NUM_CLIPS), "navy"), NAVY)[0]
navy = float(((videos - NAVY).abs().amax(2) < 0.3).float().mean())
check("the new appearance: mostly navy background", navy > 0.5, f"share of navy pixels {navy:.2f}")
check("the motion carries over: closer to the real clips' smoothness than the image model alone",
      accel_t < (accel_a + accel_real) / 2,
      f"centroid acceleration {accel_t:.2f} px vs {accel_a:.2f} px alone; real clips {accel_real:.2f} px")
save_png(OUT / "transfer.png", frames_grid(torch.stack([alone[0], videos[0]])), scale=4)
print("transfer.png rows: the fine-tuned image model alone | with the original temporal layers")
print(f"total {time.time() - t_start:.0f} s")
