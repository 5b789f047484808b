"""The benchmark suite: every speed claim of the papers measured on this machine, as markdown tables.

    PYTHONPATH=. python benchmarks/suite.py [--quick] [--out=benchmarks/out/suite] [--threads=N]

One process runs five sections, prints each as it finishes and writes them all to ``<out>/suite.md`` (with
the plot ``<out>/scaling.png``):

1. Machine and matmul peak: CPU, cores, torch version and threads, the load average; the best median
   GFLOP/s of square fp32 and bf16 matmuls (``common.matmul_peak_gflops``), the ceiling MFU is measured against.
2. FIT vs U-Net (Snap Video Table 2: 3.31x faster training, 4.49x faster inference): ms per video of a
   training step and of one inference call, bf16, for growing clips (``fit_vs_unet.run``).
3. Window vs full attention (W.A.L.T Table 3b: windows up to 2x faster, less memory): training-step time,
   peak allocated memory and FLOPs of the WALT backbone with windows, one clip-sized window and full
   attention, at growing token grids, fp32 and bf16 (``window_attention.run``).
4. MFU per backbone: every backbone of ``backbones.BACKBONES`` as its toy preset (``scaling.toy_config``) at one
   common clip size, one training step as train.py runs it (``throughput.train_step_fn``: loss, backward,
   grad clip, optimizer, EMA) in fp32 and in bf16 autocast. MFU = (forward + backward FLOPs per step from
   ``common.count_flops``) / (median step time) / (the matmul peak of the same dtype from section 1).
5. Scaling: training ms per video of every backbone as the frame count grows at fixed resolution and as
   the resolution grows at fixed frames, with the time and FLOP growth exponents and a plot (``scaling.run``).

Honest measurement: every timing is the median of several calls after at least one untimed warm-up call
(``common.time_ms``); torch's thread count is set once (``--threads``, default: all cores) and printed;
the load average is printed before and after, because other processes sharing the CPU slow everything
down. A measurement that fails prints "error: ..." in its cell (a failed section: in its place), and the
suite goes on. ``--quick`` (tiny clips and models, one repeat) checks that everything runs in well under a
minute on a quiet machine; its numbers only show the format. The full run (medians of 5) should take
about 5-8 minutes on this project's 2-core machine (estimated from its sections, timed one by one on one
thread while other jobs shared the machine; the W.A.L.T section is the longest, about 3 minutes).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from nano_videodiff.hardware import resolve_dtype  # noqa: E402

from benchmarks import fit_vs_unet, scaling, window_attention  # noqa: E402
from benchmarks.common import (Error, attempt, conv_gflops, derive, fmt, fmt_ms, load_average,  # noqa: E402
                               machine_line, markdown_table, matmul_peak_gflops, mfu, peak_table)
from benchmarks.throughput import DTYPES, TORCH_DTYPE  # noqa: E402
from nano_videodiff.backbones import BACKBONES  # noqa: E402

SECTIONS = ("Machine and matmul peak", "FIT vs U-Net", "Window vs full attention", "MFU per backbone", "Scaling")


@dataclass
class Settings:
    """Every size the suite measures at (one instance per mode: ``MODES``)."""
    repeats: int                      # timed calls per measurement (the median is reported)
    peak_sizes: Tuple[int, ...]       # n of the n x n matmuls of the peak measurement
    fit_sizes: str                    # FIT vs U-Net clips, "frames x pixels" comma separated
    fit_batch: int
    window_grids: tuple               # W.A.L.T token grids T x H x W
    window_model: Tuple[int, int, int]  # WALT width, blocks, heads
    mfu_shape: Tuple[int, int, int]   # frames, resolution, batch of the MFU table
    scaling: dict                     # scaling.run's sizes (frames, fixed_resolution, resolutions, ...)


MODES = {
    "full": Settings(repeats=5, peak_sizes=(1024, 2048), fit_sizes="8x32,16x32,32x32,16x64", fit_batch=2,
                     window_grids=window_attention.GRIDS, window_model=window_attention.MODEL,
                     mfu_shape=(16, 32, 4), scaling=scaling.FULL),
    "quick": Settings(repeats=1, peak_sizes=(1024,), fit_sizes="4x16", fit_batch=2,
                      window_grids=window_attention.QUICK_GRIDS, window_model=window_attention.QUICK_MODEL,
                      mfu_shape=(4, 16, 2), scaling=scaling.QUICK),
    # for the tests: the smallest sizes at which every code path still runs
    "tiny": Settings(repeats=1, peak_sizes=(256,), fit_sizes="2x16", fit_batch=1,
                     window_grids=[(2, 8, 8)], window_model=(16, 1, 2), mfu_shape=(2, 16, 1),
                     scaling=dict(scaling.QUICK, frames=(1, 2), fixed_frames=1)),
}


def section(title: str, body: Callable[[], str]) -> str:
    """'## title' and ``body()``'s markdown, or the error it raised in its place."""
    t0 = time.time()
    text = attempt(body)
    print(f"  section {title!r}: {time.time() - t0:.0f} s", file=sys.stderr)
    return f"## {title}\n\n{text}\n"


