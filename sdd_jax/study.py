"""Studies: a grid of configurations trained as few programs as it allows (``sdd-jax sweep``).

    from sdd_jax import study
    path = study.run_study("smoke", ["noise.rate=0.2,0.4", "pruning.criterion=magnitude,saliency"], seeds=2)

The grid, its points and its identity are :mod:`sdd_jax.study_grid`; this module trains them.
Points that differ only in replica axes (noise rate, kind and draw, pruning criterion and scope,
``init`` = lottery | reinit) form one program (:class:`sdd_jax.study_stack.Program`) and train as
one stack on the engine's replica axis, exactly as the seeds of one run do (``vmap``, ``lax.map``
under ``run.seed_execution=sequential``, split over ``run.seed_devices`` x ``run.data_devices``
devices and several hosts as seeds are; ``run.seeds_per_chunk`` then bounds the replicas per call).
Programs (points that differ in any other axis) run one after another, in grid order, each on all
the devices (not side by side on disjoint device groups).

The loop is the pruning loop of :func:`sdd_jax.imp.run_imp` over a stack: for each level, the
points that still need it are stacked; the stack's masks, start weights and learning-distance
references are chosen per replica (:mod:`sdd_jax.study_stack`), and the one level runner
(:func:`sdd_jax.level.run_level`, with its one epoch loop) trains, measures and records it through
the stack's run directory (:class:`sdd_jax.study_rundir.StackRun`), which writes each point's slice
into the point's own run directory. ``run_imp`` itself is not reused because a stack may change
from level to level (reinit points join at level 1; points added later or killed at another level
stand elsewhere) and its replicas start from different weights.

Results: each point's directory is the one ``sdd-jax run`` writes for its config with
``run.workdir=<study>/points`` (a reinit point: the ``reinit`` branch of its lottery partner's run,
as ``sdd-jax reinit RUN --levels 1,...,L`` writes it), with the same numbers: bit-identical under
``run.seed_execution=sequential`` (a replica runs the program it runs alone), within float
rounding under ``vmap`` (a batched computation may round differently with more replicas beside
it; see the README for the measured difference).

Resume: the study directory holds ``study.json`` and its lock (one sweep at a time); the points
hold their own locks and state. A rerun stacks, level by level, the points that still need the
level, grouped by where they stand (no progress, or the epoch of their progress checkpoint), so a
kill at any moment resumes every point where it was, finished points are not trained again, and a
value added to an axis trains only the new points.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sdd_jax import compare, imp, report, results, storage
from sdd_jax.compare_keys import KeysError
from sdd_jax.data import read_clean
from sdd_jax.distributed import is_primary
from sdd_jax.experiment import dense_mask, densities, fresh_state
from sdd_jax.level import run_level
from sdd_jax.progress import Progress
from sdd_jax.runlock import lock_run_dir, remove_leftovers
from sdd_jax.study_grid import Point, Study, drawing_problem, resolve_study, write_study_json
from sdd_jax.study_stack import Program

__all__ = ["report_study", "resolve_study", "run", "run_study", "summary_lines"]


def run_study(
    preset: str,
    grid: Sequence[str] = (),
    *,
    overrides: Sequence[str] = (),
    seeds: int | None = None,
    workdir: str | None = None,
    verbosity: int | None = None,
    write_report: bool = True,
    by: str | None = None,
    panel: str | None = None,
    distance: bool | None = None,
) -> Path:
    """Run (or resume) the study of ``preset`` (a run or study preset) with ``grid`` axes
    (``"KEY=V1,V2,..."``), ``--set`` ``overrides``, ``seeds`` per point, ``workdir`` and the
    comparison's ``by``, ``panel`` and ``distance`` (see
    :func:`sdd_jax.study_grid.resolve_study`). Returns the study directory.

    Everything is checked before anything is written (:class:`~sdd_jax.config.ConfigError`, one
    line); then see :func:`run`."""
    study = resolve_study(
        preset,
        grid,
        overrides=overrides,
        seeds=seeds,
        workdir=workdir,
        verbosity=verbosity,
        by=by,
        panel=panel,
        distance=distance,
    )
    return run(study, write_report=write_report)


def run(study: Study, *, write_report: bool = True, announce: bool = False) -> Path:
    """Train every point of ``study`` that is not finished and write ``study.json``; with
    ``write_report`` the report (:func:`report_study`). Returns the study directory.

    The programs are prepared first (data read once per data setting and checked, models and
    experiments built); only then is the study directory created and locked and the points' run
    directories opened (``announce``: then say so on stderr, unless quiet). When the study's
    ``by`` and ``panel`` cannot tell its points apart, a warning says so before anything trains,
    naming the ``sdd-jax compare`` command that draws it (:func:`~sdd_jax.study_grid.drawing_problem`);
    the study trains all the same."""
    problem = drawing_problem(study)
    if problem:
        warnings.warn(problem, stacklevel=2)
    clean = functools.lru_cache(maxsize=None)(read_clean)
    programs = []
    for points in study.programs():
        partners = [None if p.init != "reinit" else points.index(study.partner(p)) for p in points]
        programs.append(Program(points, partners, clean))
    storage.mkdir(study.path)
    lock_run_dir(study.path)
    if is_primary():
        remove_leftovers(study.path)
    for program in programs:
        program.open()
    if announce and study.base.run.verbosity and is_primary():
        print(
            f"{study.name}: {len(study.points)} point(s) x {study.base.run.seeds} seed(s) in {len(programs)} "
            f"program(s), {study.base.pruning.levels} pruning levels\nstudy directory: {study.path}",
            file=sys.stderr,
        )
    schedule = [(program, level, indices) for program in programs for level, indices in _schedule(program)]
    done = _done(programs)
    _write(study, done)
    total = sum(
        imp.schedule_plan(program.exp, level, program.config.pruning.schedule).num_epochs
        for program, level, _ in schedule
    )
    with Progress(total_epochs=total, verbosity=study.base.run.verbosity, desc=study.name) as progress:
        for step, (program, level, indices) in enumerate(schedule):
            label = " ".join(f"{k}={v}" for k, v in program.points[0].program)
            replicas = len(indices) * program.n_seeds
            progress.describe(
                f"{study.name}{' ' + label if label else ''} ({replicas} replicas)", group=program.n_seeds
            )
            _train_stack(study, program, level, indices, progress)
            if step + 1 == len(schedule) or schedule[step + 1][0] is not program:
                program.release()  # programs run one after another
            now = _done(programs)
            if now != done:
                done = now
                _write(study, done)
    for program in programs:  # a kill between a level's checkpoint and its results files
        for point_run in program.runs:
            if point_run.finished_levels() and not point_run.results_complete():
                point_run.write_results()
    _write(study, done)
    if write_report:
        report_study(study)
    return study.path


def _schedule(program: Program) -> list[tuple[int, tuple[int, ...]]]:
    """``(level, points)`` in training order: for each level the points that still need it,
    grouped by the epoch of their progress checkpoint of that level (the furthest first)."""
    todo = {i: program.todo(i) for i in range(len(program.points))}
    out = []
    for level in sorted(set().union(*todo.values())):
        by_epoch: dict[int | None, list[int]] = {}
        for i, levels in todo.items():
            if level in levels:
                by_epoch.setdefault(program.runs[i].store.latest_progress(level), []).append(i)
        for epoch in sorted(by_epoch, key=lambda e: -1 if e is None else e, reverse=True):
            out.append((level, tuple(by_epoch[epoch])))
    return out


def _train_stack(study: Study, program: Program, level: int, indices: tuple[int, ...], progress: Progress) -> None:
    """Train ``level`` of the points ``indices`` as one stack (the body of ``run_imp``'s loop)."""
    stack, run = program.stack(indices, study.path)
    plan = imp.schedule_plan(stack, level, program.config.pruning.schedule)
    if level == 0 and not run.theta0.saved():
        run.theta0.save(fresh_state(stack, stack.engine).weights)
    previous = None if level == 0 else program.previous(indices, level - 1)
    mask = dense_mask(stack) if level == 0 else program.next_mask(stack, previous, level, indices)
    progress.start_level(level, float(np.mean(densities(stack, mask))))
    start, reference, rewind_reference = program.starts(stack, run, plan, level, mask, previous)
    run_level(
        stack, run, plan, level, mask, start, progress=progress, distance_from=reference, rewind_from=rewind_reference
    )
    program.remember(run, indices)


def _done(programs: list[Program]) -> dict[Point, bool]:
    """Per point: every level it trains is finished."""
    out = {}
    for program in programs:
        levels = program.config.pruning.levels
        for i, point in enumerate(program.points):
            first = 0 if program.partners[i] is None else 1
            out[point] = set(range(first, levels + 1)) <= set(program.runs[i].finished_levels())
    return out


def _write(study: Study, done: dict[Point, bool]) -> None:
    if is_primary():
        write_study_json(study, done)


def _results_path(point: Point) -> Path:
    folder = point.run_dir if point.init != "reinit" else point.run_dir / "branches" / "reinit"
    return folder / results.RESULTS_FILE


def report_study(study: Study) -> dict | None:
    """The report at the end of a sweep: every point's run directory gets its own report
    (:func:`sdd_jax.report.report`: summary table, figure with its branches, combined results
    files), then the study its comparison (:func:`sdd_jax.compare.report_study`: one figure and
    table by the study's ``by`` and ``panel`` in ``<study>/comparison.*``). Returns the
    comparison's result, or ``None`` while fewer than two points have results (nothing to
    compare yet) or when ``by`` and ``panel`` cannot tell the points apart: then a warning (one
    line) names the ``sdd-jax compare`` command that draws it. A finished sweep is never
    turned into an error by its comparison."""
    with_results = [p for p in study.points if _results_path(p).is_file()]
    for run_dir in dict.fromkeys(p.run_dir for p in with_results):
        report.report(run_dir)
    if len(with_results) < 2:
        return None
    try:
        return compare.report_study(study.path)
    except KeysError as err:
        warnings.warn(f"no comparison drawn: {err}", stacklevel=2)
        return None


def summary_lines(study: Study) -> list[str]:
    """Where the study lives, then a line per point: its coordinates, its run directory (relative
    to the study), its rows (``imp`` or ``reinit``), how many levels are done and the mean test
    accuracy of its last finished level."""
    lines = [f"study: {study.path}"]
    levels = study.base.pruning.levels
    for point in study.points:
        path = _results_path(point)
        rows = results.read_results_csv(path) if path.is_file() else []
        done = sorted({int(r["level"]) for r in rows})
        wanted = levels + (1 if point.init != "reinit" else 0)
        status = f"{len(done)} of {wanted} levels"
        if rows:
            last = [r for r in rows if int(r["level"]) == done[-1]]
            test = float(np.mean([r["test_acc"] for r in last]))
            density = float(np.mean([r["density"] for r in last]))
            status += f", level {done[-1]}: test {100 * test:.2f}% at {100 * density:.3g}% of the weights"
        where = storage.relative(point.run_dir, study.path)
        lines.append(f"  {point.label}: {where} [{point.branch}] {status}")
    return lines
