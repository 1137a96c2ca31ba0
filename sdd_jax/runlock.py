"""The lock of a run directory: one process at a time works in it (a branch command takes its
run's lock, so a branch and its run never write at once), and the hidden leftovers of atomic
writes killed half-way are removed by the process that holds it.

On a local disk the lock is ``filelock``'s lock on ``<run>/.lock`` (the operating system frees it
when its process dies, however it dies) and ``<run>/.lock.owner`` says who holds it. On Cloud
Storage (``gs://``) it is the object ``<run>/.lock`` itself, created only if absent
(``ifGenerationMatch=0``: of two processes racing for it exactly one wins) and holding its
owner; the process removes it when it exits (``sdd-jax`` turns SIGTERM, which a preempted VM's
processes receive, into an orderly exit). A process killed without running its exit handlers
(``kill -9``, a VM lost at once) leaves it behind, and no one can tell from elsewhere that its
owner is gone: the refusal then says so and how to remove it once the owner is known to be dead
(:func:`force_unlock`, ``--force-unlock`` on the command line, or ``gcloud storage rm
gs://.../.lock``).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import filelock

from sdd_jax import storage
from sdd_jax.atomic import atomic_write_json
from sdd_jax.distributed import is_primary


class RunDirBusyError(ValueError):
    """Another process is working in the run directory."""


LOCK_FILE = ".lock"  # held (filelock) by the one process working in a run directory; on gs:// the lock object
OWNER_FILE = ".lock.owner"  # who holds it: {"pid", "host", "since"}, for the refusal message (local disk)
_HELD: dict[str, Any] = {}  # this process's locks, by run directory: a filelock, or the lock object's token


def _owner(token: str | None = None) -> dict:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return owner if token is None else {**owner, "token": token}


def _who(owner: Any) -> str:
    try:
        return f"process {owner['pid']} on host {owner['host']} (since {owner['since']})"
    except (KeyError, TypeError):
        return "another process"


def _running_here(owner: Any) -> bool:
    """Whether ``owner`` is another process of this host that still runs."""
    try:
        if owner["host"] != socket.gethostname() or int(owner["pid"]) == os.getpid():
            return False
        os.kill(int(owner["pid"]), 0)
    except PermissionError:  # another user's process
        return True
    except (KeyError, TypeError, ValueError, OSError):
        return False
    return True


def _gone(owner: Any) -> bool:
    """Whether ``owner`` is a process of this host that no longer runs."""
    try:
        if owner["host"] != socket.gethostname():
            return False
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (KeyError, TypeError, ValueError, OSError):
        return False
    return False


def lock_run_dir(path: str | os.PathLike) -> None:
    """Make this process the one working in the run directory ``path`` (an existing folder, or a
    ``gs://`` URL) until it exits; taking it again from the same process is a no-op. Branch
    commands take their run's lock, so a branch and its run never write at once.
    In a multi-host job process 0 holds it for all. Raises :class:`RunDirBusyError` naming the
    holder's process id and host."""
    if storage.is_remote(path):
        _lock_remote(os.fspath(path).rstrip("/"))
        return
    path = Path(path).absolute()
    if str(path) in _HELD or not is_primary():
        return
    lock = filelock.FileLock(path / LOCK_FILE, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        try:
            who = _who(json.loads((path / OWNER_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            who = "another process"
        raise RunDirBusyError(f"{path} is in use by {who}: wait for it to finish or stop it, then rerun") from None
    _HELD[str(path)] = lock
    atomic_write_json(path / OWNER_FILE, _owner())


def _lock_remote(url: str) -> None:
    if url in _HELD or not is_primary():
        return
    lock = f"{url}/{LOCK_FILE}"
    token = uuid.uuid4().hex
    if storage.create_new(lock, (json.dumps(_owner(token)) + "\n").encode()) is None:
        try:
            owner = json.loads(storage.read_text(lock))
        except (FileNotFoundError, ValueError):
            owner = None  # released (or garbled) meanwhile: still refused, the next try may pass
        state = ", which is no longer running" if _gone(owner) else ""
        raise RunDirBusyError(
            f"{url} is in use by {_who(owner)}{state}: wait for it to finish or stop it, then rerun; "
            f"if it was killed (kill -9, a lost VM) add --force-unlock to the command, or delete its lock with "
            f"'gcloud storage rm {lock}', and rerun"
        )
    _HELD[url] = token
    atexit.register(unlock_run_dir, url)


def unlock_run_dir(path: str | os.PathLike) -> None:
    """Give up this process's lock on the run directory ``path`` (done at exit). On Cloud Storage
    the lock object is deleted only if it still holds this process's token (one deleted by hand
    and taken by another process stays), in the version this process read."""
    if storage.is_remote(path):
        url = os.fspath(path).rstrip("/")
        token = _HELD.pop(url, None)
        if token is None:
            return
        lock = f"{url}/{LOCK_FILE}"
        try:
            generation = storage.object_generation(lock)
            if generation is not None and json.loads(storage.read_text(lock)).get("token") == token:
                storage.remove_object(lock, generation)
        except (OSError, ValueError):
            pass  # unreachable at exit: the lock stays, and the refusal says how to remove it
        return
    lock = _HELD.pop(str(Path(path).absolute()), None)
    if lock is not None:
        lock.release()


def force_unlock(path: str | os.PathLike) -> str:
    """Remove the lock that a killed process left on the ``gs://`` run directory ``path`` (the
    lock object alone, in the version read: a lock taken again meanwhile stays), and return the
    line that says what was removed. Refuses (:class:`RunDirBusyError`) a lock whose owner is a
    process of this host that still runs; an owner on another host cannot be checked from here.
    On a local disk there is nothing to remove (the operating system frees the lock when its
    holder exits, however it exits)."""
    if not storage.is_remote(path):
        return f"{path}: nothing to unlock (on a local disk the lock is freed when its process exits)"
    url = os.fspath(path).rstrip("/")
    lock = f"{url}/{LOCK_FILE}"
    generation = storage.object_generation(lock)
    if generation is None:
        return f"{url} has no lock: nothing removed"
    try:
        owner = json.loads(storage.read_text(lock))
    except (FileNotFoundError, ValueError):
        owner = None
    if _running_here(owner):
        raise RunDirBusyError(f"{url} is in use by {_who(owner)}, which is still running: stop it, then rerun")
    if not storage.remove_object(lock, generation):
        raise RunDirBusyError(f"{lock} changed while it was being removed: rerun to see who holds it now")
    return f"removed the lock {lock} of {_who(owner)}; nothing else was touched"


def remove_leftovers(path: str | os.PathLike) -> None:
    """Remove the hidden ``.NAME.XXXX.tmp`` files that a process killed inside an atomic write
    left in the run directory ``path`` and its branches (only the lock holder calls this).
    Nothing on Cloud Storage, where a write is one upload and leaves no temporary object."""
    if storage.is_remote(path):
        return
    path = Path(path)
    for folder in [path, *sorted((path / "branches").glob("*"))]:
        for leftover in folder.glob(".*.tmp"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
