"""Helpers shared by the tutorials: quick mode, the output folder, matplotlib set-up, saving figures.

Every tutorial starts with ``from _common import QUICK, out_dir, save_figure`` (Python puts the script's
own folder on ``sys.path``, so this works from any working directory). Importing this module also puts the
repository root on ``sys.path``, so ``import train`` and ``import nano_videodiff`` work without installing.

Environment variables:
    NANO_VIDEODIFF_QUICK=1         tiny sizes and a handful of steps (the test suite: seconds per tutorial)
    NANO_VIDEODIFF_TUTORIAL_OUT=D  write figures to D/<number>/ instead of tutorials/out/<number>/
    NANO_VIDEODIFF_TRAIN=1         train the tutorial's model here instead of loading its shipped checkpoint
    OMP_NUM_THREADS=N              torch threads (default here: 1)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")  # no display needed; figures go to PNG files

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The tutorials' tensors are tiny: one thread is as fast as several, and it does not collapse when other
# jobs share the cores (two threads on two busy cores measured 20x slower per training step). Set
# OMP_NUM_THREADS to choose yourself.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

QUICK = os.environ.get("NANO_VIDEODIFF_QUICK", "0").strip().lower() not in ("", "0", "false", "no")


def out_dir(number: str) -> Path:
    """The (created) folder for tutorial ``number``'s outputs: tutorials/out/<number>/ by default."""
    base = os.environ.get("NANO_VIDEODIFF_TUTORIAL_OUT") or ROOT / "tutorials" / "out"
    path = Path(base) / number
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure to ``path``, close it and say where it went."""
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


def check(claim: str, held: bool, evidence: str) -> bool:
    """Print the check of a tutorial's claim and whether it held on this run, e.g.

    ``check("interval-0 samples are static", ratio < 0.3, f"frame-to-frame change {ratio:.0%} of the videos'")``
    prints ``CHECK interval-0 samples are static: HELD (frame-to-frame change 3% of the videos')``.
    """
    print(f"CHECK {claim}: {'HELD' if held else 'NOT HELD'} ({evidence})")
    return held


def shipped_checkpoint(name: str) -> Path:
    """``checkpoints/<name>.pt``, a pretrained toy model shipped with the repository (checkpoints/manifest.json
    names the command that trained it). Tutorials use it unless NANO_VIDEODIFF_TRAIN=1 asks to retrain."""
    from nano_videodiff.shipped import CHECKPOINTS
    return CHECKPOINTS / f"{name}.pt"


# NANO_VIDEODIFF_TRAIN=1: train the tutorial's model here (a fixed number of steps) instead of loading the shipped one.
TRAIN_HERE = os.environ.get("NANO_VIDEODIFF_TRAIN", "0").strip().lower() not in ("", "0", "false", "no")


def shipped_or_trained(name: str, train_argv: list):
    """(model, config, steps trained): the tutorial's shipped checkpoint ``checkpoints/<name>.pt`` when there is
    one, else (or with NANO_VIDEODIFF_TRAIN=1, or in quick mode) ``train.main(train_argv)``'s EMA model."""
    import time

    import train  # the training program itself, run as a function
    from nano_videodiff.training.checkpoint import load_checkpoint
    from nano_videodiff.models import load_model
    path = shipped_checkpoint(name)
    if path.exists() and not (QUICK or TRAIN_HERE):
        model, cfg = load_model(path)
        steps = load_checkpoint(path)["step"]
        print(f"loaded {path} ({steps} steps; NANO_VIDEODIFF_TRAIN=1 retrains it here)")
        return model, cfg, steps
    t0 = time.time()
    run = train.main(train_argv)
    print(f"trained {run['config'].optim.max_steps} steps in {time.time() - t0:.0f} s, last loss {run['last_loss']:.3f}")
    return run["ema"].eval(), run["config"], run["config"].optim.max_steps
