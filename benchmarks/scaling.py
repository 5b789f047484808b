"""How the training time per video grows with frames and with resolution, for every backbone.

    PYTHONPATH=. python benchmarks/scaling.py [--quick] [--threads=N] [--repeats=N] [--dtype=bf16|fp32]
                                              [--out=benchmarks/out/scaling]

Each backbone of ``nano_videodiff.backbones.BACKBONES`` is built with the architecture of its toy preset
(``toy_config``) on RGB clips in pixel space and timed for one training step as train.py runs it
(``throughput.train_step_fn``: loss forward + backward, grad clip, the optimizer, the EMA update) on a random
batch. Two sweeps:

- frames:     T in ``FRAMES`` at a fixed resolution;
- resolution: H = W in ``RESOLUTIONS`` at a fixed number of frames.

Per point: ms per video = the median of ``repeats`` timed steps (after one FLOP-counting step and one
warm-up step) / batch size, and GFLOP per video of forward + backward (``common.count_flops``). Each table
ends with two exponents from the sweep's end points: time ~ size^a (measured) and FLOPs ~ size^b (the
compute the model asks for; b > 1 where attention's quadratic cost shows). A CPU at small sizes is often
below its best rate (a < b) because fixed per-layer costs weigh more there. "size" is the frame count or
the pixel count per frame (resolution^2). The plot ``scaling.png`` shows both sweeps on log-log axes.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from nano_videodiff.hardware import resolve_dtype  # noqa: E402

from benchmarks.common import (Error, attempt, derive, fmt, fmt_ms, load_average, machine_line,  # noqa: E402
                               markdown_table, parse_simple_args)
from benchmarks.throughput import measure_training  # noqa: E402
from nano_videodiff.training.presets import get_preset  # noqa: E402
from nano_videodiff.backbones import BACKBONES  # noqa: E402
from nano_videodiff.models import build_denoiser, count_parameters  # noqa: E402

FRAMES, FIXED_RESOLUTION = (4, 8, 16, 32), 32
RESOLUTIONS, FIXED_FRAMES = (16, 32, 64), 8
FULL = dict(frames=FRAMES, fixed_resolution=FIXED_RESOLUTION, resolutions=RESOLUTIONS, fixed_frames=FIXED_FRAMES,
            batch_size=4)
QUICK = dict(frames=(2, 4), fixed_resolution=16, resolutions=(16, 32), fixed_frames=2, batch_size=1)

# Where each backbone's architecture comes from (all in pixel space on RGB clips).
SOURCES = {
    "vdt": "`bouncing_balls`: VDT, width 128, 4 blocks, patch 4",
    "fit": "`bouncing_balls_fit`: FIT, 2 blocks x 2 global layers, 64 latents, 4 groups",
    "walt": "`walt_physion`'s transformer (width 128, 4 blocks, windows all frames x 4 x 4 tokens) on pixels, patch 4",
    "unet": "`unet_frames`: ADM U-Net per frame, 32 channels x (1,2,2), attention at 1/4 of the frame",
    "videoldm": "`videoldm_bouncing_balls`: that U-Net frozen + temporal layers (only they train)",
}


def toy_config(backbone: str, frames: int, resolution: int, batch_size: int):
    """The Config of ``backbone``'s toy model (the preset named in ``SOURCES``) on ``batch_size`` RGB clips of
    ``frames`` x ``resolution`` x ``resolution``, unconditional. Sizes that a preset ties to the frame size
    scale with it: FIT's groups (a quarter of the patch grid each way) and the U-Nets' attention level
    (1/4 of the frame, as 8 px at the presets' 32 px); W.A.L.T's windows keep their size in tokens."""
    preset = {"vdt": "bouncing_balls", "fit": "bouncing_balls_fit", "unet": "unet_frames",
              "videoldm": "videoldm_bouncing_balls"}
    if backbone == "walt":  # the latent preset's transformer, on pixels (no autoencoder checkpoint needed)
        cfg = get_preset("bouncing_balls")
        cfg.model = get_preset("walt_physion").model
        cfg.model.patch_size = 4
    elif backbone in preset:
        cfg = get_preset(preset[backbone])
    else:
        raise ValueError(f"no toy configuration for backbone {backbone!r}")
    cfg.data.num_frames, cfg.data.height, cfg.data.width = frames, resolution, resolution
    cfg.optim.batch_size = batch_size
    cfg.run.init_from = ""  # videoldm: random image weights time the same as trained ones
    m = cfg.model
    if backbone == "fit":
        m.fit_group_h = m.fit_group_w = max(1, resolution // m.patch_size // 2)
    if backbone in ("unet", "videoldm"):
        m.unet_attn_resolutions = str(resolution // 4)
    return cfg


def build(backbone: str, frames: int, resolution: int, batch_size: int):
    """(config, denoiser) of ``toy_config``, with the same initial weights every time."""
    cfg = toy_config(backbone, frames, resolution, batch_size)
    torch.manual_seed(0)
    return cfg, build_denoiser(cfg)


def measure_backbone(backbone: str, frames: int, resolution: int, batch_size: int, dtypes, repeats: int) -> dict:
    """{"params": millions, dtype: {"ms": ms per video, "flops": forward + backward FLOPs per video}} for one
    training step of ``backbone``'s toy model; every dtype starts from the same weights. Any value may be an
    ``Error`` (a failed build or step)."""
    built = attempt(build, backbone, frames, resolution, batch_size)
    if isinstance(built, Error):
        return {"params": built, **{dtype: {"ms": built, "flops": built} for dtype in dtypes}}
    cfg, model = built
    result = {"params": count_parameters(model.backbone) / 1e6}
    for dtype in dtypes:
        timing, flops = measure_training(cfg, copy.deepcopy(model), dtype, repeats)
        result[dtype] = {"ms": derive(lambda t: t["median"] / batch_size, timing),
                         "flops": derive(lambda f: f / batch_size, flops)}
    return result


def exponent(sizes, values):
    """a in value ~ size^a, from the first and last point (an Error if either is one)."""
    return derive(lambda first, last: math.log(last / first) / math.log(sizes[-1] / sizes[0]), values[0], values[-1])


def sweep(backbones, shapes, batch_size: int, dtype: str, repeats: int, cache: dict) -> dict:
    """{backbone: [{"ms", "flops"} per (frames, resolution) in ``shapes``]}. A point already in ``cache``
    (keyed by backbone and shape; the two sweeps share one) is not measured again. Progress on stderr."""
    t0, results = time.time(), {}
    for backbone in backbones:
        for t, r in shapes:
            if (backbone, t, r) not in cache:
                cache[backbone, t, r] = measure_backbone(backbone, t, r, batch_size, [dtype], repeats)[dtype]
        results[backbone] = [cache[backbone, t, r] for t, r in shapes]
        print(f"  scaling: {backbone} at {len(shapes)} sizes done ({time.time() - t0:.0f} s)", file=sys.stderr)
    return results


def sweep_table(results: dict, shapes, sizes, size_name: str) -> str:
    """Rows: backbones; columns: ms per video at each shape, then the time and FLOP exponents."""
    rows = []
    for backbone, points in results.items():
        ms, flops = [p["ms"] for p in points], [p["flops"] for p in points]
        rows.append([backbone] + [derive(fmt_ms, m) for m in ms]
                    + [fmt(exponent(sizes, ms), ".2f"), fmt(exponent(sizes, flops), ".2f")])
    headers = [f"{t}x{r}x{r} ms/video" for t, r in shapes]
    return markdown_table(["backbone"] + headers + [f"time ~ {size_name}^a", f"FLOPs ~ {size_name}^b"], rows)


def plot(frame_results: dict, frames, resolution_results: dict, resolutions, fixed, path: Path) -> None:
    """Two log-log panels, ms per video against frames and against resolution; failed points are left out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullLocator, ScalarFormatter
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    panels = [(frame_results, frames, f"frames (at {fixed[1]}x{fixed[1]} px)"),
              (resolution_results, resolutions, f"resolution H = W in px (at {fixed[0]} frames)")]
    for ax, (results, xs, label) in zip(axes, panels):
        for backbone, points in results.items():
            pts = [(x, p["ms"]) for x, p in zip(xs, points) if not isinstance(p["ms"], str)]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=backbone)
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="training ms per video")
        ax.set_xticks(list(xs), [str(x) for x in xs])
        ax.xaxis.set_minor_locator(NullLocator())  # only the measured sizes on the x axis
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 10, 20, 50, 100, ... ms
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_locator(NullLocator())
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
    fig.suptitle("Training time per video as the clip grows (one training step, this CPU)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(frames, fixed_resolution: int, resolutions, fixed_frames: int, batch_size: int, repeats: int,
        dtype: str, png: Path, backbones=tuple(BACKBONES)) -> str:
    """Both sweeps: the two tables (markdown), the model sources, and the plot written to ``png``."""
    frame_shapes = [(t, fixed_resolution) for t in frames]
    resolution_shapes = [(fixed_frames, r) for r in resolutions]
    cache = {}
    by_frames = sweep(backbones, frame_shapes, batch_size, dtype, repeats, cache)
    by_resolution = sweep(backbones, resolution_shapes, batch_size, dtype, repeats, cache)
    plot(by_frames, frames, by_resolution, resolutions, (fixed_frames, fixed_resolution), png)
    sources = markdown_table(["backbone", "architecture (preset)"], [[b, SOURCES.get(b, "")] for b in backbones])
    return (f"Training step (forward + backward + optimizer + EMA), {dtype}, batch {batch_size}, median of "
            f"{repeats} step(s) after a warm-up; exponents from the first and last point.\n\n"
            + sweep_table(by_frames, frame_shapes, frames, "T") + "\n\n"
            + sweep_table(by_resolution, resolution_shapes, [r * r for r in resolutions], "HW") + "\n\n"
            + sources + f"\n\n![training ms per video against frames and resolution]({png.name})")


def main(argv) -> None:
    parsed = parse_simple_args(argv, __doc__)
    if parsed is None:
        return
    quick, options = parsed
    torch.set_num_threads(int(options.get("threads", os.cpu_count())))
    sizes = QUICK if quick else FULL
    repeats = int(options.get("repeats", 1 if quick else 3))
    png = Path(options.get("out", "benchmarks/out/scaling")) / "scaling.png"
    print(machine_line())
    print(f"\n{load_average()} (before)\n")
    dtype = resolve_dtype(options.get("dtype", "auto"), torch.device("cpu")).name  # bf16 only where it is fast
    print(run(**sizes, repeats=repeats, dtype=dtype, png=png))
    print(f"\nplot written to {png}\n\n{load_average()} (after)")


if __name__ == "__main__":
    main(sys.argv[1:])
