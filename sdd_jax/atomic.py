"""Atomic file writes: a temporary file in the same directory, fsync, then ``os.replace``.

A reader (or a resumed run) sees either the old file or the new one, never half of one. Files get
the mode the process's umask gives (as ``open`` would), so a group can share a run's results.
A write killed half-way leaves a hidden ``.NAME.XXXX.tmp``: :func:`sdd_jax.rundir.remove_leftovers`
clears them when the run directory is next opened.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sdd_jax.distributed import is_primary


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (parent directories are created) atomically. In a multi-host
    job only process 0 writes (:func:`sdd_jax.distributed.is_primary`); the others return."""
    if not is_primary():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the mode open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 ``text`` (newlines written as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """:func:`atomic_write_text` of ``json.dumps(obj)`` (NaN/inf are written as JSON extensions)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")
