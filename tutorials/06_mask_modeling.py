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
# # 06 · One model, many tasks: VDT's unified spatial-temporal mask modeling
#
# Paper: VDT, "General-purpose Video Diffusion Transformers via Mask Modeling" (Lu et al., ICLR 2024),
# Sec. 3. Code: `nano_videodiff/masking.py` (the masks and how they are applied), `nano_videodiff/backbones/vdt.py`
# (the backbone), `train.py` (the training loop that draws them).
#
# Video prediction, backward prediction, interpolation, image-to-video and inpainting look like different
# problems, each usually with its own model. VDT's observation: they differ only in **which parts of the
# video are given**. Draw a mask `known` over the video (per frame and per pixel), put the clean content
# where it is given and noise everywhere else, and train one denoiser on a *mixture* of masks. At test
# time you pick the task by picking the mask; the weights are the same.
#
# This tutorial
# 1. draws VDT's seven task masks on one bouncing-balls clip (`masks.png`);
# 2. samples VDT's training mixture and checks its frequencies;
# 3. shows how known content enters the network under EDM preconditioning;
# 4. trains one small masked model on bouncing balls (about half a minute on a 2-core CPU) and asks it to
#    do every task (`tasks.png`), with PSNR per task, and checks that given content comes back bit-exactly.
#
# Run it with `python tutorials/06_mask_modeling.py` (figures go to `tutorials/out/06/`), or with
# `NANO_VIDEODIFF_QUICK=1` for a seconds-long smoke run with tiny sizes.

# %%
import time

import matplotlib.pyplot as plt
import torch

from _common import QUICK, check, out_dir, save_figure, shipped_or_trained  # also puts the repo root on sys.path

import toy_data
from nano_videodiff import edm, masking
from nano_videodiff.conditioning import Cond
from nano_videodiff.training.presets import get_preset
from nano_videodiff.edm import add_noise, preconditioning
from nano_videodiff.generation import generate, show_known
from nano_videodiff.evaluation.metrics import psnr
from nano_videodiff.evaluation.video_io import frames_grid

OUT = out_dir("06")
torch.manual_seed(0)
t_start = time.time()

# Sizes. Normal: 8 frames of 16x16, a 0.26M-parameter VDT shipped trained in checkpoints/ (4000 small steps;
# NANO_VIDEODIFF_TRAIN=1 retrains it here: 3.3 min on one Zen 4 core in bf16, ~6 on one AVX2 core in fp32).
# Quick: a handful of steps.
T, RES = 8, 16
TRAIN = dict(num_frames=T, resolution=RES, dim=64, depth=2, heads=4, patch_size=4, batch_size=8,
             max_steps=4000, warmup_steps=20, lr=4e-3, ema_halflife=60,
             P_mean=-0.7)  # training noise centred on sigma = sigma_data = 0.5 (SNR 1): more of the high
                           # noise levels, where the model places the balls from the given frames
NUM_EVAL, SAMPLE_STEPS, MIXTURE_DRAWS = 8, 12, 2000
if QUICK:
    TRAIN.update(dim=32, depth=1, heads=2, patch_size=4, batch_size=4, max_steps=4, warmup_steps=1,
                 ema_halflife=2)
    NUM_EVAL, SAMPLE_STEPS, MIXTURE_DRAWS = 2, 3, 200

cfg = get_preset("bouncing_balls_tasks")
cfg.data.num_frames, cfg.data.height, cfg.data.width = T, RES, RES
clips = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(NUM_EVAL))["video"]  # held out
print(f"{NUM_EVAL} held-out clips {tuple(clips.shape[1:])} (T, C, H, W), values in [-1, 1]")

