"""The paper presets at the papers' input shapes, for GPU owners: step time, peak memory and MFU per preset,
and Snap Video's FIT-vs-U-Net comparison at its shapes.

For each preset of ``training/paper_configs.py`` the network that learns (the backbone on its pixel or
latent input, or W.A.L.T's stage-1 autoencoder) trains for a few steps as train.py runs it at scale: bf16
autocast, activation checkpointing, AdamW/LAMB. Printed: ms per step, peak memory (CUDA's allocator peak;
on a CPU the process's peak resident memory so far), model FLOPs per video (``training/planner.py``) and MFU
against the device's dense bf16 peak (A100/H100 by name; elsewhere a measured matmul peak), and the
planner's memory estimate beside the measurement.

Snap Video Table 2 (A100, 16 x 36 x 64 frames, padded to 40 x 64): FIT 500M trains at 69.5 ms/video and
infers at 23.4, the 284M U-Net at 230.3 and 105.1: 3.31x and 4.49x. ``--comparison`` times both presets'
networks the same way (training step; one inference call without gradient).

    python benchmarks/paper_scale.py                              # a CUDA GPU: every preset, full size
    torchrun --nproc_per_node=8 benchmarks/paper_scale.py --fsdp  # FSDP2 over 8 GPUs, batch per GPU
    python benchmarks/paper_scale.py --reduced                    # any CPU: the reduced presets (seconds)
    python benchmarks/paper_scale.py --presets=vdt_s2,walt_l --batch_size=4 --steps=5 --out=paper_scale.md

Without CUDA the default is ``--reduced`` (the shape-preserving narrow presets of ``paper_configs.reduced``:
the code paths of a full run, not its numbers). Options: --presets (comma separated), --batch_size (per
device; default 1), --steps (timed; after one warm-up), --comparison=false, --fsdp, --out.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (attempt, derive, fmt, load_average, machine_line, markdown_table,  # noqa: E402
                               matmul_peak_gflops, parse_simple_args)
from nano_videodiff.training import planner  # noqa: E402
from nano_videodiff.training.distributed import apply_activation_checkpointing, wrap_for_training  # noqa: E402
from nano_videodiff.training.optim import build_optimizer  # noqa: E402
from nano_videodiff.training.paper_configs import PAPER_PRESETS, reduced  # noqa: E402
from nano_videodiff.training.presets import get_preset  # noqa: E402

PAPER = {"train": 230.3 / 69.5, "inference": 105.1 / 23.4}  # Snap Video Table 2: U-Net 284M / FIT 500M
COMPARED = ("unet_284m", "snapvideo_500m")


def device_peak(device: torch.device) -> tuple:
    """(dense bf16 FLOP/s, where the number comes from) of ``device``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for accelerator, (peak, _) in planner.ACCELERATORS.items():
            if accelerator.split()[0] in name:
                return peak, f"{accelerator} data sheet"
    return matmul_peak_gflops(torch.bfloat16, sizes=(1024,), repeats=3)["gflops"] * 1e9, "measured bf16 matmul peak"


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: kilobytes


def preset_config(name: str, small: bool, batch: int, world: int):
    cfg = reduced(get_preset(name)) if small else get_preset(name)
    cfg.optim.batch_size, cfg.run.activation_checkpointing, cfg.run.dtype = batch * world, True, "bf16"
    return cfg


class Step(torch.nn.Module):
    """The network's training loss as a module's forward, so that FSDP's hooks see the whole step."""

    def __init__(self, network, cfg):
        super().__init__()
        self.network, self.cfg = network, cfg

    def forward(self, batch: int, device) -> torch.Tensor:
        return planner.network_forward(self.network, self.cfg, batch, "bf16", device)


def build(cfg, device, fsdp: bool):
    """(network, step module, optimizer) as train.py builds them: checkpointing, then FSDP, then the optimizer."""
    torch.manual_seed(0)
    network = planner.build_network(cfg).to(device)
    attempt(apply_activation_checkpointing, network)  # a network without a "...blocks" list stays plain
    step = Step(network, cfg)
    step = wrap_for_training(step, "fsdp", device) if fsdp else step
    return network, step, build_optimizer([p for p in network.parameters() if p.requires_grad], cfg.optim)


