"""Result tables, phase labels and figures for a pruning run.

A run writes ``results.csv`` with one row per seed and pruning level (see :data:`RESULT_COLUMNS`;
accuracies are fractions in [0, 1], ``density`` is the fraction of prunable weights left). This
module reads it back, averages over seeds, labels the four phases of sparse double descent
(light, critical, sweet, collapsed; He et al., ICML 2022, Fig. 1) and draws the paper's figure:
accuracy against the remaining weights on a reversed log axis, the learning distance on a second
axis, the phases as shaded spans.

Everything here runs on the host with numpy and the standard library; matplotlib (Agg backend)
is imported only inside the plotting functions.
"""

from __future__ import annotations

import csv
import glob
import io
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sdd_jax.atomic import atomic_write_bytes, atomic_write_text

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

PHASES: tuple[str, ...] = ("light", "critical", "sweet", "collapsed")

MAIN_BRANCH = "imp"

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.txt"
FIGURE_STEM = "figure"

# Group keys: never averaged.
_KEY_COLUMNS = ("seed", "level", "branch")

_PHASE_COLOURS = {
    "light": "#c6dbef",
    "critical": "#fdd0a2",
    "sweet": "#c7e9c0",
    "collapsed": "#d9d9d9",
}

# The paper's ticks (remaining weights, %), continued below 0.5 % for longer runs.
_X_TICKS = (100, 50, 20, 10, 5, 1, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001)


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


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    extra: set[str] = set()
    for i, row in enumerate(rows):
        missing = [c for c in RESULT_COLUMNS if c not in row]
        if missing:
            raise ResultsError(f"result row {i} lacks required column(s) {', '.join(missing)}")
        extra.update(k for k in row if k not in RESULT_COLUMNS)
    return list(RESULT_COLUMNS) + sorted(extra)


def write_results_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write result rows atomically (temp file in the same folder, then ``os.replace``).

    Columns: :data:`RESULT_COLUMNS` in order, then every other key in sorted order (a row
    without an extra key gets an empty cell). A row lacking a required column raises
    :class:`ResultsError` naming it. Floats are written with ``repr`` so they read back exactly.
    Returns the path written.
    """
    rows = list(rows)
    columns = _columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format_cell(row.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())
    return os.fspath(path)


def read_results_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a results file back: integers as ``int``, other numbers as ``float`` (NaN too),
    empty cells as ``None``, anything else as ``str``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no results file at {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ResultsError(f"{path} is empty (no header)")
        missing = [c for c in RESULT_COLUMNS if c not in header]
        if missing:
            raise ResultsError(f"{path} lacks required column(s) {', '.join(missing)}")
        rows = []
        for lineno, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) != len(header):
                raise ResultsError(
                    f"{path}:{lineno}: {len(cells)} cells for {len(header)} columns"
                )
            rows.append({c: _parse_cell(v) for c, v in zip(header, cells)})
    return rows


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


def _group(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, list[Mapping[str, Any]]]:
    """Rows grouped by (branch, level), groups in order of first appearance of the branch and
    ascending level. A repeated (branch, level, seed) is an error."""
    groups: dict[tuple, list] = {}
    seen: set[tuple] = set()
    branch_order: dict[Any, int] = {}
    for i, row in enumerate(rows):
        for c in ("seed", "level"):
            if c not in row:
                raise ResultsError(f"result row {i} lacks required column {c}")
        branch = row.get("branch")
        level = _plain(row["level"])
        if not _is_number(level) or int(level) != level:
            raise ResultsError(f"result row {i}: level must be an integer, got {level!r}")
        ident = (branch, int(level), _plain(row["seed"]))
        if ident in seen:
            where = f"branch {branch!r}, " if branch is not None else ""
            raise ResultsError(f"duplicate result row for {where}level {ident[1]}, seed {ident[2]}")
        seen.add(ident)
        branch_order.setdefault(branch, len(branch_order))
        groups.setdefault((branch, int(level)), []).append(row)
    return dict(sorted(groups.items(), key=lambda kv: (branch_order[kv[0][0]], kv[0][1])))


def aggregate(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Average result rows over seeds, one dict per level (per branch and level when rows have a
    ``branch`` column), sorted by level.

    Each dict has ``level``, ``n_seeds`` (rows in the group), ``branch`` when present, and for
    every numeric column ``c`` (all but ``seed`` and ``level``): ``c_mean``, ``c_std``
    (population std, ``ddof=0``, so one seed gives 0), ``c_min`` and ``c_max``. NaN and empty
    cells are left out of these statistics (all missing gives NaN). Non-numeric columns that
    agree across the group's seeds are copied as they are.
    """
    rows = list(rows)
    if not rows:
        raise ResultsError("no result rows to aggregate")
    numeric = _numeric_columns(rows)
    out = []
    for (branch, level), group in _group(rows).items():
        entry: dict[str, Any] = {"level": level}
        if branch is not None:
            entry["branch"] = branch
        entry["n_seeds"] = len(group)
        for c in numeric:
            values = np.array(
                [np.nan if r.get(c) is None else float(_plain(r.get(c))) for r in group],
                dtype=np.float64,
            )
            finite = values[~np.isnan(values)]
            if finite.size:
                entry[f"{c}_mean"] = float(np.mean(finite))
                entry[f"{c}_std"] = float(np.std(finite, ddof=0))
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


