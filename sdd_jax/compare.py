"""Configurations side by side: ``sdd-jax compare`` and the report of a study directory.

A *series* is one configuration's rows: a run directory's main rows (``results.csv``; with
``branches=True`` also one series per branch), or a point of a study directory (``study.json``:
its ``run_dir`` and ``branch``, see the study format below; read by :mod:`sdd_jax.compare_series`).
Series are told apart by a key (:mod:`sdd_jax.compare_keys`): a dotted config key
(``noise.rate``, read from the series' ``config.json``), an identity column of
:mod:`sdd_jax.identity` (``noise_rate``, ``criterion``, ``init``, ...) or ``branch``.

``by`` colours the series, ``panel`` (optional) splits them into panels, ``where`` (``--where
KEY=VALUE``) keeps the series with that value. A key that is unknown, the same for every series,
or that leaves two series with the same colour in the same panel is refused with one line before
anything is written, naming keys that would tell them apart (:func:`sdd_jax.compare_keys.remedy`).
Series that differ in other result settings too (the data, the epochs, ...) are drawn, with a
warning naming those settings: the figure would put their difference on ``by``.

:func:`compare` writes ``comparison.png``/``.svg`` (:mod:`sdd_jax.compare_figure`),
``comparison.txt`` and ``comparison.csv`` (:mod:`sdd_jax.comparison_table`: dense, worst, best,
dip and recovery per seed, then mean ± sd; the critical and sweet phases), and the stacked
``results_all.csv``/``curves_all.csv`` of every series (identity columns first, so that they
compare without joins). :func:`report_study` is the report of a study directory
(``<study>/comparison.*``), with the study's ``by``/``panel`` (``panel`` defaults to the study's
second axis with several values, when ``study.json`` names none).

A study directory (written by ``sdd-jax sweep``) holds ``study.json``: ``name``, ``figure``,
``by``, ``panel``, ``axes`` (``key``, ``values``), ``points`` (``coords``, ``run_dir`` relative to
the study, ``branch``: ``imp`` for the run's own rows, ``reinit`` for the rows of
``<run_dir>/branches/reinit/``, ``done``), and optionally ``distance`` (draw the learning
distance). An unfinished point is drawn with the levels it has and named in a warning; one with
no results yet is left out with a warning.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdd_jax import comparison_table, storage
from sdd_jax.atomic import atomic_write_text
from sdd_jax.compare_figure import colour, curve, make_comparison_figure, shared_title
from sdd_jax.compare_keys import (
    COVERED,
    KeysError,
    check_keys,
    covered,
    default_panel,
    differing,
    keep_where,
    key_value,
    ordered_values,
    parse_where,
    remedy,
    text,
    varies,
)
from sdd_jax.compare_series import STUDY_FILE, Series, load_series, read_study
from sdd_jax.exports import write_curves_csv
from sdd_jax.figure import save_figure
from sdd_jax.identity import REINIT_BRANCH, identity_columns, with_identity
from sdd_jax.results import (
    COMBINED_CURVES_FILE,
    COMBINED_RESULTS_FILE,
    CURVES_FILE,
    MAIN_BRANCH,
    ResultsError,
    read_csv,
    result_columns,
    write_csv,
)

OUT_STEM = "comparison"
DEFAULT_OUT = "comparison"  # under the current directory, for a set of run directories


# ----- the comparison ----------------------------------------------------------------------------


def comparison(
    series: Sequence[Series], by: str, panel: str | None = None, distance: bool = False, name: str = ""
) -> dict[str, Any]:
    """Check the keys, then compute the table and draw the figure of ``series`` (nothing is
    written). Returns ``values`` (the ``by`` values, in colour order), ``panels`` (the panel
    values), ``rows`` (one table row per series), ``table`` (its text), ``figure`` and
    ``title``. Warns (one line) when the series differ in result settings that ``by`` and
    ``panel`` do not name (:func:`confounds`)."""
    check_keys(series, by, panel)
    others = confounds(series, by, panel)
    if others:
        warnings.warn(
            f"the series also differ in {others}: the differences drawn by {by}"
            f"{' and ' + panel if panel else ''} are not theirs alone",
            stacklevel=2,
        )
    values = ordered_values([key_value(s, by) for s in series])
    panel_values = ordered_values([key_value(s, panel) for s in series]) if panel else [None]
    rows, labels, summaries, panels = [], [], [], []
    for pv in panel_values:
        members = [s for s in series if panel is None or key_value(s, panel) == pv]
        members.sort(key=lambda s: values.index(key_value(s, by)))
        drawn = []
        for s in members:
            value = key_value(s, by)
            summary = comparison_table.summary(s.rows)
            labels.append([text(value), *([text(pv)] if panel else [])])
            summaries.append(summary)
            rows.append(_table_row(s, by, value, panel, pv, summary))
            drawn.append({**curve(s.rows), "value": text(value), "colour": colour(values.index(value))})
        panels.append((f"{panel} = {text(pv)}" if panel else "", drawn))
    headers = [by, *([panel] if panel else [])]
    table = comparison_table.text_table(labels, headers, summaries)
    title = shared_title([s.config for s in series], by, panel, name)
    figure = make_comparison_figure(panels, by, [text(v) for v in values], title, distance)
    return {"values": values, "panels": panel_values, "rows": rows, "table": table, "figure": figure, "title": title}


def confounds(series: Sequence[Series], by: str, panel: str | None = None) -> str:
    """The result settings (:func:`sdd_jax.runid.result_fields`, the seeds included) and the
    branches that differ between ``series`` besides what ``by`` and ``panel`` name, with their
    values: ``"data.train_size (256, 512), optim.epochs (1, 2)"``; ``""`` when none does."""
    parts = []
    for key in differing(series):
        if key in covered(by, panel):
            continue
        values = [text(v) for v in ordered_values([key_value(s, key) for s in series])]
        parts.append(f"{key} ({', '.join(values[:4])}{', ...' if len(values) > 4 else ''})")
    return ", ".join(parts)


def _table_row(s: Series, by: str, value: Any, panel: str | None, pv: Any, summary: Mapping) -> dict:
    row = {by: value, **({panel: pv} if panel else {})}
    row.update({"branch": s.branch, **identity_columns(s.config, s.branch), "run_dir": str(s.run_dir)})
    row.update({"done": s.done, "n_seeds": summary["n_seeds"], "levels": summary["levels"]})
    for name, _ in comparison_table.QUANTITIES:
        row[f"{name}_mean"], row[f"{name}_sd"] = summary[f"{name}_mean"], summary[f"{name}_sd"]
    for phase in ("critical", "sweet"):
        span = summary[phase]
        row[f"{phase}_first_level"], row[f"{phase}_last_level"] = (span[0], span[1]) if span else (None, None)
        row[f"{phase}_first_density"], row[f"{phase}_last_density"] = (span[2], span[3]) if span else (None, None)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _stacked(series: Sequence[Series]) -> tuple[list[dict], list[dict]]:
    """Every series' result and curve rows with the identity columns (filled from its config
    where a file written before them lacks them) and the study axes they do not cover."""
    results, curves = [], []
    for s in series:
        extra = {k: v for k, v in s.coords.items() if k not in COVERED}
        results += [{**r, **extra} for r in with_identity(s.rows, s.config)]
        path = s.folder / CURVES_FILE
        if not storage.is_file(path):  # a run made before curves were exported
            continue
        try:
            mine = [r for r in read_csv(path, ("branch", "seed", "level", "epoch")) if r["branch"] == s.branch]
        except (ResultsError, OSError) as err:
            warnings.warn(f"{path} left out of {COMBINED_CURVES_FILE}: {err}", stacklevel=3)
            continue
        curves += [{**r, **extra} for r in with_identity(mine, s.config)]
    return results, curves


def write_comparison(result: Mapping[str, Any], series: Sequence[Series], out: str | os.PathLike) -> dict[str, Any]:
    """Write ``comparison.png``/``.svg``/``.txt``/``.csv`` and the stacked ``results_all.csv``/
    ``curves_all.csv`` of ``series`` into ``out`` (created), each file atomically. Returns the
    paths."""
    results, curves = _stacked(series)
    out = storage.as_path(out)
    storage.mkdir(out)
    table_rows = result["rows"]
    columns = list(dict.fromkeys(k for r in table_rows for k in r))
    paths = {
        "figures": save_figure(result["figure"], out / OUT_STEM),
        "table": str(out / f"{OUT_STEM}.txt"),
        "csv": write_csv(table_rows, out / f"{OUT_STEM}.csv", columns),
        "results_all": write_csv(results, out / COMBINED_RESULTS_FILE, result_columns(results)),
        "curves_all": write_curves_csv(curves, out / COMBINED_CURVES_FILE),
    }
    atomic_write_text(paths["table"], f"{result['title']}\n\n{result['table']}")
    return paths


def compare(
    paths: Sequence[str | os.PathLike],
    by: str | None = None,
    panel: str | None = None,
    distance: bool = False,
    out: str | os.PathLike | None = None,
    branches: bool = False,
    where: Sequence[str] = (),
) -> dict[str, Any]:
    """``sdd-jax compare``: the comparison of the series of ``paths`` (study and run directories,
    mixed) that match every ``where`` item (``"KEY=VALUE"``), written to ``out`` (default: the
    study directory when ``paths`` is one study, else ``./comparison``). For a single study,
    ``by`` and ``panel`` default to the study's own (:func:`study_keys`). With ``branches`` and ``init`` as ``by`` or ``panel`` (``branch``
    as neither), only the rows ``init`` tells apart are kept (the main rows and the reinit
    branch), with a warning naming the branches left out. Returns :func:`comparison`'s result
    and the ``paths`` written; ``ValueError``/``FileNotFoundError`` (one line) before anything
    is written for bad input."""
    series, studies = load_series(paths, branches)
    where = parse_where(where)
    series = keep_where(series, where)
    single_study = len(studies) == 1 and len(paths) == 1
    if single_study:
        by, panel = study_keys(studies[0], paths[0], series, by, panel)
    elif by is None:
        raise ValueError("--by KEY is needed to compare run directories (e.g. --by noise.rate)")
    if branches:
        series = _init_rows(series, by, panel)
    name = ""
    if single_study:
        study = studies[0]
        name = f"{study.get('figure')} ({study.get('name')})" if study.get("figure") else str(study.get("name", ""))
    try:
        result = comparison(series, by, panel, distance, name)
    except KeysError as err:
        raise KeysError(f"{err}{remedy(err, paths, where)}", err.series, by, panel) from None
    if out is None:
        out = storage.as_path(paths[0]) if single_study else Path.cwd() / DEFAULT_OUT
    return {**result, "series": series, "paths": write_comparison(result, series, out)}


def _init_rows(series: list[Series], by: str, panel: str | None) -> list[Series]:
    """With ``init`` as ``by`` or ``panel`` (and ``branch`` as neither): the main rows and the
    reinit branch only, the other branches left out with a warning (``init`` is ``lottery`` for
    all of them: it cannot tell them from the main rows)."""
    keys = covered(by, panel)
    if "init" not in keys or "branch" in keys:
        return series
    kept = [s for s in series if s.branch in (MAIN_BRANCH, REINIT_BRANCH)]
    left = list(dict.fromkeys(s.branch for s in series if s not in kept))
    if left:
        warnings.warn(
            f"init tells only the main rows ({MAIN_BRANCH}) from the {REINIT_BRANCH} branch: the branches "
            f"{', '.join(left)} are left out (compare every branch with --by branch)",
            stacklevel=3,
        )
    return kept


def report_study(
    study_dir: str | os.PathLike, distance: bool | None = None, by: str | None = None, panel: str | None = None
) -> dict[str, Any]:
    """The report of a study directory: its comparison by ``by`` and ``panel`` (default: the
    study's, :func:`study_keys`) in ``<study>/comparison.png/.svg/.txt/.csv`` and its stacked
    ``results_all.csv`` and ``curves_all.csv``; the learning distance when ``distance``
    (default: ``study.json``'s ``distance``, else not). Returns :func:`compare`'s result;
    :class:`~sdd_jax.compare_keys.KeysError` (one line, naming a command that draws it) when
    the keys do not tell its points apart."""
    if distance is None:
        distance = bool(read_study(study_dir).get("distance", False))
    return compare([study_dir], by, panel, distance)


def study_keys(
    study: Mapping, study_dir: str | os.PathLike, series: Sequence[Series], by: str | None, panel: str | None
) -> tuple[str, str | None]:
    """``by`` and ``panel`` for a study's ``series``: as given; without ``by``, the study's
    ``by`` (else its first axis) and, without ``panel`` too, the study's ``panel`` (when it names
    none: its first other axis with several values, :func:`sdd_jax.compare_keys.default_panel`),
    left out when it takes one value among ``series`` (a ``--where`` fixed it). A ``by`` given
    alone draws one panel."""
    if by is not None:
        return by, panel
    axes = study.get("axes")
    axes = (
        [(a["key"], len(a.get("values") or ())) for a in axes if isinstance(a, dict) and isinstance(a.get("key"), str)]
        if isinstance(axes, list)
        else []
    )
    by = study.get("by") or (axes[0][0] if axes else None)
    if not isinstance(by, str) or not by:
        raise ValueError(f"{storage.as_path(study_dir) / STUDY_FILE} names no 'by' key and no axes")
    if panel is None:
        panel = study.get("panel") or default_panel(axes, by)
        if panel and not varies(series, panel):
            panel = None
    return by, panel