def timed(fn, steps: int, device) -> float:
    """Median ms of ``fn()`` over ``steps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def measure_preset(name: str, small: bool, batch: int, steps: int, device, fsdp: bool, peak: float) -> dict:
    world = dist.get_world_size() if fsdp else 1
    cfg = preset_config(name, small, batch, world)
    network, module, optimizer = build(cfg, device, fsdp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        module(batch, device).backward()
        optimizer.step()
    ms = timed(step, steps, device)
    flops = planner.training_flops(cfg)
    plan = planner.plan(cfg, world)
    return {"params": sum(p.numel() for p in network.parameters()) / 1e6, "ms": ms,
            "peak_gb": peak_memory_gb(device), "planned_gb": plan["fsdp" if fsdp else "ddp"] / 1e9,
            "mfu": flops * batch / (ms * 1e-3) / peak}


def inference_ms(name: str, small: bool, batch: int, steps: int, device) -> float:
    cfg = preset_config(name, small, batch, 1)
    torch.manual_seed(0)
    network = planner.build_network(cfg).to(device).eval()
    x, c_noise, cond = planner.synthetic_inputs(cfg, batch, device)

    @torch.no_grad()
    def call():
        with planner.autocast("bf16", device):
            network(x, c_noise, cond)
    return timed(call, steps, device)


def run(names, small: bool, batch: int, steps: int, comparison: bool, fsdp: bool, device) -> str:
    peak, source = device_peak(device)
    rows = []
    for name in names:
        r = attempt(measure_preset, name, small, batch, steps, device, fsdp, peak)
        rows.append([name, fmt(derive(lambda v: v["params"], r), ".1f"), fmt(derive(lambda v: v["ms"], r), ".0f"),
                     fmt(derive(lambda v: v["peak_gb"], r), ".2f"), fmt(derive(lambda v: v["planned_gb"], r), ".2f"),
                     fmt(derive(lambda v: 100 * v["mfu"], r), ".1f")])
    world = dist.get_world_size() if fsdp else 1
    text = [f"## Paper presets ({'reduced' if small else 'full size'}, batch {batch} per device, {world} "
            f"device(s){', FSDP2' if fsdp else ''}, bf16, activation checkpointing)",
            markdown_table(["preset", "params (M)", "ms / step", "peak memory (GB)", "planned (GB)", "MFU %"], rows),
            f"\nMFU against {peak / 1e12:.3g} TFLOP/s ({source})."]
    if comparison:
        text += ["", "## Snap Video: FIT 500M vs the 284M U-Net (Table 2)", comparison_table(small, batch, steps,
                                                                                             device, fsdp, peak)]
    return "\n".join(text)


def comparison_table(small: bool, batch: int, steps: int, device, fsdp: bool, peak: float) -> str:
    train = {n: attempt(measure_preset, n, small, batch, steps, device, fsdp, peak) for n in COMPARED}
    infer = {n: attempt(inference_ms, n, small, batch, steps, device) for n in COMPARED}
    train_ms = {n: derive(lambda v: v["ms"] / batch, r) for n, r in train.items()}
    infer_ms = {n: derive(lambda v: v / batch, r) for n, r in infer.items()}
    unet, fit = COMPARED
    rows = [["training", fmt(train_ms[unet]), fmt(train_ms[fit]),
             fmt(derive(lambda a, b: a / b, train_ms[unet], train_ms[fit]), ".2f"), f"{PAPER['train']:.2f}"],
            ["inference", fmt(infer_ms[unet]), fmt(infer_ms[fit]),
             fmt(derive(lambda a, b: a / b, infer_ms[unet], infer_ms[fit]), ".2f"), f"{PAPER['inference']:.2f}"]]
    return markdown_table(["ms / video", "U-Net 284M", "FIT 500M", "speed-up", "paper (A100)"], rows)


def main(argv=None) -> str:
    parsed = parse_simple_args(sys.argv[1:] if argv is None else argv, __doc__)
    if parsed is None:
        return ""
    _, options = parsed
    fsdp = options.pop("fsdp", "false") == "true"
    if fsdp:  # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else \
        torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    small = options.pop("reduced", "false" if device.type == "cuda" else "true") == "true"
    names = options.pop("presets", ",".join(PAPER_PRESETS)).split(",")
    batch, steps = int(options.pop("batch_size", 1)), int(options.pop("steps", 2))
    comparison = options.pop("comparison", "true") == "true"
    out = options.pop("out", "")
    if options:
        raise SystemExit(f"unknown options: {', '.join(options)} (see --help)")
    text = "\n".join([f"# Paper presets at scale\n\ncommand: `python benchmarks/paper_scale.py "
                      f"{' '.join(sys.argv[1:] if argv is None else argv)}`", machine_line(), load_average(), "",
                      run(names, small, batch, steps, comparison, fsdp, device)]) + "\n"
    master = not fsdp or dist.get_rank() == 0
    if master:
        print(text)
        if out:
            Path(out).write_text(text)
    if fsdp:
        dist.destroy_process_group()
    return text


if __name__ == "__main__":
    main()
