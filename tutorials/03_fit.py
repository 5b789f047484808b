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
# # 03 · FIT: read a video into a few latents, compute there, write back
#
# Papers: Snap Video, "Scaled Spatiotemporal Transformers for Text-to-Video Synthesis" (Menapace et al.,
# CVPR 2024), Sec. 3.4, Fig. 3, Appx. A, Table 8 and Table 2; FIT, "Far-reaching Interleaved
# Transformers" (Chen & Li 2023); RIN (Jabri, Fleet & Chen 2022). Code: `nano_videodiff/backbones/fit.py` (the
# backbone), `nano_videodiff/backbones/vdt.py` (the space-time transformer we compare with),
# `nano_videodiff/training/config.py` (the `bouncing_balls_fit` and `bouncing_balls` presets).
#
# A 16-frame 32x32 clip cut into 4x4-pixel patches is already 1,024 tokens; Snap Video's upsampler sees
# 147,456. A transformer that lets every token attend to every other token pays for N^2 pairs, and even
# a factorised one (attention within a frame, then across frames, like VDT) runs all its layers on all N
# tokens. FIT's idea (inherited from RIN and FIT):
#
# - keep a **small, fixed set of M latent tokens** (learned vectors, 64 here, 512-768 in Snap Video) whose
#   number does **not** grow with the video;
# - **read**: the latents cross-attend to the patch tokens (compress), **compute**: K self-attention
#   layers over the latents only (the "global layers", where most of the parameters and the thinking
#   are), **write**: the patch tokens cross-attend to the latents (decompress);
# - split the patches into G **groups** and the latents evenly over them: a group's m = M/G latents
#   read only their group's patches and its patches write back only from them. In Snap Video a group is
#   **all T frames x one spatial tile** of patches (Table 8: 16 x 5 x 4 patches), so temporal
#   reasoning happens inside every read and write, and the latents of different tiles meet in the
#   global layers.
#
# The costs per FIT block, with N patch tokens, M latents, G groups, n = N/G patches per group, K global
# layers: the read is M x n query-key pairs, the write N x m pairs, both **linear in N**; the global
# layers cost K x M^2 pairs and their feed-forwards M x D^2: **constant in N**. Only the per-token work
# of the write (one cross-attention and one feed-forward per patch) and the read's keys/values grow with
# the video.
#
# This tutorial
# 1. runs a real FIT (the `bouncing_balls_fit` preset) with hooks, reads every shape off it and draws
#    read -> compute -> write with those numbers (`shapes.png`), and shows which patches form each group
#    on a bouncing-balls clip (`groups.png`);
# 2. measures forward + backward time, the memory of saved activations and the FLOPs of FIT and VDT
#    against the number of frames (`scaling.png`), and reads the curves honestly.
#
# Run it with `python tutorials/03_fit.py` (figures go to `tutorials/out/03/`), or with
# `NANO_VIDEODIFF_QUICK=1` for a seconds-long smoke run with tiny sizes.

# %%
import math
import statistics
import time

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from _common import QUICK, check, out_dir, save_figure  # also puts the repository root on sys.path

import toy_data
from benchmarks.common import count_flops, load_average, machine_line
from nano_videodiff.conditioning import Cond
from nano_videodiff.training.presets import get_preset
from nano_videodiff.backbones.fit import group_patches
from nano_videodiff.backbones.layers import Attention, Mlp
from nano_videodiff.models import build_backbone, count_parameters

OUT = out_dir("03")
torch.manual_seed(0)
t_start = time.time()

# Part 2 sizes. Normal: the two presets as they are trained (width 128), B = 1, T = 2 ... 32 at 32x32.
# Quick: tiny widths, T = 2 and 4 at 16x16, two timed repeats.
FRAMES, RES, BATCH, REPEATS = [2, 4, 8, 16, 32], 32, 1, 5
TINY = None
if QUICK:
    FRAMES, RES, REPEATS = [2, 4], 16, 2
    TINY = dict(dim=32, heads=2, depth=1)

# %% [markdown]
# ## 1. What read -> compute -> write does to the shapes
#
# We build the `bouncing_balls_fit` preset (16 frames of 32x32 RGB, patch 4, width 128, 64 latents,
# groups of all frames x 4x4 patches, 2 FIT blocks of 2 global layers each) and run one forward pass on
# a batch of B = 2 clips with forward hooks on every sub-layer. Each `FITLayer` is called as
# `layer(x, context)`: the hook records the query tokens `x` and, for cross-attention, the tokens it
# attends to. Nothing below is typed in by hand: the figure's numbers are the recorded shapes.

