"""The paper's figure for a pruning run: accuracy against the remaining weights on a reversed log
axis, the learning distances on a second axis, the phases as shaded spans (He et al., ICML 2022).

Two learning distances are drawn, each divided by its own maximum so that both fit one axis and
their peaks can be compared: the paper's ``‖θ0 − m⊙θT‖`` (pruned coordinates count θ0², so it
grows with the sparsity towards ‖θ0‖) and ``‖m⊙(θT − θ0)‖`` over the unpruned coordinates only.
Where they peak at different levels (small data, short training), the legend gives each maximum
and its level.

Lines are means over seeds; the bands and the branches' error bars are ± 1 sample standard
deviation over seeds (``ddof=1``, as the summary table's ``± sd``), and the legend says so. The
train accuracy is on the training labels as trained, noise included. Colours are the Okabe–Ito
palette (distinguishable with the common colour-vision deficiencies), one per curve: test, train,
each distance and each branch. A run of fewer than :data:`EVERY_LEVEL_TICKS` levels gets a tick
at every level; longer runs get the paper's ticks.

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
X_TICKS = (100, 50, 20, 10, 5, 1, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001)
# Below this many levels every level gets its own tick (the paper's ticks would leave one or two).
EVERY_LEVEL_TICKS = 10

# Okabe & Ito (2008), "Color Universal Design": one colour per curve.
COLOURS = {
    "test": "#0072B2",  # blue
    "train": "#D55E00",  # vermillion
    "dense_test": "#555555",
    "learning_distance": "#009E73",  # bluish green
    "learning_distance_unpruned": "#CC79A7",  # reddish purple
}
# The branches, in order (Okabe-Ito orange, sky blue, black, then Tol's muted wine, teal, olive).
BRANCH_COLOURS = ("#E69F00", "#56B4E9", "#000000", "#882255", "#44AA99", "#999933", "#AA4499", "#DDCC77")


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


def _spread(agg: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (``ddof=1``; 0 where one seed gives none) of ``key``
    over seeds, in %."""
    mean = 100.0 * _column(agg, f"{key}_mean")
    sd = 100.0 * _column(agg, f"{key}_std")
    return mean, np.where(np.isfinite(sd), sd, 0.0)


def figure_data(rows: Iterable[Mapping[str, Any]], **phase_options: Any) -> dict[str, Any]:
    """Everything :func:`make_figure` draws, as numbers (accuracies in %, x = remaining weights in %).

    ``main`` holds the main curve (all rows, or ``branch == "imp"``): ``level``, ``x``,
    ``n_seeds`` (per level), ``test_mean``, ``test_sd`` (the sample standard deviation over seeds,
    ``ddof=1`` as in the summary table; 0 with one seed) and the band ``test_lo``/``test_hi`` =
    mean ∓ sd, the same for ``train``, ``learning_distance`` and ``learning_distance_unpruned``
    (means over seeds), ``phases``, ``spans`` and ``dense_test`` (the densest level's mean test
    accuracy). ``others`` maps each other branch to its ``level``, ``x``, ``n_seeds``,
    ``test_mean`` and ``test_sd``.
    """
    rows = list(rows)
    if not rows:
        raise ResultsError("no result rows to plot")
    main_name, main_rows, other_rows = main_branch(rows)
    agg = aggregate(main_rows)
    x = _remaining_percent(agg)
    labels = phases(agg, **phase_options)
    test_mean, test_sd = _spread(agg, "test_acc")
    train_mean, train_sd = _spread(agg, "train_acc")
    main = {
        "branch": main_name,
        "level": [e["level"] for e in agg],
        "x": x,
        "n_seeds": [int(e["n_seeds"]) for e in agg],
        "test_mean": test_mean,
        "test_sd": test_sd,
        "test_lo": test_mean - test_sd,
        "test_hi": test_mean + test_sd,
        "train_mean": train_mean,
        "train_sd": train_sd,
        "train_lo": train_mean - train_sd,
        "train_hi": train_mean + train_sd,
        "learning_distance": _column(agg, "learning_distance_mean"),
        "learning_distance_unpruned": _column(agg, "learning_distance_unpruned_mean"),
        "phases": labels,
        "spans": _phase_spans(x, labels),
        "dense_test": float(100.0 * agg[int(np.argmin([e["level"] for e in agg]))]["test_acc_mean"]),
    }
    others = {}
    for branch, brows in other_rows.items():
        bagg = aggregate(brows)
        mean, sd = _spread(bagg, "test_acc")
        others[branch] = {
            "level": [e["level"] for e in bagg],
            "x": _remaining_percent(bagg),
            "n_seeds": [int(e["n_seeds"]) for e in bagg],
            "test_mean": mean,
            "test_sd": sd,
        }
    return {"main": main, "others": others}


