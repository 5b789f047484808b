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
# # 11 · Text to video: captions from the simulator, a text encoder, guidance, and a measured alignment
#
# Papers: Snap Video (Menapace et al. 2024, arXiv 2402.14797) Sec. 3.4-3.6; W.A.L.T (Gupta et al. 2023,
# arXiv 2312.06662) Sec. 4.3; Video LDM (Blattmann et al. 2023, arXiv 2304.08818) Sec. 4. Code:
# `toy_data/captions.py`, `nano_videodiff/text.py`, the backbones' text layers, `nano_videodiff/sampler.py`
# (guidance), `nano_videodiff/evaluation/text_alignment.py` (the score).
#
# The three papers generate video from text: a frozen language model turns the prompt into token embeddings
# (T5-11B for Snap Video, T5-XL for W.A.L.T, CLIP's text encoder for Video LDM), the denoiser reads them
# (FIT: as conditioning tokens its latents cross-attend to; W.A.L.T: attention whose keys and values are
# the block's own tokens *and* the text tokens; U-Net: ordinary cross-attention), and at sampling time
# classifier-free guidance pushes the sample away from what the model would make without text (the text
# is dropped in 10% of the training steps, so the model knows both).
#
# At toy scale there is no captioned data set and no T5, but there is a simulator that knows what happens.
# This tutorial
# 1. writes captions from the simulator's ground truth and checks them against the states;
# 2. tokenizes them for the tiny learned text encoder (unknown words -> `<unk>`; padding changes nothing);
# 3. generates clips from *new* prompts (held-out phrasings about held-out clips) with a text-to-video
#    W.A.L.T (`--config=physion_text`), and reads back from the pixels what they show;
# 4. sweeps the guidance scale (Snap Video's Fig. 5 at toy scale: alignment and quality against the scale).
#
# Run it with `python tutorials/11_text_to_video.py` (figures in `tutorials/out/11/`): it uses
# the shipped `checkpoints/physion_text.pt` (trained by `python train.py --config=physion_text`, 8000 steps;
# `NANO_VIDEODIFF_TRAIN=1` retrains a short run here instead); `NANO_VIDEODIFF_QUICK=1` is a seconds-long
# smoke run with tiny sizes.

# %%

import matplotlib.pyplot as plt
import torch

from _common import QUICK, check, out_dir, save_figure, shipped_or_trained  # + repo root on sys.path

import toy_data
from nano_videodiff.evaluation.text_alignment import alignment_report
from nano_videodiff.evaluation.video_io import frames_grid, save_png
from nano_videodiff.generation import generate
from nano_videodiff.text import LearnedTextEncoder, WordTokenizer
from nano_videodiff.training.presets import get_preset
from toy_data import captions as C

OUT = out_dir("11")
torch.manual_seed(0)

# %% [markdown]
# ## 1. Captions that say what happens
#
# A toy Physion clip's ground truth holds the agent's and patient's shapes, their states in every frame,
# the scenario and the engine's contact label. `captions.attributes` turns them into words (the agent's
# net displacement gives its direction, its mean step its speed), and each clip has several phrasings: five
# used in training, two held out.

# %%
cfg = get_preset("physion_text")
cfg.data.num_test_clips = 8 if QUICK else 64
test = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(cfg.data.num_test_clips))
attrs = C.attributes(test, "physion")
for p in C.TRAIN_PHRASINGS["physion"] + C.HELD_OUT_PHRASINGS["physion"]:
    print(f"phrasing {p}{' (held out)' if p in C.HELD_OUT_PHRASINGS['physion'] else ''}: {C.caption(attrs[0], p)}")
dx = test["states"][:, -1, 0, 0] - test["states"][:, 0, 0, 0]
wrong = sum(("right" in C.words(C.caption(a, 0)) and float(x) < -C.MOVE_PX)
            or ("left" in C.words(C.caption(a, 0)) and float(x) > C.MOVE_PX) for a, x in zip(attrs, dx))
check("no clip whose agent moves left is captioned 'right' (or the reverse)", wrong == 0,
      f"{wrong} of {len(attrs)} held-out clips contradicted")

