"""Atomic writes of small files (JSON, text, figures) into a run directory, local or ``gs://``.

Locally: a temporary file in the same directory, fsync, then ``os.replace``; on Cloud Storage:
one upload (:mod:`sdd_jax.storage`, which does both). A reader (or a resumed run) sees either the
old file or the new one, never half of one. Local files get the mode the process's umask gives
(as ``open`` would), so a group can share a run's results. A local write killed half-way leaves a
hidden ``.NAME.XXXX.tmp``: :func:`sdd_jax.runlock.remove_leftovers` clears them when the run
directory is next opened.
"""

from __future__ import annotations

import os
from typing import Any

from sdd_jax import storage


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (local parent directories are created) atomically. In a
    multi-host job only process 0 writes (:func:`sdd_jax.distributed.is_primary`); the others
    return."""
    storage.write_bytes(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 ``text`` (newlines written as given)."""
    storage.write_text(path, text)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """:func:`atomic_write_text` of ``json.dumps(obj)`` (NaN/inf are written as JSON extensions)."""
    storage.write_json(path, obj, indent=indent, sort_keys=sort_keys)
