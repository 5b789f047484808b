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
# 2. loads the shipped toy cascade of `training/cascade_configs.py` (`checkpoints/cascade_base.pt`, a 16x16
#    Video LDM base; `checkpoints/cascade_sr.pt`, its 16 -> 64 aligned upsampler) and compares the image and
#    the aligned upsampler with bilinear upsampling;
# 3. shows what noise conditioning augmentation buys: a noisy input, and the model told its level or not;
# 4. fine-tunes the base's image model on a new appearance (a navy background) and plugs the old temporal
#    layers on top (Video LDM Sec. 4, `nano_videodiff/personalisation.py`): does the motion carry over?
#
# Run it with `python tutorials/10_cascades.py` (figures in `tutorials/out/10/`, about two minutes on one
# core). `NANO_VIDEODIFF_TRAIN=1` retrains the four runs here instead (`training/cascade_configs.py` lists the
# commands; about 25 minutes on an idle core); `NANO_VIDEODIFF_QUICK=1` runs every line with 2-step models.

# %%
import time

import torch

from _common import QUICK, TRAIN_HERE, check, out_dir, shipped_checkpoint  # also puts the repo root on sys.path

import train
import toy_data
from nano_videodiff import personalisation
from nano_videodiff.conditioning import Cond
from nano_videodiff.evaluation.upsampling import motion, upsampling_scores
from nano_videodiff.evaluation.video_io import frames_grid, save_png
from nano_videodiff.generation import generate, regenerate
from nano_videodiff.models import build_denoiser, load_model
from nano_videodiff.training.presets import get_preset
from nano_videodiff.upsampler import AUG_SEED_OFFSET, DepthToSpace, augment, downsample, residual_std, upsample, upsample_videos

OUT = out_dir("10")
t_start = time.time()
NUM_CLIPS, STEPS, AUG_SIGMA, FINETUNE_STEPS = (2, 2, 0.1, 2) if QUICK else (4, 16, 0.1, 100)
torch.manual_seed(0)

# %% [markdown]
# ## 1. The stage's input, and what holds at init
#
# `downsample` averages 4x4 blocks; `upsample` is bilinear or nearest; `DepthToSpace` is a 3x3 convolution to
# 16 times the channels, laid out as 4x4 blocks, initialised to *be* nearest upsampling.

# %%
stage_cfg = get_preset("cascade_sr")
truth = toy_data.get_batch(toy_data.build_dataset(stage_cfg.data, "test"), range(NUM_CLIPS))["video"]  # (N, 8, 3, 64, 64)
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
# What the stage diffuses is the residual over the upsampled input, mostly zero with detail at the edges. EDM's
# preconditioning assumes the diffused data has std `sigma_data`, so the stage's preset sets it to the
# residual's measured std instead of the 0.5 of images (`upsampler.residual_std`; with 0.5, the same 3000
# steps gave 23.7 dB instead of 25.6, docs/cascades.md).

# %%
measured = residual_std(stage_cfg, num_clips=16 if QUICK else 64)
check("the stage's sigma_data is the residual's std", abs(stage_cfg.diffusion.sigma_data / measured - 1) < 0.15,
      f"sigma_data {stage_cfg.diffusion.sigma_data} vs measured {measured:.3f} (the clips' own std: "
      f"{truth.std():.2f})")

# %% [markdown]
# ## 2. The toy cascade
#
# Four runs of `train.py` (Video LDM's recipe for both stages): the base's image model on single 16x16 frames,
# its temporal layers on 8-frame clips (image model frozen), the upsampler's image model on 32x32 crops of
# 64x64 frames (Video LDM trains its upsampler patch-wise; the U-Net then samples whole frames), and its
# temporal layers. The shipped checkpoints are the two video models; the image models are inside them (frozen),
# and `with model.backbone.image_model():` runs them alone.

# %%