def machine_section(s: Settings) -> Tuple[str, dict]:
    """The machine line, the load average and the matmul peaks table; also returns the peaks for MFU."""
    busy = busy_warning()
    peaks = {dtype: attempt(matmul_peak_gflops, TORCH_DTYPE[dtype], s.peak_sizes, max(3, s.repeats))
             for dtype in DTYPES}
    conv = {dtype: fmt(attempt(conv_gflops, TORCH_DTYPE[dtype], repeats=max(3, s.repeats)), ".0f") for dtype in DTYPES}
    text = (f"{machine_line()}\n\n{load_average()} (before)\n\n{busy + chr(10) if busy else ''}"
            f"Square n x n matmuls (`torch.mm`), n in {', '.join(map(str, s.peak_sizes))}, best median rate "
            f"(2 n^3 FLOPs per matmul); MFU below is measured against these:\n\n{peak_table(peaks)}\n\n"
            f"For context, a 3x3 convolution (64 -> 64 channels, 16 x 32x32 maps; oneDNN, not the BLAS behind "
            f"`torch.mm`) runs at {', '.join(f'{d} {conv[d]}' for d in DTYPES)} GFLOP/s: where it outruns the "
            f"matmul, a convolution-heavy model can show an MFU near or above 100%.")
    return text, peaks


def busy_warning() -> str:
    """A warning if the 1-minute load average says other processes hold cores that torch's threads need."""
    try:
        load, cores, threads = os.getloadavg()[0], os.cpu_count() or 1, torch.get_num_threads()
    except OSError:
        return ""
    if load <= cores - threads + 0.5:
        return ""
    return (f"**warning:** load average {load:.1f} with {threads} torch thread(s) on {cores} cores: other processes "
            f"compete for the cores, so the times below are inflated and noisy (threads that wait for each other "
            f"suffer most); rerun on a quiet machine, or with fewer --threads.\n")


def fit_section(s: Settings) -> str:
    return (f"Snap Video's comparison (Table 2) at toy size: FIT = `bouncing_balls_fit`; U-Net = Table 7's 284M "
            f"ADM U-Net with temporal attention, narrowed to {fit_vs_unet.UNET_WIDTH} channels. One training step "
            f"(forward + backward + AdamW) and one inference call, bf16 autocast, batch {s.fit_batch}, median of "
            f"{s.repeats} after a warm-up; speed-up = U-Net ms / FIT ms.\n\n"
            + fit_vs_unet.run(s.fit_sizes, s.fit_batch, s.repeats, "bf16"))


def window_section(s: Settings) -> str:
    dim, depth, heads = s.window_model
    return (f"WALT backbone, {depth} blocks x {dim} wide, {heads} heads, patch 1, batch 2; training step = "
            f"loss forward + backward, median of {s.repeats} after a warm-up; peak = bytes allocated by PyTorch "
            f"during the step (`window_attention.peak_allocated_bytes`). windows = W.A.L.T's layout; "
            f"time / windows = how many times more steps/s the windows give.\n\n"
            + window_attention.run(s.window_grids, DTYPES, s.repeats, dim, depth, heads))


