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
from sdd_jax.figure import X_TICKS
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


def _reversed_log_axis(ax, xs: Sequence[np.ndarray], width_inches: float) -> None:
    """The paper's axis, as :func:`sdd_jax.figure.make_figure` draws it: remaining weights in %,
    log scale, reversed (sparsity grows to the right), ticks at the paper's values, thinned to
    the decades when a panel is too narrow to print them all apart (``width_inches``)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    all_x = np.concatenate(list(xs))
    left, right = float(np.max(all_x)) * 1.15, float(np.min(all_x)) / 1.15
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ticks = [t for t in X_TICKS if right <= t <= left]
    if len(ticks) > max(2, 1.6 * width_inches):  # about 0.6 inch a label, or they run together
        ticks = [t for t in ticks if float(np.log10(t)).is_integer()]
    if len(ticks) < 2:  # a short range: its own ends
        ticks = sorted({float(f"{v:.3g}") for v in (np.max(all_x), np.min(all_x))}, reverse=True)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))


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
    ``colour``. ``values``: the ``by`` values in legend order. Lines carry gids
    ``test|<value>|<panel index>`` (and ``train|...``, ``distance|...``) so that the drawn
    figure can be checked. The legend names the values (titled ``by``), the line styles and the
    band (± 1 sd over the seeds)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ncols, nrows = len(panels), 2 if distance else 1
    width = max(6.4, 1.0 + 3.8 * ncols)  # one panel still leaves room for the legends and the title
    fig = Figure(figsize=(width, 1.6 + 3.2 * nrows), dpi=150)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey="row", squeeze=False)
    xs = [s["x"] for _, series in panels for s in series]
    counts = [s["n_seeds"] for _, series in panels for s in series]
    for col, (panel_title, series) in enumerate(panels):
        ax = axes[0][col]
        for s in series:
            c = s["colour"]
            _band(ax, s["x"], s["test_mean"], s["test_sd"], c, 0.25)
            _band(ax, s["x"], s["train_mean"], s["train_sd"], c, 0.12)
            ax.plot(s["x"], s["test_mean"], "o-", color=c, ms=2.5, lw=1.5, gid=f"test|{s['value']}|{col}", zorder=3)
            ax.plot(s["x"], s["train_mean"], "--", color=c, lw=1.2, gid=f"train|{s['value']}|{col}", zorder=3)
            if distance:
                d = axes[1][col]
                _band(d, s["x"], s["distance_mean"], s["distance_sd"], c, 0.25)
                d.plot(s["x"], s["distance_mean"], "^-", color=c, ms=2.5, lw=1.2, gid=f"distance|{s['value']}|{col}")
        if panel_title:
            ax.set_title(panel_title, fontsize=9)
        for row in range(nrows):
            _reversed_log_axis(axes[row][col], xs, (width - 1.0) / ncols)
            axes[row][col].grid(True, axis="y", alpha=0.3)
        axes[nrows - 1][col].set_xlabel("remaining weights (%)")
    axes[0][0].set_ylabel("accuracy (%)")
    if distance:
        axes[1][0].set_ylabel("learning distance ‖θ0 − m⊙θT‖₂")

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