def _split_branches(agg: Sequence[Mapping[str, Any]]) -> dict[Any, list[Mapping[str, Any]]]:
    out: dict[Any, list] = {}
    for entry in agg:
        out.setdefault(entry.get("branch"), []).append(entry)
    return out


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def phase_boundaries(
    train: Sequence[float],
    test: Sequence[float],
    *,
    tol_train: float = 0.02,
    tol_sweet: float = 0.01,
    tol_collapse: float = 0.01,
    collapse_train_drop: float = 0.10,
) -> tuple[int, int, int]:
    """Indices ``(L, S, C)`` with ``1 <= L <= S <= C <= n`` splitting mean curves ordered from
    dense to sparse into light ``[0, L)``, critical ``[L, S)``, sweet ``[S, C)`` and collapsed
    ``[C, n)``. See :func:`phases` for the rule."""
    tr = np.asarray(train, dtype=np.float64)
    te = np.asarray(test, dtype=np.float64)
    if tr.ndim != 1 or tr.shape != te.shape:
        raise ResultsError(f"train and test curves must be 1-D of equal length, got {tr.shape}, {te.shape}")
    n = tr.size
    if n == 0:
        raise ResultsError("no levels to label")
    if not (np.all(np.isfinite(tr)) and np.all(np.isfinite(te))):
        raise ResultsError("train and test accuracy curves must be finite at every level")
    for name, tol in (("tol_train", tol_train), ("tol_sweet", tol_sweet),
                      ("tol_collapse", tol_collapse), ("collapse_train_drop", collapse_train_drop)):
        if not tol >= 0:
            raise ResultsError(f"{name} must be >= 0, got {tol}")
    if n == 1:
        return 1, 1, 1

    # Light: the dense level and every following level that still memorises.
    below = np.nonzero(tr[1:] < tr[0] - tol_train)[0]
    light_end = int(below[0]) + 1 if below.size else n
    if light_end == n:
        return n, n, n

    # Sweet start: first level after memorisation within tol_sweet of the best sparse test acc.
    best = float(np.max(te[1:]))
    near = np.nonzero(te[light_end:] >= best - tol_sweet)[0]
    sweet_start = int(near[0]) + light_end if near.size else n

    dense_test = te[0]
    if sweet_start < n:
        peak = sweet_start + int(np.argmax(te[sweet_start:]))
        after = np.arange(peak + 1, n)
        collapsed = (te[after] < dense_test - tol_collapse) | (tr[after] < tr[peak] - collapse_train_drop)
    else:
        after = np.arange(light_end, n)
        collapsed = te[after] < dense_test - tol_collapse
    hits = np.nonzero(collapsed)[0]
    collapse_start = int(after[hits[0]]) if hits.size else n
    if sweet_start == n:  # no sweet phase: critical runs up to the collapse
        sweet_start = collapse_start
    return light_end, sweet_start, collapse_start


