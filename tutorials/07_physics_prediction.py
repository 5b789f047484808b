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
# # 07 · Physics prediction: does the model know what happens next?
#
# Papers: Physion (Bear et al., NeurIPS 2021 Datasets & Benchmarks, arXiv 2106.08261) for the question,
# VDT (Lu et al., ICLR 2024) for the setting. Code: `nano_videodiff/evaluation/physics_eval.py` (the protocol),
# `nano_videodiff/evaluation/metrics.py` (the measurements), `toy_data/physion.py` (the clips).
#
# **Physion's question.** Physion shows short videos of physical events (a ball pushed into another,
# a tower hit, a cloth draped over objects...) in which one object is red, the *agent*, and one is
# yellow, the *patient*. Object Contact Prediction (OCP) asks: **will the red object touch the yellow
# one?** Humans see the first 1.5 s and answer yes or no (about 75% correct on average). Models see the
# same start; in Physion's main protocol they *simulate* the rest with their own dynamics and a small
# readout trained on their features gives the answer.
#
# **VDT's setting.** VDT trained its video diffusion transformer on Physion's Collide scenario with
# 16 frames (every 3rd frame of a 30 fps video, so 10 fps): the first **8 frames are given** and the
# model **predicts the next 8** (VDT's `predict` mask, `masking.predict`). Our `physion_collide` preset
# is that setting on toy Physion: 2D scenes simulated with a real rigid-body engine, rendered with the
# same red/yellow convention, each clip labelled with the engine's contact flag.
#
# **"Simulate, then judge".** Instead of training a readout, we judge the generated pixels directly:
# find the red and yellow objects by colour, and ask whether they touch in the clip (context +
# prediction). A video model that has learned the physics produces futures in which the judge sees
# contact exactly when the simulator had it. Because we own the simulator, we can also measure *where*
# the objects go (trajectory error in pixels), not only the yes/no answer.
#
# This tutorial
# 1. looks at held-out Collide clips and their labels;
# 2. trains a small model briefly with `train.main` (about a minute on a 2-core CPU);
# 3. predicts 8 frames from 8 given ones on held-out clips;
# 4. scores the model next to three reference rows (copy the last frame, constant velocity, the
#    simulator itself) and prints the table;
# 5. plots agent and patient trajectories of the truth vs model vs baselines (`trajectories.png`) and
#    the trajectory error against the prediction horizon (`horizon.png`).
#
# Run it with `python tutorials/07_physics_prediction.py` (figures go to `tutorials/out/07/`), or with
# `NANO_VIDEODIFF_QUICK=1` for a seconds-long smoke run with tiny sizes.

# %%
import os
import time

import matplotlib.pyplot as plt
import torch

from _common import QUICK, TRAIN_HERE, check, out_dir, save_figure, shipped_checkpoint  # + repo root on sys.path

import train  # the training program, run as a function (train.main)
from nano_videodiff.evaluation import physics_eval
from nano_videodiff.models import load_model
from nano_videodiff.training.presets import resolve
from nano_videodiff.evaluation.metrics import radii_from_frames, trajectory_error
from nano_videodiff.evaluation.video_io import frames_grid

OUT = out_dir("07")
torch.manual_seed(0)
t_start = time.time()

# The model. By default the main job's model, shipped in checkpoints/ (`python train.py` retrains it in
# under 10 minutes): W.A.L.T latent diffusion, 9 frames given -> 8 predicted. NANO_VIDEODIFF_CKPT=PATH
# evaluates another checkpoint. NANO_VIDEODIFF_TRAIN=1 (and quick mode) instead trains a small pixel-space
# VDT here for a fixed 300 steps (about a minute on a 2-core CPU): the preset's 32x32 frames in 4x4 patches
# (64 tokens a frame, 1024 a clip), 0.26M parameters. Its token width (64) must be at least a patch's
# 4 * 4 * 3 = 48 values: the output layer maps each token linearly to its patch, so the network can only
# correct noise inside a 64-dimensional subspace of each patch and the rest survives sampling (8x8 patches,
# 192 values, with 64-wide tokens leave noise of about sigma_data in every sample). A minute is far too
# little for physics: every baseline beats that model, and the checks below say so.
TRAIN = dict(num_train_clips=512, num_test_clips=32, resolution=32, patch_size=4, dim=64, depth=2, heads=4,
             batch_size=8, max_steps=300, warmup_steps=20, lr=2e-3, ema_halflife=20, sigma_in=0)
