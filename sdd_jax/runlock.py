"""The lock of a run directory: one process at a time works in it (a branch command takes its
run's lock, so a branch and its run never write at once), and the hidden leftovers of atomic
writes killed half-way are removed by the process that holds it."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import filelock

from sdd_jax.atomic import atomic_write_json
from sdd_jax.distributed import is_primary


class RunDirBusyError(ValueError):
    """Another process is working in the run directory."""


LOCK_FILE = ".lock"  # held (filelock) by the one process working in a run directory
OWNER_FILE = ".lock.owner"  # who holds it: {"pid", "host", "since"}, for the refusal message
_HELD: dict[Path, Any] = {}  # this process's locks, by run directory


def lock_run_dir(path: Path) -> None:
    """Make this process the one working in the run directory ``path`` (an existing folder)
    until it exits; taking it again from the same process is a no-op. Branch commands take their run's lock, so a branch and its run never write at once.
    In a multi-host job process 0 holds it for all. Raises :class:`RunDirBusyError` naming the
    holder's process id and host."""
    path = Path(path).absolute()
    if path in _HELD or not is_primary():
        return
    lock = filelock.FileLock(path / LOCK_FILE, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        try:
            owner = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
            who = f"process {owner['pid']} on host {owner['host']} (since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another process"
        raise RunDirBusyError(f"{path} is in use by {who}: wait for it to finish or stop it, then rerun") from None
    _HELD[path] = lock
    atomic_write_json(
        path / OWNER_FILE,
        {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
    )


def remove_leftovers(path: Path) -> None:
    """Remove the hidden ``.NAME.XXXX.tmp`` files that a process killed inside an atomic write
    left in the run directory ``path`` and its branches (only the lock holder calls this)."""
    for folder in [path, *sorted((path / "branches").glob("*"))]:
        for leftover in folder.glob(".*.tmp"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
