"""The numbers of a comparison: per configuration, where its test accuracy dips and where it
recovers, computed per seed and then averaged (mean ± sample standard deviation over seeds,
``ddof=1``), and the phases of its mean curve.

For one seed, with its test accuracy per level (in %):

* ``dense``: the accuracy of level 0 (NaN when the rows have no level 0, e.g. a branch run at a
  few levels);
* ``best``: the highest accuracy over the sparse levels (all but level 0; the first of equal
  ones), as :func:`sdd_jax.phases.phase_boundaries` takes it, and its level;
* ``worst``: the lowest accuracy from the first level up to ``best``'s (the first of equal ones):
  the bottom of the dip that pruning digs before the sweet phase (the collapse after the best
  level is left out), and its level;
* ``dip`` = dense − worst and ``recovery`` = best − worst, in points.

This is the paper's "more label noise moves the critical phase" (He et al., ICML 2022, Sec. 2.3,
Fig. 4) as numbers. The critical and sweet phases are labelled by :func:`sdd_jax.phases.phases`
on the series' mean curves, as in a run's own table.

Host only: numpy and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdd_jax.phases import phases
from sdd_jax.results import ResultsError, aggregate

# The per-seed quantities, in the order of the table: (name, unit).
QUANTITIES: tuple[tuple[str, str], ...] = (
    ("dense", "%"),
    ("worst_level", "level"),
    ("worst", "%"),
    ("best_level", "level"),
    ("best", "%"),
    ("dip", "points"),
    ("recovery", "points"),
)


def seed_quantities(rows: Sequence[Mapping[str, Any]]) -> dict[Any, dict[str, float]]:
    """``{seed: {quantity: value}}`` for the result rows of one configuration (one branch): the
    quantities of :data:`QUANTITIES` (accuracies in %, levels as numbers). Rows with an empty or
    NaN ``test_acc`` are left out; :class:`ResultsError` when a seed has none left."""
    by_seed: dict[Any, dict[int, float]] = {}
    for row in rows:
        acc = row.get("test_acc")
        if acc is None or not math.isfinite(float(acc)):
            continue
        by_seed.setdefault(row["seed"], {})[int(row["level"])] = 100.0 * float(acc)
    if not by_seed:
        raise ResultsError("no finite test accuracy to compare")
    out = {}
    for seed, per_level in by_seed.items():
        levels = sorted(per_level)
        test = np.array([per_level[k] for k in levels])
        first = 1 if levels[0] == 0 and len(levels) > 1 else 0  # the best of the sparse levels
        best = int(np.argmax(test[first:])) + first
        worst = int(np.argmin(test[: best + 1]))
        dense = per_level.get(0, float("nan"))
        out[seed] = {
            "dense": dense,
            "worst_level": float(levels[worst]),
            "worst": float(test[worst]),
            "best_level": float(levels[best]),
            "best": float(test[best]),
            "dip": dense - float(test[worst]),
            "recovery": float(test[best] - test[worst]),
        }
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; NaN for one value) of the finite values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(x)), float(np.std(x, ddof=1)) if x.size > 1 else float("nan")


def phase_ranges(rows: Sequence[Mapping[str, Any]], **phase_options: Any) -> dict[str, tuple]:
    """``{"critical": (first level, last level, first density, last density), "sweet": ...}`` of
    the phases of the mean curves (:func:`sdd_jax.phases.phases`); an empty phase, or rows
    without the dense level 0 (the phases' reference), gives ``()``."""
    agg = aggregate(rows)
    if not agg or agg[0]["level"] != 0:
        return {"critical": (), "sweet": ()}
    labels = phases(agg, **phase_options)
    out = {}
    for phase in ("critical", "sweet"):
        inside = [e for e, label in zip(agg, labels) if label == phase]
        out[phase] = (
            (inside[0]["level"], inside[-1]["level"], inside[0]["density_mean"], inside[-1]["density_mean"])
            if inside
            else ()
        )
    return out


def summary(rows: Sequence[Mapping[str, Any]], **phase_options: Any) -> dict[str, Any]:
    """The comparison numbers of one configuration: ``n_seeds``, ``levels`` (finished levels),
    ``<quantity>_mean`` and ``<quantity>_sd`` for every quantity of :data:`QUANTITIES` (over
    seeds, ``ddof=1``), and the ``critical``/``sweet`` ranges of :func:`phase_ranges`."""
    per_seed = seed_quantities(rows)
    out: dict[str, Any] = {"n_seeds": len(per_seed), "levels": len({int(r["level"]) for r in rows})}
    for name, _ in QUANTITIES:
        out[f"{name}_mean"], out[f"{name}_sd"] = mean_sd([q[name] for q in per_seed.values()])
    out.update(phase_ranges(rows, **phase_options))
    return out


def range_text(span: tuple) -> str:
    """``"12-16 (5.50%-2.81%)"``: a phase's levels and remaining weights; ``"-"`` when empty."""
    if not span:
        return "-"
    first, last, d0, d1 = span
    return f"{first}-{last} ({100 * d0:.3g}%-{100 * d1:.3g}%)" if first != last else f"{first} ({100 * d0:.3g}%)"


def pm(mean: float, sd: float, fmt: str) -> str:
    """``"mean ± sd"`` (the mean alone for one seed, ``"-"`` when there is none)."""
    if not math.isfinite(mean):
        return "-"
    return format(mean, fmt) if not math.isfinite(sd) else f"{format(mean, fmt)} ± {format(sd, fmt)}"


HEADERS = ("n", "dense %", "worst level", "worst %", "best level", "best %", "dip pts", "recovery pts")


def text_table(labels: Sequence[Sequence[str]], label_headers: Sequence[str], summaries: Sequence[Mapping]) -> str:
    """A fixed-width table, one line per configuration: its label cells (``label_headers``), the
    seeds, each quantity as mean ± sd over seeds (levels too: the mean of the seeds' levels), and
    the critical and sweet phases (levels and remaining weights), then :data:`NOTE`, saying what
    the numbers are and where their per-seed rows are."""
    headers = (*label_headers, *HEADERS, "critical phase", "sweet phase")
    body = []
    for cells, s in zip(labels, summaries):
        stats = [
            pm(s[f"{name}_mean"], s[f"{name}_sd"], ".1f" if unit == "level" else ".2f") for name, unit in QUANTITIES
        ]
        body.append((*cells, str(s["n_seeds"]), *stats, range_text(s["critical"]), range_text(s["sweet"])))
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines = [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in body)]
    return "\n".join(lines) + "\n\n" + NOTE + "\n"


NOTE = (
    "Each quantity is computed for each seed, then shown as mean ± sample sd over the n seeds (ddof=1; the mean "
    "alone for one seed): test accuracy in %; levels: mean over seeds (so a level can be fractional); dip and "
    "recovery in points. best: the best sparse level; worst: the lowest level from dense up to best; "
    "dip = dense - worst, recovery = best - worst. Phases on the mean curves (sdd_jax.phases). comparison.csv "
    "holds the same means and sds; every seed's rows are in results_all.csv."
)