NUM_EVAL, SAMPLE_STEPS = 32, 12
if QUICK:
    TRAIN.update(num_train_clips=16, num_test_clips=4, dim=32, depth=1, heads=2, batch_size=4, max_steps=3,
                 warmup_steps=1, ema_halflife=1)
    NUM_EVAL, SAMPLE_STEPS = 4, 1
CKPT = os.environ.get("NANO_VIDEODIFF_CKPT", "")
if not CKPT and not (QUICK or TRAIN_HERE) and shipped_checkpoint("physion_collide_main").exists():
    CKPT = str(shipped_checkpoint("physion_collide_main"))

# %% [markdown]
# ## 1. Held-out clips
#
# `physics_eval.held_out_clips(cfg, n)` returns the first `n` clips of the config's *test* split (never
# seen in training) as a batch: `video` (N, 16, 3, 32, 32) in [-1, 1], `states` (N, 16, K, 6) with each
# object's [x, y, angle, vx, vy, omega] in pixels (object 0 is the agent, 1 the patient), the object
# shapes (`kinds`, `sizes`, `radii`) and `contact`, the engine's label: does the agent touch the patient
# during the clip? Toy Physion draws the label 50/50 before building a scene, so the answer is not
# guessable from the scenario alone.

# %%
argv = ["--config=physion_collide", f"--out_dir={OUT / 'run'}", f"--cache_dir={OUT / 'cache'}", "--overwrite",
        "--preview_every=0", "--log_every=25", "--ckpt_every=100000",
        *(f"--{key}={value}" for key, value in TRAIN.items())]
if CKPT:
    model, cfg = load_model(CKPT)
    print(f"evaluating {CKPT} (trained elsewhere; NANO_VIDEODIFF_TRAIN=1 trains a small model here instead)")
else:
    cfg = resolve(argv)[0]  # the config train.main will build from the same arguments
clips = physics_eval.held_out_clips(cfg, NUM_EVAL)
k = physics_eval.context_length(cfg)  # 8 (VDT's Physion setting) for the pixel model, 9 for the latent one
print(f"{len(clips['video'])} held-out {cfg.data.scenario} clips {tuple(clips['video'].shape[1:])}, "
      f"{k} given -> {cfg.data.num_frames - k} predicted; contact in {int(clips['contact'].sum())} of them")

# %% [markdown]
# ## 2. Train briefly
#
# Only with NANO_VIDEODIFF_TRAIN=1 (or quick mode). `train.main` is `python train.py`; the `physion_collide`
# preset trains with the `predict` mask (the first 8 frames given) and drops the context 10% of the time.
# We shrink it to 300 steps, so the model will be far from good: its futures are noisy sketches of the
# scene, and every baseline beats it. The point of this tutorial is the *measurement*; the shipped model
# (the default) is the one that shows what a trained model does.

# %%
if not CKPT:
    t0 = time.time()
    run = train.main(argv)
    model, cfg = run["ema"].eval(), run["config"]
    print(f"trained in {time.time() - t0:.0f} s, last loss {run['last_loss']:.3f}")

# %% [markdown]
# ## 3. Predict the future of held-out clips
#
# `physics_eval.predict_future` builds the predict mask (frames 0..7 known) and calls
# `generation.generate`, the sampler `sample.py` uses. The given frames come back bit-exactly, so a
# predicted clip is the true context followed by the model's 8 frames.

# %%
t0 = time.time()
pred = physics_eval.predict_future(model, cfg, clips["video"], k, steps=SAMPLE_STEPS, seed=0, batch_size=NUM_EVAL)
print(f"predicted {len(pred)} clips with {SAMPLE_STEPS} Heun steps in {time.time() - t0:.1f} s")
assert torch.equal(pred[:, :k], clips["video"][:, :k]), "the given frames come back exactly"

