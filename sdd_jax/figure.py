"""The paper's figure for a pruning run: accuracy against the remaining weights on a reversed log
axis, the learning distances on a second axis, the phases as shaded spans (He et al., ICML 2022).

Two learning distances are drawn, each divided by its own maximum so that both fit one axis and
their peaks can be compared: the paper's ``‖θ0 − m⊙θT‖`` (pruned coordinates count θ0², so it
grows with the sparsity towards ‖θ0‖) and ``‖m⊙(θT − θ0)‖`` over the unpruned coordinates only.
Where they peak at different levels (small data, short training), the legend gives each maximum
and its level.

:func:`figure_data` computes what is drawn (numpy and the standard library only);
:func:`make_figure` draws it with matplotlib, imported only inside it (a bare ``Figure`` on the
Agg canvas, whatever the global backend); :func:`save_figure` writes it as PNG and SVG.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sdd_jax.atomic import atomic_write_bytes
from sdd_jax.phases import PHASES, phases
from sdd_jax.results import ResultsError, aggregate, main_branch

_PHASE_COLOURS = {
    "light": "#c6dbef",
    "critical": "#fdd0a2",
    "sweet": "#c7e9c0",
    "collapsed": "#d9d9d9",
}

# The paper's ticks (remaining weights, %), continued below 0.5 % for longer runs.
_X_TICKS = (100, 50, 20, 10, 5, 1, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001)


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
    """Everything :func:`make_figure` draws, as numbers (accuracies in %, x = remaining weights in %).

    ``main`` holds the main curve (all rows, or ``branch == "imp"``): ``level``, ``x``,
    ``test_mean``/``test_lo``/``test_hi`` and the same for ``train`` (band = min/max over seeds),
    ``learning_distance`` and ``learning_distance_unpruned`` (means over seeds), ``phases``, ``spans`` and ``dense_test`` (the densest level's mean test
    accuracy). ``others`` maps each other branch to its ``x`` and ``test_mean``.
    """
    rows = list(rows)
    if not rows:
        raise ResultsError("no result rows to plot")
    main_name, main_rows, other_rows = main_branch(rows)
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
        "learning_distance_unpruned": _column(agg, "learning_distance_unpruned_mean"),
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


def make_figure(data: Mapping[str, Any], title: str | None = None):
    """Draw :func:`figure_data` output; returns the matplotlib Figure: mean test and train
    accuracy with their min/max band over seeds against the remaining weights (reversed log axis,
    as in the paper's figures), both learning distances on a twin axis (each over its maximum), the phases shaded, the
    dense test accuracy dashed, and other branches' test accuracy as dashed lines."""
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
        ax.plot(
            other["x"],
            other["test_mean"],
            ls="--",
            marker=".",
            lw=1.2,
            color=f"C{(k + 4) % 10}",
            label=f"test ({branch})",
            gid=f"test_{branch}",
        )

    handles, names = ax.get_legend_handles_labels()
    top = ax
    distances = [
        (key, main.get(key, np.full(len(x), np.nan)), style, label)
        for key, style, label in (
            ("learning_distance", "^:", "‖θ0 − m⊙θT‖ (paper)"),
            ("learning_distance_unpruned", "v--", "‖m⊙(θT − θ0)‖ (unpruned)"),
        )
    ]
    distances = [d for d in distances if np.any(np.isfinite(d[1]) & (d[1] > 0))]
    if distances:
        ax2 = top = ax.twinx()
        for k, (key, values, style, label) in enumerate(distances):
            peak = int(np.nanargmax(values))
            text = f"{label}, max {values[peak]:.3g} at level {main['level'][peak]}"
            (line,) = ax2.plot(
                x, values / values[peak], style, color=("C2", "C8")[k], ms=3, lw=1.2, label=text, gid=key
            )
            handles.append(line)
            names.append(text)
        ax2.set_ylabel("learning distance / its maximum")

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
    top.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=7, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save_figure(fig, out_prefix: str | os.PathLike) -> list[str]:
    """Write ``fig`` to ``out_prefix.png`` and ``out_prefix.svg``, each atomically (temp file in
    the same folder, then ``os.replace``; the SVG without a date, so that it is reproducible).
    Returns the two paths."""
    prefix = os.fspath(out_prefix)
    paths = []
    for fmt in ("png", "svg"):
        path = f"{prefix}.{fmt}"
        buffer = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(buffer, format=fmt, metadata=metadata, bbox_inches="tight")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths
