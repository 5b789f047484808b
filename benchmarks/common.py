"""Shared helpers for the benchmark scripts: machine description, timing, matmul peak, FLOPs, tables.

- ``time_ms(fn)``: ``warmup`` untimed calls, then ``repeats`` timed calls (``time.perf_counter``); returns
  the median, min and max in milliseconds. The median resists the spikes caused by other processes on a
  shared machine; print ``load_average()`` next to the numbers so readers can judge how busy it was.
- ``matmul_peak_gflops(dtype)``: square n x n matmuls (2 n^3 flops each) over a few sizes, best median
  GFLOP/s: the practical ceiling of this machine that MFU (model FLOP utilisation) is measured against.
- ``count_flops(fn)``: ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention,
  2 flops per multiply-add, forward and backward; elementwise ops are not counted). PyTorch's counter does
  not know the CPU attention kernel (it counts 0 flops for it), so its formula is added here, as model
  FLOPs (backward = 2 x forward, without the recomputation that PyTorch's GPU formulas include), so the
  fused kernel and explicit matmuls count the same.
- ``attempt`` / ``derive`` / ``fmt``: a failed measurement becomes an ``Error`` that prints as
  "error: ..." in its table cell, so a benchmark always prints its tables.
- ``over_seeds`` / ``spread``: a training benchmark's ``--seeds=0,1,2`` runs each row once per training
  seed and prints mean ± std over seeds, so a table says when a difference between rows is noise.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
from torch.utils import flop_counter

from nano_videodiff.training.config import split_args
from nano_videodiff.training.planner import CPU_ATTENTION  # the CPU attention kernel's FLOPs


class Error(str):
    """A failed measurement; a str so that it can go straight into a table cell."""


def attempt(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, or an ``Error`` describing the exception."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # a benchmark prints "error: ..." rather than stopping
        return Error(f"error: {type(e).__name__}: {e}".replace("|", "/").replace("\n", " ")[:160])


def derive(fn: Callable, *values):
    """``fn(*values)`` unless one of the values is an Error (then that Error is passed on)."""
    for v in values:
        if isinstance(v, Error):
            return v
    return attempt(fn, *values)


def fmt(value, spec: str = ".1f") -> str:
    return value if isinstance(value, str) else format(value, spec)


def fmt_ms(ms: float) -> str:
    """Milliseconds with one decimal below 100 ms, none above."""
    return f"{ms:.{1 if ms < 100 else 0}f}"


# ---- the machine -------------------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_matrix_features() -> str:
    """The CPU flags that decide bf16/fp32 matmul speed (AMX, AVX-512 BF16, AVX-512, AVX2)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = set(next(ln for ln in text.splitlines() if ln.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "flags unknown"
    found = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return ", ".join(found) or "no AVX2"


def machine_line() -> str:
    return (f"machine: {cpu_name()} ({cpu_matrix_features()}), {os.cpu_count()} cores, "
            f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}")


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average (1/5/15 min): {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} cores"
    except OSError:
        return "load average: unavailable"


# ---- timing ------------------------------------------------------------------------------------------

def time_ms(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> dict:
    """Median, min and max wall time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def matmul_peak_gflops(dtype: torch.dtype, sizes: Sequence[int] = (1024, 2048), repeats: int = 5) -> dict:
    """Best over ``sizes`` of the median GFLOP/s of an n x n @ n x n matmul in ``dtype`` (2 n^3 flops)."""
    best = {"gflops": 0.0, "n": 0}
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        ms = time_ms(lambda: torch.mm(a, b), repeats=repeats, warmup=2)["median"]
        gflops = 2 * n**3 / (ms * 1e-3) / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "n": n}
    return best


def conv_gflops(dtype: torch.dtype, channels: int = 64, size: int = 32, batch: int = 16, repeats: int = 5) -> float:
    """Median GFLOP/s of a 3x3 convolution, ``channels`` -> ``channels`` on ``batch`` x ``size`` x ``size`` maps
    (2 * 9 C^2 H W B FLOPs), in ``dtype``. PyTorch runs convolutions with oneDNN, not the BLAS library behind
    ``torch.mm``, and the two need not reach the same rate: context for MFU values near or above 100%."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(dtype)
    x = torch.randn(batch, channels, size, size).to(dtype)
    with torch.no_grad():
        ms = time_ms(lambda: conv(x), repeats=repeats, warmup=2)["median"]
    return 2 * 9 * channels**2 * size**2 * batch / (ms * 1e-3) / 1e9


def peak_table(peaks: dict) -> str:
    """Markdown table of ``matmul_peak_gflops`` results, {dtype name: result (or an Error)}."""
    rows = [[name, fmt(derive(lambda p: p["n"], peak), "d"), fmt(derive(lambda p: p["gflops"], peak), ".0f")]
            for name, peak in peaks.items()]
    return markdown_table(["matmul peak", "best n", "GFLOP/s"], rows)


def mfu(gflops, peak) -> str:
    """Model FLOPs utilisation: achieved GFLOP/s as a percentage of a ``matmul_peak_gflops`` result."""
    return derive(lambda a, p: f"{100 * a / p['gflops']:.1f}%", gflops, peak)


# ---- FLOPs -------------------------------------------------------------------------------------------

def count_flops(fn: Callable[[], object], by_op: bool = False):
    """Matmul/conv/attention FLOPs of one call of ``fn()`` (the call really runs); with ``by_op`` a dict
    {aten op name: FLOPs}, which also tells which kernels ran."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn()
    if by_op:
        return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops()


# ---- training seeds ----------------------------------------------------------------------------------

def parse_seeds(text: str) -> List[Optional[int]]:
    """``"0,1,2"`` -> [0, 1, 2]; ``""`` -> [None] (one run with the preset's own seed)."""
    seeds = [int(x) for x in text.split(",") if x.strip()]
    return seeds or [None]


def over_seeds(run: Callable[[Optional[int]], dict], seeds: Sequence[Optional[int]], keys: Sequence[str]) -> dict:
    """``run(seed)`` for every seed; the first run's dict with each of ``keys`` replaced by (mean, std over
    seeds) (std 0 for one seed) and "seeds"; a run that returns or raises an error makes the row an error."""
    from nano_videodiff.evaluation.stats import seed_spread
    outs = []
    for seed in seeds:
        try:
            outs.append(run(seed))
        except Exception as e:  # a benchmark reports, it does not fail
            outs.append({"error": repr(e)})
        if "error" in outs[-1]:
            return outs[-1]
    combined = dict(outs[0], seeds=len(outs))
    for key in keys:
        if key in outs[0]:
            combined[key] = seed_spread([o[key] for o in outs])
    return combined


def spread(value, spec: str) -> str:
    """(mean, std) over seeds as "mean ± std" (just the mean for one seed)."""
    mean, std = value
    return f"{mean:{spec}} ± {std:{spec}}" if std else f"{mean:{spec}}"


# ---- tables ------------------------------------------------------------------------------------------

def markdown_table(headers: Sequence[str], rows: List[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_simple_args(argv, doc: str):
    """``--quick`` and ``--key=value`` options of the small benchmark scripts: (quick, {key: value}), or
    None after printing ``doc`` for -h/--help."""
    options, wants_help = split_args(argv)  # the one --key=value parser (config.py)
    if wants_help:
        print(doc)
        return None
    return options.pop("quick", "false") == "true", options
