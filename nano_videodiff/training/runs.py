"""A run's folder and its life: what it holds, its log, and stopping it by hand.

- ``RUN_OUTPUTS``: what train.py writes into ``--out_dir``. Any of them there means a run was there (even one
  killed before its first checkpoint), so a new run needs ``--resume`` or ``--overwrite``, and
  ``--overwrite`` removes them all first: no old preview or checkpoint is left next to the new ones.
- ``read_log``: the rows of ``log.jsonl``; a line torn by a kill mid-write is skipped with a warning.
- ``Interrupts``: Ctrl-C or SIGTERM asks the run to stop after the current step, so that it saves there.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import List

from ..files import atomic_write

# What a run writes into its folder (train.py, previews.py, run_log.py). Not ".lock" (files.FolderLock) and
# not "autoencoder/" (stage 1 of a two-stage job, a run of its own that stage 2 reuses).
RUN_OUTPUTS = ("ckpt.pt", "log.jsonl", "loss.png", "previews", "tensorboard")
OUR_FILES = {"previews": ("step_*.gif", "step_*.png"),   # the names previews.py gives its files
             "tensorboard": ("events.out.tfevents.*",)}  # and SummaryWriter its event files


def existing_outputs(out_dir) -> List[str]:
    """The names in RUN_OUTPUTS that ``out_dir`` holds (a folder counts only if it is not empty)."""
    out_dir = Path(out_dir)
    found = [name for name in RUN_OUTPUTS if (out_dir / name).is_file()]
    return found + [f"{name}/" for name in OUR_FILES if (out_dir / name).is_dir() and any((out_dir / name).iterdir())]


def clear_outputs(out_dir) -> None:
    """``--overwrite``: remove what the new run replaces. Only our own files: anything else a user put into
    previews/ or tensorboard/ stays, and so does the folder then."""
    out_dir = Path(out_dir)
    for name in ("ckpt.pt", "log.jsonl", "loss.png"):
        (out_dir / name).unlink(missing_ok=True)
    for name, patterns in OUR_FILES.items():
        folder = out_dir / name
        if folder.is_dir():
            for pattern in patterns:
                for path in folder.glob(pattern):
                    path.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()


def read_log(path) -> List[dict]:
    """The rows of a ``log.jsonl``. A line that is not a JSON row with a step (the last line, when a kill came
    in the middle of writing it) is skipped with one warning that names the file."""
    rows, bad = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            int(row["step"])
            rows.append(row)
        except (ValueError, KeyError, TypeError):
            bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} unreadable line(s) (line {', '.join(map(str, bad[:5]))}); "
                      "a run killed while writing its log leaves a torn last line", stacklevel=2)
    return rows


def trim_log(path, step: int) -> None:
    """Resume: keep the log rows up to the checkpoint's ``step`` (the run repeats the steps after it). Written
    atomically: a kill now must not lose the log."""
    rows = [row for row in read_log(path) if row["step"] <= step]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(path, lambda f: f.write(text.encode()))


class Interrupts:
    """``with Interrupts() as stop:`` Ctrl-C (SIGINT) or SIGTERM sets ``stop.signal`` instead of raising, so the
    training loop can finish its step, save a checkpoint there and exit. A second Ctrl-C raises
    KeyboardInterrupt at once (the last checkpoint stays as it is); a repeated SIGTERM is ignored, since
    launchers (torchrun, schedulers) may send one after the Ctrl-C that every process also received.

    Outside the main thread Python cannot install handlers: the signals then behave as usual.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.signal, self._previous = 0, {}

    def _handle(self, signum, frame) -> None:
        if self.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.signal:
            self.signal = signum
            print(f"\n{signal.Signals(signum).name}: finishing this step, then saving "
                  "(Ctrl-C again to quit at once)", file=sys.stderr)

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
