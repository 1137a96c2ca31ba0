"""Iterative magnitude pruning: the level loop and its four retraining schedules.

Level 0 trains the dense network from θ0 and saves θk, its weights at the rewind iteration k.
Every later level prunes ``pruning.fraction`` of the remaining prunable weights of the previous
level's final weights, then retrains by ``pruning.schedule``:

* ``lottery``   weights reset to θk (θ0 when k = 0) on the new mask, a fresh optimiser, and the
  learning-rate schedule continued from iteration k to the end (as OpenLTH's ``lottery`` runs);
* ``finetune``  continue from the previous final weights at the constant ``finetune_lr`` for
  ``finetune_epochs`` (reference: 0.001 for CIFAR, 0.1 for MNIST);
* ``lr_rewind`` continue from the previous final weights with the whole original schedule;
* ``scratch``   a fresh random initialisation at every level (``init`` stream, level folded in).

Where a level's weights come from is a named :class:`Start` (θ0, θk, the previous level's
weights, or a fresh draw with its salt), chosen by :func:`schedule_start`; the branches
(:mod:`sdd_jax.branches`) name theirs the same way.

The loop is plain Python over levels (checkpoints, progress and resume live in
:mod:`sdd_jax.level` and :mod:`sdd_jax.rundir`); each epoch is one jitted, seed-vmapped call
(:mod:`sdd_jax.engine`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path

import numpy as np

from sdd_jax import report
from sdd_jax.config import Config
from sdd_jax.data import Dataset
from sdd_jax.experiment import Experiment, dense_mask, densities, fresh_state, next_mask, state_from
from sdd_jax.level import LevelPlan, run_level
from sdd_jax.progress import Progress
from sdd_jax.rundir import RunDir
from sdd_jax.runopen import open_run
from sdd_jax.train import TrainState, Weights

START_SOURCES = ("theta0", "rewind", "previous", "fresh")


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a training run's weights come from: ``theta0`` (the dense initialisation θ0),
    ``rewind`` (θk, the dense run's weights at the rewind iteration k), ``previous`` (weights the
    caller passes: the previous level's final weights, or a branch's level weights) or ``fresh``
    (a new draw of the ``init`` stream with ``salt`` folded in: scratch folds the level, a branch
    its own salt then the level). The optimiser always starts fresh, at the plan's start
    iteration."""

    source: str
    salt: tuple[int, ...] = ()

    def __post_init__(self):
        if self.source not in START_SOURCES:
            raise ValueError(f"unknown start {self.source!r}; choose one of {START_SOURCES}")
        if (self.source == "fresh") != bool(self.salt):
            raise ValueError("a fresh start needs a salt, and only a fresh start takes one")


THETA0, REWIND, PREVIOUS = Start("theta0"), Start("rewind"), Start("previous")


def fresh(*salt: int) -> Start:
    """A fresh initialisation with ``salt`` folded into the ``init`` stream."""
    return Start("fresh", tuple(int(v) for v in salt))


def schedule_start(schedule: str, level: int) -> Start:
    """The start of ``level`` under ``schedule`` (see the module docstring): θ0 at level 0; then
    lottery: θk, finetune and lr_rewind: the previous level's weights, scratch: a fresh draw
    salted by the level."""
    if level == 0:
        return THETA0
    if schedule == "lottery":
        return REWIND
    if schedule == "scratch":
        return fresh(level)
    return PREVIOUS


def start_weights(
    exp: Experiment, run: RunDir, plan: LevelPlan, start: Start, previous: Weights | None = None
) -> Weights:
    """The (stacked, unmasked) weights of ``start``; ``previous`` is required by a ``previous``
    start."""
    if start.source == "theta0":
        return run.theta0.load()
    if start.source == "rewind":
        return run.theta_rewind.load()
    if start.source == "fresh":
        return fresh_state(exp, plan.engine, *start.salt).weights
    if previous is None:
        raise ValueError("a 'previous' start needs the weights to start from")
    return previous


def start_state(
    exp: Experiment, run: RunDir, plan: LevelPlan, start: Start, mask, previous: Weights | None = None
) -> TrainState:
    """The training state of ``start`` on ``mask`` (masked weights, a fresh optimiser, the
    schedule at ``plan.start_iteration``: k for a lottery retraining, else 0)."""
    weights = start_weights(exp, run, plan, start, previous)
    return state_from(exp, plan.engine, weights, mask, plan.start_iteration)


