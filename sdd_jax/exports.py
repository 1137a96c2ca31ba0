"""A run's per-epoch curves and per-layer quantities as CSV files, and the combined files of a run
and its branches (the results file itself: :mod:`sdd_jax.results`).

Every row starts with ``branch`` and the identity columns of :mod:`sdd_jax.identity` (what
configuration it belongs to), then ``seed``, ``level``, ...:

* ``curves.csv``   one row per seed, level and epoch: the per-epoch curves (:data:`CURVE_COLUMNS`
  and any other curve recorded, such as ``val_loss``/``val_acc``), empty between evaluations;
* ``layers.csv``   one row per seed, level and prunable layer: its density and learning
  distances (:data:`LAYER_COLUMNS`);
* ``results_all.csv`` and ``curves_all.csv`` (:func:`write_combined`): the main run's and every
  branch's rows stacked (long format: one header, one row per observation, ``branch`` first;
  ``pandas.read_csv`` reads them as they are).

Cells are written as :func:`sdd_jax.results.write_csv` writes them (floats by ``repr``, read back
exactly).

Host only: numpy and the standard library.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from sdd_jax import storage
from sdd_jax.identity import with_identity
from sdd_jax.results import (
    COMBINED_CURVES_FILE,
    COMBINED_RESULTS_FILE,
    CURVES_FILE,
    MAIN_BRANCH,
    ResultsError,
    branch_files,
    ordered_columns,
    read_csv,
    result_columns,
    run_rows,
    write_csv,
)

__all__ = [
    "CURVE_COLUMNS",
    "LAYER_COLUMNS",
    "curve_rows",
    "layer_rows",
    "write_combined",
    "write_curves_csv",
    "write_layers_csv",
]

# The leading columns of curves.csv and layers.csv (the identity columns, when the rows have them,
# follow ``branch``); other curves and layer quantities follow, sorted by name.
CURVE_COLUMNS: tuple[str, ...] = (
    "branch",
    "seed",
    "level",
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
)
LAYER_COLUMNS: tuple[str, ...] = (
    "branch",
    "seed",
    "level",
    "layer",
    "density",
    "learning_distance",
    "learning_distance_unpruned",
)


def _leading_columns(rows: Sequence[Mapping[str, Any]], leading: Sequence[str]) -> list[str]:
    """``branch`` and the identity columns present, the rest of ``leading``, then every other key
    of ``rows`` in sorted order (:func:`sdd_jax.results.ordered_columns`)."""
    return ordered_columns(rows, [c for c in leading if c != "branch"])


def curve_rows(
    branch: str,
    level: int,
    seeds: Sequence[int],
    curves: Mapping[str, Sequence],
    identity: Mapping[str, Any] | None = None,
) -> list[dict]:
    """One row per seed and epoch of a level's ``curves`` (as stored in ``levels/<k>/metrics``:
    ``epoch``, a list of epoch numbers from 1, and per curve one entry per epoch, each a list with
    one value per seed in ``seeds`` order, or ``None`` when not evaluated in that epoch). Every
    curve present is a column (``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``,
    ``val_loss``, ...); rows are ordered by seed, then epoch. ``identity``: the identity columns
    of the rows (:func:`sdd_jax.identity.identity_columns`), placed after ``branch``."""
    epochs = list(curves.get("epoch", []))
    names = [k for k, v in curves.items() if k != "epoch" and isinstance(v, (list, tuple)) and len(v) == len(epochs)]
    rows = []
    for i, seed in enumerate(seeds):
        for e, epoch in enumerate(epochs):
            row = {"branch": branch, **(identity or {}), "seed": seed, "level": level, "epoch": epoch}
            for name in names:
                value = curves[name][e]
                row[name] = value[i] if isinstance(value, (list, tuple)) else value
            rows.append(row)
    return rows


def _layer_quantity(key: str) -> str:
    """``layer_learning_distance_rewind`` -> ``learning_distance_rewind``."""
    return key[len("layer_") :] if key.startswith("layer_") else key


def layer_rows(
    branch: str, level: int, metric_rows: Sequence[Mapping[str, Any]], identity: Mapping[str, Any] | None = None
) -> list[dict]:
    """One row per seed and layer from a level's stored result rows: each per-layer dict of a row
    becomes columns (``layer_density`` -> ``density``; a distance stored as ``{"full",
    "unpruned"}`` -> ``learning_distance`` and ``learning_distance_unpruned``, and likewise
    ``learning_distance_rewind[_unpruned]`` from the rewind weights θk). Layers are named by their
    parameter path (``fc1/kernel``); ``identity`` as in :func:`curve_rows`."""
    rows = []
    for row in metric_rows:
        per_layer: dict[str, dict] = {}
        for key, value in row.items():
            if not isinstance(value, Mapping):
                continue
            name = _layer_quantity(key)
            for layer, v in value.items():
                cells = per_layer.setdefault(layer, {})
                if isinstance(v, Mapping):
                    cells[name] = v.get("full")
                    cells[f"{name}_unpruned"] = v.get("unpruned")
                else:
                    cells[name] = v
        for layer in sorted(per_layer):
            rows.append(
                {
                    "branch": branch,
                    **(identity or {}),
                    "seed": row["seed"],
                    "level": level,
                    "layer": layer,
                    **per_layer[layer],
                }
            )
    return rows


def write_curves_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write :func:`curve_rows` output: ``branch``, the identity columns, the rest of
    :data:`CURVE_COLUMNS`, then other curves sorted."""
    return write_csv(rows, path, _leading_columns(rows, CURVE_COLUMNS))


