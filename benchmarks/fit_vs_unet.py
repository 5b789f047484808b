"""Snap Video's speed claim, measured here: FIT vs a pixel-token baseline at the same resolution.

Snap Video Table 2 (A100, 64x36, 16 frames): FIT 500M trains at 69.5 ms/video and infers at 23.4 ms/video,
the 284M U-Net at 230.3 and 105.1: 3.31x faster training, 4.49x faster inference, because FIT's heavy
compute runs on a fixed number of latent tokens while the U-Net (and any transformer over all patch
tokens) works on every pixel. The U-Net baseline arrives with issue #8 (Video LDM); until then the
baseline is the space-time transformer VDT (``vdt.py``), which, like the U-Net, computes on all tokens.

For each clip size (frames x pixels) both backbones, at a similar parameter count, are timed for one
training step (forward + backward + AdamW, like train.py) and one inference network evaluation, in bf16
autocast on this CPU. Printed: ms per video and the VDT/FIT ratios (the paper's "x faster").

    python benchmarks/fit_vs_unet.py                 # ~2-3 minutes on 2 CPU cores
    python benchmarks/fit_vs_unet.py --dtype=fp32 --batch_size=8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (attempt, derive, fmt, load_average, machine_line,  # noqa: E402
                               markdown_table, time_ms)
from nano_videodiff.conditioning import Cond  # noqa: E402
from nano_videodiff.config import get_preset  # noqa: E402
from nano_videodiff.models import build_denoiser, count_parameters  # noqa: E402

PAPER = {"train": 230.3 / 69.5, "inference": 105.1 / 23.4}  # Snap Video Table 2, U-Net 284M vs FIT 500M


def build(backbone: str, frames: int, resolution: int):
    cfg = get_preset("bouncing_balls_fit" if backbone == "fit" else "bouncing_balls")
    cfg.data.num_frames, cfg.data.resolution = frames, resolution
    if backbone == "fit":  # keep 4 groups of all frames x a quarter of the patch grid
        cfg.model.fit_group_h = cfg.model.fit_group_w = max(1, resolution // cfg.model.patch_size // 2)
    torch.manual_seed(0)
    return build_denoiser(cfg), cfg


def measure(backbone: str, frames: int, resolution: int, args) -> dict:
    model, cfg = build(backbone, frames, resolution)
    B = args.batch_size
    x = torch.rand(B, frames, 3, resolution, resolution) * 2 - 1
    cond = Cond(frame_interval=torch.full((B,), 1 / 8))
    sigma, noise = torch.full((B,), 0.5), torch.randn_like(x)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = dict(device_type="cpu", dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def train_step():
        with torch.autocast(**amp):
            loss = model.loss(x, cond, sigma=sigma, noise=noise, self_cond_draw=torch.zeros(B))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def inference():
        with torch.autocast(**amp):
            model(x, sigma, cond)

    model.train()
    train_ms = attempt(time_ms, train_step, repeats=args.repeats, warmup=1)
    model.eval()
    infer_ms = attempt(time_ms, inference, repeats=args.repeats, warmup=1)
    return {"params": count_parameters(model.backbone) / 1e6,
            "train": derive(lambda t: t["median"] / B, train_ms),
            "infer": derive(lambda t: t["median"] / B, infer_ms)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="8x32,16x32,16x64,32x32", help="frames x pixels, comma separated")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(machine_line())
    print(f"{load_average()}; dtype {args.dtype}; batch {args.batch_size}; median of {args.repeats} runs\n")
    rows = []
    for size in args.sizes.split(","):
        frames, resolution = (int(v) for v in size.split("x"))
        fit = measure("fit", frames, resolution, args)
        vdt = measure("vdt", frames, resolution, args)
        rows.append([f"{frames}x{resolution}x{resolution}", fmt(vdt["params"], ".2f"), fmt(fit["params"], ".2f"),
                     fmt(vdt["train"]), fmt(fit["train"]), fmt(derive(lambda a, b: a / b, vdt["train"], fit["train"]), ".2f"),
                     fmt(vdt["infer"]), fmt(fit["infer"]), fmt(derive(lambda a, b: a / b, vdt["infer"], fit["infer"]), ".2f")])
    print(markdown_table(["clip (T x H x W)", "VDT params (M)", "FIT params (M)", "VDT train ms/video",
                          "FIT train ms/video", "train speed-up", "VDT infer ms/video", "FIT infer ms/video",
                          "inference speed-up"], rows))
    print(f"\nSnap Video (A100, FIT 500M vs U-Net 284M): train speed-up {PAPER['train']:.2f}x, "
          f"inference {PAPER['inference']:.2f}x")


if __name__ == "__main__":
    main()