def phase_labels(train: Sequence[float], test: Sequence[float], **tolerances: float) -> list[str]:
    """Phase of each level for mean curves ordered from dense to sparse (see :func:`phases`)."""
    light_end, sweet_start, collapse_start = phase_boundaries(train, test, **tolerances)
    n = len(train)
    labels = []
    for i in range(n):
        if i < light_end:
            labels.append("light")
        elif i < sweet_start:
            labels.append("critical")
        elif i < collapse_start:
            labels.append("sweet")
        else:
            labels.append("collapsed")
    return labels


def phases(
    agg: Sequence[Mapping[str, Any]],
    *,
    train_key: str = "train_acc",
    test_key: str = "test_acc",
    tol_train: float = 0.02,
    tol_sweet: float = 0.01,
    tol_collapse: float = 0.01,
    collapse_train_drop: float = 0.10,
) -> list[str]:
    """Label each level of one branch's :func:`aggregate` output with a phase of sparse double
    descent, returned in the order of ``agg``.

    The levels are ordered by ``level``; the first one (level 0, the dense model) is the
    reference, with mean train accuracy ``tr0`` and test accuracy ``te0`` (fractions). Let
    ``best`` be the highest mean test accuracy over the sparse levels (all but the first).

    * **light**: the dense level and the levels after it up to (excluding) the first sparse level
      whose train accuracy falls below ``tr0 - tol_train``: the net still memorises its
      (noisy) training set while its test accuracy dips or stays below the dense one.
    * **critical**: from the end of memorisation up to (excluding) the first level, at or after
      it, whose test accuracy is within ``tol_sweet`` of ``best``: train accuracy falls off the
      memorising plateau while test accuracy climbs out of its dip.
    * **sweet**: from there on, around the peak ``p`` (the best test accuracy from the sweet start
      onwards), up to (excluding) the first level after ``p`` that collapses. It starts after
      the light-phase dip whenever the dip lies more than ``tol_sweet`` below ``best``, and
      after ``p`` it keeps every level that still generalises about as well as the dense net.
    * **collapsed**: the first level after ``p`` whose test accuracy falls below
      ``te0 - tol_collapse``, or whose train accuracy falls more than ``collapse_train_drop``
      below its value at ``p``, and every level after it.

    Each phase is a contiguous run, so labels never go back in the order light -> critical ->
    sweet -> collapsed; any phase may be empty. A curve that never leaves the memorising plateau
    is all light (one level too); one whose test accuracy after memorisation never comes within
    ``tol_sweet`` of ``best`` has no sweet phase, and its collapse is then the first level after
    memorisation below ``te0 - tol_collapse``.

    ``agg`` must hold one entry per level (filter rows to one branch first); the curves are read
    from ``f"{train_key}_mean"`` and ``f"{test_key}_mean"``.
    """
    if not agg:
        raise ResultsError("no levels to label")
    levels = [e.get("level") for e in agg]
    if len(set(levels)) != len(levels):
        raise ResultsError(
            "phases() needs one entry per level; filter the rows to a single branch first"
        )
    for key in (f"{train_key}_mean", f"{test_key}_mean"):
        if any(key not in e for e in agg):
            raise ResultsError(f"aggregate entries lack {key!r}")
    order = sorted(range(len(agg)), key=lambda i: levels[i])
    train = [agg[i][f"{train_key}_mean"] for i in order]
    test = [agg[i][f"{test_key}_mean"] for i in order]
    sorted_labels = phase_labels(
        train, test, tol_train=tol_train, tol_sweet=tol_sweet,
        tol_collapse=tol_collapse, collapse_train_drop=collapse_train_drop,
    )
    labels = [""] * len(agg)
    for rank, i in enumerate(order):
        labels[i] = sorted_labels[rank]
    return labels


