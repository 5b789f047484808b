"""W.A.L.T's window attention vs full attention: training-step time and peak memory of the WALT backbone.

    PYTHONPATH=. python benchmarks/window_attention.py [--quick] [--repeats=N] [--threads=N] [--dtypes=fp32,bf16]

The paper's claim (W.A.L.T Sec. 5.2, Table 3b): local windows are "competitive (or better) ... while being
significantly faster (up to 2x) and requiring less accelerator memory" (2.24 vs 1.20 steps/s on TPUs for a
5x4x4 window vs full self-attention; no memory numbers are reported). Here one WALT backbone (4 blocks, width
128, 4 heads, patch 1 on a latent-like 4-channel input) is run at growing token grids T x H x W with
three attention layouts:

- windows:   W.A.L.T's layout: spatial blocks 1 x H x W, spatiotemporal blocks all frames x 8 x 8;
- ST = clip: spatiotemporal window covering the whole clip, spatial blocks still per frame (Table 3b's
             5x16x16 row on a 5x16x16 latent);
- full:      every block attends over all T H W tokens (our reading of Table 3b's "full self attn.").

Measured per configuration, on a training step = ``Denoiser.loss`` forward + backward (no optimizer, which
costs the same in every layout), batch 2, fixed sigma and noise:

- ms: median of ``--repeats`` timed steps after one warm-up (``benchmarks.common.time_ms``), min-max in brackets;
- peak MiB: ``peak_allocated_bytes`` below, the peak of live bytes allocated through PyTorch's CPU allocator
  during one step, above its level at the start (activations, attention buffers, gradients; not the weights);
- GFLOPs: ``benchmarks.common.count_flops`` (matmuls + attention, forward + backward), deterministic.

dtype matters for memory: in fp32 PyTorch's fused CPU attention kernel never stores the N x N attention
matrix, so full attention costs time (N^2) but little memory; under bf16 autocast ``layers.attention`` writes
attention as two matmuls on CPU (faster there) and the N x N logits are materialised.
Timings on a machine shared with other jobs are noisy: read the load average printed with them. The full
run takes a few minutes on one free core (full attention at 4096 tokens: several seconds per step).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.common import (attempt, count_flops, derive, fmt, fmt_ms, load_average,  # noqa: E402
                               machine_line, markdown_table, parse_simple_args, time_ms)
from nano_videodiff.conditioning import Batch, Cond  # noqa: E402
from nano_videodiff.edm import Denoiser  # noqa: E402
from nano_videodiff.backbones.walt import WALT  # noqa: E402

LAYOUTS = ("windows", "ST = clip", "full")
GRIDS = [(4, 16, 16), (8, 16, 16), (16, 16, 16)]  # T x H x W tokens (patch 1); full bf16 at 4096 tokens: ~4 GB
QUICK_GRIDS = [(2, 8, 8), (4, 8, 8)]
MODEL, QUICK_MODEL = (128, 4, 4), (32, 2, 2)  # WALT width, blocks, heads


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler back end prints status lines when it starts and stops)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_allocated_bytes(fn) -> int:
    """Peak bytes allocated through PyTorch's CPU allocator while ``fn()`` runs, above the level at its start.

    ``torch.profiler`` with ``profile_memory=True`` records every allocation and free made during the call;
    its trace gives, per event, the allocator's "Total Allocated" (bytes live among the blocks it tracked).
    The maximum of that minus the value before the first event is the call's peak: every tensor it creates
    (activations kept for backward, attention buffers, gradients, temporaries inside kernels) counts, memory
    that existed before (weights) does not. Memory outside PyTorch's allocator (Python objects, the BLAS
    library's own buffers) is not seen. Allocations are counted as requested, not as the OS maps pages.
    """
    with _quiet_stderr():
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = [e["args"] for e in json.load(f)["traceEvents"] if e.get("name") == "[memory]"]
    events = [a for a in events if a.get("Device Type", 0) == 0]  # CPU
    if not events:
        return 0
    start = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(a["Total Allocated"] for a in events) - start


def build(layout: str, grid, dim: int, depth: int, heads: int, channels: int = 4) -> Denoiser:
    t, h, w = grid
    torch.manual_seed(0)
    model = WALT(in_channels=channels, num_frames=t, height=h, width=w, patch_size=1, dim=dim, depth=depth,
                 heads=heads, window=(0, 8, 8) if layout == "windows" else (0, 0, 0))
    if layout == "full":  # spatial blocks attend over the whole clip too
        for block in model.blocks:
            block.attn.window = (0, 0, 0)
    return Denoiser(model)


def training_step(model: Denoiser, grid, dtype: str, batch: int = 2, channels: int = 4):
    """Forward + backward of the loss on a fixed random batch, as a zero-argument function."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, grid[0], channels, *grid[1:], generator=g).clamp(-1, 1)
    sigma, noise = torch.full((batch,), 0.5), torch.randn(x.shape, generator=g)
    cond = Cond(frame_interval=torch.full((batch,), 0.125))

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model.loss(Batch(x, cond, sigma=sigma, noise=noise))
        loss.backward()
    return step


