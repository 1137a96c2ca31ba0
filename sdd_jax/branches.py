"""Branches from a finished iterative-pruning run: the paper's ablations.

* ``oneshot``      from the dense level-0 model, prune to the density of iterative level k in one
  step (kept count ``kept_after_levels``, so it equals level k's count exactly), then retrain by
  the run's schedule (the paper's Tiny-ImageNet protocol);
* ``reinit``       level k's mask, a new random initialisation (``init`` stream, branch salt),
  retrained from the rewind iteration (the "winning ticket vs random initialisation" ablation);
* ``random_prune`` random masks with the same per-layer counts as level k's, retrained by the
  run's schedule (lottery: from θk; finetune/lr_rewind: from level k's trained weights; scratch:
  from a fresh initialisation);
* ``redense``      after level k's sparse training, reopen every pruned weight at 0 and train all
  weights for ``pruning.redense_epochs`` at the fixed ``pruning.redense_lr`` (reference: 0.001
  CIFAR, 0.1 MNIST), keeping per-epoch train/test metrics.

Each branch writes to ``<run_dir>/branches/<name>/`` with its own checkpoints, ``results.csv``,
``curves.csv`` and ``layers.csv``, and resumes like the main run (:mod:`sdd_jax.level`). Re-dense
runs are kept and labelled by their settings (folder and ``branch`` column
``redense-e<epochs>-lr<lr>``, plus the columns ``redense_epochs`` and ``redense_lr``), so that
variants at the same level never mix. A re-dense row sits at the level it started from:
``density``, ``sparsity`` and ``kept_weights`` are that sparse level's, and ``redense_density``
and ``redense_kept_weights`` hold those of the network it trained (all weights open: 1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sdd_jax import exports, imp, masks, pruning
from sdd_jax.distributed import to_host
from sdd_jax.experiment import Experiment, densities, oneshot_mask, random_masks
from sdd_jax.imp import PREVIOUS, REWIND, Start
from sdd_jax.level import LevelPlan, run_level
from sdd_jax.progress import Progress
from sdd_jax.rundir import RunDir
from sdd_jax.train import TrainState, Weights

BRANCHES = ("oneshot", "reinit", "random_prune", "redense")
# Folded into the init / mask streams so branch draws never coincide with the main run's.
SALT = {"reinit": 101, "random_prune": 102}


class BranchError(ValueError):
    """A branch asked of a run that cannot provide it."""


def branch_dirname(exp: Experiment, name: str) -> str:
    """The folder under ``branches/`` of branch ``name``, also the ``branch`` label of its rows:
    re-dense runs are named by their settings, so runs with other epochs or learning rates
    never mix."""
    if name == "redense":
        p = exp.config.pruning
        return f"redense-e{p.redense_epochs}-lr{p.redense_lr:g}"
    return name


def _check(exp: Experiment, run: RunDir, name: str, levels: list[int]) -> None:
    if name not in BRANCHES:
        raise BranchError(f"unknown branch {name!r}; choose one of {BRANCHES}")
    if not levels:
        raise BranchError("--levels is empty: give comma-separated levels, e.g. --levels 4,8")
    done = run.finished_levels()
    missing = [level for level in ([0] if name == "oneshot" else levels) if level not in done]
    if missing:
        raise BranchError(
            f"levels {missing} of {run.path.name} are not finished (finished: {done}); run the main experiment "
            f"first (`sdd-jax run` with its preset, or --set pruning.levels=N to extend it)"
        )
    if any(level < 0 for level in levels):
        raise BranchError(f"levels must be >= 0, got {levels}")
    if name == "oneshot":
        shapes = exp.level_shapes.mask
        total = sum(
            int(np.prod(s.shape[1:]))
            for path, s in zip(masks.paths(shapes), jax.tree.leaves(shapes))
            if exp.is_prunable(path)
        )
        empty = [k for k in levels if pruning.kept_after_levels(total, exp.config.pruning.fraction, k) == 0]
        if empty:
            raise BranchError(f"one-shot k={empty} would keep no prunable weight (of {total})")
    if name == "redense" and exp.config.pruning.redense_epochs <= 0:
        raise BranchError(
            "redense needs pruning.redense_epochs > 0: add --set pruning.redense_epochs=20 "
            f"(epochs of dense training; the learning rate is pruning.redense_lr={exp.config.pruning.redense_lr:g})"
        )


def redense_fields(exp: Experiment, run: RunDir) -> Callable[[int, dict], dict]:
    """The columns a re-dense row of level k gets in ``results.csv``: the density, sparsity and
    kept-weight count of the run's level k (the sparse network it started from), the re-densed
    network's own as ``redense_density``/``redense_kept_weights``, and its settings."""
    p = exp.config.pruning

    def fields(level: int, row: dict) -> dict:
        start = {r["seed"]: r for r in run.level_metrics(level)["rows"]}[row["seed"]]
        return {
            "density": start["density"],
            "sparsity": start["sparsity"],
            "kept_weights": start.get("kept_weights"),
            "redense_density": row["density"],
            "redense_kept_weights": row.get("kept_weights"),
            "redense_epochs": p.redense_epochs,
            "redense_lr": p.redense_lr,
        }

    return fields