def cascade_model(name):
    """The shipped checkpoints/<name>.pt, or (NANO_VIDEODIFF_TRAIN=1, quick mode) its two runs trained here."""
    path = shipped_checkpoint(name)
    if path.exists() and not (QUICK or TRAIN_HERE):
        print(f"loaded {path}")
        return load_model(path)
    tiny = ["--max_steps=2", "--warmup_steps=1", "--batch_size=2"] if QUICK else []
    for run_name, init in ((f"{name}_frames", []), (name, [f"--init_from={OUT / (name + '_frames') / 'ckpt.pt'}"])):
        run = train.main([f"--config={run_name}", f"--out_dir={OUT / run_name}", "--overwrite", "--preview_every=0",
                          *init, *tiny])
    return run["ema"].eval(), run["config"]


base, base_cfg = cascade_model("cascade_base")
sr, sr_cfg = cascade_model("cascade_sr")
with torch.no_grad():
    aligned = upsample_videos(sr, sr_cfg, low, 0.0, steps=STEPS)
    with sr.backbone.image_model():  # the same spatial weights, temporal layers off: the image upsampler
        image = upsample_videos(sr, sr_cfg, low, 0.0, steps=STEPS)
scores = {name: upsampling_scores(v, low, truth) for name, v in
          (("bilinear", bilinear), ("image upsampler", image), ("aligned upsampler", aligned))}
for name, r in scores.items():
    print(f"{name:18s} PSNR {r['psnr']:5.2f} dB, flicker {r['flicker']:6.2f}, sharpness {r['sharpness']:.2f}, "
          f"edge error {r['edge_error']:.4f}, input PSNR {r['input_psnr']:.2f} dB")
a, b = scores["aligned upsampler"], scores["bilinear"]
check("the upsampler is closer to the true 64x64 clips than bilinear upsampling", a["psnr"] > b["psnr"],
      f"PSNR {a['psnr']:.2f} vs {b['psnr']:.2f} dB")
check("its edges are sharper and where the truth's are", a["edge_error"] < b["edge_error"],
      f"edge error {a['edge_error']:.4f} vs bilinear {b['edge_error']:.4f} (sharpness {a['sharpness']:.2f} vs "
      f"{b['sharpness']:.2f}; above 1 = grain)")
check("it is temporally consistent: flickers less than bilinear upsampling", a["flicker"] < b["flicker"],
      f"flicker {a['flicker']:.2f} vs {b['flicker']:.2f}")

# %% [markdown]
# The paper's own comparison is on the *base model's* outputs, whose errors differ from frame to frame. A
# base-like input (the clean clip regenerated by the base from sigma 0.5: SDEdit, `generation.regenerate`)
# keeps the truth known; at a higher augmentation level the image upsampler invents detail frame by frame,
# and the temporal layers should keep it consistent.

# %%
base_like = regenerate(base, base_cfg, low, 0.5, STEPS, seed=1)  # SDEdit from sigma 0.5
with torch.no_grad():
    aligned_bl = upsample_videos(sr, sr_cfg, base_like, 0.3, steps=STEPS, seed=5)
    with sr.backbone.image_model():
        image_bl = upsample_videos(sr, sr_cfg, base_like, 0.3, steps=STEPS, seed=5)
fa, fi = (upsampling_scores(v, base_like, truth)["flicker"] for v in (aligned_bl, image_bl))
check("the aligned upsampler flickers less than the image upsampler on base-like inputs (Video LDM Sec. 3.2)",
      fa < fi, f"flicker {fa:.2f} vs {fi:.2f} at aug_sigma 0.3")

samples = generate(base, base_cfg, NUM_CLIPS, steps=STEPS, seed=1)
big = upsample_videos(sr, sr_cfg, samples, AUG_SIGMA, steps=STEPS, seed=1)
save_png(OUT / "cascade.png", frames_grid(torch.stack([upsample(samples, 4, "nearest")[0], big[0],
                                                       bilinear[0], image[0], aligned[0], truth[0]])), scale=2)
print("cascade.png rows: a base sample (nearest) | its upsampled video | a held-out clip: bilinear | image "
      "upsampler | aligned upsampler | truth")
print("the same cascade from the command line: python sample.py --ckpt=checkpoints/cascade_base.pt "
      "--upsampler=checkpoints/cascade_sr.pt --aug_sigma=0.1")