def run_imp(
    config: Config,
    *,
    dataset: Dataset | None = None,
    prepared: tuple[Experiment, RunDir] | None = None,
    write_report: bool = True,
) -> Path:
    """Run (or resume) the iterative-pruning experiment of ``config``. Returns the run directory.

    The run is opened by :func:`sdd_jax.runopen.open_run` (on ``dataset`` when given), unless
    ``prepared`` holds what it returned: then its experiment must be that of ``config``
    (``ValueError`` otherwise), and ``dataset`` is not used.

    Finished levels are not recomputed; more levels extend the run. A level missing among the
    finished ones (its folder or commit marker deleted) is recomputed from the level before it,
    with a warning: with the same settings it comes out identical. The run directory then holds
    ``results.csv``, ``curves.csv`` and ``layers.csv``, and, with ``write_report`` (the default),
    ``summary.txt``, ``figure.png``/``.svg`` and the combined ``results_all.csv``/``curves_all.csv``
    (:func:`sdd_jax.report.report`, as ``sdd-jax run`` writes them).
    """
    if prepared is not None and prepared[0].config != config:
        raise ValueError(
            f"run_imp: the prepared run is {prepared[1].path.name}, not the experiment of "
            f"config {config.name!r}; pass the config it was opened with"
        )
    exp, run = prepared or open_run(config, dataset=dataset)
    cfg = exp.config
    schedule, levels = cfg.pruning.schedule, cfg.pruning.levels
    done = run.finished_levels()
    for level in done:
        run.clear_progress(level)  # left by a kill between a level's save and its clean-up
    todo = [level for level in range(levels + 1) if level not in done]
    gaps = [level for level in todo if done and level < max(done)]
    if gaps:
        warnings.warn(
            f"{run.path.name}: level(s) {gaps} missing among the finished levels {done}: recomputing them", stacklevel=2
        )
    if not run.theta0.saved():
        run.theta0.save(fresh_state(exp, exp.engine).weights)
    previous, previous_level = None, None
    with Progress(
        total_epochs=sum(level_epochs(exp, level) for level in range(levels + 1)),
        verbosity=cfg.run.verbosity,
        desc=cfg.name,
    ) as progress:
        progress.skip_epochs(sum(level_epochs(exp, level) for level in done if level <= levels))
        for level in todo:
            if level and previous_level != level - 1:  # the level before is on disk
                previous, previous_level = run.level(level - 1), level - 1
            mask = dense_mask(exp) if level == 0 else next_mask(exp, previous, level)
            plan = schedule_plan(exp, level, schedule)
            progress.start_level(level, float(np.mean(densities(exp, mask))))
            start = functools.partial(
                start_state,
                exp,
                run,
                plan,
                schedule_start(schedule, level),
                mask,
                previous.weights if previous is not None else None,
            )
            previous = run_level(exp, run, plan, level, mask, start, progress=progress)
            previous_level = level
    if not run.results_complete():  # a kill between a level's checkpoint and its results files
        run.write_results()
    if write_report:
        report.report(run.path)
    return run.path


def schedule_plan(exp: Experiment, level: int, schedule: str) -> LevelPlan:
    """The engine, first epoch and start iteration of ``level`` under ``schedule``."""
    cfg = exp.config
    k = cfg.pruning.rewind_iteration
    if level == 0:
        return LevelPlan(exp.engine, 0, 0, cfg.optim.epochs, rewind_iteration=k)
    if schedule == "lottery":
        return LevelPlan(exp.engine, k // exp.engine.steps_per_epoch, k, cfg.optim.epochs)
    if schedule == "finetune":
        epochs = cfg.pruning.finetune_epochs or cfg.optim.epochs
        return LevelPlan(exp.engine_for(cfg.optim.constant_lr(cfg.pruning.finetune_lr, epochs)), 0, 0, epochs)
    return LevelPlan(exp.engine, 0, 0, cfg.optim.epochs)  # lr_rewind, scratch


def level_epochs(exp: Experiment, level: int) -> int:
    """Epochs trained at ``level`` under the config's schedule."""
    return schedule_plan(exp, level, exp.config.pruning.schedule).num_epochs