# %%
cfg = get_preset("bouncing_balls_fit")
fit = build_backbone(cfg).eval()
clip = toy_data.get_batch(toy_data.build_dataset(cfg.data, "test"), range(2))
x = clip["video"]                                  # (B, T, C, H, W) in [-1, 1]
B = x.shape[0]

shapes = {}  # name -> list of shapes (query, [context]) or output


def record(name, what="args"):
    def hook(module, args, output):
        if name in shapes:  # keep the first block's call; later blocks repeat the same shapes
            return
        if what == "args":
            shapes[name] = [tuple(a.shape) for a in args if torch.is_tensor(a)]
        else:
            shapes[name] = [tuple(output.shape)]
    return hook


block = fit.blocks[0]
handles = [fit.embed.register_forward_hook(record("embed", "out")),
           block.register_forward_hook(record("block_in")),        # (grouped patches, latents, cond tokens)
           block.read_cond.register_forward_hook(record("read_cond")),
           block.read.register_forward_hook(record("read")),
           block.compute[0].register_forward_hook(record("global")),
           block.write.register_forward_hook(record("write")),
           fit.final.register_forward_hook(record("final", "out"))]
with torch.no_grad():
    out, latents = fit(x, torch.zeros(B), Cond(frame_interval=clip["frame_interval"]))
for h in handles:
    h.remove()
shapes["output"] = [tuple(out.shape)]

T, C, H, W = x.shape[1:]
p, (grid_h, grid_w), (gh, gw), G = fit.patch_size, fit.grid, fit.group_size, fit.num_groups
(BG, n, D), (_, M, Dl), (_, Nc, Dc) = shapes["block_in"]
m = shapes["read"][0][1]
K, depth = len(block.compute), len(fit.blocks)
N = shapes["embed"][0][1] * shapes["embed"][0][2]   # T * h * w patch tokens per video
assert BG == B * G and n == T * gh * gw and M == G * m and N == T * grid_h * grid_w
print(f"video x {tuple(x.shape)}: T={T} frames of {C}x{H}x{W}; patch {p}x{p} -> grid {grid_h}x{grid_w} per frame")
for name, s in shapes.items():
    print(f"  {name:<10} {'  <-  '.join(str(v) for v in s)}")
print(f"N = {T}*{grid_h}*{grid_w} = {N} patch tokens per video; G = {G} groups of n = {T}*{gh}*{gw} = {n}; "
      f"M = {M} latents = {G} x {m}; {Nc} conditioning tokens")

# Attention query-key pairs per video and per block, read off the shapes (the cost that attention adds).
pairs = {"conditioning read": M * Nc, "grouped read": G * m * n, f"global ({K} layers)": K * M * M,
         "write": G * n * m}
full = N * N
print("attention pairs per video per FIT block:",
      ", ".join(f"{k} {v:,}" for k, v in pairs.items()), f"| total {sum(pairs.values()):,}")
print(f"one layer of full attention over all {N} patch tokens: {full:,} pairs "
      f"({full / sum(pairs.values()):.0f}x a whole FIT block)")

# %% [markdown]
# ### The drawing
#
# Top lane: the patch tokens; bottom lane: the latents. The dashed frame is one FIT block (the preset
# stacks two; the second starts from the first's patches and latents). Arrows into a box from another
# lane are the keys/values of a cross-attention.

# %%


def box(ax, xy, wh, text, color, fontsize=9):
    (x0, y0), (w, h) = xy, wh
    ax.add_patch(FancyBboxPatch((x0, y0), w, h, boxstyle="round,pad=0.02,rounding_size=0.15",
                                fc=color, ec="0.25", lw=1.2))
    ax.text(x0 + w / 2, y0 + h / 2, text, ha="center", va="center", fontsize=fontsize, linespacing=1.35)
    return dict(l=(x0, y0 + h / 2), r=(x0 + w, y0 + h / 2), t=(x0 + w / 2, y0 + h), b=(x0 + w / 2, y0))


def arrow(ax, a, b, label="", color="0.2", rad=0.0, label_xy=None):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.5, color=color,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))
    if label:
        lx, ly = label_xy or ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.18)
        ax.text(lx, ly, label, ha="center", va="bottom", fontsize=8, color=color)