def mfu_section(s: Settings, peaks: dict) -> str:
    """ms per video and MFU of every backbone's training step in fp32 and bf16 at ``s.mfu_shape``."""
    frames, resolution, batch = s.mfu_shape
    rows = []
    for backbone in BACKBONES:
        r = scaling.measure_backbone(backbone, frames, resolution, batch, DTYPES, s.repeats)
        row = [backbone, fmt(r["params"], ".2f"), fmt(derive(lambda f: f / 1e9, r["fp32"]["flops"]), ".3g")]
        for dtype in DTYPES:
            gflops = derive(lambda f, ms: f / ms / 1e6, r[dtype]["flops"], r[dtype]["ms"])  # achieved GFLOP/s
            row += [derive(fmt_ms, r[dtype]["ms"]), fmt(gflops, ".1f"), mfu(gflops, peaks[dtype])]
        rows.append(row + [fmt(derive(lambda a, b: a / b, r["fp32"]["ms"], r["bf16"]["ms"]), ".2f")])
    peak_text = ", ".join(f"{dtype} {fmt(derive(lambda p: p['gflops'], peaks[dtype]), '.0f')}" for dtype in DTYPES)
    return (f"One training step as train.py runs it (loss forward + backward, grad clip, optimizer, EMA) on a "
            f"batch of {batch} RGB clips of {frames}x{resolution}x{resolution}, each backbone as its toy preset "
            f"(table in the Scaling section), median of {s.repeats} after a warm-up. GFLOP/video: matmuls, "
            f"convolutions and attention of forward + backward (FIT's includes its self-conditioning pass); "
            f"MFU = achieved GFLOP/s / the matmul peak of the same dtype (GFLOP/s: {peak_text}).\n\n"
            + markdown_table(["backbone", "params (M)", "GFLOP/video", "fp32 ms/video", "fp32 GFLOP/s", "fp32 MFU",
                              "bf16 ms/video", "bf16 GFLOP/s", "bf16 MFU", "bf16 speed-up"], rows))


def run_suite(mode: str, out: Path, command: str, repeats: int = 0) -> str:
    """Run every section in ``mode`` (a key of ``MODES``; ``repeats`` > 0 replaces its repeats), print each,
    write ``out/suite.md``; return the markdown."""
    s, t0 = MODES[mode], time.time()
    s = replace(s, repeats=repeats) if repeats > 0 else s
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# nano-videodiff benchmark suite{'' if mode == 'full' else f' [{mode}: format check only]'}\n\n"
             f"command: `{command}`\n"]

    def emit(text: str) -> None:
        parts.append(text)
        print(text, flush=True)

    print(parts[0], flush=True)
    machine = attempt(machine_section, s)
    peaks = {dtype: machine for dtype in DTYPES} if isinstance(machine, Error) else machine[1]
    emit(section(SECTIONS[0], lambda: machine if isinstance(machine, Error) else machine[0]))
    emit(section(SECTIONS[1], lambda: fit_section(s)))
    emit(section(SECTIONS[2], lambda: window_section(s)))
    emit(section(SECTIONS[3], lambda: mfu_section(s, peaks)))
    emit(section(SECTIONS[4], lambda: scaling.run(**s.scaling, repeats=s.repeats,
                                                   dtype=resolve_dtype("auto", torch.device("cpu")).name,
                                                   png=out / "scaling.png")))
    emit(f"{load_average()} (after; {time.time() - t0:.0f} s in all, {torch.get_num_threads()} torch thread(s))\n")
    text = "\n".join(parts)
    (out / "suite.md").write_text(text)
    print(f"written: {out / 'suite.md'}, {out / 'scaling.png'}", file=sys.stderr)
    return text


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the format in < 1 min")
    p.add_argument("--tiny", action="store_true", help="even smaller than --quick (the tests use it)")
    p.add_argument("--out", default="benchmarks/out/suite", help="folder for suite.md and scaling.png")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=0, help="timed calls per measurement (default: 5, quick: 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    command = " ".join(["python benchmarks/suite.py"] + list(sys.argv[1:] if argv is None else argv))
    return run_suite(mode, Path(args.out), command, args.repeats)


if __name__ == "__main__":
    main()