# %% [markdown]
# ## 3. Noise conditioning augmentation: telling the stage how noisy its input is
#
# The stage was trained on inputs noised to `sigma_aug ~ U(0, 0.5)` and told the level. Give it an input noised
# to 0.3 and tell it the truth (0.3), or tell it the input is clean (0): told the truth, it treats the noise as
# noise; told 0, it takes part of the noise for detail (grain: sharpness above the truth's).

# %%
aug_noise = torch.randn(low.shape, generator=torch.Generator().manual_seed(7 + AUG_SEED_OFFSET))
noisy = augment(low, torch.full((NUM_CLIPS,), 0.3), aug_noise)  # what upsample_videos(..., 0.3, seed=7) feeds in
with torch.no_grad():
    told = upsample_videos(sr, sr_cfg, low, 0.3, steps=STEPS, seed=7)  # noised to 0.3 inside, told 0.3
    fooled = upsample_videos(sr, sr_cfg, noisy, 0.0, steps=STEPS, seed=7)  # the same input, told 0
told_s, fooled_s = (upsampling_scores(v, low, truth) for v in (told, fooled))
check("told the input's noise level, the stage leaves less of the noise in as grain than when told it is clean",
      told_s["sharpness"] < fooled_s["sharpness"] and told_s["edge_error"] < fooled_s["edge_error"],
      f"sharpness {told_s['sharpness']:.2f} vs {fooled_s['sharpness']:.2f} (1 = the truth's), edge error "
      f"{told_s['edge_error']:.4f} vs {fooled_s['edge_error']:.4f}; PSNR {told_s['psnr']:.2f} vs "
      f"{fooled_s['psnr']:.2f} dB (the same input, noised to 0.3)")
# PSNR can favour the fooled run: it stays closer to its (noisy) input, whose noise averages out in PSNR, while
# the told run re-draws detail it no longer trusts. benchmarks/cascade_ablation.py compares a stage trained
# without augmentation: on the base model's own samples it is much grainier (docs/cascades.md).

# %% [markdown]
# ## 4. Temporal layers on other image weights (Video LDM Sec. 4)
#
# Fine-tune the base's image model alone on single frames of a new domain (a navy background, the balls as they
# were), load it into the spatial layers of the base video model and sample. The temporal layers are untouched.
# (`benchmarks/cascade_ablation.py --domain=invert` shows the limit: after inverting every colour the old
# temporal layers no longer help, docs/cascades.md.)

# %%
image_model, image_cfg = personalisation.image_denoiser(base, base_cfg)
tuned = personalisation.fine_tune(image_model, image_cfg, "navy", FINETUNE_STEPS)
transferred = personalisation.with_image_weights(base, tuned)
before, after = base.backbone.state_dict(), transferred.backbone.state_dict()
temporal = [k for k in before if not k.startswith("unet.")]
check("the temporal layers are bit-exact after the swap", all(torch.equal(after[k], before[k]) for k in temporal),
      f"{len(temporal)} temporal tensors compared")
videos = generate(transferred, base_cfg, NUM_CLIPS, steps=STEPS, seed=2)
with transferred.backbone.image_model():
    alone = generate(transferred, base_cfg, NUM_CLIPS, steps=STEPS, seed=2)
change, navy = personalisation.appearance("navy")
m_t, m_a = motion(videos, navy), motion(alone, navy)
m_real = motion(change(toy_data.get_batch(toy_data.build_dataset(base_cfg.data, "test"), range(NUM_CLIPS))["video"]), navy)
check("the new appearance: mostly navy background", m_t["on_background"] > 0.5,
      f"share of navy pixels {m_t['on_background']:.2f}")
check("the motion carries over: closer to the real clips' smoothness than the image model alone",
      m_t["accel_px"] < (m_a["accel_px"] + m_real["accel_px"]) / 2,
      f"centroid acceleration {m_t['accel_px']:.2f} px vs {m_a['accel_px']:.2f} px alone; real clips "
      f"{m_real['accel_px']:.2f} px")
save_png(OUT / "transfer.png", frames_grid(torch.stack([alone[0], videos[0]])), scale=4)
print("transfer.png rows: the fine-tuned image model alone | with the original temporal layers")
print(f"total {time.time() - t_start:.0f} s")