fmt = lambda s: "(" + ", ".join(str(v) for v in s) + ")"  # noqa: E731
PATCH, LATENT, COND, IO = "#cfe3f7", "#fde2c2", "#e4d9f2", "#e8e8e8"
fig, ax = plt.subplots(figsize=(20.5, 7.6))
ax.set_xlim(0, 25.8), ax.set_ylim(-0.4, 8.4), ax.axis("off")
bw, bh = 2.6, 1.45
y_top, y_bot = 5.5, 1.9

# patch lane (top)
v = box(ax, (0.1, y_top), (bw, bh), f"video x\n(B, T, C, H, W)\n{fmt(x.shape)}", IO)
e = box(ax, (3.7, y_top), (bw, bh), f"patch tokens\n(B, T*h*w, D)\n({B}, {T}*{grid_h}*{grid_w} = {N}, {D})", PATCH)
arrow(ax, v["r"], e["l"], f"patchify\n+ embed")
g = box(ax, (7.3, y_top), (bw, bh),
        f"{G} groups per video\n(B*G, n, D)\n{fmt(shapes['block_in'][0])}\nn = T*gh*gw = {T}*{gh}*{gw}", PATCH)
arrow(ax, e["r"], g["l"], "group_\npatches")
w_ = box(ax, (17.9, y_top), (bw + 0.3, bh),
         f"write (decompress)\npatches <- own latents\nq {fmt(shapes['write'][0])}\nkv {fmt(shapes['write'][1])}\n"
         f"{n} x {m} pairs / group", PATCH, 8.5)
arrow(ax, g["r"], w_["l"], f"patch tokens (residual stream), {fmt(shapes['block_in'][0])}")
u = box(ax, (21.8, y_top), (1.7, bh), f"ungroup\n({B}, {N}, {D})", PATCH)
arrow(ax, w_["r"], u["l"])
o = box(ax, (24.1, y_top), (1.6, bh), "output\n" + fmt(shapes["output"][0]).replace(", 3,", ",\n3,"), IO)
arrow(ax, u["r"], o["l"])
ax.text(23.8, y_top - 0.25, "LN + linear,\nunpatchify", fontsize=8, ha="center", va="top")

# latent lane (bottom)
z = box(ax, (7.3, y_bot), (bw, bh), f"latents Z_init\n(+ self-cond. of Z_prev)\n(B, M, Dl)\n({B}, {M}, {Dl})",
        LATENT)
c = box(ax, (7.3, -0.3), (bw, 1.3), f"conditioning tokens\n(B, Nc, Dc) {fmt(shapes['read_cond'][1])}\n"
        "noise, frame interval,\nresolution", COND, 8.5)
rc = box(ax, (10.8, y_bot), (bw, bh),
         f"read conditioning\nq {fmt(shapes['read_cond'][0])}\nkv {fmt(shapes['read_cond'][1])}", LATENT, 8.5)
arrow(ax, z["r"], rc["l"])
arrow(ax, c["r"], (rc["b"][0], rc["b"][1]), color="tab:purple", rad=0.3)
rd = box(ax, (14.3, y_bot), (bw + 0.2, bh),
         f"grouped read (compress)\nq {fmt(shapes['read'][0])}\nkv {fmt(shapes['read'][1])}\n"
         f"{m} x {n} pairs / group", LATENT, 8.5)
arrow(ax, rc["r"], rd["l"], f"split\n{G} x {m}")
arrow(ax, g["b"], rd["t"], f"keys/values:\neach group's {n} patches", color="tab:blue", label_xy=(11.3, 3.8))
gl = box(ax, (17.9, y_bot), (bw + 0.3, bh),
         f"{K} global layers\nself-attention over all\n{M} latents {fmt(shapes['global'][0])}\n"
         f"{M} x {M} pairs each", LATENT, 8.5)
arrow(ax, rd["r"], gl["l"], "merge\ngroups")
arrow(ax, gl["t"], w_["b"], f"keys/values: the group's {m} latents", color="tab:orange",
      label_xy=(17.6, 4.25))
arrow(ax, gl["r"], (23.4, gl["r"][1]), f"latents to the next\nblock {fmt(shapes['global'][0])}", color="0.4",
      label_xy=(22.45, gl["r"][1] + 0.12))