# --------------------------------------------------------------------------------------------
# Text table
# --------------------------------------------------------------------------------------------


def _pm(entry: Mapping[str, Any], column: str, scale: float, mean_fmt: str, std_fmt: str) -> str:
    mean = entry.get(f"{column}_mean", float("nan"))
    std = entry.get(f"{column}_std", float("nan"))
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{format(mean * scale, mean_fmt)} ± {format(std * scale, std_fmt)}"


def _table_lines(agg: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[str]:
    headers = ("level", "n", "sparsity %", "weights %", "test acc %", "train acc %",
               "memorised %", "learning dist.", "phase")
    densities = [e.get("density_mean", float("nan")) for e in agg]
    smallest = min((d for d in densities if math.isfinite(d) and d > 0), default=1.0)
    # Enough decimals that the sparsest level does not print as 100.00.
    decimals = max(2, math.ceil(-math.log10(100 * smallest)) + 1)
    body = []
    for entry, label, density in zip(agg, labels, densities):
        sparsity = entry.get("sparsity_mean", float("nan"))
        body.append((
            str(entry["level"]),
            str(entry["n_seeds"]),
            "-" if not math.isfinite(sparsity) else f"{100 * sparsity:.{decimals}f}",
            "-" if not math.isfinite(density) else f"{100 * density:.3g}",
            _pm(entry, "test_acc", 100.0, "6.2f", "5.2f"),
            _pm(entry, "train_acc", 100.0, "6.2f", "5.2f"),
            _pm(entry, "train_acc_noisy_subset", 100.0, "6.2f", "5.2f"),
            _pm(entry, "learning_distance", 1.0, "8.4g", "<7.2g"),
            label,
        ))
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    right = [True] * (len(headers) - 1) + [False]

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in body]


