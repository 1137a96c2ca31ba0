"""Live metrics of a run, written while it trains: TensorBoard event files under ``<run>/tb/``,
and, when ``run.log_to`` names them, Weights & Biases and MLflow (:mod:`sdd_jax.trackers`).

Layout: one TensorBoard run per seed, and one for the mean over seeds when there are several::

    tb/<branch>/seed_<s>/   seed s (branch: ``imp`` for the main run, else the branch's label)
    tb/<branch>/mean/       the mean over seeds of the same scalars

Tags (``tensorboard --logdir <run>/tb`` overlays the seeds and the mean in each chart):

* ``level_XX/<curve>`` (XX: the level, two digits or more), step = epoch counted from 1 as in
  ``curves.csv``: ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` (the evaluated epochs
  only), ``val_loss``, ``val_acc`` (with a validation split) and ``lr``, the step size of the
  epoch's last iteration (during a warm-up, the one it reached). An epoch's numbers are written
  when the host receives them, one epoch after it trained (:func:`sdd_jax.level.train_epochs`).
* ``levels/<column>``, step = level: every numeric column of the level's ``results.csv`` rows
  (density, sparsity, kept weights, accuracies, losses, memorisation, both learning distances
  from θ0 and from θk, ...), written when the results files are. Values that are not finite are
  left out (TensorBoard cannot draw them).

Each step reaches a reader exactly once, through a resume or a recomputed level alike: a level's
epochs go to an event file of their own (``events.out.tfevents.*.level_XX``); when the level
(re)starts, the files a killed process left for it are deleted and the epochs its progress
checkpoint restored are written again before training goes on, so the recomputed epochs replace
the lost ones. The ``levels/`` series is rewritten whole into a new file each time (the old one
deleted). TensorBoard's purge marker (``SessionLog.START``) is not used: it drops every tag of a
TensorBoard run at or past its step, and a seed's run holds every level. TensorBoard's own data
server also drops, per tag, the points at or past a step that comes again, so a TensorBoard left
open through a resume shows the replaced points once as well.

Files are written with tensorboardX's synchronous event writer (no TensorFlow or PyTorch): an
epoch costs one event per TensorBoard run, and the file is flushed at the level's first epoch,
then at most every :data:`FLUSH_SECONDS`, and closed when the level ends or is interrupted. In a
run directory on Cloud Storage (``gs://``) each flush uploads the file whole as one object
(:class:`EventFile`; ``tensorboard --logdir gs://BUCKET/runs/<run>/tb`` reads them). Only the
writing process of a multi-host job writes (:func:`sdd_jax.distributed.is_primary`).
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2, summary_pb2

from sdd_jax import storage, trackers
from sdd_jax.config import Config, to_dict
from sdd_jax.distributed import is_primary
from sdd_jax.identity import IDENTITY_COLUMNS
from sdd_jax.results import MAIN_BRANCH

TB_DIR = "tb"
MEAN_RUN = "mean"
LEVELS = "levels"  # the tag prefix and the file key of the per-level series
FLUSH_SECONDS = 5.0  # TensorBoard itself reloads every 5 s
# Result columns that are keys, not values (the identity columns say which configuration a row is).
NOT_TAGS = ("seed", "level", "branch", *IDENTITY_COLUMNS)

Scalars = dict[str, dict[str, float]]  # TensorBoard run ("seed_0", ..., "mean") -> tag -> value
_FILE_NUMBERS = itertools.count()  # keeps two files of one process and second apart


def level_prefix(level: int) -> str:
    """``level_03``: the tag prefix (and event-file key) of a level's epochs."""
    return f"level_{level:02d}"


def run_names(seeds: Sequence[int]) -> list[str]:
    """The TensorBoard runs of a branch: ``seed_<s>`` per seed, then ``mean`` when there are several."""
    return [f"seed_{s}" for s in seeds] + ([MEAN_RUN] if len(seeds) > 1 else [])


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def epoch_scalars(seeds: Sequence[int], level: int, curves: Mapping[str, list], i: int, lr: float) -> Scalars:
    """The scalars of entry ``i`` of a level's ``curves`` (each curve: per epoch a value per seed, or
    None when not evaluated), with the epoch's learning rate ``lr``."""
    prefix = level_prefix(level)
    out: Scalars = {name: {} for name in run_names(seeds)}
    for name, entries in curves.items():
        values = entries[i]
        if name == "epoch" or values is None:
            continue
        for seed, value in zip(seeds, values):
            out[f"seed_{seed}"][f"{prefix}/{name}"] = float(value)
        if MEAN_RUN in out:
            out[MEAN_RUN][f"{prefix}/{name}"] = float(np.mean(values))
    for tags in out.values():
        tags[f"{prefix}/lr"] = float(lr)
    return out