def write_layers_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write :func:`layer_rows` output: ``branch``, the identity columns, the rest of
    :data:`LAYER_COLUMNS`, then other quantities sorted."""
    return write_csv(rows, path, _leading_columns(rows, LAYER_COLUMNS))


def write_combined(
    run_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]] | None = None, config: Any = None
) -> list[str]:
    """Stack the main run's and its branches' ``results.csv`` (``rows``: :func:`run_rows` of
    ``run_dir``, read when not given) into ``results_all.csv``, and their ``curves.csv`` into
    ``curves_all.csv``, in ``run_dir``: ``branch`` first, then the identity columns, then the
    columns of the single files (a column a file lacks is empty). With ``config`` (the run's
    :class:`~sdd_jax.config.Config`), identity columns that files written before they existed
    lack are filled from it (:func:`sdd_jax.identity.with_identity`). Curves are taken for the
    branches of ``rows`` only; a curves file not yet written (a run made before curves were
    exported) is skipped, one that cannot be read is left out with a warning. Returns the two
    paths written."""
    run_dir = os.fspath(run_dir)
    rows = run_rows(run_dir) if rows is None else list(rows)
    rows = [{**r, "branch": r.get("branch", MAIN_BRANCH)} for r in rows]
    if config is not None:
        rows = with_identity(rows, config)
    written = [write_csv(rows, os.path.join(run_dir, COMBINED_RESULTS_FILE), result_columns(rows))]
    wanted = {r.get("branch", MAIN_BRANCH) for r in rows}
    curves: list[dict[str, Any]] = []
    for path in [os.path.join(run_dir, CURVES_FILE), *branch_files(run_dir, CURVES_FILE)]:
        if not storage.is_file(path):
            continue
        try:
            file_rows = read_csv(path, CURVE_COLUMNS[:4])
        except (ResultsError, OSError) as err:
            warnings.warn(f"{path} left out: {err}", stacklevel=2)
            continue
        labels = {r["branch"] for r in file_rows}
        if labels <= wanted:
            curves += file_rows
            wanted -= labels
    if config is not None:
        curves = with_identity(curves, config)
    written.append(write_curves_csv(curves, os.path.join(run_dir, COMBINED_CURVES_FILE)))
    return written
