"""The run directory: one owner of a run's checkpoints and its results files.

Layout of one run (``<workdir>/<preset>[-<slug>]-<result_hash>``, :func:`sdd_jax.runid.run_path`)::

    config.json           the full config (readable, rewritten on every start), its description
                          generated from it (:func:`sdd_jax.describe.describe`)
    result_fields.json    the settings that identify the results (checked on every start)
    dataset.json          sizes, noise statistics and the data fingerprint (checked on every start)
    execution.json        settings outside the identity that can move the last float bits, and
                          the sdd-jax, jax and jaxlib versions (:func:`software_versions`)
    results.csv           one row per seed and finished level (``branch`` and the identity
                          columns of :mod:`sdd_jax.identity` first, in every results file)
    curves.csv            one row per seed, finished level and epoch (the training curves)
    layers.csv            one row per seed, finished level and prunable layer
    trees/theta0          θ0, the initial weights
    trees/theta_rewind    θk, the weights at the rewind iteration k
    levels/<level>/       a finished level: final weights, mask, metrics and curves
    progress/level_XXX/   the latest in-level epoch checkpoint
    branches/<name>/      a branch's trees-less run directory of the same layout
    tb/<branch>/<seed_s|mean>/  live metrics, TensorBoard event files (sdd_jax.tracking)

"Is this the same experiment?" is decided by :func:`open_run_dir` alone, on the identity of
:mod:`sdd_jax.runid`: the result fields (every setting but :data:`~sdd_jax.runid.NON_RESULT_FIELDS`)
name the directory and must match what it holds, and the data must have the fingerprint it was
computed on; the directory is locked first (:mod:`sdd_jax.runlock`). Resuming is reading back
what is here: finished levels, θ0/θk and in-level progress. Runs are opened through
:func:`sdd_jax.runopen.open_run` (create or resume) or :func:`sdd_jax.saved.load_run` (read only).

``run.workdir`` may be on Cloud Storage (``gs://BUCKET/PATH``): the run directory's paths are then
``etils.epath.Path``s, every file is one upload and the lock an object (:mod:`sdd_jax.storage`,
:mod:`sdd_jax.runlock`); the layout and the numbers are those of a local run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jaxlib.version

from sdd_jax import exports, results, storage, tracking
from sdd_jax.atomic import atomic_write_json, atomic_write_text
from sdd_jax.checkpoint_errors import level_remedy
from sdd_jax.checkpoints import CheckpointNotFoundError, RunStore, UnreadableCheckpointError
from sdd_jax.config import Config, ConfigError, from_dict, to_dict
from sdd_jax.describe import describe
from sdd_jax.distributed import barrier, is_primary, to_host
from sdd_jax.identity import IDENTITY_COLUMNS, identity_columns
from sdd_jax.runid import (
    data_fingerprint,
    read_json,  # noqa: F401
    result_fields,
    run_path,
)
from sdd_jax.runlock import LOCK_FILE, OWNER_FILE, RunDirBusyError, lock_run_dir, remove_leftovers  # noqa: F401
from sdd_jax.train import LevelWeights, TrainState, Weights
from sdd_jax.version import package_version


class RunDirConflictError(ValueError):
    """A run directory holds a run whose result-defining settings or data differ."""


_TREE_REMEDY = {
    "theta0": "delete {path}/trees/theta0 and rerun the same command: θ0 is drawn again from the seeds (same numbers)",
    "theta_rewind": "θk is saved while level 0 trains: delete {path}/trees/theta_rewind and "
    "{path}/levels/0 and rerun the same command to train level 0 again (same numbers)",
}


_REWRITTEN = "delete it and rerun: it is written again from the command's config"


def _stored_result_fields(path: Path) -> dict:
    stored = read_json(path, _REWRITTEN)
    if path.name == "config.json":
        try:
            return result_fields(from_dict(Config, stored))
        except (ConfigError, TypeError, AttributeError) as err:
            raise RunDirConflictError(f"{path} does not hold a config this version can read: {err}") from None
    return stored


def _prepare_run_dir(workdir: str | os.PathLike, config: Config) -> Path:
    """Create the run directory and write ``config.json`` and ``result_fields.json`` (atomically)
    (the identity step of :func:`open_run_dir`).

    An existing directory is reused (resume) only if its stored result fields equal this
    config's; otherwise :class:`RunDirConflictError` names the differing fields.
    """
    path = run_path(workdir, config)
    if storage.is_dir(path):
        lock_run_dir(path)
    fields = json.loads(json.dumps(result_fields(config)))
    for stored_path in (path / "result_fields.json", path / "config.json"):
        if not storage.exists(stored_path):
            continue
        stored = _stored_result_fields(stored_path)
        if stored != fields:
            keys = sorted(set(stored) | set(fields))
            diffs = [
                f"  {k}: stored {stored.get(k, '<missing>')!r}, now {fields.get(k, '<missing>')!r}"
                for k in keys
                if stored.get(k, "<missing>") != fields.get(k, "<missing>")
            ]
            raise RunDirConflictError(
                f"run directory {path} holds a run with different result settings ({stored_path.name}):\n"
                + "\n".join(diffs[:20])
                + "\nUse another workdir or config name, or remove the directory."
            )
    storage.mkdir(path)  # nothing on Cloud Storage: the lock object is its first
    lock_run_dir(path)
    if is_primary():
        remove_leftovers(path)
    described = dataclasses.replace(config, description=describe(config))  # never a base preset's words
    atomic_write_text(path / "config.json", json.dumps(to_dict(described), indent=2, ensure_ascii=False) + "\n")
    atomic_write_json(path / "result_fields.json", fields, indent=2, sort_keys=True)
    return path


def software_versions() -> dict[str, str]:
    """The sdd-jax, jax and jaxlib versions, recorded in ``execution.json``: another version of
    any of them may compile other kernels or add in another order, so, like the execution
    settings, a change warns when a run is continued (a run written before they were recorded
    has none: nothing to compare, no warning)."""
    return {
        "sdd_jax_version": package_version(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.version.__version__,
    }


def _check_execution(path: Path, execution: dict, before: dict | None) -> None:
    """Warn when a run is continued with other execution settings or software versions
    (``before``: the stored ones, None for a new run): they are outside the run's identity but
    can move the last float bits (see :class:`sdd_jax.engine.Engine`)."""
    stored = path / "execution.json"
    if before is not None:
        # Settings recorded only by newer versions (absent before) are not a change.
        changed = {k: (before[k], v) for k, v in execution.items() if k in before and before[k] != v}
        if changed and storage.is_dir(path / "levels"):
            warnings.warn(
                f"{path.name} continues with other execution settings "
                f"{ {k: f'{a} -> {b}' for k, (a, b) in changed.items()} }: levels computed "
                f"before and after may differ in the last float bits",
                stacklevel=4,
            )
    atomic_write_json(stored, execution)


def open_run_dir(config: Config, dataset, execution: dict, shapes: LevelWeights, seeds: list[int]) -> RunDir:
    """The run directory of ``config`` on ``dataset``, created or resumed (the directory step of
    :func:`sdd_jax.runopen.open_run`, which builds the experiment these arguments come from).

    Refuses (:class:`RunDirConflictError`, nothing written) a directory computed with other
    result settings or on other data; warns when ``execution`` settings changed. ``shapes``
    (stacked over ``seeds``) are the restore targets of the weights.
    """
    path = run_path(config.run.workdir, config)
    metadata = {**dataset.metadata, "fingerprint": data_fingerprint(dataset)}
    stored = path / "dataset.json"
    if storage.is_dir(path):
        lock_run_dir(path)  # before reading what another process may be writing
    if storage.is_file(stored):
        previous = read_json(stored, _REWRITTEN).get("fingerprint")
        if previous is not None and previous != metadata["fingerprint"]:
            raise RunDirConflictError(
                f"{path} was computed on different data (fingerprint {previous[:12]}…, now "
                f"{metadata['fingerprint'][:12]}…): another reader or data_dir gives other examples "
                f"or order; use another run.workdir"
            )
    before = None  # read (and an unreadable file refused) before anything is written
    if storage.is_file(path / "execution.json"):
        before = read_json(path / "execution.json", _REWRITTEN)
    path = _prepare_run_dir(config.run.workdir, config)
    atomic_write_json(stored, metadata)
    _check_execution(path, {**execution, **software_versions()}, before)
    return RunDir(path, shapes, seeds, config=config, tracker=tracking.open_tracker(config, path, seeds))


# ----- the directory ------------------------------------------------------------------------------


def _tree(weights) -> dict:
    """The on-disk form of :class:`Weights` / :class:`LevelWeights`: a dict of their fields."""
    return {name: getattr(weights, name) for name in weights.__dataclass_fields__}


class SavedWeights:
    """θ0 or θk of a run: saved once under ``trees/<name>``, read back (and kept) as stacked
    :class:`Weights`."""

    def __init__(self, store: RunStore, name: str, shapes: LevelWeights):
        self.store, self.name, self.shapes = store, name, shapes
        self._weights: Weights | None = None

    def saved(self) -> bool:
        return self._weights is not None or self.store.has_tree(self.name)

    def load(self) -> Weights:
        if self._weights is None:
            target = {"params": self.shapes.params, "batch_stats": self.shapes.batch_stats}
            try:
                tree = self.store.restore_tree(self.name, target)
            except (UnreadableCheckpointError, CheckpointNotFoundError) as err:
                raise type(err)(
                    f"{err}; {_TREE_REMEDY[self.name].format(path=self.store.run_dir)}",
                    *([err.path] if isinstance(err, UnreadableCheckpointError) else []),
                ) from None
            self._weights = to_host(Weights(**tree))
        return self._weights

    def save(self, weights: Weights) -> None:
        weights = to_host(weights)  # off the device before a donated state reuses it
        self.store.save_tree(self.name, _tree(weights))
        self._weights = weights


class RunDir:
    """The verbs the pruning loop and the branches need, over one run (or branch) directory.

    ``shapes``: the stacked :class:`LevelWeights` shapes (restore targets). ``theta0`` (the
    dense initialisation θ0) and ``theta_rewind`` (θk, the dense run's weights at the rewind
    iteration k) are :class:`SavedWeights`. A branch (:meth:`branch`) keeps its own levels,
    progress and results, and shares θ0/θk with its run. ``row_fields(level, row)``, when given,
    returns columns that replace or extend a stored result row in ``results.csv`` (a re-dense
    branch places its rows at the density of the level it started from). ``config``: the run's
    config, whose identity columns (:func:`sdd_jax.identity.identity_columns`) every row of the
    results files carries after ``branch``.
    """

    def __init__(
        self,
        path: Path,
        shapes: LevelWeights,
        seeds: list[int],
        *,
        branch: str = results.MAIN_BRANCH,
        parent: RunDir | None = None,
        row_fields: Callable[[int, dict], dict] | None = None,
        config: Config | None = None,
        tracker: tracking.Tracker | None = None,
    ):
        self.path = storage.as_path(path)  # an etils.epath.Path on Cloud Storage
        self.config = config
        self.shapes = shapes
        self.seeds = list(seeds)
        self.name = branch
        self.parent = parent
        self.row_fields = row_fields
        self.store = RunStore(self.path)
        self._metrics: dict[int, dict] = {}  # finished levels' stored metrics (never change)
        self.theta0 = parent.theta0 if parent else SavedWeights(self.store, "theta0", shapes)
        self.theta_rewind = parent.theta_rewind if parent else SavedWeights(self.store, "theta_rewind", shapes)
        # Live metrics (sdd_jax.tracking): a branch's go to its run's tb/<branch>/.
        self.tracker = tracker or (parent.tracker.branch(branch, self.path) if parent else tracking.Tracker.off())

    def branch(self, dirname: str, name: str, row_fields: Callable[[int, dict], dict] | None = None) -> RunDir:
        """The branch ``name`` (the label of its rows) kept in ``branches/<dirname>`` (created)."""
        path = self.path / "branches" / dirname
        storage.mkdir(path)
        return RunDir(
            path, self.shapes, self.seeds, branch=name, parent=self, row_fields=row_fields, config=self.config
        )

    # -- levels
    def finished_levels(self) -> list[int]:
        return self.store.finished_levels()

    def level(self, level: int) -> LevelWeights:
        """The final weights and mask of a finished level."""
        with level_remedy():
            tree, _ = self.store.restore_level(level, _tree(self.shapes))
        return LevelWeights(**tree)

    def finish_level(self, level: int, weights: LevelWeights, rows: list[dict], curves: dict) -> None:
        """Record a finished level atomically (weights, mask, rows, curves), drop its progress
        checkpoint and rewrite the results files. An unfinished ``levels/<level>`` left in the way
        (a deleted commit marker) is removed first."""
        self._discard_unfinished_level(level)
        self.store.save_level(level, _tree(weights), {"rows": rows, "curves": curves})
        self.store.clear_progress(level)
        self.write_results()

    def _discard_unfinished_level(self, level: int) -> None:
        step = self.path / "levels" / str(level)
        remote = storage.is_remote(step)
        if not (storage.exists(step) if remote else os.path.lexists(step)) or level in self.finished_levels():
            return
        self.store.close()  # its checkpoint managers list their steps again when next used
        if is_primary() and remote:
            storage.remove_tree(step)  # no commit file in it: never read as finished, however far this gets
        elif is_primary():
            trash = step.with_name(f".deleting-{level}-{uuid.uuid4().hex[:8]}")
            os.replace(step, trash)
            shutil.rmtree(trash, ignore_errors=True)
        barrier(f"discard level {level}")

    # -- progress inside a level
    def has_progress(self, level: int) -> bool:
        return self.store.latest_progress(level) is not None

    def save_progress(self, level: int, epoch: int, state: TrainState, mask, curves: dict) -> None:
        self.store.save_progress(level, epoch, {"state": state, "mask": mask}, {"curves": curves})

    def settle(self) -> None:
        """Let an in-flight progress checkpoint finish (after a failure or an interrupt, it is the
        one a rerun resumes from); a save that fails now is left to the rerun's clean-up."""
        try:
            self.store.wait()
        except Exception:  # noqa: BLE001 - the error being handled is the one to report
            pass

    def restore_progress(self, level: int, state_shapes: TrainState):
        """``(epoch, state, mask, curves)`` of the latest progress checkpoint of ``level``."""
        epoch, tree, extra = self.store.restore_progress(level, {"state": state_shapes, "mask": self.shapes.mask})
        return epoch, tree["state"], tree["mask"], extra["curves"]

    def clear_progress(self, level: int) -> None:
        self.store.clear_progress(level)

    # -- results
    @property
    def identity(self) -> dict:
        """The identity columns of this run's (or branch's) rows; empty without a config."""
        return identity_columns(self.config, self.name) if self.config is not None else {}

    def level_metrics(self, level: int) -> dict:
        """The stored metrics of a finished level: ``rows`` (one per seed, per-layer dicts
        included) and ``curves``."""
        if level not in self._metrics:
            with level_remedy():
                self._metrics[level] = self.store.level_metrics(level)
        return self._metrics[level]

    def rows(self) -> list[dict]:
        """One flat row per seed and finished level (per-layer dicts left out)."""
        rows = []
        for level in self.finished_levels():
            for row in self.level_metrics(level)["rows"]:
                flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
                if self.row_fields is not None:
                    flat.update(self.row_fields(level, flat))
                rows.append({"branch": self.name, **self.identity, "level": level, **flat})
        return rows

    def curve_rows(self) -> list[dict]:
        """One row per seed, finished level and epoch (:func:`sdd_jax.exports.curve_rows`)."""
        rows = []
        for level in self.finished_levels():
            metrics = self.level_metrics(level)
            seeds = [row["seed"] for row in metrics["rows"]]
            rows += exports.curve_rows(self.name, level, seeds, metrics["curves"], self.identity)
        return rows

    def layer_rows(self) -> list[dict]:
        """One row per seed, finished level and prunable layer (:func:`sdd_jax.exports.layer_rows`)."""
        rows = []
        for level in self.finished_levels():
            rows += exports.layer_rows(self.name, level, self.level_metrics(level)["rows"], self.identity)
        return rows

    @property
    def results_path(self) -> Path:
        return self.path / results.RESULTS_FILE

    def write_results(self) -> Path:
        """Rewrite ``curves.csv``, ``layers.csv`` and then ``results.csv`` (each atomically) from
        the finished levels; returns the path of ``results.csv``."""
        exports.write_curves_csv(self.curve_rows(), self.path / results.CURVES_FILE)
        exports.write_layers_csv(self.layer_rows(), self.path / results.LAYERS_FILE)
        rows = self.rows()
        results.write_results_csv(rows, self.results_path)
        self.tracker.results(rows)  # the levels/ series of the live metrics
        return self.results_path

    def results_complete(self) -> bool:
        """Whether ``results.csv`` has a row for every seed of every finished level (and
        ``curves.csv`` and ``layers.csv``, written before it, exist), with the identity columns
        (files written before they existed are rewritten with them)."""
        if not all(
            storage.is_file(self.path / name)
            for name in (results.RESULTS_FILE, results.CURVES_FILE, results.LAYERS_FILE)
        ):
            return False
        stored = results.read_results_csv(self.results_path)
        if self.config is not None and stored and any(c not in stored[0] for c in IDENTITY_COLUMNS):
            return False
        have = {(r["level"], r["seed"]) for r in stored}
        return have == {(level, seed) for level in self.finished_levels() for seed in self.seeds}