# %% [markdown]
# ## 1. The task masks
#
# A mask is a boolean tensor `known` of shape `(B, T, 1, H, W)`: True where the content is given (clean
# context), False where the model generates. It broadcasts over channels. `masking.TASKS` holds VDT's
# seven mask types; each takes an explicit `torch.Generator`, so a mask is reproducible:
#
# | task | given | VDT's name |
# |---|---|---|
# | generate | nothing | unconditional generation |
# | predict | the first T/2 frames | (forward) video prediction |
# | backward | the last T/2 frames | backward prediction |
# | interpolate | every 4th frame (and the last) | frame interpolation |
# | animate | one frame | image-to-video ("animation") |
# | random_frames | each frame w.p. 0.2 | "MLM": arbitrary given frames |
# | complete | everything except a BEiT block mask over a range of frames | spatial-temporal completion |
#
# In the figure, known pixels show the clip and unknown ones are grey. The frame border says whether a
# frame is fully given (green), fully generated (red) or partly given (orange).

# %%
TASK_KWARGS = {  # what each task is asked to do at test time (training draws the mixture below)
    "generate": {},
    "predict": {"num_context": T // 2},
    "backward": {"num_context": T // 2},
    "interpolate": {"every": 4},
    "animate": {"frame_index": 0},
    "random_frames": {},
    "complete": {"ratio": 0.5, "block": 4},
}


def task_masks(task, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return masking.make_mask(task, n, T, RES, RES, generator=g, **TASK_KWARGS[task])


masks = {task: task_masks(task, NUM_EVAL) for task in masking.TASKS}


def as_image(frame):
    """(C, H, W) in [-1, 1] -> (H, W, C) in [0, 1] for imshow."""
    return ((frame.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def frame_colour(known_frame):
    if known_frame.all():
        return "tab:green"
    return "tab:red" if not known_frame.any() else "tab:orange"


fig, axes = plt.subplots(len(masks), T, figsize=(1.05 * T + 1.2, 1.1 * len(masks)), squeeze=False)
for r, (task, known) in enumerate(masks.items()):
    shown = show_known(clips[:1], known[:1])[0]  # unknown pixels grey (0 = mid grey in [-1, 1])
    for t in range(T):
        ax = axes[r, t]
        ax.imshow(as_image(shown[t]), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color(frame_colour(known[0, t])), spine.set_linewidth(3)
        if r == 0:
            ax.set_title(f"t = {t}", fontsize=10)
    frac = known[0].float().mean().item()
    axes[r, 0].set_ylabel(f"{task}\n{100 * frac:.0f}% given", rotation=0, ha="right", va="center", fontsize=10)
fig.suptitle("VDT's task masks on one clip: known pixels shown, unknown grey\n"
             "border: green = given frame, red = generated, orange = partly given", fontsize=11)
save_figure(fig, OUT / "masks.png")

# %% [markdown]
# ## 2. The training mixture
#
# VDT's `VideoMaskGenerator` draws, for each training batch, with probability **0.2** a spatial block mask
# ("complete": BEiT-style blocks hiding half of the frame, over a range of frames) and otherwise
# (**0.8**) one of six temporal types uniformly (0.8 / 6 = 0.133 each): predict, backward, interpolate,
# generate, animate (one frame at a random index) and random_frames. `masking.MaskMixture` is that
# distribution; ours draws one task per *sample*, so every batch mixes tasks. The `bouncing_balls_tasks`
# preset trains with it (`--masking=vdt`).

# %%
mixture = masking.MaskMixture(task_kwargs={"predict": {"num_context": T // 2},
                                           "backward": {"num_context": T // 2}})
known, task_ids = mixture.sample(MIXTURE_DRAWS, T, RES, RES, generator=torch.Generator().manual_seed(0))
print(f"{MIXTURE_DRAWS} masks drawn from the mixture:")
print(f"  {'task':<14} {'p (VDT)':>8} {'drawn':>7} {'mean % given':>13}")
for i, task in enumerate(mixture.task_names):
    rows = task_ids == i
    given = known[rows].float().mean().item() if rows.any() else float("nan")
    print(f"  {task:<14} {mixture.probs[task]:>8.3f} {rows.float().mean().item():>7.3f} {100 * given:>12.0f}%")

# %% [markdown]
# ## 3. How known content enters the network (EDM)
#
# VDT (a DDPM) builds the network input as `x_start * (1 - mask) + x_t * mask`: clean data where given,
# the noisy sample elsewhere. With EDM preconditioning the network sees `c_in(sigma) * x_sigma`, where
# `x_sigma = x + sigma * eps` and `c_in = 1 / sqrt(sigma^2 + sigma_data^2)`. Putting the clean `x` into
# that slot at the current `c_in(sigma)` would shrink the context like `1 / sigma`: at sigma = 80 it would
# be 80 times fainter than the noise around it. So (`edm.network_input`) known positions get the
# clean content at the scale it has at the end of sampling, the sigma -> 0 limit
# `c_in(0) * x = x / sigma_data`, at every noise level. The rest of the rule ("Given content in D" in
# `edm.py`, next to the `Denoiser`):
#
# - the backbone is told which positions are known (`cond.known`; VDT adds a learned embedding);
# - `D` returns the known content exactly (`edm.paste_known`), so the sampler gives it back bit-exactly;
# - the loss averages over generated positions only (`edm.mean_over_generated`): VDT divides the
#   masked error by *all* positions, so its loss scale moves with the mask ratio; ours does not.
#
# The table compares the root-mean-square size of what the network sees at known positions, the naive
# way and ours, with the noisy positions around them (one clip, predict mask).

# %%
sd = cfg.diffusion.sigma_data
x, known = clips[:1], masks["predict"][:1].expand_as(clips[:1])
eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))


def rms(v, where):
    return v[where].pow(2).mean().sqrt().item()


print(f"  {'sigma':>6} | {'noisy positions':>15} | {'known, naive c_in(sigma)*x':>26} | "
      f"{'known, ours x/sigma_data':>24}")
for sigma in (80.0, 5.0, 0.5, 0.05):
    c_in = preconditioning(torch.tensor([sigma]), sd)[2].item()
    noisy = c_in * add_noise(x, eps, torch.tensor([sigma]))   # what the network sees without a mask
    ours = edm.network_input(noisy, Cond(known=known[:, :, :1], known_x=x), sd)  # what it sees with one
    print(f"  {sigma:>6} | {rms(noisy, ~known):>15.2f} | {rms(c_in * x, known):>26.3f} | {rms(ours, known):>24.2f}")

# %% [markdown]
# ## 4. Train one model on the mixture
#
# `train.main` is the same function as `python train.py`; we call it with the `bouncing_balls_tasks`
# preset and small overrides: 8 frames of 16x16 cut into 4x4 patches, a two-block VDT, 4000 steps of
# 8 clips (a fixed number of steps: the same model on any machine; the precision is the one that is fast
# here, `--dtype=auto`). Every batch mixes the seven tasks. The model is tiny, so expect smudges of roughly
# the right colours near the right places, best next to given frames, not crisp balls; the point is that
# *one* set of weights attempts every task. The loss is logged every 25 steps in `train/log.jsonl` (and
# plotted in `train/loss.png`). The checkpoint shipped in checkpoints/ is this run's model; it is loaded
# instead of training unless you set NANO_VIDEODIFF_TRAIN=1.

# %%
argv = ["--config=bouncing_balls_tasks", f"--out_dir={OUT / 'train'}", "--overwrite", "--preview_every=0",
        "--log_every=25", "--ckpt_every=100000", *(f"--{k}={v}" for k, v in TRAIN.items())]
model, cfg, steps_trained = shipped_or_trained("tutorial06_mask_modeling", argv)

# %% [markdown]
# ## 5. Every task with the same weights
#
# For each task we give the model the held-out clips under that task's mask and sample with EDM's Heun
# sampler (`generation.generate`, the function `sample.py` uses). All tasks go through one `generate`
# call: the mask is per sample. PSNR (`metrics.psnr`, dB, higher is better) is computed over the
# generated positions only, pooled: `10 log10(2^2 / MSE)` with the MSE over every generated pixel of the
# task's clips (given pixels are exact by construction and would only inflate it; pooling keeps one
# perfectly guessed frame from making a per-frame average infinite). Two baselines tell you how to read
# the numbers:
#
# - **blank**: an all-background frame, the score of a model that draws no balls at all;
# - **copy**: each generated frame copied from the nearest fully given frame (given pixels kept), the
#   trivial use of the context. "generate" has no context, so no copy, and its samples are new clips that
#   are not expected to match the held-out truth at all.
#
# PSNR rewards blur: a *sample* with a sharp ball in a slightly wrong place scores below a grey smear, so
# a model must be good before it beats "copy". Tasks whose unknown frames are pinned by context on both
# sides (interpolate) score best; extrapolation (predict, backward, animate) is harder.

# %%
tasks = list(masking.TASKS)
known_all = torch.cat([masks[task] for task in tasks])        # (7 N, T, 1, H, W)
truth_all = clips.repeat(len(tasks), 1, 1, 1, 1)               # the same N clips for every task
t0 = time.time()
videos = generate(model, cfg, len(known_all), known=known_all, known_x=truth_all, steps=SAMPLE_STEPS,
                  seed=0, batch_size=len(known_all))
print(f"sampled {len(videos)} videos with {SAMPLE_STEPS} Heun steps in {time.time() - t0:.1f} s")

def copy_nearest(truth, known):
    """Baseline: each frame copied from the nearest fully given frame (blank if a clip has none), given
    pixels kept. None when nothing at all is given."""
    if not known.any():
        return None
    full = known.flatten(2).all(-1)                            # (N, T): fully given frames
    t = torch.arange(truth.shape[1], dtype=torch.float32)
    distance = (t[:, None] - t[None, :]).abs() + 1e-3 * t[None, :]  # (T, T'); ties -> the earlier frame
    distance = torch.where(full[:, None, :], distance, torch.inf)    # (N, T, T'): given frames only
    copied = truth[torch.arange(len(truth))[:, None], distance.argmin(-1)]
    copied = torch.where(full.any(-1)[:, None, None, None, None], copied, torch.full_like(truth, -1.0))
    return torch.where(known, truth, copied)


scores, baselines = {}, {}
print(f"  {'task':<14} {'model':>6} {'blank':>6} {'copy':>6}   (PSNR in dB over generated positions)")
for i, task in enumerate(tasks):
    part = slice(i * NUM_EVAL, (i + 1) * NUM_EVAL)
    known, truth = known_all[part], truth_all[part]
    generated = ~known.expand_as(truth)                        # (N, T, C, H, W): the generated positions

    def score(video):  # all generated values as one long "frame": PSNR of their pooled mean squared error
        return psnr(video[generated].view(1, 1, 1, 1, -1), truth[generated].view(1, 1, 1, 1, -1)).item()
    scores[task] = score(videos[part])
    copied = copy_nearest(truth, known)
    baselines[task] = (score(torch.full_like(truth, -1.0)), score(copied) if copied is not None else float("nan"))
    note = "  (nothing given: a new clip, not expected to match)" if task == "generate" else ""
    copy_text = f"{baselines[task][1]:>6.2f}" if copied is not None else f"{'-':>6}"
    print(f"  {task:<14} {scores[task]:>6.2f} {baselines[task][0]:>6.2f} {copy_text}{note}")
given_tasks = [task for task in tasks if task != "generate"]
# The claim of unified mask modeling is that *one* model reads the mask and uses whatever is given. The check:
# on every task with given content, the model's output is closer to the truth than the same model's samples
# with nothing given ("generate"), both being sharp samples. The blank frame is reported next to it: PSNR
# favours drawing nothing over drawing a sharp ball slightly off, so beating blank needs a better model.
check("one model uses the given content on every task: each task beats the model's own unconditional samples",
      all(scores[task] > scores["generate"] for task in given_tasks),
      ", ".join(f"{task} {scores[task]:.1f}" for task in given_tasks)
      + f" vs generate {scores['generate']:.1f} dB (blank frame {baselines[given_tasks[0]][0]:.1f} dB; beats blank: "
      + (", ".join(t for t in given_tasks if scores[t] > baselines[t][0]) or "none") + ")")

# %% [markdown]
# ### Given content comes back bit-exactly
#
# The denoiser pastes the known content into its estimate at every step and the sampler overwrites the
# final sample with it, so the output equals the input wherever something was given: not approximately,
# exactly (in float32, also when the network runs in bf16).

# %%
k = known_all.expand_as(videos)
assert torch.equal(videos[k], truth_all[k]), "given content must come back bit-exactly"
print(f"torch.equal on {int(k.sum())} given positions: True")

# %% [markdown]
# ### The figure
#
# One block per task, for the first held-out clip: **given** (what the model saw; grey = to generate),
# **output** (the model's sample) and **truth** (the held-out clip).

# %%
ncols = 2
nrows = (len(tasks) + ncols - 1) // ncols
fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 2.6 * nrows), squeeze=False)
for i, task in enumerate(tasks):
    ax = axes.flat[i]
    j = i * NUM_EVAL  # the first clip of this task's block
    panel = torch.stack([show_known(truth_all[j], known_all[j]), videos[j], truth_all[j]])  # (3, T, C, H, W)
    image = frames_grid(panel, pad=1)                       # (C, 3 (H + 1) + 1, T (W + 1) + 1), white gaps
    ax.imshow(as_image(image), interpolation="nearest")
    ax.set_yticks([(RES + 1) * r + 1 + RES / 2 for r in range(3)], ["given", "output", "truth"])
    ax.set_xticks([(RES + 1) * t + 1 + RES / 2 for t in range(T)], [str(t) for t in range(T)])
    ax.tick_params(length=0, labelsize=9)
    ax.set_title(f"{task}: PSNR {scores[task]:.1f} dB", fontsize=11)
for ax in axes.flat[len(tasks):]:  # the spare panel: PSNR per task, model against the two baselines
    ax.axis("off")
if len(tasks) < axes.size:
    ax = fig.add_subplot(nrows, ncols, len(tasks) + 1)
    pos = torch.arange(len(tasks), dtype=torch.float32)
    for shift, label, values in ((-0.27, "model", [scores[t] for t in tasks]),
                                 (0.0, "blank frame", [baselines[t][0] for t in tasks]),
                                 (0.27, "copy nearest given frame", [baselines[t][1] for t in tasks])):
        values = torch.tensor(values)
        ok = values.isfinite()  # "generate" has no copy baseline
        ax.bar((pos + shift)[ok].numpy(), values[ok].numpy(), width=0.27, label=label)
    ax.set_xticks(pos.numpy(), tasks, rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("PSNR (dB), generated positions")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, frameon=False)
    ax.grid(axis="y", alpha=0.3)
fig.suptitle(f"One VDT model ({steps_trained} steps on the mask mixture) doing every task; "
             "x axis = frame", fontsize=12)
fig.tight_layout()
save_figure(fig, OUT / "tasks.png")
print(f"tutorial 06 done in {time.time() - t_start:.0f} s; figures in {OUT}")

# %% [markdown]
# ## What to try next
#
# - Train longer: `TRAIN["max_steps"] = 20000` with NANO_VIDEODIFF_TRAIN=1. At 4000 steps interpolation beats
#   "copy" and the blank frame (18.0 vs 17.7 and 14.5 dB), while prediction still scores below blank: crisp
#   balls in the right places need a longer run, or the full-size preset below.
# - The full-size run: `python train.py --config=bouncing_balls_tasks`, then
#   `python sample.py --ckpt=out/bouncing_balls_tasks/ckpt.pt --task=interpolate`.
# - Compare conditioning strategies (VDT Sec. 3): `--conditioning=adaln` or `--conditioning=cross_attention`.
