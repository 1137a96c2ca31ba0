"""An atomic checkpoint store over orbax (the run directory around it is owned by
:mod:`sdd_jax.rundir`).

Layout under the store's directory::

    trees/<name>/0/       named trees saved once: ``theta0``, ``theta_rewind``
    levels/<level>/       final state of a pruning level + its metrics, one orbax step
    progress/level_XXX/<epoch>/   latest in-progress state of a level (only the latest kept)

Atomicity: on a local disk orbax writes a step into ``<step>.orbax-checkpoint-tmp*`` and renames
it to ``<step>`` once every item (state tree and metrics JSON) is complete, after writing
``commit_success.txt`` into it. Cloud Storage (a ``gs://`` run directory, :mod:`sdd_jax.storage`)
has no rename: orbax writes straight into ``<step>/`` and writes ``commit_success.txt`` last
(its ``CommitFileTemporaryPath``). Either way a step counts as finished here only if it has the
final name *and* that file, so a save killed at any moment leaves the previous state readable and
the new one invisible; the unfinished steps (temporary folders, or on Cloud Storage final-named
folders without the file) are removed by orbax when a store next opens the directory to write.
Every call returns only after its write has finished (``wait_until_finished``), except
:meth:`RunStore.save_progress`, which returns once the arrays are copied off the device and lets
orbax write them in the background (waited for by the next save of the level, by
:meth:`RunStore.clear_progress` when the level is finished, and by :meth:`RunStore.wait`).

Several hosts (:mod:`sdd_jax.distributed`): every process calls the same saves and restores
(orbax coordinates them and finalises on the primary host); only process 0 removes files.

The errors and their one-line translation live in :mod:`sdd_jax.checkpoint_errors`, the reading of
a step (restore targets and their checks) in :mod:`sdd_jax.checkpoint_reads`; both are importable
from here.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from sdd_jax import interrupts, storage
from sdd_jax.checkpoint_errors import (
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    TreeMismatchError,
    UnreadableCheckpointError,
    drop_read_echoes,
    first_line,
    unreadable_step,
    write_failure,
)
from sdd_jax.checkpoint_reads import (
    COMMIT_FILE,
    METRICS_ITEM,
    TREE_ITEM,
    abstract_tree,
    is_finished,
    restore_step,
    saved_target,
)
from sdd_jax.distributed import barrier, is_primary
from sdd_jax.jsonable import to_native
from sdd_jax.masks import path_str

__all__ = [
    "COMMIT_FILE",
    "CheckpointError",
    "CheckpointExistsError",
    "CheckpointNotFoundError",
    "RunStore",
    "TreeMismatchError",
    "UnreadableCheckpointError",
    "abstract_tree",
    "valid_name",
]

_json_native = functools.partial(to_native, where="metrics", error=CheckpointError)
_TREE_ITEM = TREE_ITEM
_METRICS_ITEM = METRICS_ITEM
_NAME_RE = re.compile(r"[A-Za-z0-9_.,+=-]+")


def valid_name(name: object) -> bool:
    """Whether ``name`` can name a folder here: letters, digits and ``_ . , + = -``, not
    starting with ``.``."""
    return isinstance(name, str) and bool(_NAME_RE.fullmatch(name)) and not name.startswith(".")


_TRASH_PREFIX = ".deleting-"


def _check_index(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative int, got {value!r}")
    return int(value)


def _reject_unsupported(tree: Any, what: str) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float)):
            raise CheckpointError(f"{what}: leaf {path_str(path)} has unsupported type {type(leaf).__name__}")


# JSON files of a step that orbax reads when it opens a directory
_JSON_FILES = ("_CHECKPOINT_METADATA", f"{_METRICS_ITEM}/{_METRICS_ITEM}")


# --------------------------------------------------------------------------- store


class RunStore:
    """Checkpoints of one run: named trees, finished levels and in-progress epochs.

    ``save_tree``/``save_level`` return after the step is final on disk, ``save_progress``
    once its arrays are off the device (see the module docstring); every ``restore_*`` reads into
    an abstract copy of ``target`` (concrete arrays or ``jax.ShapeDtypeStruct``s) and checks
    that structure, shapes and dtypes match what was saved. One writer per run directory at
    a time: the first access to each checkpoint directory removes the unfinished temporary
    steps a killed writer left there.
    """

    def __init__(self, run_dir: str | os.PathLike, *, read_only: bool = False):
        self.run_dir = storage.as_path(run_dir)  # pathlib.Path, or epath.Path for gs://
        if storage.is_remote(self.run_dir) and not read_only:
            # A prefix exists once an object is written under it: a new branch's has none yet.
            storage.check_bucket(self.run_dir)
        elif not storage.is_dir(self.run_dir):  # on gs://: the bucket is checked first (StorageError)
            raise CheckpointNotFoundError(f"run directory {self.run_dir} does not exist (see runopen.open_run)")
        self.read_only = read_only  # no save, no clean-up: reading a run another process owns
        self._managers: dict[Path, ocp.CheckpointManager] = {}
        self._in_flight: dict[Path, tuple[Path, str]] = {}  # directory -> (step dir, what)
        progress = self.run_dir / "progress"
        if not storage.is_remote(progress) and progress.is_dir() and is_primary() and not read_only:
            for leftover in progress.glob(f"{_TRASH_PREFIX}*"):
                shutil.rmtree(leftover, ignore_errors=True)

    # -- managers

    def _manager(self, directory: Path, item_names: tuple[str, ...], keep_latest: bool = False):
        """One orbax manager per directory, with fixed handlers so metadata reads work on a
        fresh manager (restart) before anything was saved through it. In-level progress
        (``keep_latest``) is saved asynchronously; everything else synchronously."""
        manager = self._managers.get(directory)
        if manager is None:
            options = ocp.CheckpointManagerOptions(
                enable_async_checkpointing=keep_latest,
                cleanup_tmp_directories=not self.read_only,
                create=not self.read_only,
                read_only=self.read_only,
                save_root_metadata=False,
                preservation_policy=ocp.checkpoint_managers.LatestN(1) if keep_latest else None,
            )
            handlers = {_TREE_ITEM: ocp.StandardCheckpointHandler(), _METRICS_ITEM: ocp.JsonCheckpointHandler()}
            drop_read_echoes()
            try:  # orbax reads every step's metadata and metrics here
                manager = ocp.CheckpointManager(
                    directory, options=options, item_handlers={name: handlers[name] for name in item_names}
                )
            except Exception as err:  # noqa: BLE001
                bad = unreadable_step(directory, _JSON_FILES)
                gc.collect()  # the failed read's abandoned coroutines now, their echoes dropped
                raise UnreadableCheckpointError(f"{bad} is unreadable ({first_line(err)})", bad) from None
            self._managers[directory] = manager
        return manager

    @contextlib.contextmanager
    def _reading(self, directory: Path):
        """Around a read from ``directory``: an :class:`UnreadableCheckpointError` propagates only
        after the directory's manager is closed (the next access opens a fresh one) and orbax's
        leftovers of the failed read are collected (their echoes dropped:
        :func:`~sdd_jax.checkpoint_errors.drop_read_echoes`), so the caller sees this one
        exception and the process exits cleanly."""
        try:
            yield
        except UnreadableCheckpointError:
            manager = self._managers.pop(directory, None)
            if manager is not None:
                with contextlib.suppress(Exception):  # the unreadable checkpoint is the error to report
                    manager.close()
            gc.collect()
            raise

    def close(self) -> None:
        self.wait()
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()

    def wait(self) -> None:
        """Wait for the asynchronous saves in flight and check that each was finalised."""
        for directory in list(self._in_flight):
            self._wait(directory)

    def _wait(self, directory: Path) -> None:
        manager = self._managers.get(directory)
        if manager is not None:
            try:
                with interrupts.deferred():  # a stop waits for the write in flight to end
                    manager.wait_until_finished()
            except Exception as err:  # noqa: BLE001 - the background write failed
                pending = self._in_flight.pop(directory, (directory, str(directory)))
                raise write_failure(err, pending[0], pending[1]) from None
        pending = self._in_flight.pop(directory, None)
        if pending is None:
            return
        # Orbax finalises a step on the primary host, which checks it; every host passes this
        # barrier only once it is final (and before the primary may remove it, clear_progress).
        barrier(f"checkpoint saved: {pending[0]}")
        if is_primary() and not is_finished(pending[0]):
            raise CheckpointError(f"{pending[1]}: orbax did not finalise {pending[0]}")

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _steps(directory: Path) -> list[int]:
        return sorted(int(p.name) for p in storage.listdir(directory) if p.name.isdigit() and is_finished(p))

    def _save(self, manager, directory: Path, step: int, items: dict, what: str, block: bool = True) -> None:
        """Save ``items`` as ``step``; returns when it is final on disk, or with ``block=False``
        once the arrays are copied off the device (orbax writes the rest in the background;
        :meth:`wait` finishes it)."""
        step_dir = directory / str(step)
        if self.read_only:
            raise CheckpointError(f"{what}: the store of {self.run_dir} was opened read-only")
        if step_dir.exists():
            state = "already saved" if is_finished(step_dir) else f"an unfinished directory {step_dir} is in the way"
            raise CheckpointExistsError(f"{what}: {state}")
        args = {}
        if _TREE_ITEM in items:
            _reject_unsupported(items[_TREE_ITEM], what)
            args[_TREE_ITEM] = ocp.args.StandardSave(items[_TREE_ITEM])
        if _METRICS_ITEM in items:
            args[_METRICS_ITEM] = ocp.args.JsonSave(items[_METRICS_ITEM])
        try:
            with interrupts.deferred():  # never cut in half: a stop waits for the save to be started
                manager.save(step, args=ocp.args.Composite(**args), force=True)
        except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many kinds
            raise write_failure(err, step_dir, what) from None
        self._in_flight[directory] = (step_dir, what)
        if block:
            self._wait(directory)

    def read_tree(self, name: str) -> Any:
        """A named tree as saved (numpy arrays), without a restore target."""
        directory = self._tree_dir(name)
        if not self.has_tree(name):
            raise CheckpointNotFoundError(f"tree {name!r} was never saved in {self.run_dir}")
        with self._reading(directory):
            manager = self._manager(directory, (_TREE_ITEM,))
            target = saved_target(manager, 0, f"tree {name!r}")
            return jax.device_get(restore_step(manager, directory, 0, target, False, f"tree {name!r}")[0])

    def read_level(self, level: int) -> tuple[Any, dict]:
        """A finished level's tree as saved (numpy arrays) and its metrics, without a target."""
        level = _check_index(level, "level")
        if level not in self.finished_levels():
            raise CheckpointNotFoundError(f"level {level} is not finished in {self.run_dir}")
        with self._reading(self._levels_dir):
            target = saved_target(self._levels(), level, f"level {level}")
            tree, metrics = restore_step(self._levels(), self._levels_dir, level, target, True, f"level {level}")
        return jax.device_get(tree), metrics

    # -- named trees

    def _tree_dir(self, name: str) -> Path:
        if not valid_name(name):
            raise ValueError(f"tree name {name!r} must use letters, digits and _ . , + = -")
        return self.run_dir / "trees" / name

    def save_tree(self, name: str, tree: Any) -> None:
        """Save a named tree once (e.g. ``theta0``, ``theta_rewind``)."""
        directory = self._tree_dir(name)
        self._save(self._manager(directory, (_TREE_ITEM,)), directory, 0, {_TREE_ITEM: tree}, f"tree {name!r}")

    def has_tree(self, name: str) -> bool:
        return 0 in self._steps(self._tree_dir(name))

    def restore_tree(self, name: str, target: Any) -> Any:
        directory = self._tree_dir(name)
        if not self.has_tree(name):
            raise CheckpointNotFoundError(f"tree {name!r} was never saved in {self.run_dir}")
        with self._reading(directory):
            manager = self._manager(directory, (_TREE_ITEM,))
            tree, _ = restore_step(manager, directory, 0, target, False, f"tree {name!r}")
        return tree

    # -- levels

    @property
    def _levels_dir(self) -> Path:
        return self.run_dir / "levels"

    def _levels(self):
        return self._manager(self._levels_dir, (_TREE_ITEM, _METRICS_ITEM))

    def save_level(self, level: int, tree: Any, metrics: dict) -> None:
        """Save a level's final state and its metrics in one atomic step (written once)."""
        level = _check_index(level, "level")
        if not isinstance(metrics, dict):
            raise CheckpointError(f"level {level}: metrics must be a dict, got {type(metrics).__name__}")
        items = {_TREE_ITEM: tree, _METRICS_ITEM: _json_native(metrics)}
        self._save(self._levels(), self._levels_dir, level, items, f"level {level}")

    def finished_levels(self) -> list[int]:
        """Levels whose final state is on disk, ascending."""
        return self._steps(self._levels_dir)

    def restore_level(self, level: int, target: Any) -> tuple[Any, dict]:
        level = _check_index(level, "level")
        with self._reading(self._levels_dir):
            return restore_step(self._levels(), self._levels_dir, level, target, True, f"level {level}")

    def level_metrics(self, level: int) -> dict:
        level = _check_index(level, "level")
        with self._reading(self._levels_dir):
            _, metrics = restore_step(self._levels(), self._levels_dir, level, None, True, f"level {level}")
        return metrics

    # -- progress within a level

    def _progress_dir(self, level: int) -> Path:
        return self.run_dir / "progress" / f"level_{_check_index(level, 'level'):03d}"

    def save_progress(self, level: int, epoch: int, tree: Any, metrics: dict | None = None) -> None:
        """Save the state (and the metrics so far) after ``epoch`` of ``level`` in one atomic
        step; older epochs of the level are removed only after the new one is final. Returns
        once the arrays are off the device; the files are written in the background (the next
        save, :meth:`clear_progress`, :meth:`wait` or :meth:`close` waits for them)."""
        epoch = _check_index(epoch, "epoch")
        directory = self._progress_dir(level)
        self._wait(directory)
        latest = self.latest_progress(level)
        if latest is not None and epoch <= latest:
            raise CheckpointExistsError(
                f"level {level}: progress is already at epoch {latest}, cannot save epoch {epoch} "
                "(call clear_progress first to restart the level)"
            )
        manager = self._manager(directory, (_TREE_ITEM, _METRICS_ITEM), keep_latest=True)
        manager.reload()
        items = {_TREE_ITEM: tree, _METRICS_ITEM: _json_native(metrics or {})}
        self._save(manager, directory, epoch, items, f"level {level} epoch {epoch}", block=False)

    def latest_progress(self, level: int) -> int | None:
        """The latest finished progress epoch of ``level`` (a save in flight is waited for)."""
        self._wait(self._progress_dir(level))
        steps = self._steps(self._progress_dir(level))
        return steps[-1] if steps else None

    def restore_progress(self, level: int, target: Any) -> tuple[int, Any, dict]:
        """``(epoch, tree, metrics)`` of the latest progress checkpoint of ``level``."""
        epoch = self.latest_progress(level)
        if epoch is None:
            raise CheckpointNotFoundError(f"level {level}: no progress checkpoint in {self.run_dir}")
        directory = self._progress_dir(level)
        with self._reading(directory):
            manager = self._manager(directory, (_TREE_ITEM, _METRICS_ITEM), keep_latest=True)
            tree, metrics = restore_step(manager, directory, epoch, target, True, f"level {level} epoch {epoch}")
        return epoch, tree, metrics

    def clear_progress(self, level: int) -> None:
        """Remove the level's progress: locally renamed away first (atomic), then deleted; on Cloud
        Storage, which cannot rename, each step's commit file is deleted first, so a removal cut
        short leaves unfinished steps (never read, removed when the level's progress is next saved)."""
        directory = self._progress_dir(level)
        if directory in self._managers:
            self._wait(directory)
            self._managers.pop(directory).close()
        if is_primary() and storage.exists(directory):
            if storage.is_remote(directory):
                for step in storage.listdir(directory):
                    storage.remove_file(step / COMMIT_FILE)
                storage.remove_tree(directory)
            else:
                trash = directory.parent / f"{_TRASH_PREFIX}{directory.name}-{uuid.uuid4().hex[:8]}"
                os.replace(directory, trash)
                shutil.rmtree(trash, ignore_errors=True)
        barrier(f"clear_progress:{directory}")