ax.add_patch(Rectangle((10.45, 1.05), 21.15 - 10.45, 7.05 - 1.05, fill=False, ls="--", ec="0.45", lw=1.2))
ax.text(10.55, 7.4, f"one FIT block (x{depth} in the preset). Every box in it = pre-LN residual (cross-)attention "
        "+ feed-forward;\narrows from the other lane = keys/values", fontsize=9, color="0.3", va="center")
ax.text(0.1, 8.25, f"FIT ({count_parameters(fit) / 1e6:.2f}M parameters, preset bouncing_balls_fit): shapes "
        f"recorded by forward hooks, B = {B} videos", fontsize=12, weight="bold")
pair_text = "\n".join(f"  {k}: {v:,}" for k, v in pairs.items())
ax.text(21.8, 1.2, f"attention pairs per video per block\n{pair_text}\n  total: {sum(pairs.values()):,}\n\n"
        f"one layer of full attention over\nall {N} patch tokens: {full:,}",
        fontsize=8.5, va="center", ha="left", bbox=dict(fc="white", ec="0.7"))
save_figure(fig, OUT / "shapes.png")

# %% [markdown]
# ### Which patches form a group
#
# `fit.group_patches` reshapes `(B, T, h*w, D) -> (B*G, T*gh*gw, D)`. To see where each patch goes we
# feed it the patch *index* instead of features and read back the group each index lands in (so the
# picture is computed by the library's own function), and we check that each group holds all T frames.
# Because a group spans all frames, motion inside a tile is seen by one read; a ball that crosses from
# one tile into another is read by different groups' latents, and only the global layers (where all
# latents attend to each other) connect the two.

# %%
ids = torch.arange(grid_h * grid_w, dtype=torch.float32)
index_tokens = ids.view(1, 1, -1, 1).expand(1, T, -1, 1)                 # patch index as the "feature"
frame_tokens = torch.arange(T, dtype=torch.float32).view(1, T, 1, 1).expand(1, T, grid_h * grid_w, 1)
grouped_ids = group_patches(index_tokens, grid_h, fit.group_size)[..., 0]       # (G, n)
grouped_frames = group_patches(frame_tokens, grid_h, fit.group_size)[..., 0]    # (G, n)
group_of = torch.empty(grid_h * grid_w, dtype=torch.long)
for gi in range(G):
    group_of[grouped_ids[gi].long()] = gi
    assert grouped_frames[gi].unique().numel() == T, "each group spans all frames"
print("group of each patch (patch grid, row-major):\n", group_of.view(grid_h, grid_w))

