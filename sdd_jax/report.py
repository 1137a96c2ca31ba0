"""The report of a run directory: its summary table, its figure and the combined results files,
rebuilt from the results files (``results.csv``, ``curves.csv`` and ``branches/*/``) alone.

The pieces live in :mod:`sdd_jax.results` (the results files, averaging over seeds),
:mod:`sdd_jax.phases` (the four phases of sparse double descent), :mod:`sdd_jax.table` (the text
table) and :mod:`sdd_jax.figure` (the paper's figure); matplotlib is imported only to draw.
"""

from __future__ import annotations

import os
from typing import Any

from sdd_jax import storage
from sdd_jax.atomic import atomic_write_text
from sdd_jax.config import ConfigError
from sdd_jax.describe import describe
from sdd_jax.exports import write_combined
from sdd_jax.figure import figure_data, make_figure, save_figure
from sdd_jax.phases import phases
from sdd_jax.results import RESULTS_FILE, aggregate, main_branch, run_rows
from sdd_jax.runid import load_config
from sdd_jax.table import summary_table

SUMMARY_FILE = "summary.txt"
FIGURE_STEM = "figure"


def run_title(run_dir: str | os.PathLike) -> str:
    """The figure title of a run: :func:`sdd_jax.describe.describe` of its ``config.json`` (the
    folder's name when there is no readable one)."""
    config = _stored_config(os.fspath(run_dir))
    if config is not None:
        return describe(config)
    return storage.as_path(run_dir).name if storage.is_remote(run_dir) else os.path.basename(os.path.abspath(run_dir))


def report(run_dir: str | os.PathLike, title: str | None = None, **phase_options: Any) -> dict[str, Any]:
    """Read ``run_dir/results.csv`` and its branches' (a branch file that cannot be used is left
    out with a warning: see :func:`sdd_jax.results.branch_rows`); write ``run_dir/summary.txt``,
    ``run_dir/figure.png`` and ``.svg`` (titled by ``title``, default :func:`run_title`), and the
    combined ``results_all.csv`` and ``curves_all.csv`` (:func:`sdd_jax.exports.write_combined`;
    identity columns that files written before they existed lack are filled from ``config.json``).
    Returns the paths (``results``, ``summary``, ``figures``, ``combined``), the ``table`` text,
    the main branch's ``aggregate`` and ``phases``, and the plotted ``figure_data``. Raises ``FileNotFoundError`` or
    :class:`sdd_jax.results.ResultsError` when ``results.csv`` is missing or malformed."""
    run_dir = os.fspath(run_dir)
    results = os.path.join(run_dir, RESULTS_FILE)
    rows = run_rows(run_dir)
    combined = write_combined(run_dir, rows, _stored_config(run_dir))
    table = summary_table(rows, **phase_options)
    summary = os.path.join(run_dir, SUMMARY_FILE)
    atomic_write_text(summary, table)
    data = figure_data(rows, **phase_options)
    fig = make_figure(data, title if title is not None else run_title(run_dir))
    figures = save_figure(fig, os.path.join(run_dir, FIGURE_STEM))
    _, main_rows, _ = main_branch(rows)
    agg = aggregate(main_rows)
    return {
        "results": results,
        "summary": summary,
        "figures": figures,
        "combined": combined,
        "table": table,
        "aggregate": agg,
        "phases": phases(agg, **phase_options),
        "figure_data": data,
    }


def _stored_config(run_dir: str):
    """The run's config from ``run_dir/config.json``; ``None`` when there is none or it cannot be
    read (the report is rebuilt from the results files alone)."""
    path = os.path.join(run_dir, "config.json")
    try:
        return load_config(path) if storage.is_file(path) else None
    except (ConfigError, OSError):
        return None
