"""Remake docs/<name>_tasks.png: every VDT task from one masked checkpoint, stacked (docs/results.md).

    python docs/make_tasks_figure.py --ckpt=out/physion_collide_tasks/ckpt.pt --name=physion_collide

Runs ``sample.py`` once per task (2 held-out clips each, the same seed) and stacks their grid.png files;
prints each task's PSNR/SSIM over generated frames (from sample.py's metrics.json).
"""
import argparse
import json
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sample  # noqa: E402

TASKS = ["generate", "predict", "backward", "interpolate", "animate", "complete"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--name", required=True, help="writes docs/<name>_tasks.png")
    p.add_argument("--out", default="out/tasks_figure")
    p.add_argument("--num_videos", type=int, default=2)
    args = p.parse_args()
    grids = []
    for task in TASKS:
        out = Path(args.out) / task
        sample.main([f"--ckpt={args.ckpt}", f"--task={task}", f"--out_dir={out}", f"--num_videos={args.num_videos}",
                     "--overwrite"])
        grids.append(iio.imread(out / "grid.png"))
        if (out / "metrics.json").exists():
            m = json.loads((out / "metrics.json").read_text())
            print(f"{task}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}")
    width = max(g.shape[1] for g in grids)
    padded = [np.pad(g, ((0, 6), (0, width - g.shape[1]), (0, 0)), constant_values=255) for g in grids]
    path = ROOT / "docs" / f"{args.name}_tasks.png"
    iio.imwrite(path, np.concatenate(padded))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