# %% [markdown]
# ## 4. The baselines, and the table
#
# Every number below is computed by the same code for every row (`physics_eval.score_predictions`):
#
# - **model**: the generated frames. Agent and patient are found by colour in each frame
#   (`metrics.object_centroids`: a soft red/yellow membership per pixel, its centroid).
# - **copy last frame**: repeat frame 7 eight times. "Nothing moves": a strong PSNR baseline early in
#   the horizon, but it can only see contact that already happened in the context (like Physion's
#   readout on the initial observations alone).
# - **constant velocity**: find the objects in the context frames, then move each at the velocity of its
#   last two positions (`metrics.constant_velocity_trajectories`). Inertia without collisions or gravity:
#   it predicts a contact when the agent is heading for the patient, and misses bounces. It makes no
#   pixels, so PSNR/SSIM are n/a; its contact verdict comes from the trajectories and the objects' sizes.
# - **simulator**: the engine's own states. Its trajectory error against the objects found in the
#   *true* frames is the floor of the colour tracker (nobody can score below it); its contact verdict,
#   from the states and the exact shapes, is what a perfect prediction of the states attains.
#
# Columns: PSNR/SSIM over the 8 predicted frames (per-frame PSNR capped at 100 dB); the trajectory error
# in pixels against the simulator's states (predicted frames, objects visible in the true frames); the
# fraction of those objects the method shows at all; the contact accuracy against the labels, judged
# over all 16 frames. The note under the table gives the chance level and the score of the pixel judge
# on the *true* clips: the best a frame-based row can get.

# %%
scores = physics_eval.score_predictions(pred, clips["video"], k, states=clips["states"], contact=clips["contact"],
                                        radii=clips["radii"], kinds=clips["kinds"], sizes=clips["sizes"])
result = {"rows": scores["rows"], "num_clips": len(pred), "positive_rate": clips["contact"].float().mean().item(),
          "frame_judge_acc": scores["frame_judge_acc"],
          "config": {"dataset": cfg.data.dataset, "scenario": cfg.data.scenario, "num_frames": cfg.data.num_frames,
                     "num_context": k, "height": cfg.data.height, "width": cfg.data.width, "steps": SAMPLE_STEPS}}
print(physics_eval.format_table(result))
rows = {row["method"]: row for row in result["rows"]}
model_row, copy_row, velocity_row = rows["model"], rows["copy last frame"], rows["constant velocity"]


def better(key, a, b, lower=False):
    """a's value of ``key`` beats b's (False when either is missing, e.g. an object the model never draws)."""
    if a[key] is None or b[key] is None:
        return False
    return a[key] < b[key] if lower else a[key] > b[key]


def pair(key, a, b, spec):
    return " vs ".join("n/a" if r[key] is None else format(r[key], spec) for r in (a, b))


check("the model beats copy-last on PSNR, SSIM, trajectory error and contact accuracy",
      better("psnr", model_row, copy_row) and better("ssim", model_row, copy_row)
      and better("traj_err_px", model_row, copy_row, lower=True) and better("contact_acc", model_row, copy_row),
      f"PSNR {pair('psnr', model_row, copy_row, '.2f')}, SSIM {pair('ssim', model_row, copy_row, '.3f')}, "
      f"trajectory {pair('traj_err_px', model_row, copy_row, '.2f')} px, contact "
      f"{pair('contact_acc', model_row, copy_row, '.3f')}")
check("the model beats constant-velocity extrapolation on trajectory error",
      better("traj_err_px", model_row, velocity_row, lower=True),
      f"{pair('traj_err_px', model_row, velocity_row, '.2f')} px on {len(pred)} clips")

# %% [markdown]
# The same numbers in one call, which is what `python sample.py --ckpt=... --eval` runs (it also writes
# `eval.json` and GIFs): `physics_eval.evaluate_prediction(model, cfg, num_clips=64)`.
#
# ## 5. Trajectories: truth vs model vs baselines
#
# `physics_eval.method_trajectories` returns every method's agent and patient positions over the whole
# clip (the frame methods tracked by colour). For one clip with contact and one without we plot the x
# coordinate against time (Collide happens along the floor) and the distance between agent and patient,
# the quantity the contact question is about: the dashed line is where two discs of the objects' areas
# would touch. The grey band is the given context, where every method agrees with the truth; after it,
# copy-last stays flat, constant velocity continues in a straight line, and the model does whatever it
# learned. The frame strips show the true clip (top) and the model's (bottom).

# %%
tracks = physics_eval.method_trajectories(pred, clips["video"], k, clips["states"])
STYLE = {"simulator": dict(ls="-", lw=2.2), "model": dict(ls="--", marker="o", ms=3),
         "copy last frame": dict(ls=":", lw=1.8), "constant velocity": dict(ls="-.", lw=1.4)}
LABEL = {"simulator": "truth (simulator)"}
OBJECTS = {0: "tab:red", 1: "goldenrod"}  # agent, patient
positive = [i for i in range(len(pred)) if clips["contact"][i]][:1]
negative = [i for i in range(len(pred)) if not clips["contact"][i]][:1]
chosen = positive + negative
T, (H, W) = cfg.data.num_frames, cfg.data.size
touching = radii_from_frames(clips["video"]).sum(-1)  # (N,): agent + patient equivalent-disc radii

