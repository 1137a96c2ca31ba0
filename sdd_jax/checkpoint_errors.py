"""The errors of the checkpoint store (:mod:`sdd_jax.checkpoints`) and the translation of what
orbax, tensorstore and the OS raise into them: one line naming the step folder, never a traceback
of orbax internals. Also keeps orbax's ~50 INFO log lines per save out of the output.

Every error is a ``ValueError`` (:class:`CheckpointError`) or a ``FileNotFoundError``
(:class:`CheckpointNotFoundError`), which the command line prints as one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
from pathlib import Path

__all__ = [
    "CheckpointError",
    "CheckpointExistsError",
    "CheckpointNotFoundError",
    "TreeMismatchError",
    "UnreadableCheckpointError",
    "drop_read_echoes",
    "first_line",
    "level_remedy",
    "unreadable_step",
    "write_failure",
]


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read as asked."""


class CheckpointExistsError(CheckpointError):
    """The step to be written already exists (checkpoints here are written once)."""


class CheckpointNotFoundError(FileNotFoundError):
    """No finished checkpoint of the requested kind."""


class TreeMismatchError(CheckpointError):
    """The restore target's structure, shapes or dtypes differ from what was saved."""


class UnreadableCheckpointError(CheckpointError):
    """A finished checkpoint's files are truncated, garbled or missing. ``path``: its step
    folder (what to delete so that it is computed again)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


@contextlib.contextmanager
def level_remedy(rerun: str = "rerun the same command"):
    """An unreadable finished level (:class:`UnreadableCheckpointError` raised inside the block),
    named with what computes it again: delete its folder and ``rerun``."""
    try:
        yield
    except UnreadableCheckpointError as err:
        raise UnreadableCheckpointError(
            f"{err}; delete {err.path} and {rerun}: the level is computed again (same numbers)", err.path
        ) from None


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type name when empty), at most 200 characters."""
    text = str(err).strip()
    if _TS_DETAILS in text and err.__cause__ is not None:  # orbax's wrapper: the reason is its cause
        text = f"{text.split(_TS_DETAILS)[0].strip()} {first_line(err.__cause__)}"
    return (text.splitlines() or [type(err).__name__])[0][:200]


_TS_DETAILS = "See full TensorStore details"  # orbax's read error quotes the whole TensorStore spec after it


def write_failure(err: Exception, step_dir: Path, what: str) -> Exception:
    """The one-line error for a failed orbax write (a full disk as ``OSError(ENOSPC)``)."""
    if isinstance(err, OSError) and err.strerror is not None:
        return err
    if "No space left on device" in str(err) or "ENOSPC" in str(err):
        return OSError(errno.ENOSPC, "No space left on device", str(step_dir))
    return CheckpointError(f"{what}: cannot write {step_dir}: {first_line(err)}")


def unreadable_step(directory: Path, json_files: tuple[str, ...]) -> Path:
    """The first step under ``directory`` whose JSON files (``json_files``, relative to the step
    folder) do not parse (else ``directory``)."""
    steps = (
        sorted((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        if directory.is_dir()
        else []
    )
    for step in steps:
        for name in json_files:
            path = step / name
            if path.is_file():
                try:
                    json.loads(path.read_text(encoding="utf-8"))
                except (UnicodeDecodeError, ValueError):
                    return step
    return directory


# --------------------------------------------------------------------------- failed reads


def _is_echo(unraisable) -> bool:
    """Whether an unraisable exception is an echo of a failed orbax read: orbax runs a restore's
    reads in an event loop that it closes as soon as one read fails, so the reads still in flight
    finish on tensorstore's threads into the closed loop ("Event loop is closed", or at
    interpreter exit an ``ImportError`` "sys.meta_path is None"), and their abandoned coroutines
    raise again when collected."""
    exc, obj = unraisable.exc_value, unraisable.object
    code = getattr(obj, "cr_code", None)
    return (
        (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed")
        or (isinstance(exc, ImportError) and "Python is likely shutting down" in str(exc))
        or (code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename)
    )


class _DropReadEchoes:
    """``sys.unraisablehook`` from a store's first read on: drops :func:`_is_echo` reports (a
    failed read is raised as one :class:`UnreadableCheckpointError`; the echoes can arrive while
    it propagates, or later), hands everything else on."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, unraisable) -> None:
        if not _is_echo(unraisable):
            self.previous(unraisable)


def drop_read_echoes() -> None:
    """Install :class:`_DropReadEchoes` as ``sys.unraisablehook`` (once), before orbax reads."""
    if not isinstance(sys.unraisablehook, _DropReadEchoes):
        sys.unraisablehook = _DropReadEchoes(sys.unraisablehook)


# --------------------------------------------------------------------------- logging


class _DropOrbaxInfo(logging.Filter):
    """Orbax logs ~50 INFO lines per save through absl; keep its warnings and errors only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        # A read-only store (sdd_jax.saved) is asked for: orbax's notes about it say nothing new.
        read_only = "read_only=True" in str(record.msg) or "read only" in str(record.msg)
        # Failures come back as exceptions, which RunStore turns into one line naming the path.
        return record.levelno == logging.WARNING and not read_only


def _install_log_filter() -> None:
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropOrbaxInfo) for f in logger.filters):
        logger.addFilter(_DropOrbaxInfo())


_install_log_filter()
