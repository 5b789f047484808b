"""Snap Video's speed claim, measured here: FIT vs its U-Net baseline at the same resolution.

Snap Video Table 2 (A100, 64x36, 16 frames): FIT 500M trains at 69.5 ms/video and infers at 23.4 ms/video,
the 284M U-Net at 230.3 and 105.1: 3.31x faster training, 4.49x faster inference, because FIT's heavy
compute runs on a fixed number of latent tokens while the U-Net works on every pixel.

The baseline is the paper's (Sec. 4.3, Table 7): "the ADM U-Net ... adapted to the video generation setting
by interleaving temporal attention operations", trained end to end, here ``temporal_alignment.unet_baseline``
(``unet.UNet`` + a temporal attention layer after each spatial attention layer) with Table 7's 284M
architecture (channel multipliers 1,2,3,4, two residual blocks per level, attention at 1/2, 1/4 and 1/8 of
the frame size, scale-shift norm, dropout 0.1) scaled down in width to about FIT's toy size. FIT is the
``bouncing_balls_fit`` preset.

For each clip size (frames x pixels) both backbones are timed for one training step (forward + backward +
AdamW, like train.py) and one inference network evaluation, in bf16 autocast on this CPU. Printed: ms per
video and the U-Net/FIT ratios (the paper's "x faster").

    python benchmarks/fit_vs_unet.py                 # a few minutes on 2 CPU cores
    python benchmarks/fit_vs_unet.py --dtype=fp32 --batch_size=8
    python benchmarks/fit_vs_unet.py --quick         # seconds: tiny clips, one repeat (a smoke test)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from nano_videodiff.hardware import resolve_dtype

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (attempt, derive, fmt, load_average, machine_line,  # noqa: E402
                               markdown_table, time_ms)
from nano_videodiff.conditioning import Batch, Cond  # noqa: E402
from nano_videodiff.training.presets import get_preset  # noqa: E402
from nano_videodiff.edm import Denoiser  # noqa: E402
from nano_videodiff.models import build_denoiser, count_parameters, resolved_sigma_in  # noqa: E402
from nano_videodiff.backbones.temporal_alignment import unet_baseline  # noqa: E402
from nano_videodiff.backbones.unet import unet_config  # noqa: E402

PAPER = {"train": 230.3 / 69.5, "inference": 105.1 / 23.4}  # Snap Video Table 2, U-Net 284M vs FIT 500M


UNET_WIDTH = 16  # base channels (Table 7: 192); with 64 head channels -> 16 here: ~2.0M parameters at 32 px


def unet_kwargs(resolution: int) -> dict:
    """Table 7's 284M U-Net, narrower: attention at [32, 16, 8] of 64 px = 1/2, 1/4, 1/8 of the frame."""
    kwargs = unet_config("unet_284m")
    kwargs.update(channels=UNET_WIDTH, head_channels=UNET_WIDTH, emb_dim=4 * UNET_WIDTH, image_size=resolution,
                  attn_resolutions=(resolution // 2, resolution // 4, resolution // 8))
    return kwargs


def build(backbone: str, frames: int, resolution: int):
    cfg = get_preset("bouncing_balls_fit" if backbone == "fit" else "bouncing_balls")
    cfg.data.num_frames, cfg.data.height, cfg.data.width = frames, resolution, resolution
    torch.manual_seed(0)
    if backbone == "fit":  # keep 4 groups of all frames x a quarter of the patch grid
        cfg.model.fit_group_h = cfg.model.fit_group_w = max(1, resolution // cfg.model.patch_size // 2)
        return build_denoiser(cfg), cfg
    d = cfg.diffusion
    return Denoiser(unet_baseline(**unet_kwargs(resolution)), sigma_data=d.sigma_data,
                    sigma_in=resolved_sigma_in(cfg), P_mean=d.P_mean, P_std=d.P_std), cfg


def measure(backbone: str, frames: int, resolution: int, batch_size: int, repeats: int, dtype: str) -> dict:
    """ms per video of one training step and one inference call (medians of ``repeats`` after a warm-up)."""
    model, cfg = build(backbone, frames, resolution)
    B = batch_size
    x = torch.rand(B, frames, 3, resolution, resolution) * 2 - 1
    cond = Cond(frame_interval=torch.full((B,), 1 / 8))
    sigma, noise = torch.full((B,), 0.5), torch.randn_like(x)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = dict(device_type="cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")

    def train_step():
        with torch.autocast(**amp):
            loss = model.loss(Batch(x, cond, sigma=sigma, noise=noise, self_cond_draw=torch.zeros(B)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def inference():
        with torch.autocast(**amp):
            model(x, sigma, cond)

    model.train()
    train_ms = attempt(time_ms, train_step, repeats=repeats, warmup=1)
    model.eval()
    infer_ms = attempt(time_ms, inference, repeats=repeats, warmup=1)
    return {"params": count_parameters(model.backbone) / 1e6,
            "train": derive(lambda t: t["median"] / B, train_ms),
            "infer": derive(lambda t: t["median"] / B, infer_ms)}


def run(sizes: str, batch_size: int, repeats: int, dtype: str) -> str:
    """The comparison table for ``sizes`` ("frames x pixels", comma separated) and the paper's ratios."""
    rows = []
    for size in sizes.split(","):
        frames, resolution = (int(v) for v in size.split("x"))
        fit = measure("fit", frames, resolution, batch_size, repeats, dtype)
        unet = measure("unet", frames, resolution, batch_size, repeats, dtype)
        rows.append([f"{frames}x{resolution}x{resolution}", fmt(unet["params"], ".2f"), fmt(fit["params"], ".2f"),
                     fmt(unet["train"]), fmt(fit["train"]),
                     fmt(derive(lambda a, b: a / b, unet["train"], fit["train"]), ".2f"),
                     fmt(unet["infer"]), fmt(fit["infer"]),
                     fmt(derive(lambda a, b: a / b, unet["infer"], fit["infer"]), ".2f")])
    return (markdown_table(["clip (T x H x W)", "U-Net params (M)", "FIT params (M)", "U-Net train ms/video",
                            "FIT train ms/video", "train speed-up", "U-Net infer ms/video", "FIT infer ms/video",
                            "inference speed-up"], rows)
            + f"\n\nSnap Video (A100, FIT 500M vs U-Net 284M): train speed-up {PAPER['train']:.2f}x, "
              f"inference {PAPER['inference']:.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="8x32,16x32,16x64,32x32", help="frames x pixels, comma separated")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 where bf16 matmuls are fast (nano_videodiff/hardware.py), else fp32")
    p.add_argument("--quick", action="store_true", help="tiny clips (4x16), batch 2, one repeat: a smoke test")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.batch_size, args.repeats = "4x16", 2, 1
    torch.set_num_threads(torch.get_num_threads())
    args.dtype = resolve_dtype(args.dtype, torch.device("cpu")).name
    print(machine_line())
    print(f"{load_average()}; dtype {args.dtype}; batch {args.batch_size}; median of {args.repeats} runs\n")
    print(run(args.sizes, args.batch_size, args.repeats, args.dtype))


if __name__ == "__main__":
    main()