def run_branch(exp: Experiment, run: RunDir, name: str, levels: list[int]) -> Path:
    """Run branch ``name`` at each level (one-shot: each k) and write its ``results.csv``,
    ``curves.csv`` and ``layers.csv`` (and the run's combined ``results_all.csv`` and
    ``curves_all.csv``). Returns the path of the branch's ``results.csv``."""
    _check(exp, run, name, levels)
    dirname = branch_dirname(exp, name)
    if name == "redense":
        branch = run.branch(dirname, dirname, row_fields=redense_fields(exp, run))
    else:
        branch = run.branch(dirname, name)
    todo = [level for level in dict.fromkeys(levels) if level not in branch.finished_levels()]
    plans = {level: plan(exp, name) for level in todo}
    with Progress(
        total_epochs=sum(p.num_epochs for p in plans.values()),
        verbosity=exp.config.run.verbosity,
        desc=f"{exp.config.name}:{name}",
    ) as progress:
        for level in todo:
            mask, state, distance_from = branch_start(exp, run, name, level, plans[level])
            progress.start_level(level, float(np.mean(densities(exp, mask))))
            run_level(
                exp,
                branch,
                plans[level],
                level,
                mask,
                lambda s=state: s,
                progress=progress,
                distance_from=distance_from,
                rewind_from=distance_from,  # a reinit network's own draw: the reference of both distances
            )
    path = branch.write_results()
    if run.results_path.is_file():
        exports.write_combined(run.path, config=run.config)
    return path


def plan(exp: Experiment, name: str) -> LevelPlan:
    """The training run of branch ``name`` (as a pruned level of the run's schedule)."""
    cfg = exp.config
    if name == "redense":
        optim = cfg.optim.constant_lr(cfg.pruning.redense_lr, cfg.pruning.redense_epochs)
        return LevelPlan(exp.engine_for(optim), 0, 0, optim.epochs)
    return imp.schedule_plan(exp, 1, "lottery" if name == "reinit" else cfg.pruning.schedule)


def retrain_start(schedule: str, level: int) -> Start:
    """How a branch that retrains by the run's ``schedule`` starts (one-shot, random pruning):
    as a pruned level would, so lottery from θk, finetune and lr_rewind from the weights the
    branch passes, scratch from a fresh draw salted by ``level``, as the run's level ``level``
    (one-shot k = 0: level 1's, the first pruned level's)."""
    if schedule == "lottery":
        return REWIND
    if schedule == "scratch":
        return imp.fresh(max(level, 1))
    return PREVIOUS


def branch_start(
    exp: Experiment, run: RunDir, name: str, level: int, plan: LevelPlan
) -> tuple[object, TrainState, Weights | None]:
    """The mask, the starting state and the reference of the learning distances (``None``: θ0 for
    ``learning_distance``, θk for ``learning_distance_rewind``) of branch ``name`` at ``level``
    (one-shot: k). Starts: one-shot and random pruning retrain by
    the run's schedule (:func:`retrain_start`), reinit from a fresh draw salted by
    ``SALT["reinit"]`` and the level, re-dense from the level's trained weights."""
    schedule = exp.config.pruning.schedule
    if name == "oneshot":
        dense = run.level(0)
        mask = oneshot_mask(exp, dense, level)
        return mask, imp.start_state(exp, run, plan, retrain_start(schedule, level), mask, dense.weights), None
    trained = run.level(level)
    if name == "reinit":
        # Both learning distances (from θ0 and from θk) are measured from the network's own draw:
        # it starts from it at the rewind iteration, so it has no θ0 or θk of its own apart from it.
        start = imp.fresh(SALT["reinit"], level)
        fresh = to_host(imp.start_weights(exp, run, plan, start))
        return trained.mask, imp.start_state(exp, run, plan, start, trained.mask), fresh
    if name == "random_prune":
        mask = random_masks(exp, trained.mask, SALT["random_prune"], level)
        return mask, imp.start_state(exp, run, plan, retrain_start(schedule, level), mask, trained.weights), None
    # redense: every weight trainable again, the pruned ones starting at exactly zero.
    dense_mask = jax.tree.map(jnp.ones_like, trained.mask)
    return dense_mask, imp.start_state(exp, run, plan, PREVIOUS, dense_mask, trained.weights), None