fig, axes = plt.subplots(len(chosen), 3, figsize=(15, 3.4 * len(chosen)), squeeze=False,
                         gridspec_kw={"width_ratios": [2.2, 1, 1]})
for row, i in enumerate(chosen):
    strip = frames_grid(torch.stack([clips["video"][i], pred[i]]), pad=1)  # (C, 2 (H + 1) + 1, T (W + 1) + 1)
    axes[row, 0].imshow(((strip.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
    axes[row, 0].set_yticks([1 + H / 2, H + 2 + H / 2], ["truth", "model"])
    axes[row, 0].set_xticks([(W + 1) * t + 1 + W / 2 for t in range(0, T, 2)], [str(t) for t in range(0, T, 2)])
    axes[row, 0].axvline((W + 1) * k + 0.5, color="white", lw=2)
    axes[row, 0].set_title(f"clip {i}: contact = {bool(clips['contact'][i])} (white line = end of context)")
    ax_x, ax_d = axes[row, 1], axes[row, 2]
    for ax in (ax_x, ax_d):
        ax.axvspan(-0.5, k - 0.5, color="0.9")
        ax.set_xlabel("frame")
    for method, style in STYLE.items():
        xy = tracks[method][0][i]  # (T, 2 objects, 2): NaN where the object is not found
        for obj, colour in OBJECTS.items():
            ax_x.plot(range(T), xy[:, obj, 0].numpy(), color=colour, **style)
        distance = (xy[:, 0] - xy[:, 1]).norm(dim=-1).numpy()
        ax_d.plot(range(T), distance, color="k", label=LABEL.get(method, method), **style)
    ax_d.axhline(touching[i].item(), color="tab:blue", ls="--", lw=1, label="touching (equal-area discs)")
    ax_x.set_ylabel("x (px)"), ax_x.set_title("x of agent (red) and patient (yellow)")
    ax_d.set_ylabel("distance (px)"), ax_d.set_title("agent-patient distance")
axes[0, 2].legend(fontsize=8, loc="best")
fig.tight_layout()
save_figure(fig, OUT / "trajectories.png")

# %% [markdown]
# ## 6. Error against the prediction horizon
#
# `metrics.trajectory_error(..., per_frame=True)` averages over clips and objects for each predicted
# frame. Copy-last's error grows with how far things moved; constant velocity stays low until the first
# collision changes the velocities; the simulator's line is the tracker's floor. A model that has learned
# the dynamics would sit between constant velocity and the floor, and bend at collisions as the truth does.

# %%
true_xy = clips["states"][:, k:, :2, :2]
seen = tracks["true frames"][1][:, k:]
fig, ax = plt.subplots(figsize=(6.2, 3.8))
for method in ("model", "copy last frame", "constant velocity"):
    xy, vis = tracks[method][0][:, k:], tracks[method][1][:, k:]
    ax.plot(range(1, T - k + 1), trajectory_error(xy, true_xy, vis & seen, per_frame=True).numpy(),
            marker="o", label=method)
floor = trajectory_error(tracks["true frames"][0][:, k:], true_xy, seen, per_frame=True)
ax.plot(range(1, T - k + 1), floor.numpy(), color="k", ls="--", label="simulator (tracker floor)")
ax.set_xlabel("frames after the context"), ax.set_ylabel("agent/patient position error (px)")
ax.set_yscale("log")  # the tracker floor is ~0.1 px, an untrained model ~10 px
ax.set_title(f"{len(pred)} held-out {cfg.data.scenario} clips")
ax.legend(fontsize=8)
save_figure(fig, OUT / "horizon.png")
print(f"tutorial 07 done in {time.time() - t_start:.0f} s; figures in {OUT}")

# %% [markdown]
# ## What to try next
#
# - Retrain the main job (`python train.py`, under 10 minutes) and evaluate it:
#   `python sample.py --ckpt=out/physion_collide_main/ckpt.pt --eval`, or rerun this tutorial with
#   `NANO_VIDEODIFF_CKPT=out/physion_collide_main/ckpt.pt`. The pixel-space preset
#   (`python train.py --config=physion_collide`, about an hour in fp32) is the VDT setting with 8 given frames.
# - Other scenarios: `--config=physion_roll` (gravity on a ramp: constant velocity fails) or
#   `physion_dominoes` (a chain: the contact happens late, after several collisions).
# - `python benchmarks/physics.py --ckpt=PATH` prints the same table next to the data-generation speed.