def measure(layout, grid, dtype, repeats, dim, depth, heads) -> dict:
    model = build(layout, grid, dim, depth, heads)
    step = training_step(model, grid, dtype)
    flops = attempt(count_flops, step)  # also the warm-up
    peak = attempt(peak_allocated_bytes, step)
    timing = attempt(time_ms, step, repeats, 0)
    return {"flops": flops, "peak": peak, "time": timing}


def run(grids, dtypes, repeats: int, dim: int, depth: int, heads: int) -> str:
    """The table (every layout at every grid and dtype, ratios to windows) and the paper's numbers."""
    t0, rows = time.time(), []
    for dtype in dtypes:
        for grid in grids:
            results = {layout: measure(layout, grid, dtype, repeats, dim, depth, heads) for layout in LAYOUTS}
            base = results["windows"]
            for layout, r in results.items():
                ms = derive(lambda t: t["median"], r["time"])
                rows.append([dtype, "x".join(map(str, grid)), f"{grid[0] * grid[1] * grid[2]:,}", layout,
                             derive(lambda t: f"{fmt_ms(t['median'])} ({fmt_ms(t['min'])}-{fmt_ms(t['max'])})",
                                    r["time"]),
                             fmt(derive(lambda m, b: m / b["median"], ms, base["time"]), ".2f"),
                             fmt(derive(lambda p: p / 2**20, r["peak"]), ".1f"),
                             fmt(derive(lambda p, b: p / b, r["peak"], base["peak"]), ".2f"),
                             fmt(derive(lambda f: f / 1e9, r["flops"]), ".2f"),
                             fmt(derive(lambda f, b: f / b, r["flops"], base["flops"]), ".2f")])
            print(f"  {dtype} {'x'.join(map(str, grid))} done ({time.time() - t0:.0f} s)", file=sys.stderr)
    return (markdown_table(["dtype", "grid T x H x W", "tokens", "attention", "ms/step (min-max)", "time / windows",
                            "peak MiB", "peak / windows", "GFLOPs", "FLOPs / windows"], rows)
            + "\n\npaper, for comparison (Table 3b: UCF-101, 5x16x16 latent, TPU training steps/s): 5x8x8 windows "
              "2.00, ST = clip (5x16x16) 1.75, full 1.20; time / windows = 1.14 (ST = clip) and 1.67 (full)")


def main(argv) -> None:
    parsed = parse_simple_args(argv, __doc__)
    if parsed is None:
        return
    quick, options = parsed
    repeats = int(options.get("repeats", 2 if quick else 5))
    dtypes = options.get("dtypes", "fp32,bf16").split(",")
    torch.set_num_threads(int(options.get("threads", 1)))
    grids = QUICK_GRIDS if quick else GRIDS
    dim, depth, heads = QUICK_MODEL if quick else MODEL
    print(f"# W.A.L.T window attention vs full attention: WALT {depth} blocks x {dim} wide, {heads} heads, "
          f"batch 2, training step (forward + backward){' [quick]' if quick else ''}\n")
    print(machine_line())
    print(f"\n{load_average()} (before)\n")
    t0 = time.time()
    print(run(grids, dtypes, repeats, dim, depth, heads))
    print(f"\n{load_average()} (after; {time.time() - t0:.0f} s, medians of {repeats} steps, "
          f"{torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    main(sys.argv[1:])