def seeds_phrase(counts: Sequence[int]) -> str:
    """``"3 seeds"``, ``"1 seed"``, ``"2-3 seeds"`` (levels with different counts)."""
    lo, hi = min(counts), max(counts)
    if lo == hi:
        return f"{lo} seed{'s' if lo != 1 else ''}"
    return f"{lo}-{hi} seeds"


def level_ticks(x: np.ndarray, left: float, right: float) -> list[float]:
    """The x ticks: every level's remaining weights when there are fewer than
    :data:`EVERY_LEVEL_TICKS` levels, else the paper's ticks inside ``[right, left]``."""
    if len(x) < EVERY_LEVEL_TICKS:
        return [float(v) for v in x]
    return [t for t in X_TICKS if right <= t <= left]


def make_figure(data: Mapping[str, Any], title: str | None = None):
    """Draw :func:`figure_data` output; returns the matplotlib Figure: mean test and train
    accuracy with their ± 1 sd bands over seeds against the remaining weights (reversed log
    axis, as in the paper's figures), both learning distances on a twin axis (each over its
    maximum), the phases shaded, the dense test accuracy dashed, and every other branch's mean
    test accuracy with ± 1 sd error bars. Each curve has its own colour (:data:`COLOURS`,
    :data:`BRANCH_COLOURS`); the drawn lines and bands carry ``gid`` s named after their data."""
    # A bare Figure (no pyplot) renders through the Agg canvas whatever the global backend is.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    main = data["main"]
    x = main["x"]
    seeds = seeds_phrase(main["n_seeds"])
    spread = max(main["n_seeds"]) > 1
    fig = Figure(figsize=(7.0, 4.8), dpi=150)
    ax = fig.add_subplot(1, 1, 1)

    for phase, x0, x1 in main["spans"]:
        ax.axvspan(x0, x1, color=_PHASE_COLOURS[phase], alpha=0.5, lw=0, zorder=0)

    for key, marker, label in (("test", "o-", "test"), ("train", "s-", "train (noisy labels)")):
        colour = COLOURS[key]
        if spread:
            band = ax.fill_between(x, main[f"{key}_lo"], main[f"{key}_hi"], color=colour, alpha=0.2, lw=0, zorder=2)
            band.set_gid(f"{key}_band")
        ax.plot(x, main[f"{key}_mean"], marker, color=colour, ms=3, lw=1.5, label=label, gid=key, zorder=3)
    ax.axhline(main["dense_test"], color=COLOURS["dense_test"], ls="--", lw=1.0, label="dense test", gid="dense_test")
    for k, (branch, other) in enumerate(data["others"].items()):
        colour = BRANCH_COLOURS[k % len(BRANCH_COLOURS)]
        bars = ax.errorbar(
            other["x"],
            other["test_mean"],
            yerr=other["test_sd"] if max(other["n_seeds"]) > 1 else None,
            ls="--",
            marker="D^v<>ph*"[k % 8],
            ms=3.5,
            lw=1.2,
            capsize=2.5,
            color=colour,
            label=f"test ({branch})",
            zorder=4,
        )
        bars.lines[0].set_gid(f"test_{branch}")
        for collection in bars.lines[2]:
            collection.set_gid(f"test_{branch}_sd")

    handles, names = ax.get_legend_handles_labels()
    if spread:
        handles.append(Patch(facecolor="#888888", alpha=0.35))
        names.append(f"bands, error bars: ± 1 sd over {seeds} (ddof=1)")
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
        for key, values, style, label in distances:
            peak = int(np.nanargmax(values))
            text = f"{label}, max {values[peak]:.3g} at level {main['level'][peak]}"
            (line,) = ax2.plot(x, values / values[peak], style, color=COLOURS[key], ms=3, lw=1.2, label=text, gid=key)
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
    ax.xaxis.set_major_locator(FixedLocator(level_ticks(x, left, right)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}%"))
    ax.set_xlabel("remaining weights (%)")
    ax.set_ylabel(f"accuracy (%), mean of {seeds}")
    ax.grid(True, axis="y", alpha=0.3)
    # Below the axes, on the topmost axis so that no curve is drawn over it.
    top.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
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
