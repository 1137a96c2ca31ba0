"""Configurations side by side: ``sdd-jax compare`` and the report of a study directory.

A *series* is one configuration's rows: a run directory's main rows (``results.csv``; with
``branches=True`` also one series per branch), or a point of a study directory (``study.json``:
its ``run_dir`` and ``branch``, see the study format below; read by :mod:`sdd_jax.compare_series`).
Series are told apart by a key:

* a dotted config key (``noise.rate``), read from the series' ``config.json``;
* an identity column of :mod:`sdd_jax.identity` (``noise_rate``, ``criterion``, ``init``, ...);
* ``branch``, the label of the rows.

``by`` colours the series, ``panel`` (optional) splits them into panels. A key that is unknown,
the same for every series, or that leaves two series with the same colour in the same panel is
refused with one line before anything is written.

:func:`compare` writes ``comparison.png``/``.svg`` (:mod:`sdd_jax.compare_figure`),
``comparison.txt`` and ``comparison.csv`` (:mod:`sdd_jax.comparison_table`: dense, worst, best,
dip and recovery per seed, then mean ± sd; the critical and sweet phases), and the stacked
``results_all.csv``/``curves_all.csv`` of every series (identity columns first, so that they
compare without joins). :func:`report_study` is the report of a study directory
(``<study>/comparison.*``), with the study's ``by``/``panel``.

A study directory (written by ``sdd-jax sweep``) holds ``study.json``: ``name``, ``figure``,
``by``, ``panel``, ``axes`` (``key``, ``values``), ``points`` (``coords``, ``run_dir`` relative to
the study, ``branch``: ``imp`` for the run's own rows, ``reinit`` for the rows of
``<run_dir>/branches/reinit/``, ``done``), and optionally ``distance`` (draw the learning
distance). An unfinished point is drawn with the levels it has and named in a warning; one with
no results yet is left out with a warning.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdd_jax import comparison_table, storage
from sdd_jax.atomic import atomic_write_text
from sdd_jax.choices import did_you_mean
from sdd_jax.compare_figure import colour, curve, make_comparison_figure, shared_title
from sdd_jax.compare_series import STUDY_FILE, Series, load_series, read_study
from sdd_jax.config import Config, flat_keys
from sdd_jax.exports import write_curves_csv
from sdd_jax.figure import save_figure
from sdd_jax.identity import IDENTITY_COLUMNS, identity_columns, with_identity
from sdd_jax.results import (
    COMBINED_CURVES_FILE,
    COMBINED_RESULTS_FILE,
    CURVES_FILE,
    ResultsError,
    read_csv,
    result_columns,
    write_csv,
)

# The config keys (and the init axis) whose value an identity column already holds.
_COVERED = (
    "name",
    "model.name",
    "data.name",
    "noise.kind",
    "noise.rate",
    "pruning.criterion",
    "pruning.schedule",
    "init",
)
OUT_STEM = "comparison"
DEFAULT_OUT = "comparison"  # under the current directory, for a set of run directories


# ----- keys --------------------------------------------------------------------------------------


@functools.cache
def _config_keys() -> tuple[str, ...]:
    return tuple(flat_keys(Config()))


def key_names() -> tuple[str, ...]:
    """Every key a series can be told apart by."""
    return ("branch", *IDENTITY_COLUMNS, *_config_keys())


def key_value(series: Series, key: str) -> Any:
    """The value of ``key`` for ``series`` (see the module docstring); ``ValueError`` for an
    unknown key."""
    if key == "branch":
        return series.branch
    if key in IDENTITY_COLUMNS:
        return identity_columns(series.config, series.branch)[key]
    if key in _config_keys():
        return functools.reduce(getattr, key.split("."), series.config)
    raise ValueError(
        f"unknown key {key!r}{did_you_mean(key, key_names())}: use a dotted config key (noise.rate), "
        f"an identity column ({', '.join(IDENTITY_COLUMNS)}) or branch"
    )


def _text(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _differing(series: Sequence[Series]) -> list[str]:
    """The identity columns and study axes whose values differ between ``series``."""
    keys = [*IDENTITY_COLUMNS, "branch", *dict.fromkeys(k for s in series for k in s.coords)]
    keys = [k for k in keys if k in key_names()]
    return [k for k in keys if len({repr(key_value(s, k)) for s in series}) > 1]


def ordered_values(values: Sequence[Any]) -> list[Any]:
    """Distinct values, ascending when all are numbers, else in order of first appearance."""
    distinct = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        return sorted(distinct)
    return distinct


def check_keys(series: Sequence[Series], by: str, panel: str | None) -> None:
    """Refuse (``ValueError``, one line) a key that is unknown or the same for every series, and
    two series that ``by`` and ``panel`` do not tell apart."""
    for option, key in (("--by", by), ("--panel", panel)):
        if key is None:
            continue
        if key not in key_names():
            raise ValueError(
                f"{option} {key!r} is not a key{did_you_mean(key, key_names())}: use a dotted config key "
                f"(noise.rate), an identity column ({', '.join(IDENTITY_COLUMNS)}) or branch"
            )
        values = {repr(key_value(s, key)) for s in series}
        if len(values) == 1:
            differ = _differing(series)
            hint = f"; these differ: {', '.join(differ)}" if differ else ""
            raise ValueError(
                f"{option} {key} is {_text(key_value(series[0], key))} for every series "
                f"({len(series)}): it tells nothing apart{hint}"
            )
    seen: dict[tuple, Series] = {}
    for s in series:
        where = (repr(key_value(s, by)), repr(key_value(s, panel)) if panel else None)
        if where in seen:
            differ = [k for k in _differing([seen[where], s]) if k not in (by, panel)]
            hint = f" (they differ in {', '.join(differ)}: pass one as --by or --panel)" if differ else ""
            raise ValueError(f"{seen[where].name} and {s.name} have the same --by and --panel values{hint}")
        seen[where] = s


# ----- the comparison ----------------------------------------------------------------------------


def comparison(
    series: Sequence[Series], by: str, panel: str | None = None, distance: bool = False, name: str = ""
) -> dict[str, Any]:
    """Check the keys, then compute the table and draw the figure of ``series`` (nothing is
    written). Returns ``values`` (the ``by`` values, in colour order), ``panels`` (the panel
    values), ``rows`` (one table row per series), ``table`` (its text), ``figure`` and
    ``title``."""
    check_keys(series, by, panel)
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
            labels.append([_text(value), *([_text(pv)] if panel else [])])
            summaries.append(summary)
            rows.append(_table_row(s, by, value, panel, pv, summary))
            drawn.append({**curve(s.rows), "value": _text(value), "colour": colour(values.index(value))})
        panels.append((f"{panel} = {_text(pv)}" if panel else "", drawn))
    headers = [by, *([panel] if panel else [])]
    table = comparison_table.text_table(labels, headers, summaries)
    title = shared_title([s.config for s in series], by, panel, name)
    figure = make_comparison_figure(panels, by, [_text(v) for v in values], title, distance)
    return {"values": values, "panels": panel_values, "rows": rows, "table": table, "figure": figure, "title": title}


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
        extra = {k: v for k, v in s.coords.items() if k not in _COVERED}
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
) -> dict[str, Any]:
    """``sdd-jax compare``: the comparison of the series of ``paths`` (study and run directories,
    mixed), written to ``out`` (default: the study directory when ``paths`` is one study, else
    ``./comparison``). ``by`` defaults to a single study's own. Returns :func:`comparison`'s
    result and the ``paths`` written; ``ValueError``/``FileNotFoundError`` (one line) before
    anything is written for bad input."""
    series, studies = load_series(paths, branches)
    single_study = len(studies) == 1 and len(paths) == 1
    if by is None:
        if not single_study:
            raise ValueError("--by KEY is needed to compare run directories (e.g. --by noise.rate)")
        by, panel = _study_by(studies[0], paths[0]), panel or studies[0].get("panel")
    name = ""
    if single_study:
        study = studies[0]
        name = f"{study.get('figure')} ({study.get('name')})" if study.get("figure") else str(study.get("name", ""))
    result = comparison(series, by, panel, distance, name)
    if out is None:
        out = storage.as_path(paths[0]) if single_study else Path.cwd() / DEFAULT_OUT
    return {**result, "series": series, "paths": write_comparison(result, series, out)}


def report_study(study_dir: str | os.PathLike, distance: bool | None = None) -> dict[str, Any]:
    """The report of a study directory: its comparison by the study's ``by`` and ``panel`` in
    ``<study>/comparison.png/.svg/.txt/.csv`` and its stacked ``results_all.csv`` and
    ``curves_all.csv``; the learning distance when ``distance`` (default: ``study.json``'s
    ``distance``, else not). Returns :func:`compare`'s result."""
    study = read_study(study_dir)
    if distance is None:
        distance = bool(study.get("distance", False))
    return compare([study_dir], _study_by(study, study_dir), study.get("panel"), distance)


def _study_by(study: Mapping, study_dir: str | os.PathLike) -> str:
    """The study's ``by`` key (default: its first axis)."""
    axes = study.get("axes")
    by = study.get("by") or (
        axes[0].get("key") if isinstance(axes, list) and axes and isinstance(axes[0], dict) else None
    )
    if not isinstance(by, str) or not by:
        raise ValueError(f"{storage.as_path(study_dir) / STUDY_FILE} names no 'by' key and no axes")
    return by
