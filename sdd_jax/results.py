"""The results files of a pruning run and their average over seeds.

A run directory (and each of its branches under ``branches/NAME/``) holds:

* ``results.csv``  one row per seed and pruning level: ``branch``, the identity columns of
  :mod:`sdd_jax.identity` (what configuration the row belongs to), then :data:`RESULT_COLUMNS`
  (accuracies are fractions in [0, 1], ``density`` is the fraction of prunable weights left);
* ``curves.csv``, ``layers.csv`` and the combined ``results_all.csv``/``curves_all.csv``: written by
  :mod:`sdd_jax.exports` (its names, such as :func:`write_combined`, are importable from here too).

Every row carries its ``branch`` (``imp`` for the main run) and its identity columns, so that the
rows of any runs stacked together are told apart without joins. This module writes and reads those
files, collects a run's rows, splits them into the main curve and the branches, and averages them
over seeds.

Host only: numpy and the standard library.
"""

from __future__ import annotations

import csv
import io
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sdd_jax import storage
from sdd_jax.atomic import atomic_write_text
from sdd_jax.identity import IDENTITY_COLUMNS

RESULT_COLUMNS: tuple[str, ...] = (
    "seed",
    "level",
    "density",
    "sparsity",
    "train_acc",
    "train_acc_clean",
    "train_acc_noisy_subset",
    "train_loss",
    "test_acc",
    "test_acc_best",
    "test_loss",
    "learning_distance",
    "learning_distance_unpruned",
)

MAIN_BRANCH = "imp"

RESULTS_FILE = "results.csv"
CURVES_FILE = "curves.csv"
LAYERS_FILE = "layers.csv"
COMBINED_RESULTS_FILE = "results_all.csv"
COMBINED_CURVES_FILE = "curves_all.csv"

# The columns that say what a row belongs to, first in every results file (when present).
LEADING_COLUMNS: tuple[str, ...] = ("branch", *IDENTITY_COLUMNS)
# Group keys: never averaged.
_KEY_COLUMNS = ("seed", "level", *LEADING_COLUMNS)


class ResultsError(ValueError):
    """Malformed result rows or a malformed results file."""


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy / jax scalars and 0-d arrays -> Python scalars."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    if hasattr(value, "item") and np.ndim(value) == 0:
        return value.item()
    return value


def _format_cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))  # shortest exact round trip; 'nan', 'inf'
    return str(value)


def _parse_cell(text: str) -> Any:
    """'' -> None, integers -> int, other numbers (nan, inf included) -> float, else str."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def ordered_columns(rows: Sequence[Mapping[str, Any]], leading: Sequence[str]) -> list[str]:
    """The header of a results file of ``rows``: :data:`LEADING_COLUMNS` that some row has
    (``branch``, then the identity columns), then ``leading``, then every other key sorted."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    first = [c for c in LEADING_COLUMNS if c in keys and c not in leading]
    head = [*first, *leading]
    return head + sorted(k for k in keys if k not in head)


def result_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The header of a results file of ``rows``: ``branch`` and the identity columns (those
    present), :data:`RESULT_COLUMNS`, then every other key sorted. :class:`ResultsError` names a
    row lacking a required column."""
    for i, row in enumerate(rows):
        missing = [c for c in RESULT_COLUMNS if c not in row]
        if missing:
            raise ResultsError(f"result row {i} lacks required column(s) {', '.join(missing)}")
    return ordered_columns(rows, RESULT_COLUMNS)


def write_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, columns: Sequence[str]) -> str:
    """Write ``rows`` under the header ``columns`` atomically (temp file in the same folder, then
    ``os.replace``); a key a row lacks is an empty cell, keys outside ``columns`` are left out.
    Floats are written with ``repr`` (they read back exactly), ``None`` as an empty cell.
    Returns the path written."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format_cell(row.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())
    return os.fspath(path)


