"""Where a training run's numbers and previews go: ``OUT_DIR/log.jsonl`` always, TensorBoard on request.

``train.py`` talks to one object, whatever ``--log`` says::

    run_log = open_run_log(out_dir, cfg.run.log, rank, resume_step)
    run_log.scalars({"step": 10, "loss": ..., "lr": ..., "videos_per_s": ..., "elapsed_s": ...})
    run_log.preview(10, out_dir / "previews" / "step_000010")   # after the preview files are written
    run_log.close()

- ``--log=jsonl`` (default): one JSON line per log step in ``log.jsonl`` (``previews.plot_losses`` draws
  ``loss.png`` from it). Previews are the GIF/PNG files the objective writes; nothing more to do.
- ``--log=tensorboard``: the same lines, plus ``OUT_DIR/tensorboard/`` event files
  (``torch.utils.tensorboard.SummaryWriter``; view with ``tensorboard --logdir OUT_DIR/tensorboard``):
  the scalars ``train/loss``, ``train/lr``, ``train/videos_per_s`` at log steps, and at preview steps
  the preview's frame grid as an image and, when ``moviepy`` is installed (TensorBoard's ``add_video``
  needs it to encode GIFs), the preview video. Everything is local files: no network.

Only rank 0 writes; other ranks get a logger that does nothing, so the loop needs no rank checks. The
module is not called ``logging`` so that ``from .logging import`` never shadows the standard library.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError
from .runs import trim_log

LOG_KINDS = ("jsonl", "tensorboard")
SCALARS = ("loss", "lr", "videos_per_s")  # the log row's fields that become TensorBoard scalars
MISSING_TENSORBOARD = ('--log=tensorboard needs the tensorboard package, which is not installed: '
                       'pip install -e ".[tensorboard]" (or pass --log=jsonl)')


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``, or a UserError saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises ImportError when the tensorboard package is missing
        raise UserError(MISSING_TENSORBOARD) from e
    return SummaryWriter


class RunLog:
    """log.jsonl, and TensorBoard event files when ``kind == "tensorboard"``. Rank 0 only (see open_run_log)."""

    def __init__(self, out_dir, kind: str = "jsonl", resume_step: Optional[int] = None):
        if kind not in LOG_KINDS:
            raise UserError(f"--log must be one of {', '.join(LOG_KINDS)}, got {kind!r}")
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "log.jsonl"
        self._keep_lines_up_to(resume_step)
        self.writer = None
        self.videos = False
        if kind == "tensorboard":
            # A resumed run recomputes the steps after its checkpoint: purge_step hides the events the
            # crashed run wrote for them, as the log.jsonl lines are dropped above.
            purge = None if resume_step is None else resume_step + 1
            self.writer = summary_writer_class()(log_dir=str(self.out_dir / "tensorboard"), purge_step=purge)
            self.videos = importlib.util.find_spec("moviepy") is not None
            if not self.videos:
                print("TensorBoard: moviepy is not installed, so previews are logged as frame-grid images "
                      "only (pip install moviepy for videos)")

    def _keep_lines_up_to(self, resume_step: Optional[int]) -> None:
        """A fresh run starts an empty log; a resumed one drops lines written after its checkpoint (and a
        line torn by a kill, with a warning: runs.trim_log)."""
        if resume_step is None or not self.path.exists():
            self.path.write_text("")
            return
        trim_log(self.path, resume_step)

    def scalars(self, row: dict) -> None:
        """One log step: ``row`` holds "step" and the numbers (train.py's loss, lr, videos_per_s, elapsed_s)."""
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for name in SCALARS:
                if name in row:
                    self.writer.add_scalar(f"train/{name}", row[name], row["step"])
            self.writer.flush()  # a run may be killed at any time: what was logged is on disk

    def preview(self, step: int, path, fps: float = 8.0) -> None:
        """The preview files the objective wrote at ``path`` (``.png`` frame grid, ``.gif`` video at ``fps``)."""
        if self.writer is None:
            return
        import imageio.v3 as iio
        path = Path(path)
        png, gif = path.with_suffix(".png"), path.with_suffix(".gif")
        if png.exists():
            image = np.asarray(iio.imread(png))
            image = image[..., None] if image.ndim == 2 else image[..., :3]  # grey or RGB(A) -> HWC
            self.writer.add_image("preview/frames", image, step, dataformats="HWC")
        if self.videos and gif.exists():
            frames = np.asarray(iio.imread(gif, index=None))  # (T, H, W[, C]) uint8
            frames = frames[..., None].repeat(3, -1) if frames.ndim == 3 else frames[..., :3]
            # add_video wants (N, T, C, H, W); uint8 is taken as already in 0..255
            self.writer.add_video("preview/video", frames.transpose(0, 3, 1, 2)[None], step, fps=max(1, round(fps)))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class NoLog:
    """What ranks other than 0 get: the same methods, doing nothing."""

    def scalars(self, row: dict) -> None:
        pass

    def preview(self, step: int, path, fps: float = 8.0) -> None:
        pass

    def close(self) -> None:
        pass


def open_run_log(out_dir, kind: str = "jsonl", rank: int = 0, resume_step: Optional[int] = None):
    """The run's logger: a RunLog on rank 0, NoLog elsewhere. ``resume_step`` = the checkpoint's step.

    Every rank checks that the backend can be used, so a missing package stops all of them at once
    (rather than rank 0 alone, leaving the others waiting in a collective).
    """
    if kind not in LOG_KINDS:
        raise UserError(f"--log must be one of {', '.join(LOG_KINDS)}, got {kind!r}")
    if kind == "tensorboard":
        summary_writer_class()
    return RunLog(out_dir, kind, resume_step) if rank == 0 else NoLog()