def level_scalars(seeds: Sequence[int], rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, Scalars]]:
    """``(level, scalars)`` per level of ``rows`` (flat ``results.csv`` rows, one per seed and level),
    in level order: ``levels/<column>`` of every finite numeric column, per seed and, over seeds
    that all have it, their mean."""
    by_level: dict[int, list] = {}
    for row in rows:
        by_level.setdefault(int(row["level"]), []).append(row)
    series = []
    for level in sorted(by_level):
        out: Scalars = {name: {} for name in run_names(seeds)}
        level_rows = by_level[level]
        columns = dict.fromkeys(k for row in level_rows for k in row if k not in NOT_TAGS)
        for column in columns:
            values = [row.get(column) for row in level_rows]
            for row, value in zip(level_rows, values):
                if _finite(value) and f"seed_{row['seed']}" in out:
                    out[f"seed_{row['seed']}"][f"{LEVELS}/{column}"] = float(value)
            if MEAN_RUN in out and len(values) == len(seeds) and all(_finite(v) for v in values):
                out[MEAN_RUN][f"{LEVELS}/{column}"] = float(np.mean(values))
        series.append((level, out))
    return series


def epoch_learning_rates(plan) -> np.ndarray:
    """Per epoch of ``plan`` (a :class:`sdd_jax.level.LevelPlan`, from epoch 0), the step size of its
    last iteration (float64 of the schedule's float32), computed once before the level trains."""
    engine = plan.engine
    ends = np.arange(1, plan.epochs + 1) * engine.steps_per_epoch - 1
    return np.broadcast_to(np.asarray(engine.spec.schedule(ends), np.float64), ends.shape)


# ----- TensorBoard ---------------------------------------------------------------------------------


class EventFile:
    """One event file being written by tensorboardX's :class:`EventsWriter` into ``folder``. On
    Cloud Storage (a ``gs://`` folder) the writer writes a local file in a temporary folder of its
    own, uploaded whole as one object (:func:`sdd_jax.storage.write_bytes`) at each :meth:`flush`
    and at :meth:`close`: a reader sees the events up to the last flush, and a process killed
    between two flushes loses the events since the last one (the level runner writes them again,
    see the module docstring). tensorboardX's own ``gs://`` writer is not used: it uploads again
    whenever the writer object is garbage-collected (bringing back a file deleted since) and goes
    through another client than the run directory's."""

    def __init__(self, folder: Path, suffix: str):
        self.remote = storage.is_remote(folder)
        self.folder = folder
        self._staging = tempfile.mkdtemp(prefix="sdd-jax-events-") if self.remote else None
        storage.mkdir(folder)
        self.writer = EventsWriter(str(Path(self._staging or folder) / "events"), suffix)
        self._local = next(Path(self._staging).iterdir()) if self.remote else None  # the one file it writes

    def write_event(self, event) -> None:
        self.writer.write_event(event)

    def _upload(self) -> None:
        if self.remote:
            storage.write_bytes(self.folder / self._local.name, self._local.read_bytes())

    def flush(self) -> None:
        self.writer.flush()
        self._upload()

    def close(self) -> None:
        try:
            self.writer.close()
            self._upload()
        finally:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)


class EventFiles:
    """The TensorBoard event files of one branch, ``<folder>/<run>/`` (local or ``gs://``): per
    level, one file of its epochs (replaced when the level starts again), and one of the
    ``levels/`` series (rewritten)."""

    external = False

    def __init__(self, folder: Path, runs: Sequence[str]):
        self.folder, self.runs = storage.as_path(folder), list(runs)
        self._writers: dict[str, EventFile] = {}
        self._flushed = -math.inf

    def _files(self, run: str, key: str) -> list[Path]:
        return storage.glob(self.folder / run, f"events.out.tfevents.*.{key}")

    def _open(self, run: str, key: str) -> EventFile:
        return EventFile(self.folder / run, f".{os.getpid()}.{next(_FILE_NUMBERS)}.{key}")

    @staticmethod
    def _write(writer: EventFile, step: int, tags: Mapping[str, float]) -> None:
        if tags:
            values = [summary_pb2.Summary.Value(tag=tag, simple_value=value) for tag, value in tags.items()]
            writer.write_event(
                event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values))
            )

    def level_started(self, level: int) -> None:
        self.level_ended(level)
        key = level_prefix(level)
        for run in self.runs:
            for stale in self._files(run, key):  # a killed process's, or a finished level's recomputed
                storage.remove_file(stale)
            self._writers[run] = self._open(run, key)
        self._flushed = -math.inf  # the first epoch is flushed at once

    def epochs(self, level: int, points: Sequence[tuple[int, Scalars]]) -> None:
        for epoch, scalars in points:
            for run, writer in self._writers.items():
                self._write(writer, epoch, scalars.get(run, {}))
        if time.monotonic() - self._flushed >= FLUSH_SECONDS:
            for writer in self._writers.values():
                writer.flush()
            self._flushed = time.monotonic()

    def level_ended(self, level: int) -> None:
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()

    def levels(self, series: Sequence[tuple[int, Scalars]]) -> None:
        for run in self.runs:
            old = self._files(run, LEVELS)
            writer = self._open(run, LEVELS)
            try:
                for level, scalars in series:
                    self._write(writer, level, scalars.get(run, {}))
            finally:
                writer.close()
            for path in old:
                storage.remove_file(path)

    def close(self) -> None:
        self.level_ended(-1)


