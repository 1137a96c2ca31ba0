"""The configurations ``sdd-jax compare`` puts side by side, read from run and study directories.

A :class:`Series` is one configuration's rows: a run directory's main rows (``results.csv``; with
``branches=True`` also one series per branch), or a point of a study directory (``study.json``: its
``run_dir`` and ``branch``). An unfinished point is read with the levels it has and named in a
warning; one with no results yet is left out with a warning; one marked done without its results is
an error naming the file. Local folders and ``gs://`` both (:mod:`sdd_jax.storage`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdd_jax import storage
from sdd_jax.config import Config
from sdd_jax.results import MAIN_BRANCH, RESULTS_FILE, ResultsError, branch_files, read_results_csv
from sdd_jax.runid import load_config, read_json

STUDY_FILE = "study.json"


@dataclasses.dataclass(frozen=True)
class Series:
    """One configuration: the rows of ``branch`` in the run directory ``run_dir`` (``folder``:
    where its files are, ``run_dir`` or ``run_dir/branches/<branch>``), its ``config`` (the
    run's), ``coords`` (a study point's axis values), and whether all its levels are ``done``."""

    run_dir: Path
    folder: Path
    branch: str
    config: Config
    rows: tuple
    coords: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    done: bool = True

    @property
    def name(self) -> str:
        return self.run_dir.name + ("" if self.branch == MAIN_BRANCH else f":{self.branch}")


# ----- reading series ------------------------------------------------------------------------


def _config(run_dir: Path) -> Config:
    path = run_dir / "config.json"
    if not storage.is_file(path):
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run directory?")
    return load_config(path)


def _levels_done(config: Config, rows: Sequence[Mapping]) -> bool:
    return {int(r["level"]) for r in rows} >= set(range(config.pruning.levels + 1))


def run_series(run_dir: str | os.PathLike, branches: bool = False) -> list[Series]:
    """The main rows of a run directory as one series (and, with ``branches``, one series per
    readable branch). ``FileNotFoundError``/``ValueError`` naming the file when ``results.csv``
    or ``config.json`` is missing or unreadable."""
    run_dir = storage.as_path(run_dir)  # an etils.epath.Path on Cloud Storage
    results = run_dir / RESULTS_FILE
    if not storage.is_file(results):
        raise FileNotFoundError(f"{results} not found: is {run_dir} a run or study directory?")
    config = _config(run_dir)
    rows = [r for r in read_results_csv(results) if (r.get("branch") or MAIN_BRANCH) == MAIN_BRANCH]
    if not rows:
        raise ResultsError(f"{results} has no result rows")
    done = _levels_done(config, rows)
    if not done:
        levels = len({r["level"] for r in rows})
        warnings.warn(
            f"{run_dir} is unfinished: drawn with its {levels} of {config.pruning.levels + 1} levels", stacklevel=2
        )
    out = [Series(run_dir, run_dir, MAIN_BRANCH, config, tuple(rows), done=done)]
    if branches:
        for path in branch_files(run_dir, RESULTS_FILE):
            brows = read_results_csv(path)
            for label in dict.fromkeys(r.get("branch") for r in brows):
                if label and label != MAIN_BRANCH:
                    mine = tuple(r for r in brows if r.get("branch") == label)
                    out.append(Series(run_dir, storage.as_path(path).parent, label, config, mine))
    return out


def read_study(study_dir: str | os.PathLike) -> dict:
    """``study.json`` of ``study_dir``; ``ValueError`` naming the file when it is missing, not
    valid JSON or lacks ``points`` (each with ``run_dir`` and ``branch``)."""
    path = storage.as_path(study_dir) / STUDY_FILE
    if not storage.is_file(path):
        raise FileNotFoundError(f"{path} not found: is {study_dir} a study directory?")
    study = read_json(path, "rerun `sdd-jax sweep` with the study's name to write it again")
    points = study.get("points") if isinstance(study, dict) else None
    if not isinstance(points, list) or not all(
        isinstance(p, dict) and isinstance(p.get("run_dir"), str) and isinstance(p.get("branch"), str) for p in points
    ):
        raise ValueError(f"{path} is not a study file: it needs a list of points, each with run_dir and branch")
    return study


def study_series(study_dir: str | os.PathLike, study: Mapping | None = None) -> list[Series]:
    """The points of a study directory (``study``: its ``study.json``, read when not given) as
    series (see the module docstring for unfinished points). ``FileNotFoundError`` naming the
    file for a point marked done without its results or config."""
    study_dir = storage.as_path(study_dir)
    out = []
    for point in (study or read_study(study_dir))["points"]:
        run_dir = study_dir / point["run_dir"]
        branch = point["branch"]
        folder = run_dir if branch == MAIN_BRANCH else run_dir / "branches" / branch
        results = folder / RESULTS_FILE
        coords = point.get("coords") or {}
        done = bool(point.get("done", False))
        where = ", ".join(f"{k}={v}" for k, v in coords.items()) or point["run_dir"]
        missing = next((p for p in (results, run_dir / "config.json") if not storage.is_file(p)), None)
        rows = [] if missing else [r for r in read_results_csv(results) if (r.get("branch") or MAIN_BRANCH) == branch]
        if not rows:
            if done:
                what = f"{missing} not found" if missing else f"{results} has no rows of branch {branch!r}"
                raise FileNotFoundError(f"{what}, though {STUDY_FILE} marks the point {where} done")
            warnings.warn(f"study point {where} has no results yet ({missing or results}): left out", stacklevel=2)
            continue
        if not done:
            levels = len({r["level"] for r in rows})
            warnings.warn(
                f"study point {where} is unfinished: drawn with its {levels} levels ({results})", stacklevel=2
            )
        out.append(Series(run_dir, folder, branch, _config(run_dir), tuple(rows), coords, done))
    if not out:
        raise ValueError(f"{study_dir / STUDY_FILE}: no point has results yet")
    return out


def load_series(paths: Sequence[str | os.PathLike], branches: bool = False) -> tuple[list[Series], list[dict]]:
    """Series of every path (a study directory, with ``study.json``, or a run directory), in
    order, and the studies read."""
    series, studies = [], []
    for path in map(storage.as_path, paths):
        if not storage.is_dir(path):
            raise FileNotFoundError(f"{path} is not a directory")
        if storage.is_file(path / STUDY_FILE):
            studies.append(read_study(path))
            series += study_series(path, studies[-1])
        else:
            series += run_series(path, branches)
    return series, studies
