"""One job per output folder: a lock file that a long job (a training run, a synthetic build) holds while it writes
into its folder, so that a second job into the same folder stops at once with one line instead of writing beside
the first (two runs saving and pruning one checkpoint folder lose each other's work)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from face0cli.errors import Face0Error


class FolderBusy(Face0Error):
    """Another face0 job holds the folder's lock."""


@contextmanager
def sole_job(lock: Path, busy: str, hold: bool = True) -> Iterator[None]:
    """Hold the lock file LOCK for the block, or raise FolderBusy(BUSY) at once when another process holds it.
    HOLD False: take nothing (the other processes of a distributed run, whose main process holds it).

    The lock is an OS file lock (filelock), so a killed job leaves it free for the next; the file stays."""
    if not hold:
        yield
        return
    held = filelock.FileLock(str(lock), timeout=0)
    try:
        held.acquire()
    except filelock.Timeout as e:
        raise FolderBusy(busy) from e
    try:
        yield
    finally:
        held.release()


__all__ = ["FolderBusy", "sole_job"]
