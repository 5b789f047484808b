"""Files that survive kills: atomic writes, clean-up after killed writers, one run per folder.

- ``atomic_write(path, write)``: a temporary file in the same folder, fsynced, then renamed over ``path``.
  Readers see the old file or the new one, never half of one, whatever kills the writer (kill -9 included).
- ``remove_orphans(path)``: the temporaries of ``path`` whose writer is gone. A kill -9 skips every
  clean-up, so they are named ``<file>.<host>.<pid>.<random>.tmp`` for a later run to recognise.
- ``FolderLock(folder)``: an exclusive lock on ``folder/.lock`` that names its holder. The operating
  system drops it when the holder ends in any way, so a lock left by a killed run is simply free.

Used by the checkpoints (training/checkpoint.py), train.py's output folder, the video files
(evaluation/video_io.py) and the toy Physion cache (toy_data/physion.py).
"""
from __future__ import annotations

import glob
import os
import secrets
import socket
import time
from pathlib import Path

from .errors import UserError

try:
    import fcntl  # POSIX; the lock is advisory and dropped by the kernel when its holder dies
except ImportError:  # Windows: no locking (a second run into the same folder is not detected there)
    fcntl = None


def temp_prefix(path: Path) -> str:
    """``<file>.<host>.<pid>.``: whose temporary it is (a folder in a shared home may be written from several
    machines, and only processes of this machine can be probed)."""
    return f"{path.name}.{socket.gethostname()}.{os.getpid()}."


def process_is_gone(pid: int) -> bool:
    """True if no process ``pid`` runs on this machine (POSIX; elsewhere it answers False: keep the file)."""
    if os.name != "posix":  # os.kill(pid, 0) only probes on POSIX (on Windows it would terminate)
        return False
    try:
        os.kill(pid, 0)  # signal 0: no signal, only "does this process exist?"
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        return False
    return False


def remove_orphans(path) -> list:
    """Delete the temporaries of ``path`` left by writers on this machine that are gone; returns them.

    Each orphan can be as large as the file itself (a checkpoint, a dataset cache), and they pile up
    otherwise: one per kill."""
    path, host, removed = Path(path), socket.gethostname(), []
    for tmp in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        writer, _, _random = tmp.name[len(path.name) + 1:-len(".tmp")].rpartition(".")
        tmp_host, _, pid = writer.rpartition(".")
        if tmp_host == host and pid.isdigit() and process_is_gone(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write(path, write) -> Path:
    """Call ``write(f)`` on a binary file that becomes ``path`` only once complete.

    fsync before the rename, so that after a crash of the machine the new name cannot point at data that
    never reached the disk. On any failure (a full disk, Ctrl-C) the temporary goes and ``path`` is as it
    was; a kill -9 leaves the temporary for ``remove_orphans``.
    """
    path = Path(path)
    tmp = path.with_name(f"{temp_prefix(path)}{secrets.token_hex(4)}.tmp")
    # os.open, not tempfile.mkstemp: the file gets the umask's permissions (mkstemp's are 0600, private)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class FolderLock:
    """``with FolderLock(out_dir):`` one run at a time in ``out_dir``; a second one is refused, naming the first.

    The lock is ``flock`` on ``out_dir/.lock``, which holds "pid host start-time" of its holder for the
    messages. The file stays when the run ends (deleting it would let a third run lock a different file
    than a second one that opened the old file just before); an empty file means it was released cleanly,
    a file that still names someone but is not locked was left by a run that was killed.
    """

    def __init__(self, folder, what: str = "--out_dir"):
        self.path, self.what, self.file = Path(folder) / ".lock", what, None

    def __enter__(self) -> "FolderLock":
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise UserError(f"{self.path.parent} is in use by another run ({holder}); wait for it to finish, "
                            f"stop it (Ctrl-C saves it), or choose another {self.what}") from None
        f.seek(0)
        left = f.read().strip()
        if left:  # the last holder did not release it: killed (kill -9, OOM, power loss)
            print(f"note: {self.path} was left by a run that is gone ({left}); taking it over")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.truncate(0)  # released cleanly: nothing to report to the next run
            self.file.close()      # closing drops the flock
            self.file = None