# %% [markdown]
# ## 2. The learned text encoder
#
# A word-level tokenizer over the training phrasings' vocabulary (words of held-out phrasings it never saw
# become `<unk>`), then a two-layer transformer. Captions in a batch are padded to the longest one and the
# mask keeps every attention from reading the padding.

# %%
tok = WordTokenizer(C.vocabulary("physion"))
new = C.caption(attrs[0], C.HELD_OUT_PHRASINGS["physion"][0])
ids, _ = tok.encode([new])
print(f"{new!r}\n -> {ids[0].tolist()}\n -> {tok.decode(ids[0])!r}")
enc = LearnedTextEncoder(C.vocabulary("physion"), dim=32, depth=2)
alone, m = enc.encode([C.caption(attrs[1], 3)])
batch, _ = enc.encode([C.caption(attrs[1], 3), C.caption(attrs[2], 1)])
n = int(m.sum())
check("padding a caption in a batch changes none of its tokens", torch.allclose(alone[0, :n], batch[0, :n], atol=1e-6),
      f"max difference {float((alone[0, :n] - batch[0, :n]).abs().max()):.1e}")

# %% [markdown]
# ## 3. One model, new prompts
#
# The model is the main job's latent W.A.L.T (the shipped causal autoencoder, 9 x 8x8 latents per clip)
# generating whole clips from text alone, the text read by W.A.L.T's concatenated attention in every block.

# %%
quick = ["--num_train_clips=16", "--max_steps=2", "--batch_size=4", "--dim=32", "--depth=2"] if QUICK else \
    ["--max_steps=300"]  # retraining here (NANO_VIDEODIFF_TRAIN=1) is a short run, not the shipped 8000 steps
model, mcfg, _ = shipped_or_trained("physion_text", ["--config=physion_text", f"--out_dir={OUT / 'run'}", "--overwrite",
                                                     "--preview_every=0", f"--num_test_clips={cfg.data.num_test_clips}",
                                                     *quick])
num = 4 if QUICK else 32
prompts = C.held_out_captions(mcfg.data, num)
steps = 2 if QUICK else 0
videos = generate(model, mcfg, num, captions=prompts, cfg_scale=2.0, steps=steps, batch_size=16)
save_png(OUT / "prompted.png", frames_grid(videos[:4]), scale=3)
for p in prompts[:4]:
    print("prompt:", p)
report = alignment_report(videos, prompts)
check("clips follow new prompts better than chance (guidance 2)", report["alignment"] > report["chance"],
      f"alignment {report['alignment']:.3f} vs chance {report['chance']:.3f}; direction {report['direction']:.3f},"
      f" outcome {report['outcome']:.3f}")

# %% [markdown]
# ## 4. The guidance curve
#
# Scale 0 samples the model with the text dropped (the unconditional branch), 1 the conditional model, and
# above 1 classifier-free guidance extrapolates from the first towards the second. Snap Video (Fig. 5) sees
# the CLIP score rise with the scale while FID gets worse past a point; here alignment is the fraction of
# stated attributes the tracker finds, quality the share of frames in which both objects are visible.

# %%
scales = [0.0, 2.0] if QUICK else [0.0, 1.0, 2.0, 4.0]
rows = [alignment_report(generate(model, mcfg, num, captions=prompts, cfg_scale=s, steps=steps, batch_size=16),
                         prompts) for s in scales]
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(scales, [r["alignment"] for r in rows], "o-", label="text alignment")
ax.plot(scales, [r["quality"] for r in rows], "s-", label="objects visible per frame")
ax.axhline(rows[0]["chance"], color="grey", ls="--", label="chance")
ax.set(xlabel="guidance scale", ylabel="score", title="guidance vs alignment and quality")
ax.legend()
save_figure(fig, OUT / "guidance.png")
for s, r in zip(scales, rows):
    print(f"guidance {s:g}: alignment {r['alignment']:.3f} (chance {r['chance']:.3f}), quality {r['quality']:.3f}")
check("guidance raises alignment above the text-free branch", max(r["alignment"] for r in rows[1:]) > rows[0]["alignment"],
      ", ".join(f"{s:g}: {r['alignment']:.3f}" for s, r in zip(scales, rows)))