def summary_table(rows: Iterable[Mapping[str, Any]], **phase_options: Any) -> str:
    """A fixed-width text table, one line per level: level, seeds, sparsity and remaining
    weights (%), then mean ± std over seeds of test accuracy, train accuracy and memorisation
    (train accuracy on the relabelled subset), all in %, the learning distance, and the phase
    (:func:`phases`; ``phase_options`` go to it). With a ``branch`` column, one table per branch
    under a ``branch: NAME`` heading; phases are labelled on the main (``imp``) curve only, since
    a branch's few levels do not determine them."""
    agg = aggregate(rows)
    branches = _split_branches(agg)
    parts = []
    for branch, entries in branches.items():
        if branch in (None, MAIN_BRANCH):
            labels = phases(entries, **phase_options)
        else:
            labels = ["-"] * len(entries)
        lines = _table_lines(entries, labels)
        if branch is not None:
            lines.insert(0, f"branch: {branch}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def _main_branch(rows: Sequence[Mapping[str, Any]]) -> tuple[Any, list, dict[Any, list]]:
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
        raise ResultsError(
            f"rows have branches {sorted(map(str, by_branch))} but none is {MAIN_BRANCH!r}"
        )
    others = {b: rs for b, rs in by_branch.items() if b != main}
    return main, by_branch.pop(main), others


def _column(entries: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([e.get(key, np.nan) for e in entries], dtype=np.float64)


def _remaining_percent(entries: Sequence[Mapping[str, Any]]) -> np.ndarray:
    x = 100.0 * _column(entries, "density_mean")
    if not np.all(np.isfinite(x) & (x > 0)):
        raise ResultsError("every level needs a density > 0 to be placed on the log axis")
    return x


def _phase_spans(x: np.ndarray, labels: Sequence[str]) -> list[tuple[str, float, float]]:
    """Contiguous phase runs as (phase, x_start, x_end) on the log axis, split at the geometric
    midpoints between neighbouring levels and padded by half a step at both ends."""
    if len(x) == 1:
        edges = np.array([x[0] * 1.25, x[0] / 1.25])
    else:
        mids = np.sqrt(x[:-1] * x[1:])
        first = x[0] * np.sqrt(x[0] / x[1])
        last = x[-1] * np.sqrt(x[-1] / x[-2])
        edges = np.concatenate([[first], mids, [last]])
    spans = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            spans.append((labels[start], float(edges[start]), float(edges[i])))
            start = i
    return spans


def figure_data(rows: Iterable[Mapping[str, Any]], **phase_options: Any) -> dict[str, Any]:
    """Everything :func:`plot` draws, as numbers (accuracies in %, x = remaining weights in %).

    ``main`` holds the main curve (all rows, or ``branch == "imp"``): ``level``, ``x``,
    ``test_mean``/``test_lo``/``test_hi`` and the same for ``train`` (band = min/max over seeds),
    ``learning_distance``, ``phases``, ``spans`` and ``dense_test`` (the densest level's mean test
    accuracy). ``others`` maps each other branch to its ``x`` and ``test_mean``.
    """
    rows = list(rows)
    if not rows:
        raise ResultsError("no result rows to plot")
    main_name, main_rows, other_rows = _main_branch(rows)
    agg = aggregate(main_rows)
    x = _remaining_percent(agg)
    labels = phases(agg, **phase_options)
    main = {
        "branch": main_name,
        "level": [e["level"] for e in agg],
        "x": x,
        "test_mean": 100.0 * _column(agg, "test_acc_mean"),
        "test_lo": 100.0 * _column(agg, "test_acc_min"),
        "test_hi": 100.0 * _column(agg, "test_acc_max"),
        "train_mean": 100.0 * _column(agg, "train_acc_mean"),
        "train_lo": 100.0 * _column(agg, "train_acc_min"),
        "train_hi": 100.0 * _column(agg, "train_acc_max"),
        "learning_distance": _column(agg, "learning_distance_mean"),
        "phases": labels,
        "spans": _phase_spans(x, labels),
        "dense_test": float(100.0 * agg[int(np.argmin([e["level"] for e in agg]))]["test_acc_mean"]),
    }
    others = {}
    for branch, brows in other_rows.items():
        bagg = aggregate(brows)
        others[branch] = {
            "x": _remaining_percent(bagg),
            "test_mean": 100.0 * _column(bagg, "test_acc_mean"),
        }
    return {"main": main, "others": others}


def _make_figure(data: Mapping[str, Any], title: str | None = None):
    """Draw :func:`figure_data` output; returns the matplotlib Figure."""
    # A bare Figure (no pyplot) renders through the Agg canvas whatever the global backend is.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    main = data["main"]
    x = main["x"]
    fig = Figure(figsize=(7.0, 4.8), dpi=150)
    ax = fig.add_subplot(1, 1, 1)

    for phase, x0, x1 in main["spans"]:
        ax.axvspan(x0, x1, color=_PHASE_COLOURS[phase], alpha=0.5, lw=0, zorder=0)

    ax.fill_between(x, main["test_lo"], main["test_hi"], color="C0", alpha=0.25, lw=0, zorder=2)
    ax.plot(x, main["test_mean"], "o-", color="C0", ms=3, lw=1.5, label="test", gid="test", zorder=3)
    ax.fill_between(x, main["train_lo"], main["train_hi"], color="C3", alpha=0.2, lw=0, zorder=2)
    ax.plot(x, main["train_mean"], "s-", color="C3", ms=3, lw=1.5, label="train", gid="train", zorder=3)
    ax.axhline(main["dense_test"], color="C0", ls="--", lw=1.0, label="dense test", gid="dense_test")
    for k, (branch, other) in enumerate(data["others"].items()):
        ax.plot(other["x"], other["test_mean"], ls="--", marker=".", lw=1.2, color=f"C{(k + 4) % 10}",
                label=f"test ({branch})", gid=f"test_{branch}")

    handles, names = ax.get_legend_handles_labels()
    top = ax
    ld = main["learning_distance"]
    if np.any(np.isfinite(ld)):
        ax2 = top = ax.twinx()
        (line,) = ax2.plot(x, ld, "^:", color="C2", ms=3, lw=1.2, label="learning distance",
                           gid="learning_distance")
        ax2.set_ylabel("learning distance")
        handles.append(line)
        names.append("learning distance")

    present = [p for p in PHASES if p in main["phases"]]
    handles += [Patch(facecolor=_PHASE_COLOURS[p], alpha=0.5, label=p) for p in present]
    names += [f"{p} phase" for p in present]

    lo = min(s[1] for s in main["spans"]) if main["spans"] else float(np.max(x))
    hi = max(s[2] for s in main["spans"]) if main["spans"] else float(np.min(x))
    ax.set_xscale("log")
    all_x = np.concatenate([x] + [o["x"] for o in data["others"].values()])
    left = max(lo, float(np.max(all_x)) * 1.05)
    right = min(hi, float(np.min(all_x)) / 1.05)
    ax.set_xlim(left, right)  # reversed: sparsity grows to the right
    ticks = [t for t in _X_TICKS if right <= t <= left]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.set_xlabel("remaining weights (%)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, axis="y", alpha=0.3)
    # Below the axes, on the topmost axis so that no curve is drawn over it.
    top.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4,
               fontsize=7, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _atomic_savefig(fig, path: str, fmt: str) -> None:
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else None
    fig.savefig(buffer, format=fmt, metadata=metadata, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def plot(
    rows: Iterable[Mapping[str, Any]],
    out_prefix: str | os.PathLike,
    title: str | None = None,
    **phase_options: Any,
) -> list[str]:
    """Write ``out_prefix.png`` and ``out_prefix.svg``: mean test and train accuracy with their
    min/max band over seeds against the remaining weights (reversed log axis, as in the paper's
    figures), the learning distance on a twin axis, the phases shaded, the dense test accuracy
    dashed, and other branches' test accuracy as dashed lines. Returns the two paths."""
    data = figure_data(rows, **phase_options)
    fig = _make_figure(data, title)
    prefix = os.fspath(out_prefix)
    paths = []
    for fmt in ("png", "svg"):
        path = f"{prefix}.{fmt}"
        _atomic_savefig(fig, path, fmt)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Run directory
# --------------------------------------------------------------------------------------------


def run_rows(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``run_dir/results.csv`` followed by those of every branch
    (``run_dir/branches/*/results.csv``: one-shot, reinit, random pruning, re-dense)."""
    results = os.path.join(os.fspath(run_dir), RESULTS_FILE)
    rows = read_results_csv(results)
    if not rows:
        raise ResultsError(f"{results} has no result rows")
    for branch_csv in sorted(glob.glob(os.path.join(os.fspath(run_dir), "branches", "*", RESULTS_FILE))):
        rows += read_results_csv(branch_csv)
    return rows


def report(run_dir: str | os.PathLike, title: str | None = None, **phase_options: Any) -> dict[str, Any]:
    """Read ``run_dir/results.csv``; write ``run_dir/summary.txt`` and ``run_dir/figure.png``
    and ``.svg``. Returns the paths (``results``, ``summary``, ``figures``), the ``table`` text,
    the main branch's ``aggregate`` and ``phases``, and the plotted ``figure_data``."""
    run_dir = os.fspath(run_dir)
    results = os.path.join(run_dir, RESULTS_FILE)
    rows = run_rows(run_dir)
    table = summary_table(rows, **phase_options)
    summary = os.path.join(run_dir, SUMMARY_FILE)
    atomic_write_text(summary, table)
    data = figure_data(rows, **phase_options)
    fig = _make_figure(data, title if title is not None else os.path.basename(os.path.abspath(run_dir)))
    figures = []
    for fmt in ("png", "svg"):
        path = os.path.join(run_dir, f"{FIGURE_STEM}.{fmt}")
        _atomic_savefig(fig, path, fmt)
        figures.append(path)
    _, main_rows, _ = _main_branch(rows)
    agg = aggregate(main_rows)
    return {
        "results": results,
        "summary": summary,
        "figures": figures,
        "table": table,
        "aggregate": agg,
        "phases": phases(agg, **phase_options),
        "figure_data": data,
    }
