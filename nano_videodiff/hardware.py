"""The machine a run is on: which device (``--device=auto``) and which precision (``--dtype=auto``) is fast.

Mixed precision (bf16 autocast, fp32 master weights) is a speed-up only on hardware with bf16 matrix
units: CUDA GPUs from Ampere on, and CPUs with AVX-512-BF16 or AMX. On a CPU with only AVX2 (most laptops
and many cloud VMs) PyTorch has no fast bf16 matmul and emulates it: a 1024 x 1024 matmul ran at
0.8 GFLOP/s in bf16 against 28.9 in fp32 on such a machine, so a "bf16 by default" run is ~30x slower.

The decision, in order:

1. ``--dtype=bf16|fp16|fp32`` forces a choice.
2. CUDA: bf16 if the GPU supports it (``torch.cuda.is_bf16_supported``), else fp32.
3. Apple MPS and other devices: fp32.
4. CPU: fp32 unless the CPU reports AVX-512-BF16 or AMX; if it does, a tiny matmul probe (a few
   milliseconds, run once per process) must confirm that bf16 really is faster than fp32 here. The probe
   catches what flags cannot: kernels restricted by ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA``, or a
   virtual machine that reports the flag but traps the instructions.

The same verdict decides ``layers.attention``'s CPU special case (explicit bf16 matmuls for short
sequences), which only pays off where bf16 matmuls are fast.

    choice = resolve_dtype("auto", torch.device("cpu"))
    print(choice)   # "fp32 (auto: no AVX-512-BF16 or AMX on this CPU, bf16 matmuls would be slow)"
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .errors import UserError

DTYPE_NAMES = ("auto", "bf16", "fp16", "fp32")
PROBE_SIZE = 256          # the probe's square matmul: 33 MFLOP, milliseconds in either dtype where bf16 is fast
PROBE_REPEATS = 5         # the probe keeps the fastest of this many runs (robust to a busy machine)
PROBE_MIN_SPEEDUP = 1.1   # bf16 must beat fp32 by this factor to be chosen

_cpu_verdict: Optional[Tuple[bool, str]] = None  # cached (bf16 is fast, why) for this process


@dataclass(frozen=True)
class Precision:
    """The precision a run uses (``name`` in bf16 | fp16 | fp32) and why it was chosen."""
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def cpu_has_bf16_units() -> bool:
    """True if the CPU reports AVX-512-BF16 or AMX, the instructions behind fast bf16 matmuls."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def matmul_seconds(dtype: torch.dtype, n: int = PROBE_SIZE, repeats: int = PROBE_REPEATS) -> float:
    """The fastest of ``repeats`` timings of an n x n @ n x n matmul in ``dtype`` on the CPU (after a warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up: oneDNN builds its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best


def _decide_cpu() -> Tuple[bool, str]:
    if not cpu_has_bf16_units():
        return False, "no AVX-512-BF16 or AMX on this CPU, bf16 matmuls would be slow"
    fp32, bf16 = matmul_seconds(torch.float32), matmul_seconds(torch.bfloat16)
    speedup = fp32 / bf16
    if speedup >= PROBE_MIN_SPEEDUP:
        return True, f"CPU has bf16 units and a probe matmul ran {speedup:.1f}x faster in bf16"
    return False, f"CPU reports bf16 units, but a probe matmul ran at {speedup:.2f}x fp32 speed in bf16"


def cpu_bf16_is_fast() -> Tuple[bool, str]:
    """(bf16 matmuls beat fp32 on this CPU, the reason), decided once per process and then cached."""
    global _cpu_verdict
    if _cpu_verdict is None:
        _cpu_verdict = _decide_cpu()
    return _cpu_verdict


def explicit_bf16_attention() -> bool:
    """Whether ``layers.attention`` may write short bf16 attention out as matmuls on this CPU.

    Reads the cached verdict (``resolve_dtype`` computes it before any model runs, so nothing is measured
    inside a compiled graph); an unmeasured process answers False, the always-correct fused kernel."""
    return _cpu_verdict is not None and _cpu_verdict[0]


def pick_device(name: str = "auto") -> torch.device:
    """``--device``: a name as given (cpu, cuda, cuda:1, mps), or for "auto" CUDA, then Apple MPS, then the CPU."""
    if name != "auto":
        return _existing_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list:
    """The device names that work here, e.g. ["cpu", "cuda:0", "cuda:1"]."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *cuda, *(["mps"] if torch.backends.mps.is_available() else [])]


def _existing_device(name: str) -> torch.device:
    """``torch.device(name)`` if this machine has it. PyTorch itself only finds out at the first tensor, after the
    data and the model were built, with "Found no NVIDIA driver"; we check first and name what there is."""
    here = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device={name} is not a device name; devices here: {here} (or auto)") from None
    index = 0 if device.index is None else device.index
    exists = {"cpu": True, "meta": True,
              "cuda": torch.cuda.is_available() and index < torch.cuda.device_count(),
              "mps": torch.backends.mps.is_available()}.get(device.type, False)
    if not exists:
        raise UserError(f"--device={name}: there is no such device on this machine; devices here: {here}. "
                        "Pass one of them, or --device=auto")
    return device


def resolve_dtype(name: str, device: torch.device) -> Precision:
    """``--dtype`` (auto | bf16 | fp16 | fp32) -> the precision to run at on ``device``, with the reason."""
    if name not in DTYPE_NAMES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    device = torch.device(device)
    if device.type == "cpu" and name in ("auto", "bf16"):
        fast, why = cpu_bf16_is_fast()  # also decides layers.attention's bf16 path
    if name != "auto":
        return Precision(name, "set by --dtype")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "auto: this GPU has bf16 support")
        return Precision("fp32", "auto: this GPU has no bf16 support")
    if device.type != "cpu":
        return Precision("fp32", f"auto: mixed precision is not chosen automatically on {device.type}")
    return Precision("bf16" if fast else "fp32", f"auto: {why}")
