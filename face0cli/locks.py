"""One job per output folder: a lock file that a long job (a training run, a synthetic build) holds while it writes
into its folder, so that a second job into the same folder stops at once with one line instead of writing beside
the first (two runs saving and pruning one checkpoint folder lose each other's work)."""

from __future__ import annotations

import os
import signal
import sys
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


PARENT_ENV = "FACE0_DIE_WITH_PARENT"


def child_env() -> dict[str, str]:
    """The environment for a face0 subprocess that must not outlive this process (a build's stage): see
    die_with_parent."""
    return os.environ | {PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """When $FACE0_DIE_WITH_PARENT names this process's parent, ask Linux for a SIGTERM when that parent dies
    (prctl PR_SET_PDEATHSIG), so a stage of a SIGKILLed build stops with it instead of training on alone; exit at
    once when the parent is already gone. Elsewhere (not Linux, or no such variable) nothing happens."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(parent):  # the parent died before the prctl
        raise SystemExit(128 + int(signal.SIGTERM))


__all__ = ["FolderBusy", "child_env", "die_with_parent", "sole_job"]