show_frames = sorted({0, T // 3, (2 * T) // 3, T - 1})
colors = plt.cm.tab10.colors
fig, axes = plt.subplots(1, len(show_frames), figsize=(3.3 * len(show_frames), 3.8))
for ax, t in zip(axes, show_frames):
    ax.imshow(((x[0, t] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest",
              extent=(0, W, H, 0))
    for pid in range(grid_h * grid_w):
        r, cc = divmod(pid, grid_w)
        ax.add_patch(Rectangle((cc * p, r * p), p, p, fc=colors[group_of[pid].item()], alpha=0.28,
                               ec="white", lw=0.4))
    for gi in range(G):
        members = torch.nonzero(group_of == gi)[:, 0]
        rows, cols = members // grid_w, members % grid_w
        x0, y0 = cols.min().item() * p, rows.min().item() * p
        ax.add_patch(Rectangle((x0, y0), gw * p, gh * p, fill=False, ec=colors[gi], lw=3))
        if t == show_frames[0]:
            ax.text(x0 + 1, y0 + 3, f"group {gi}", color="white", fontsize=8, weight="bold")
    ax.set_title(f"frame t = {t}", fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
fig.suptitle(f"A group = all {T} frames x one {gh}x{gw}-patch tile ({gh * p}x{gw * p} px): "
             f"{T}*{gh}*{gw} = {n} patch tokens, read by its own {m} latents ({G} groups, {M} latents)\n"
             f"thin squares: the {p}x{p}-px patches; the same tiles on every frame", fontsize=10.5)
fig.tight_layout()
save_figure(fig, OUT / "groups.png")

# %% [markdown]
# ## 2. How the cost grows with the number of frames: FIT vs VDT
#
# Both backbones are the presets you train (`bouncing_balls_fit`, `bouncing_balls`: width 128, 4 heads,
# patch 4): FIT with 2 blocks x (conditioning read, grouped read, 2 global layers, write) and 64 latents;
# VDT, the space-time transformer, with 4 blocks of (temporal attention, spatial attention, MLP) on every
# patch token. For each T we build both for T frames of 32x32 (FIT keeps 4 groups of all T frames x a
# quarter of the frame, so n = 16 T patches per group, and 64 latents) and measure, for one video
# (B = 1), fp32:
#
# - **time** of one forward + backward (loss = mean square of the output) on **one CPU thread**, the
#   median of several rounds, each round timing every (T, model) once, so that a busy spell of the
#   machine hits all sizes and both models alike; the bars show the fastest and slowest round. (With two
#   threads on a machine shared with other jobs, the threads wait for each other and single steps take up
#   to 10x longer; one thread only loses its own share of a core.) Wall-clock time on a shared machine
#   stays noisy: read the trend, not the third digit.
# - **saved activations**: the bytes of the distinct tensors that autograd keeps for the backward pass
#   (`torch.autograd.graph.saved_tensors_hooks`; tensors counted once per storage, weights excluded).
#   This is deterministic and is the part of training memory that grows with the video; the real peak
#   adds weights, gradients, optimizer state and short-lived buffers. Note that PyTorch's fused
#   attention kernel saves q, k, v, the output and one log-sum-exp per query, never the N x N
#   attention matrix, so attention memory is linear in tokens for both models.
# - **FLOPs** of forward + backward (`benchmarks.common.count_flops`: matmuls and attention), also
#   deterministic. For reference the FLOPs panel adds a plain transformer with **full space-time
#   attention** (every patch token attends to every other, 4 blocks of width 128), counted on the meta
#   device (no computation): the curve that heads for slope 2.

# %%


def build(backbone, frames):
    cfg = get_preset("bouncing_balls_fit" if backbone == "fit" else "bouncing_balls")
    cfg.data.num_frames, cfg.data.height, cfg.data.width = frames, RES, RES
    if TINY:
        for k, val in TINY.items():
            setattr(cfg.model, k, val)
        cfg.model.fit_num_latents = 16
    if backbone == "fit":  # as benchmarks/fit_vs_unet.py: 4 groups of all frames x a quarter of the grid
        cfg.model.fit_group_h = cfg.model.fit_group_w = max(1, RES // cfg.model.patch_size // 2)
    torch.manual_seed(0)
    return build_backbone(cfg).train(), cfg


def make_step(model, frames):
    xb = torch.randn(BATCH, frames, 3, RES, RES, generator=torch.Generator().manual_seed(0))
    c_noise, cond = torch.zeros(BATCH), Cond(frame_interval=torch.full((BATCH,), 1 / 8))

    def step():
        model.zero_grad(set_to_none=True)
        out, _ = model(xb, c_noise, cond)  # every backbone returns (out, state); FIT's state is its latents
        out.square().mean().backward()
    return step


def instrumented(model, step):
    """One forward + backward: FLOPs by op, and the bytes of distinct non-weight tensors saved for backward."""
    weights = {q.untyped_storage().data_ptr() for q in model.parameters()}
    saved = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            saved[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        flops = count_flops(step, by_op=True)
    attn = sum(f for op, f in flops.items() if "attention" in op)
    return sum(flops.values()), attn, sum(saved.values())


class FullAttention(torch.nn.Module):
    """Reference only: pre-LN blocks of full self-attention over all T*h*w tokens + MLP (counted, not run)."""

    def __init__(self, dim, heads, depth):
        super().__init__()
        self.attn = torch.nn.ModuleList(Attention(dim, heads) for _ in range(depth))
        self.mlp = torch.nn.ModuleList(Mlp(dim) for _ in range(depth))
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, tokens):
        for attn, mlp in zip(self.attn, self.mlp):
            tokens = tokens + attn(self.norm(tokens))
            tokens = tokens + mlp(self.norm(tokens))
        return tokens


# One thread: on a shared machine two threads wait for each other whenever another job takes a core, and
# a step then takes up to 10x longer; a single thread only loses its own share. (Both models alike.)
threads = torch.get_num_threads()
torch.set_num_threads(1)
print(machine_line())
print(load_average(), "(before the measurements)")
results = {"fit": {}, "vdt": {}, "full": {}}
steps = {}  # (model name, T) -> one forward + backward
for frames in FRAMES:  # build, count FLOPs and saved bytes (this call is also the warm-up)
    for name in ("fit", "vdt"):
        model, mcfg = build(name, frames)
        steps[name, frames] = make_step(model, frames)
        flops, attn, saved = instrumented(model, steps[name, frames])
        results[name][frames] = dict(params=count_parameters(model), flops=flops, attn=attn, saved=saved,
                                     times=[])
    with torch.device("meta"):  # full attention: FLOPs counted on meta tensors, nothing computed
        ref = FullAttention(mcfg.model.dim, mcfg.model.heads, mcfg.model.depth if TINY else 4)
        tokens = torch.randn(BATCH, frames * (RES // mcfg.model.patch_size) ** 2, mcfg.model.dim,
                             requires_grad=True)
        results["full"][frames] = dict(flops=count_flops(lambda: ref(tokens).sum().backward()))
print(f"built and counted ({time.time() - t_start:.0f} s); timing {REPEATS} rounds")
for round_ in range(REPEATS):  # round-robin over every (T, model): a busy spell hits all sizes alike
    for (name, frames), step in steps.items():
        t0 = time.perf_counter()
        step()
        results[name][frames]["times"].append(1e3 * (time.perf_counter() - t0))
    print(f"  round {round_ + 1}/{REPEATS} done ({time.time() - t_start:.0f} s)")
print(load_average(), "(after)")
torch.set_num_threads(threads)

for name in ("fit", "vdt"):
    for r in results[name].values():
        r["median"], r["min"], r["max"] = statistics.median(r["times"]), min(r["times"]), max(r["times"])

print(f"\nforward + backward of one {RES}x{RES} video (B = {BATCH}, fp32, 1 thread), median of {REPEATS} "
      f"(min-max); saved = activations kept for backward")
head = (f"| {'T':>3} | {'model':<5} | {'params (M)':>10} | {'time ms: median (min-max)':>26} | "
        f"{'saved MiB':>9} | {'GFLOPs':>7} | {'attn %':>6} |")
print(head)
print("|" + "|".join("-" * (len(col)) for col in head.split("|")[1:-1]) + "|")
for frames in FRAMES:
    for name in ("fit", "vdt"):
        r = results[name][frames]
        span = f"{r['median']:.0f} ({r['min']:.0f}-{r['max']:.0f})"
        print(f"| {frames:>3} | {name.upper():<5} | {r['params'] / 1e6:>10.3f} | {span:>26} | "
              f"{r['saved'] / 2**20:>9.1f} | {r['flops'] / 1e9:>7.2f} | {100 * r['attn'] / r['flops']:>6.1f} |")
print("full-attention reference GFLOPs:", ", ".join(f"T={f}: {results['full'][f]['flops'] / 1e9:.1f}"
                                                     for f in FRAMES))

# %% [markdown]
# ### The plot
#
# Log-log axes: a curve parallel to the slope-1 line grows in proportion to the number of frames, one
# parallel to the slope-2 line with its square. The grey reference lines start at VDT's first point.

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
panels = [("median", "forward + backward time (ms)", 1.0),
          ("saved", "activations saved for backward (MiB)", 2.0**-20),
          ("flops", "forward + backward GFLOPs", 1e-9)]
style = {"fit": dict(color="tab:orange", marker="o", label="FIT (bouncing_balls_fit)", zorder=3),
         "vdt": dict(color="tab:blue", marker="s", label="VDT space-time transformer (bouncing_balls)", zorder=3)}
for ax, (key, ylabel, scale) in zip(axes, panels):
    for name in ("fit", "vdt"):
        ys = [results[name][f][key] * scale for f in FRAMES]
        if key == "median":
            lo = [ys[i] - results[name][f]["min"] for i, f in enumerate(FRAMES)]
            hi = [results[name][f]["max"] - ys[i] for i, f in enumerate(FRAMES)]
            ax.errorbar(FRAMES, ys, yerr=[lo, hi], capsize=3, lw=2, **style[name])
        else:
            ax.plot(FRAMES, ys, lw=2, **style[name])
    if key == "flops":
        ax.plot(FRAMES, [results["full"][f]["flops"] * scale for f in FRAMES], color="tab:red", ls=":",
                marker="^", lw=2, label="full space-time attention\n(4 blocks, counted on meta)")
    y0 = results["vdt"][FRAMES[0]][key] * scale
    for slope, ls in ((1, "--"), (2, "-.")):
        ax.plot(FRAMES, [y0 * (f / FRAMES[0]) ** slope for f in FRAMES], color="0.55", ls=ls, lw=1.2,
                label=f"slope {slope} (cost ~ T^{slope})", zorder=1)
    ax.set_xscale("log", base=2), ax.set_yscale("log")
    ax.set_xticks(FRAMES, [str(f) for f in FRAMES])
    ax.set_xlabel(f"frames T ({RES}x{RES} px, patch 4: {(RES // 4) ** 2} tokens per frame)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
p_fit = results["fit"][FRAMES[-1]]["params"] / 1e6
p_vdt = results["vdt"][FRAMES[-1]]["params"] / 1e6
axes[0].set_title(f"time: median of {REPEATS} rounds (bars: min-max), 1 thread\n"
                  "on a shared 2-core CPU: noisy, read the trend", fontsize=10)
axes[1].set_title("memory: bytes of tensors saved for backward\n(deterministic; weights excluded)", fontsize=10)
axes[2].set_title("FLOPs (deterministic)", fontsize=10)
fig.suptitle(f"FIT ({p_fit:.2f}M params at T={FRAMES[-1]}) vs VDT ({p_vdt:.2f}M) as the video gets longer: "
             f"one video, fp32, {RES}x{RES} px", fontsize=12)
fig.tight_layout()
save_figure(fig, OUT / "scaling.png")


def slope(name, key):
    """Log-log slope between the last two frame counts: 1 = cost ~ T, 2 = cost ~ T^2."""
    a, b = FRAMES[-2], FRAMES[-1]
    return math.log(results[name][b][key] / results[name][a][key]) / math.log(b / a)


def ratio(frames, key):
    return results["vdt"][frames][key] / results["fit"][frames][key]


print(f"log-log slope between T={FRAMES[-2]} and T={FRAMES[-1]}:")
for key in ("median", "saved", "flops"):
    print(f"  {key:<7} FIT {slope('fit', key):.2f}   VDT {slope('vdt', key):.2f}")
print(f"  flops   full attention {slope('full', 'flops'):.2f}")
for frames in (FRAMES[-1], FRAMES[0]):
    print(f"VDT / FIT at T={frames}: time {ratio(frames, 'median'):.2f}x, saved {ratio(frames, 'saved'):.2f}x, "
          f"FLOPs {ratio(frames, 'flops'):.2f}x")
# FIT's cost as (constant) + (per frame) from the last two points: the constant is the latents' work.
a, b = FRAMES[-2], FRAMES[-1]
for key, unit, scale in (("flops", "GFLOPs", 1e-9), ("saved", "MiB", 2.0**-20)):
    per_frame = (results["fit"][b][key] - results["fit"][a][key]) / (b - a)
    const = results["fit"][b][key] - per_frame * b
    vdt_per_frame = (results["vdt"][b][key] - results["vdt"][a][key]) / (b - a)
    print(f"FIT {key}: {const * scale:.2f} {unit} constant + {per_frame * scale:.3f} {unit} per frame; "
          f"VDT: {vdt_per_frame * scale:.3f} {unit} per frame")
check("FIT's cost grows more slowly with the number of frames than a space-time transformer's (Snap Video Sec. 3.4)",
      slope("fit", "flops") < slope("vdt", "flops") and ratio(FRAMES[-1], "median") > ratio(FRAMES[0], "median"),
      f"FLOPs log-log slope FIT {slope('fit', 'flops'):.2f} vs VDT {slope('vdt', 'flops'):.2f}; VDT/FIT time "
      f"{ratio(FRAMES[0], 'median'):.2f}x at T={FRAMES[0]} -> {ratio(FRAMES[-1], 'median'):.2f}x at T={FRAMES[-1]}")
print(f"tutorial 03 done in {time.time() - t_start:.0f} s; figures in {OUT}")

# %% [markdown]
# ## 3. Reading the curves honestly
#
# **What Snap Video claims.** Table 2 (A100, 16 frames of 64x36, ms per video, lower is better): the
# 500M-parameter FIT trains at 69.5 ms and infers at 23.4 ms per video, the 284M-parameter U-Net at 230.3
# and 105.1 ms: **3.31x faster training and 4.49x faster inference with 1.8x the parameters**, and the
# 3.9B FIT infers only 1.24x slower than the 284M U-Net. The reason is the one drawn above: the heavy
# computation (the global layers, 24 of them, with width 1024-3072) runs on 512-768 latents whatever
# the video size, and only the reads and writes touch the 2,560 (first stage) or 147,456 (upsampler)
# patch tokens. Our baseline is not their U-Net (that arrives with Video LDM) but VDT, which like the
# U-Net runs every layer on every patch token; `benchmarks/fit_vs_unet.py` measures full training steps
# and inference in bf16 and prints the speed-ups next to the paper's.
#
# **What the curves here say** (the printed table and slopes above; the time panel is noisy, the other
# two are exact):
#
# - **Neither model is quadratic in T at this size.** VDT factorises attention: spatial attention within
#   each frame (64 tokens) and temporal attention across frames at each patch position (T tokens). Its
#   only quadratic term is the temporal attention (T^2 pairs per position), and it is small: all of
#   VDT's attention together is under a tenth of its FLOPs even at T = 32 (the "attn %" column), so
#   VDT is slope 1: twice the frames, twice the FLOPs, twice the saved activations (its points sit on
#   the slope-1 line). The slope-2 line is where **full** space-time attention goes (the red dotted FLOPs curve,
#   already steeper than 1.5 between T = 16 and 32 and still bending up as attention takes over from
#   the MLPs): that is the cost FIT and factorised attention both avoid, and why nobody runs full
#   attention over 147k tokens.
# - **FIT is "constant + a smaller slope".** Its FLOPs and memory are a fixed part (the 64 latents'
#   conditioning read, grouped read and global layers, independent of T) plus a per-frame part (the
#   write's cross-attention and feed-forward on every patch, and the read's keys/values). On log-log
#   axes that looks like a curve that is flatter than slope 1 at small T and bends towards slope 1 as
#   the per-frame part takes over. Its per-frame cost is well below VDT's (printed above: about a third of
#   the FLOPs and saved bytes per frame), because each patch token goes through one cross-attention and
#   one feed-forward per block, 2 blocks deep, while VDT runs 3 sub-layers per block, 4 blocks deep.
# - **At 2 frames FIT does not win.** With only 128 patch tokens per video the 64 latents are half as
#   many as the patches, and their 4 layers per block cost about what the patches cost; FIT's FLOPs are
#   then at or above VDT's. FIT pays off when patch tokens vastly outnumber latents, which is exactly
#   Snap Video's regime (2,560 or 147,456 patches vs 512-768 latents).
# - **Time follows the FLOPs only at large T.** Timed on one thread, the VDT/FIT time ratio at T = 32
#   comes out close to the FLOPs ratio (printed above; 2.4-2.7x against 2.46x in our runs). At a few
#   frames both models take tens of milliseconds whatever their FLOPs, because each layer also pays
#   fixed costs (Python, kernel launches, reshapes, memory traffic) that do not shrink with the token
#   count; they are a larger share of FIT's smaller work, so FIT's time curve is flatter than its FLOPs
#   curve. Other jobs on a shared machine add spikes (the min-max bars); the FLOPs and memory panels are
#   the reproducible statement.
# - **What we did not measure.** Quality: a FIT with fewer FLOPs is only useful if it generates as
#   well; Snap Video's Table 2 reports better FID and CLIPSIM than the U-Net (and a worse FVD for the
#   500M model than the 284M U-Net). Train both presets (`python train.py --config=bouncing_balls_fit`
#   and `--config=bouncing_balls`) to compare them on the toy data.
#
# ## What to try next
#
# - Change the group tile (`--fit_group_h/--fit_group_w`): smaller groups mean more, shorter reads
#   (fewer pairs per group) but fewer patches per latent; one group for the whole video is RIN.
# - Raise `fit_num_latents` and watch the constant part of FIT's cost grow while the per-frame part
#   stays put; raise the resolution instead of T and compare the slopes (VDT's spatial attention grows
#   with the square of the tokens per frame, FIT's reads and writes do not).
# - Latent self-conditioning (RIN Sec. 3.2): `cond.self_cond` carries the latents `Z_prev` returned by
#   the previous sampler step (`fit.FIT.initial_latents`); the sampler does it for you.
