"""The comparison figure: several configurations side by side in the paper's layout (He et al.,
ICML 2022, Figs. 2-4, 10, 13-29, 31, 33-34, 44-49).

Accuracy against the remaining weights on the paper's reversed log axis (the axis conventions of
:mod:`sdd_jax.figure`), one colour per value of the ``by`` key (the Okabe-Ito palette, safe for
colour-blind readers), test accuracy solid and train accuracy (on the noisy training labels)
dashed, each with a band of ± one sample standard deviation over seeds (``ddof=1``), one panel per
value of the ``panel`` key with a shared y-axis, and, on request, the learning distance
``‖θ0 − m⊙θT‖`` (the paper's) in a second row of panels.

:func:`curve` computes what is drawn (numpy only); :func:`make_comparison_figure` draws it with
matplotlib, imported only inside it, on a bare ``Figure``; :func:`sdd_jax.figure.save_figure`
writes it (PNG and SVG, atomically).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdd_jax.describe import describe_parts
from sdd_jax.figure import EVERY_LEVEL_TICKS, X_TICKS
from sdd_jax.results import ResultsError, aggregate

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision
# deficiency; black last.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

TRAIN_NOTE = "train, on the noisy training labels (dashed)"


def colour(index: int) -> str:
    """The colour of the ``index``-th value of the ``by`` key (the palette repeats after 8)."""
    return PALETTE[index % len(PALETTE)]


def _column(agg: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if e.get(key) is None else e[key] for e in agg], dtype=np.float64)


def curve(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mean curves of one configuration's result rows (one branch) over seeds: ``level``,
    ``x`` (remaining weights, %), ``test_mean``/``test_sd`` and ``train_mean``/``train_sd``
    (accuracy, %; sd over seeds, ``ddof=1``, NaN for one seed), ``distance_mean``/
    ``distance_sd`` (``learning_distance``) and ``n_seeds`` (the most seeds of a level)."""
    agg = aggregate(rows)
    x = 100.0 * _column(agg, "density_mean")
    if not np.all(np.isfinite(x) & (x > 0)):
        raise ResultsError("every level needs a density > 0 to be placed on the log axis")
    out: dict[str, Any] = {"level": [e["level"] for e in agg], "x": x, "n_seeds": max(e["n_seeds"] for e in agg)}
    for name, column, scale in (
        ("test", "test_acc", 100.0),
        ("train", "train_acc", 100.0),
        ("distance", "learning_distance", 1.0),
    ):
        out[f"{name}_mean"] = scale * _column(agg, f"{column}_mean")
        out[f"{name}_sd"] = scale * _column(agg, f"{column}_std")
    return out


def seeds_text(counts: Sequence[int]) -> str:
    """``"3 seeds"`` or ``"2-3 seeds"``."""
    lo, hi = min(counts), max(counts)
    return f"{hi} seed{'s' if hi != 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"


def shared_title(configs: Sequence[Any], by: str, panel: str | None, name: str = "") -> str:
    """The figure's title: ``name``, then, in the words of :func:`sdd_jax.describe.describe`, the
    parts of the configurations (:class:`sdd_jax.config.Config`) that every series shares (model,
    data, noise, schedule, pruning, epochs, seeds), then the keys that split them:
    ``"quickstart-noise: LeNet-300-100 · MNIST 4,000 · lottery k=0 · 60 epochs · 2 seeds · by
    noise.rate"``."""
    parts = [describe_parts(config) for config in configs]
    shared = [part for part in parts[0] if all(part in other for other in parts[1:])]
    split = f"by {by}" + (f", panels by {panel}" if panel else "")
    return (f"{name}: " if name else "") + " · ".join([*shared, split])


def x_ticks(xs: Sequence[np.ndarray], left: float, right: float, width_inches: float) -> list[float]:
    """The x ticks of a panel ``width_inches`` wide showing ``[right, left]`` (remaining weights,
    %, on a log axis): as the run figure (:func:`sdd_jax.figure.level_ticks`), every level's
    remaining weights when the curves have fewer than :data:`~sdd_jax.figure.EVERY_LEVEL_TICKS`
    distinct ones, else the paper's ticks; thinned where two labels (:func:`tick_label`, about
    0.09 inch a character at the tick labels' size) would overlap: the levels to every other
    one (or every third, ...), the paper's ticks to their decades (and those that still
    overlap left out)."""
    levels = sorted({float(f"{v:.3g}") for x in xs for v in np.asarray(x)}, reverse=True)
    if len(levels) < EVERY_LEVEL_TICKS:
        for step in range(1, len(levels)):  # every level if they fit, else every other one, ...
            if _apart(levels[::step], left, right, width_inches) == levels[::step]:
                return levels[::step]
        return levels[:1]
    ticks = [float(t) for t in X_TICKS if right <= t <= left]
    if len(ticks) < 2:  # a short range: its own ends
        return [levels[0], levels[-1]]
    if _apart(ticks, left, right, width_inches) != ticks:
        ticks = [t for t in ticks if float(np.log10(t)).is_integer()]
    return _apart(ticks, left, right, width_inches)


def tick_label(value: float) -> str:
    """A tick's label, as the run figure writes it: ``"80%"``, ``"0.05%"``, ``"26.2%"``."""
    return f"{value:.3g}%"