# ----- the tracker of a run ------------------------------------------------------------------------


class Tracker:
    """The live log of one run directory (or branch): its sinks (the TensorBoard files, and the
    external trackers of ``run.log_to``) and the seeds whose scalars they receive.

    Created with the run directory (:func:`open_tracker`, :meth:`branch`) and driven by the level
    runner: :meth:`level` while a level trains, :meth:`results` when the results files are written.
    An external tracker that fails (a server that cannot be reached, a login missing) is switched
    off with a warning naming it; the training and the event files go on. :meth:`close` finishes
    the external trackers' runs (also registered to run at exit); TensorBoard files are closed at
    the end of each level and each write.
    """

    def __init__(self, seeds: Sequence[int] = (), sinks: Sequence[Any] = (), *, branch_sinks=None):
        self.seeds = list(seeds)
        self.sinks = list(sinks)
        self._branch_sinks = branch_sinks  # (branch label, branch folder) -> sinks

    @classmethod
    def off(cls) -> Tracker:
        return cls()

    def branch(self, name: str, path: Path) -> Tracker:
        """The tracker of branch ``name``, whose run directory is ``path``."""
        if self._branch_sinks is None:
            return Tracker.off()
        return Tracker(self.seeds, self._branch_sinks(name, storage.as_path(path)))

    def _each(self, method: str, *args) -> None:
        for sink in list(self.sinks):
            if not sink.external:
                getattr(sink, method)(*args)
                continue
            try:
                getattr(sink, method)(*args)
            except Exception as err:  # noqa: BLE001 - an external service: any failure switches it off
                warnings.warn(f"run.log_to: {sink.name} stopped logging this run: {err}", stacklevel=3)
                self.sinks.remove(sink)

    def level(self, level: int, plan, curves: Mapping[str, list] | None = None) -> LevelLog:
        """The log of ``level`` trained by ``plan``, as a context: entering it replaces what an earlier
        process wrote for the level by the epochs of ``curves`` (restored from a progress checkpoint);
        :meth:`LevelLog.epoch` writes each new epoch; leaving it closes the level's files."""
        return LevelLog(self, level, epoch_learning_rates(plan) if self.sinks else None, curves)

    def results(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """The ``levels/`` series from the run's ``results.csv`` rows (all finished levels)."""
        if self.sinks:
            self._each("levels", level_scalars(self.seeds, rows))

    def close(self) -> None:
        self._each("close")


class LevelLog:
    """One level's epochs, written while it trains (see :meth:`Tracker.level`)."""

    def __init__(self, tracker: Tracker, level: int, learning_rates, curves):
        self.tracker, self.level, self.learning_rates, self.restored = tracker, level, learning_rates, curves

    def _send(self, curves: Mapping[str, list], entries) -> None:
        seeds, lrs = self.tracker.seeds, self.learning_rates
        points = [
            (curves["epoch"][i], epoch_scalars(seeds, self.level, curves, i, lrs[curves["epoch"][i] - 1]))
            for i in entries
        ]
        self.tracker._each("epochs", self.level, points)

    def __enter__(self) -> LevelLog:
        if self.tracker.sinks:
            self.tracker._each("level_started", self.level)
            if self.restored and self.restored["epoch"]:
                self._send(self.restored, range(len(self.restored["epoch"])))
        return self

    def epoch(self, curves: Mapping[str, list]) -> None:
        """Write the last epoch of ``curves`` (just recorded)."""
        if self.tracker.sinks:
            self._send(curves, [len(curves["epoch"]) - 1])

    def __exit__(self, *exc) -> None:
        if self.tracker.sinks:
            self.tracker._each("level_ended", self.level)


def open_tracker(config: Config, path: Path, seeds: Sequence[int]) -> Tracker:
    """The tracker of the run directory ``path`` of ``config`` (``run.log_to``; nothing outside the
    writing process). The external trackers start at their first scalar; their run ids are kept in
    ``trackers.json`` of the run (or branch) directory, so that a resumed run goes on in the same
    tracker run (see :mod:`sdd_jax.trackers`)."""
    log_to = tuple(config.run.log_to)
    if not log_to or not is_primary():
        return Tracker.off()
    runs = run_names(seeds)
    params = to_dict(config)
    path = storage.as_path(path)
    root = path / TB_DIR

    def sinks(branch: str, folder: Path) -> list:
        title = path.name if branch == MAIN_BRANCH else f"{path.name}/{branch}"
        out: list = [EventFiles(root / branch, runs)] if "tensorboard" in log_to else []
        out += trackers.external_sinks(log_to, folder, title, params)
        return out

    return Tracker(seeds, sinks(MAIN_BRANCH, path), branch_sinks=sinks)
