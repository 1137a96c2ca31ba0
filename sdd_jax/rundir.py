"""The run directory: one owner of a run's identity, its checkpoints and its results file.

Layout of one run (``<workdir>/<config.name>-<result_hash>``)::

    config.json           the full config (readable, rewritten on every start)
    result_fields.json    the settings that identify the results (checked on every start)
    dataset.json          sizes, noise statistics and the data fingerprint (checked on every start)
    execution.json        settings outside the identity that can move the last float bits
    results.csv           one row per seed and finished level
    trees/theta0          θ0, the initial weights
    trees/theta_rewind    θk, the weights at the rewind iteration k
    levels/<level>/       a finished level: final weights, mask, metrics and curves
    progress/level_XXX/   the latest in-level epoch checkpoint
    branches/<name>/      a branch's trees-less run directory of the same layout

"Is this the same experiment?" is decided here alone: the result fields (every setting but
:data:`NON_RESULT_FIELDS`) name the directory and must match what it holds, and the data must
have the fingerprint it was computed on. Resuming is reading back what is here: finished levels,
θ0/θk and in-level progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from sdd_jax import results
from sdd_jax.atomic import atomic_write_json
from sdd_jax.checkpoints import RunStore, valid_name
from sdd_jax.config import Config, ConfigError, from_dict, to_dict
from sdd_jax.train import LevelWeights, TrainState, Weights

# Bumped whenever the on-disk result format or the meaning of a stored number changes.
RESULT_FORMAT_VERSION = 1

NON_RESULT_FIELDS = frozenset(
    {
        "name",
        "description",
        "run.workdir",
        "run.seeds_per_chunk",
        "run.eval_batch_size",
        "run.checkpoint_every_epochs",
        "run.verbosity",
        "run.epoch_loop",
        "run.seed_execution",
        "run.seed_devices",
        "run.data_devices",
        "run.compilation_cache",
        "data.data_dir",
        "data.download",
        "data.source",
        # More levels extend a run: the levels already computed do not change.
        "pruning.levels",
    }
)


class RunDirConflictError(ValueError):
    """A run directory holds a run whose result-defining settings or data differ."""


# ----- identity ---------------------------------------------------------------------------------

def result_fields(config: Config) -> dict[str, Any]:
    """The settings that change results, flattened to dotted keys, plus the result-format
    version."""
    flat = {}

    def walk(prefix, d):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(key + ".", v)
            elif key not in NON_RESULT_FIELDS:
                flat[key] = v

    walk("", to_dict(config))
    flat["result_format_version"] = RESULT_FORMAT_VERSION
    return flat


def result_hash(config: Config) -> str:
    """A 12-hex-digit hash of :func:`result_fields` (stable across processes and machines)."""
    payload = json.dumps(result_fields(config), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def run_path(workdir: str | os.PathLike, config: Config) -> Path:
    """``<workdir>/<config.name>-<result_hash(config)>`` (absolute)."""
    if not valid_name(config.name):
        raise ValueError(
            f"config.name {config.name!r} cannot name a run directory: use letters, digits and "
            "_ . , + = - (not starting with '.')"
        )
    return Path(workdir).expanduser().absolute() / f"{config.name}-{result_hash(config)}"


def data_fingerprint(dataset) -> str:
    """SHA-256 of the arrays a run trains and tests on (images, noisy and clean labels)."""
    digest = hashlib.sha256()
    for array in (dataset.x_train, dataset.y_train, dataset.y_train_clean, dataset.x_test, dataset.y_test):
        a = np.ascontiguousarray(array)
        digest.update(str((a.shape, a.dtype.str)).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _stored_result_fields(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        stored = json.load(handle)
    if path.name == "config.json":
        try:
            return result_fields(from_dict(Config, stored))
        except (ConfigError, TypeError, AttributeError) as err:
            raise RunDirConflictError(f"{path} does not hold a config this version can read: {err}") from None
    return stored


def prepare_run_dir(workdir: str | os.PathLike, config: Config) -> Path:
    """Create the run directory and write ``config.json`` and ``result_fields.json`` (atomically).

    An existing directory is reused (resume) only if its stored result fields equal this
    config's; otherwise :class:`RunDirConflictError` names the differing fields.
    """
    path = run_path(workdir, config)
    fields = json.loads(json.dumps(result_fields(config)))
    for stored_path in (path / "result_fields.json", path / "config.json"):
        if not stored_path.exists():
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
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / "config.json", to_dict(config), indent=2)
    atomic_write_json(path / "result_fields.json", fields, indent=2, sort_keys=True)
    return path


def _check_execution(path: Path, execution: dict) -> None:
    """Warn when a run is continued with other execution settings: they are outside the run's
    identity but can move the last float bits (see :class:`sdd_jax.engine.Engine`)."""
    stored = path / "execution.json"
    if stored.is_file():
        before = json.loads(stored.read_text())
        changed = {k: (before.get(k), v) for k, v in execution.items() if before.get(k) != v}
        if changed and (path / "levels").is_dir():
            warnings.warn(f"{path.name} continues with other execution settings "
                          f"{ {k: f'{a} -> {b}' for k, (a, b) in changed.items()} }: levels computed "
                          f"before and after may differ in the last float bits", stacklevel=4)
    atomic_write_json(stored, execution)


def open_run_dir(config: Config, dataset, execution: dict, shapes: LevelWeights, seeds: list[int]) -> RunDir:
    """The run directory of ``config`` on ``dataset``, created or resumed.

    Refuses (:class:`RunDirConflictError`, nothing written) a directory computed with other
    result settings or on other data; warns when ``execution`` settings changed. ``shapes``
    (stacked over ``seeds``) are the restore targets of the weights.
    """
    path = run_path(config.run.workdir, config)
    metadata = {**dataset.metadata, "fingerprint": data_fingerprint(dataset)}
    stored = path / "dataset.json"
    if stored.is_file():
        previous = json.loads(stored.read_text()).get("fingerprint")
        if previous is not None and previous != metadata["fingerprint"]:
            raise RunDirConflictError(
                f"{path} was computed on different data (fingerprint {previous[:12]}…, now "
                f"{metadata['fingerprint'][:12]}…): another reader or data_dir gives other examples "
                f"or order; use another run.workdir")
    path = prepare_run_dir(config.run.workdir, config)
    atomic_write_json(stored, metadata)
    _check_execution(path, execution)
    return RunDir(path, shapes, seeds)


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
            self._weights = jax.device_get(Weights(**self.store.restore_tree(self.name, target)))
        return self._weights

    def save(self, weights: Weights) -> None:
        weights = jax.device_get(weights)  # off the device before a donated state reuses it
        self.store.save_tree(self.name, _tree(weights))
        self._weights = weights


class RunDir:
    """The verbs the pruning loop and the branches need, over one run (or branch) directory.

    ``shapes``: the stacked :class:`LevelWeights` shapes (restore targets). ``theta0`` (the
    dense initialisation θ0) and ``theta_rewind`` (θk, the dense run's weights at the rewind
    iteration k) are :class:`SavedWeights`. A branch (:meth:`branch`) keeps its own levels,
    progress and results, and shares θ0/θk with its run.
    """

    def __init__(self, path: Path, shapes: LevelWeights, seeds: list[int], *, branch: str = results.MAIN_BRANCH,
                 parent: RunDir | None = None):
        self.path = Path(path)
        self.shapes = shapes
        self.seeds = list(seeds)
        self.name = branch
        self.store = RunStore(self.path)
        self.theta0 = parent.theta0 if parent else SavedWeights(self.store, "theta0", shapes)
        self.theta_rewind = parent.theta_rewind if parent else SavedWeights(self.store, "theta_rewind", shapes)

    def branch(self, dirname: str, name: str) -> RunDir:
        """The branch ``name`` kept in ``branches/<dirname>`` (created)."""
        path = self.path / "branches" / dirname
        path.mkdir(parents=True, exist_ok=True)
        return RunDir(path, self.shapes, self.seeds, branch=name, parent=self)

    # -- levels
    def finished_levels(self) -> list[int]:
        return self.store.finished_levels()

    def level(self, level: int) -> LevelWeights:
        """The final weights and mask of a finished level."""
        tree, _ = self.store.restore_level(level, _tree(self.shapes))
        return LevelWeights(**tree)

    def finish_level(self, level: int, weights: LevelWeights, rows: list[dict], curves: dict) -> None:
        """Record a finished level atomically (weights, mask, rows, curves), drop its progress
        checkpoint and rewrite ``results.csv``."""
        self.store.save_level(level, _tree(weights), {"rows": rows, "curves": curves})
        self.store.clear_progress(level)
        self.write_results()

    # -- progress inside a level
    def has_progress(self, level: int) -> bool:
        return self.store.latest_progress(level) is not None

    def save_progress(self, level: int, epoch: int, state: TrainState, mask, curves: dict) -> None:
        self.store.save_progress(level, epoch, {"state": state, "mask": mask}, {"curves": curves})

    def restore_progress(self, level: int, state_shapes: TrainState):
        """``(epoch, state, mask, curves)`` of the latest progress checkpoint of ``level``."""
        epoch, tree, extra = self.store.restore_progress(
            level, {"state": state_shapes, "mask": self.shapes.mask})
        return epoch, tree["state"], tree["mask"], extra["curves"]

    def clear_progress(self, level: int) -> None:
        self.store.clear_progress(level)

    # -- results
    def rows(self) -> list[dict]:
        """One flat row per seed and finished level (per-layer dicts left out)."""
        rows = []
        for level in self.finished_levels():
            for row in self.store.level_metrics(level)["rows"]:
                flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
                rows.append({"branch": self.name, "level": level, **flat})
        return rows

    @property
    def results_path(self) -> Path:
        return self.path / results.RESULTS_FILE

    def write_results(self) -> Path:
        results.write_results_csv(self.rows(), self.results_path)
        return self.results_path

    def results_complete(self) -> bool:
        """Whether ``results.csv`` has a row for every seed of every finished level."""
        if not self.results_path.is_file():
            return False
        have = {(r["level"], r["seed"]) for r in results.read_results_csv(self.results_path)}
        return have == {(level, seed) for level in self.finished_levels() for seed in self.seeds}