def _apart(ticks: Sequence[float], left: float, right: float, width_inches: float) -> list[float]:
    """``ticks`` (descending) without those whose label would touch the previous kept one's."""
    span = np.log10(left) - np.log10(right)
    kept: list[float] = []
    for tick in ticks:
        where = width_inches * (np.log10(left) - np.log10(tick)) / span
        if kept:
            before = width_inches * (np.log10(left) - np.log10(kept[-1])) / span
            room = 0.045 * (len(tick_label(tick)) + len(tick_label(kept[-1]))) + 0.08
            if where - before < room:
                continue
        kept.append(tick)
    return kept


def _reversed_log_axis(ax, xs: Sequence[np.ndarray], width_inches: float) -> None:
    """The paper's axis, as :func:`sdd_jax.figure.make_figure` draws it: remaining weights in %,
    log scale, reversed (sparsity grows to the right), ticks of :func:`x_ticks`."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    all_x = np.concatenate(list(xs))
    left, right = float(np.max(all_x)) * 1.15, float(np.min(all_x)) / 1.15
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.xaxis.set_major_locator(FixedLocator(x_ticks(xs, left, right, width_inches)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: tick_label(v)))


def _band(ax, x, mean, sd, colour_, alpha):
    ok = np.isfinite(sd)
    if np.any(ok):
        ax.fill_between(x[ok], (mean - sd)[ok], (mean + sd)[ok], color=colour_, alpha=alpha, lw=0, zorder=1)


def make_comparison_figure(
    panels: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    by: str,
    values: Sequence[str],
    title: str = "",
    distance: bool = False,
):
    """Draw a comparison; returns the matplotlib Figure.

    ``panels``: ``(panel title, series)`` in panel order (one panel: title ``""``); each series
    is a :func:`curve` dict plus ``value`` (its ``by`` value as text, one of ``values``) and
    ``colour``. ``values``: the ``by`` values in legend order. ``distance``: the learning
    distance in a second row of panels (beside the accuracy when there is one panel, so that
    the figure is as wide as its legends rather than tall and narrow). Lines carry gids
    ``test|<value>|<panel index>`` (and ``train|...``, ``distance|...``) so that the drawn
    figure can be checked. The legend names the values (titled ``by``), the line styles and the
    band (± 1 sd over the seeds)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ncols = len(panels)
    beside = distance and ncols == 1  # one panel: the distance beside it, not below (a wide figure)
    nrows = 2 if distance and not beside else 1
    width = max(6.4, 1.0 + 3.8 * (2 if beside else ncols))  # room for the legends and the title
    fig = Figure(figsize=(width, 1.6 + 3.2 * nrows), dpi=150)
    if beside:
        grid = fig.subplots(1, 2, squeeze=False)
        acc, dist = [grid[0][0]], [grid[0][1]]
    else:
        grid = fig.subplots(nrows, ncols, sharex=True, sharey="row", squeeze=False)
        acc, dist = list(grid[0]), list(grid[1]) if distance else []
    panel_width = (width - 1.0) / (2 if beside else ncols)
    xs = [s["x"] for _, series in panels for s in series]
    counts = [s["n_seeds"] for _, series in panels for s in series]
    for col, (panel_title, series) in enumerate(panels):
        ax = acc[col]
        for s in series:
            c = s["colour"]
            _band(ax, s["x"], s["test_mean"], s["test_sd"], c, 0.25)
            _band(ax, s["x"], s["train_mean"], s["train_sd"], c, 0.12)
            ax.plot(s["x"], s["test_mean"], "o-", color=c, ms=2.5, lw=1.5, gid=f"test|{s['value']}|{col}", zorder=3)
            ax.plot(s["x"], s["train_mean"], "--", color=c, lw=1.2, gid=f"train|{s['value']}|{col}", zorder=3)
            if distance:
                d = dist[col]
                _band(d, s["x"], s["distance_mean"], s["distance_sd"], c, 0.25)
                d.plot(s["x"], s["distance_mean"], "^-", color=c, ms=2.5, lw=1.2, gid=f"distance|{s['value']}|{col}")
        if panel_title:
            ax.set_title(panel_title, fontsize=9)
        for a in [ax, *dist[col : col + 1]]:
            _reversed_log_axis(a, xs, panel_width)
            a.grid(True, axis="y", alpha=0.3)
        for a in [ax, *dist[col : col + 1]] if beside else [dist[col] if distance else ax]:  # the bottom row
            a.set_xlabel("remaining weights (%)")
    acc[0].set_ylabel("accuracy (%)")
    if distance:
        dist[0].set_ylabel("learning distance ‖θ0 − m⊙θT‖₂")

    # Two legends under the panels: the values of ``by`` (titled by it), then the line styles.
    height = fig.get_figheight()
    per_row = min(len(values), 6)
    value_rows = -(-len(values) // per_row)
    styles = [
        Line2D([], [], color="0.2", lw=1.5, marker="o", ms=2.5, label="test (solid)"),
        Line2D([], [], color="0.2", lw=1.2, ls="--", label=TRAIN_NOTE),
        Patch(facecolor="0.2", alpha=0.25, label=f"band: ± 1 sd over {seeds_text(counts)} (ddof=1)"),
    ]
    fig.legend(handles=styles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7, frameon=False)
    fig.legend(
        handles=[Line2D([], [], color=colour(i), lw=2, label=v) for i, v in enumerate(values)],
        loc="lower center",
        bbox_to_anchor=(0.5, 0.28 / height),
        ncol=per_row,
        fontsize=7,
        frameon=False,
        title=by,
        title_fontsize=8,
    )
    if title:  # wrapped to the figure's width (about 0.075 inch a character at this size)
        fig.suptitle(textwrap.fill(title, int(width / 0.075)), fontsize=9)
    fig.tight_layout(rect=(0, (0.62 + 0.2 * value_rows) / height, 1, 1))
    return fig