def write_results_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write result rows atomically (temp file in the same folder, then ``os.replace``).

    Columns: ``branch`` and the identity columns when the rows have them
    (:data:`LEADING_COLUMNS`), :data:`RESULT_COLUMNS` in order, then every other key in sorted
    order (a row without an extra key gets an empty cell). A row lacking a required column raises
    :class:`ResultsError` naming it. Floats are written with ``repr`` so they read back exactly.
    Returns the path written.
    """
    rows = list(rows)
    return write_csv(rows, path, result_columns(rows))


def read_csv(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a CSV file written by :func:`write_csv`: integers as ``int``, other numbers as
    ``float`` (NaN too), empty cells as ``None``, anything else as ``str``. Raises
    ``FileNotFoundError`` for a missing file and :class:`ResultsError`, naming the file, for one
    that is not UTF-8, has no header, lacks a column of ``required`` or has a ragged row."""
    path = os.fspath(path)
    if not storage.is_file(path):
        raise FileNotFoundError(f"no results file at {path}")
    try:
        # read whole (one request on Cloud Storage), decoded as open(path, newline="") would
        with io.TextIOWrapper(io.BytesIO(storage.read_bytes(path)), encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ResultsError(f"{path} is empty (no header)")
            missing = [c for c in required if c not in header]
            if missing:
                raise ResultsError(f"{path} lacks required column(s) {', '.join(missing)}")
            rows = []
            for lineno, cells in enumerate(reader, start=2):
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise ResultsError(f"{path}:{lineno}: {len(cells)} cells for {len(header)} columns")
                rows.append({c: _parse_cell(v) for c, v in zip(header, cells)})
    except UnicodeDecodeError:
        raise ResultsError(f"{path} is not a UTF-8 text file") from None
    return rows


def read_results_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a results file back (:func:`read_csv`; every column of :data:`RESULT_COLUMNS` is
    required)."""
    return read_csv(path, RESULT_COLUMNS)


# --------------------------------------------------------------------------------------------
# Aggregation over seeds
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _numeric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns whose non-empty values are all numbers (bools and strings are not)."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    out = []
    for key in keys:
        if key in _KEY_COLUMNS:
            continue
        values = [_plain(r.get(key)) for r in rows]
        present = [v for v in values if v is not None]
        if present and all(_is_number(v) for v in present):
            out.append(key)
    return out


def _series(row: Mapping[str, Any]) -> tuple:
    """What a row belongs to: its ``branch`` and identity columns (``None`` where it has none)."""
    return tuple(_plain(row.get(c)) for c in LEADING_COLUMNS)


def _group(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, list[Mapping[str, Any]]]:
    """Rows grouped by (branch and identity columns, level), groups in order of first appearance
    of the branch and identity and ascending level. A repeated (branch, identity, level, seed) is
    an error."""
    groups: dict[tuple, list] = {}
    seen: set[tuple] = set()
    series_order: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        for c in ("seed", "level"):
            if c not in row:
                raise ResultsError(f"result row {i} lacks required column {c}")
        series = _series(row)
        level = _plain(row["level"])
        if not _is_number(level) or int(level) != level:
            raise ResultsError(f"result row {i}: level must be an integer, got {level!r}")
        ident = (series, int(level), _plain(row["seed"]))
        if ident in seen:
            branch = series[0]
            where = f"branch {branch!r}, " if branch is not None else ""
            raise ResultsError(f"duplicate result row for {where}level {ident[1]}, seed {ident[2]}")
        seen.add(ident)
        series_order.setdefault(series, len(series_order))
        groups.setdefault((series, int(level)), []).append(row)
    return dict(sorted(groups.items(), key=lambda kv: (series_order[kv[0][0]], kv[0][1])))


def aggregate(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Average result rows over seeds, one dict per level (per branch, identity and level when
    rows have a ``branch`` column or identity columns), sorted by level.

    Each dict has ``level``, ``branch`` and the identity columns when present (keys, never
    averaged: ``noise_rate`` is one), ``n_seeds`` (rows in the group), and for every other
    numeric column ``c`` (all but ``seed`` and ``level``): ``c_mean``, ``c_std`` (the sample
    standard deviation over seeds, ``ddof=1``; NaN for one seed), ``c_min`` and ``c_max``. NaN
    and empty cells are left out of these statistics (all missing gives NaN). Non-numeric
    columns that agree across the group's seeds are copied as they are.
    """
    rows = list(rows)
    if not rows:
        raise ResultsError("no result rows to aggregate")
    numeric = _numeric_columns(rows)
    out = []
    for (series, level), group in _group(rows).items():
        entry: dict[str, Any] = {"level": level}
        for c, value in zip(LEADING_COLUMNS, series):
            if value is not None:
                entry[c] = value
        entry["n_seeds"] = len(group)
        for c in numeric:
            values = np.array(
                [np.nan if r.get(c) is None else float(_plain(r.get(c))) for r in group],
                dtype=np.float64,
            )
            finite = values[~np.isnan(values)]
            if finite.size:
                entry[f"{c}_mean"] = float(np.mean(finite))
                entry[f"{c}_std"] = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
                entry[f"{c}_min"] = float(np.min(finite))
                entry[f"{c}_max"] = float(np.max(finite))
            else:
                for stat in ("mean", "std", "min", "max"):
                    entry[f"{c}_{stat}"] = float("nan")
        for c in group[0]:
            if c in _KEY_COLUMNS or c in numeric or c in entry:
                continue
            values = [r.get(c) for r in group]
            if all(v == values[0] for v in values):
                entry[c] = values[0]
        out.append(entry)
    return out


# --------------------------------------------------------------------------------------------
# Branches
# --------------------------------------------------------------------------------------------


def split_branches(agg: Sequence[Mapping[str, Any]]) -> dict[Any, list[Mapping[str, Any]]]:
    """:func:`aggregate` entries grouped by their ``branch`` (``None`` without one), branches in
    order of first appearance, entries in their order."""
    out: dict[Any, list] = {}
    for entry in agg:
        out.setdefault(entry.get("branch"), []).append(entry)
    return out


def main_branch(rows: Sequence[Mapping[str, Any]]) -> tuple[Any, list, dict[Any, list]]:
    """(main branch name, its rows, {other branch: rows}). Without a ``branch`` column every row
    is the main curve; with one, the main curve is ``branch == "imp"`` (or the only branch)."""
    if not any("branch" in r for r in rows):
        return None, list(rows), {}
    by_branch: dict[Any, list] = {}
    for r in rows:
        by_branch.setdefault(r.get("branch"), []).append(r)
    if MAIN_BRANCH in by_branch:
        main = MAIN_BRANCH
    elif len(by_branch) == 1:
        main = next(iter(by_branch))
    else:
        raise ResultsError(f"rows have branches {sorted(map(str, by_branch))} but none is {MAIN_BRANCH!r}")
    others = {b: rs for b, rs in by_branch.items() if b != main}
    return main, by_branch.pop(main), others


# --------------------------------------------------------------------------------------------
# Run directory
# --------------------------------------------------------------------------------------------


def branch_files(run_dir: str | os.PathLike, name: str) -> list[str]:
    """The paths of the files ``name`` of every branch, ``run_dir/branches/*/name``, sorted."""
    found = storage.glob(run_dir, f"branches/*/{name}")
    return sorted(os.fspath(p) for p in found if not p.parent.name.startswith("."))  # as glob.glob: no hidden


def branch_rows(run_dir: str | os.PathLike, taken: Iterable[Any] = (MAIN_BRANCH,)) -> list[dict[str, Any]]:
    """The rows of every branch's ``branches/*/results.csv``, in folder order.

    A branch never blocks the main run: a file that cannot be read, has a repeated (level,
    seed) or a branch label already ``taken`` (by the main run or an earlier folder) is left out
    with a warning naming it (rerunning that branch's command rewrites its files)."""
    taken = set(taken)
    rows: list[dict[str, Any]] = []
    for path in branch_files(run_dir, RESULTS_FILE):
        try:
            file_rows = read_results_csv(path)
            _group(file_rows)  # a repeated (branch, level, seed) raises
            labels = {r.get("branch") for r in file_rows}
            clash = sorted(map(str, labels & taken))
            if clash:
                raise ResultsError(
                    f"branch label {', '.join(map(repr, clash))} is already used by another results file"
                )
        except (ResultsError, OSError) as err:
            warnings.warn(f"{path} left out: {err}", stacklevel=2)
            continue
        taken |= labels
        rows += file_rows
    return rows


def run_rows(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``run_dir/results.csv`` followed by those of every branch
    (``run_dir/branches/*/results.csv``: one-shot, reinit, random pruning, re-dense; see
    :func:`branch_rows` for the branch files that are left out). Raises ``FileNotFoundError`` or
    :class:`ResultsError` (naming the file) when the main results file is missing, malformed or
    empty."""
    results = os.path.join(os.fspath(run_dir), RESULTS_FILE)
    rows = read_results_csv(results)
    if not rows:
        raise ResultsError(f"{results} has no result rows")
    return rows + branch_rows(run_dir, {r.get("branch", MAIN_BRANCH) for r in rows})
