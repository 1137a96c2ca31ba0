"""The summary table of a pruning run: one fixed-width text line per level with the mean ± sample
standard deviation over seeds (``ddof=1``) of its accuracies and learning distance, and its
phase.

Host only: the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sdd_jax.phases import phases
from sdd_jax.results import MAIN_BRANCH, aggregate, split_branches


def _pm(entry: Mapping[str, Any], column: str, scale: float, mean_fmt: str, std_fmt: str) -> str:
    mean = entry.get(f"{column}_mean", float("nan"))
    std = entry.get(f"{column}_std", float("nan"))
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):  # one seed: no spread to show
        return format(mean * scale, mean_fmt)
    return f"{format(mean * scale, mean_fmt)} ± {format(std * scale, std_fmt)}"


def _table_lines(agg: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[str]:
    headers = (
        "level",
        "n",
        "sparsity %",
        "weights %",
        "test acc % ± sd",
        "train acc % ± sd",
        "memorised % ± sd",
        "learning dist. ± sd",
        "phase",
    )
    densities = [e.get("density_mean", float("nan")) for e in agg]
    smallest = min((d for d in densities if math.isfinite(d) and d > 0), default=1.0)
    # Enough decimals that the sparsest level does not print as 100.00.
    decimals = max(2, math.ceil(-math.log10(100 * smallest)) + 1)
    body = []
    for entry, label, density in zip(agg, labels, densities):
        sparsity = entry.get("sparsity_mean", float("nan"))
        body.append(
            (
                str(entry["level"]),
                str(entry["n_seeds"]),
                "-" if not math.isfinite(sparsity) else f"{100 * sparsity:.{decimals}f}",
                "-" if not math.isfinite(density) else f"{100 * density:.3g}",
                _pm(entry, "test_acc", 100.0, "6.2f", "5.2f"),
                _pm(entry, "train_acc", 100.0, "6.2f", "5.2f"),
                _pm(entry, "train_acc_noisy_subset", 100.0, "6.2f", "5.2f"),
                _pm(entry, "learning_distance", 1.0, "8.4g", "<7.2g"),
                label,
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    right = [True] * (len(headers) - 1) + [False]

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in body]


STD_NOTE = "± sd: sample standard deviation over the n seeds (ddof=1); the mean alone when n = 1"


def summary_table(rows: Iterable[Mapping[str, Any]], **phase_options: Any) -> str:
    """A fixed-width text table, one line per level: level, seeds ``n``, sparsity and remaining
    weights (%), then mean ± sample standard deviation over seeds (``ddof=1``, as
    :func:`~sdd_jax.results.aggregate`; the mean alone for one seed) of test accuracy, train
    accuracy and memorisation (train accuracy on the relabelled subset), all in %, the learning
    distance, and the phase (:func:`~sdd_jax.phases.phases`; ``phase_options`` go to it). The
    headers say ``± sd`` and the last line (:data:`STD_NOTE`) says what it is. With a ``branch``
    column, one table per branch under a ``branch: NAME`` heading; phases are labelled on the main
    (``imp``) curve only, since a branch's few levels do not determine them."""
    agg = aggregate(rows)
    branches = split_branches(agg)
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
    return "\n\n".join(parts) + "\n\n" + STD_NOTE + "\n"
