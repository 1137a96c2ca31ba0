"""The level runner: train one pruning level resumably, measure it and record it.

Used by the pruning loop (:mod:`sdd_jax.imp`) and by every branch (:mod:`sdd_jax.branches`).
A level is one training run of a stacked state on a fixed mask, from ``plan.first_epoch`` to
``plan.epochs``, evaluated on the test set every ``run.eval_every_epochs`` epochs and at the end,
checkpointed every ``run.checkpoint_every_epochs`` epochs (and resumed from there), and, in the
dense run, saving θk when the global iteration reaches the rewind iteration k.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import jax
import numpy as np

from sdd_jax import masks, metrics
from sdd_jax.checkpoints import UnreadableCheckpointError
from sdd_jax.distributed import to_host
from sdd_jax.engine import Engine
from sdd_jax.experiment import Experiment
from sdd_jax.progress import Progress
from sdd_jax.rundir import RunDir
from sdd_jax.train import LevelWeights, TrainState, Weights, check_finite


@dataclasses.dataclass(frozen=True)
class LevelPlan:
    """Where one training run starts and ends, in epochs and global iterations."""

    engine: Engine
    first_epoch: int  # the first epoch trained (the rewind iteration's epoch for lottery)
    start_iteration: int  # iterations before this one are skipped (lottery: the rewind iteration)
    epochs: int  # the run ends after this many epochs
    rewind_iteration: int | None = None  # save θk at this iteration (the dense run)

    @property
    def num_epochs(self) -> int:
        return self.epochs - self.first_epoch


def run_level(
    exp: Experiment,
    run: RunDir,
    plan: LevelPlan,
    level: int,
    mask,
    start: Callable[[], TrainState],
    *,
    progress: Progress,
    distance_from: Weights | None = None,
    rewind_from: Weights | None = None,
) -> LevelWeights:
    """Train, measure and record ``level`` on ``mask``; returns its final weights.

    Resumes from the level's progress checkpoint when there is one, else trains ``start()``.
    The learning distances are measured from ``distance_from`` (default θ0) and the rewind ones
    from ``rewind_from`` (default θk; a reinit network's own draw stands for both).
    """
    curves = None
    resumed = _resume(exp, run, plan, level)
    if resumed is not None:
        epoch, state, mask, curves = resumed
        progress.skip_epochs(epoch - plan.first_epoch)
        plan = dataclasses.replace(
            plan, first_epoch=epoch, start_iteration=max(plan.start_iteration, epoch * plan.engine.steps_per_epoch)
        )
    else:
        state = start()
    state, mask = plan.engine.place((state, mask))  # saved as they train: split over the seed devices
    try:
        with run.tracker.level(level, plan, curves) as live:  # live metrics, closed on an interrupt too
            state, curves = train_epochs(
                exp, run, plan, state, mask, level=level, progress=progress, curves=curves, on_record=live.epoch
            )
    except BaseException:
        run.settle()
        raise
    if not run.theta_rewind.saved():  # k at the very end is rejected in experiment.build
        raise RuntimeError("the rewind point was never reached")
    reference = distance_from if distance_from is not None else run.theta0.load()
    rewind_reference = rewind_from if rewind_from is not None else run.theta_rewind.load()
    rows = measure(exp, plan.engine, state, mask, curves, reference.params, rewind_reference.params)
    weights = LevelWeights(state.params, state.batch_stats, mask)
    run.finish_level(level, weights, rows, curves)
    progress.level_done(level, rows)
    return weights


def _resume(exp: Experiment, run: RunDir, plan: LevelPlan, level: int):
    """``(epoch, state, mask, curves)`` of the level's progress checkpoint, or None to start the
    level over: none saved, unreadable (progress is a cache: a warning, then a fresh start), or
    past the rewind iteration of a dense run whose θk is missing (it is saved while training)."""
    if not run.has_progress(level):
        return None
    try:
        epoch, state, mask, curves = run.restore_progress(level, exp.state_shapes)
    except UnreadableCheckpointError as err:
        warnings.warn(f"{err}; level {level} starts again from its first epoch", stacklevel=3)
        run.clear_progress(level)
        return None
    past_rewind = (
        plan.rewind_iteration is not None
        and not run.theta_rewind.saved()
        and epoch * plan.engine.steps_per_epoch > plan.rewind_iteration
    )
    if past_rewind:
        warnings.warn(
            f"{run.path}/trees/theta_rewind is missing: level {level} starts again from its first epoch to save θk",
            stacklevel=3,
        )
        run.clear_progress(level)
        return None
    return epoch, state, mask, curves


def empty_curves(with_val: bool = False) -> dict:
    names = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    return {name: [] for name in names + (["val_loss", "val_acc"] if with_val else [])}


def train_epochs(
    exp: Experiment,
    run: RunDir | None,
    plan: LevelPlan,
    state: TrainState,
    mask,
    *,
    level: int,
    progress: Progress,
    curves: dict | None = None,
    evaluate: bool = True,
    after_epoch: Callable[[int, TrainState], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
):
    """Train ``state`` on ``mask`` through ``plan``'s epochs; returns (state, curves).

    Per epoch the curves get the training loss and accuracy (all examples of the epoch, also
    when it is split at the rewind point) and, when due, the test (and validation) loss and
    accuracy (else None). The test evaluation runs in the epoch's own compiled call, and an
    epoch's numbers are fetched from the device only after the next epoch is dispatched, so
    the accelerator is not left waiting on the host between epochs.

    ``run`` receives θk (when ``plan.rewind_iteration`` is reached and θk is not saved yet) and
    the progress checkpoints (every ``run.checkpoint_every_epochs``); with ``run=None`` nothing is
    written (a replay, the analysis's re-dense training). ``evaluate=False`` leaves out the test
    and validation evaluations (their curve entries are None): for a caller that evaluates
    itself. ``after_epoch(epoch, state)`` is called after each epoch (0-based ``epoch``) with the
    trained state, before the next epoch is dispatched (the next call donates it: read what is
    needed then, do not keep it). ``on_record(curves)`` is called each time an epoch's numbers
    reach the host and are appended to ``curves`` (the live metrics, :mod:`sdd_jax.tracking`).
    """
    engine, run_cfg = plan.engine, exp.config.run
    spe = engine.steps_per_epoch
    curves = curves or empty_curves(exp.val is not None)
    rewind = plan.rewind_iteration if run is not None and not run.theta_rewind.saved() else None
    pending = None  # the last dispatched epoch, not yet on the host

    def record(epoch, parts, test, val):
        parts, test, val = to_host((parts, test, val))
        loss_sum, correct, count = (sum(np.asarray(p[i], np.float64) for p in parts) for i in range(3))
        check_finite(loss_sum, what=f"at level {level}, epoch {epoch + 1}", seeds=exp.seeds)
        count = np.maximum(count, 1.0)
        curves["epoch"].append(epoch + 1)
        curves["train_loss"].append((loss_sum / count).tolist())
        curves["train_acc"].append((correct / count).tolist())
        for split, numbers in (("test", test), ("val", val)):
            if f"{split}_loss" in curves:
                curves[f"{split}_loss"].append(None if numbers is None else np.asarray(numbers[0]).tolist())
                curves[f"{split}_acc"].append(None if numbers is None else np.asarray(numbers[1]).tolist())
        progress.epoch_done(test_acc=_last(curves["test_acc"]))
        if on_record is not None:
            on_record(curves)

    for epoch in range(plan.first_epoch, plan.epochs):
        start = max(plan.start_iteration, epoch * spe)
        parts = []
        if rewind is not None and epoch * spe <= rewind < (epoch + 1) * spe:
            if rewind > start:  # the epoch in two parts around the rewind point
                state, *sums = engine.train_epoch_sums(state, mask, exp.train, epoch, start, rewind)
                parts.append(sums)
            run.theta_rewind.save(state.weights)
            start = rewind
        last = epoch + 1 == plan.epochs
        due = evaluate and (last or (epoch + 1) % run_cfg.eval_every_epochs == 0)
        state, sums, test = engine.train_epoch_then_evaluate(
            state, mask, exp.train, epoch, start, evaluate_on=exp.test if due else None
        )
        parts.append(sums)
        val = None
        if due and exp.val is not None:
            val = engine.evaluate(state.params, state.batch_stats, mask, exp.val)[:2]
        if after_epoch is not None:
            after_epoch(epoch, state)
        if pending is not None:
            record(*pending)
        pending = (epoch, parts, test, val)
        every = run_cfg.checkpoint_every_epochs if run is not None else 0
        if every and (epoch + 1) % every == 0 and not last:
            record(*pending)
            pending = None
            run.save_progress(level, epoch + 1, state, mask, curves)
    if pending is not None:
        record(*pending)
    return state, curves


def _last(values):
    """The last evaluated epoch's values (per replica), or None."""
    for v in reversed(values):
        if v is not None:
            return v
    return None


def _selected_by_validation(curves: dict, i: int) -> dict:
    """Seed ``i``'s best validation accuracy over the evaluated epochs and the test accuracy at
    that epoch (the first of equal ones): an epoch chosen without looking at the test set."""
    pairs = [
        (v[i], t[i]) for v, t in zip(curves.get("val_acc", []), curves["test_acc"]) if v is not None and t is not None
    ]
    if not pairs:
        return {"val_acc_best": float("nan"), "test_acc_at_best_val": float("nan")}
    best = max(range(len(pairs)), key=lambda j: (pairs[j][0], -j))
    return {"val_acc_best": float(pairs[best][0]), "test_acc_at_best_val": float(pairs[best][1])}


def _unstack(tree, i):
    return jax.tree.map(lambda leaf: leaf[i], tree)


def measure(exp: Experiment, engine: Engine, state: TrainState, mask, curves: dict, theta0, theta_rewind) -> list[dict]:
    """One result row per seed of a finished training run (see :mod:`sdd_jax.metrics`):
    density, train/test accuracy and loss, memorisation, learning distances from ``theta0`` and
    ``theta_rewind`` (stacked params), per-layer densities and distances. The test numbers are
    the last epoch's entry of ``curves``."""
    ds = exp.dataset
    # The last epoch is always evaluated (train_epochs): its test numbers are the final ones.
    test_loss, test_acc = curves["test_loss"][-1], curves["test_acc"][-1]
    # Eval mode, no augmentation, on the noisy labels the network was trained on.
    train_loss, train_acc, train_pred = to_host(engine.evaluate(state.params, state.batch_stats, mask, exp.train))
    check_finite(test_loss, what="on the test set at the end of training", seeds=exp.seeds)
    check_finite(train_loss, what="on the training set at the end of training", seeds=exp.seeds)
    train_pred = np.asarray(train_pred)
    # Memorisation is measured on the examples whose label was actually changed (with
    # random_labels about 1/K of the selected examples keep their true label). A study's stack
    # holds one label array per replica, (replicas, N).
    noisy = np.asarray(ds.y_train)
    relabelled = noisy != ds.y_train_clean
    val = None
    if exp.val is not None:  # the last epoch's, when the curves hold the validation split
        val = (
            (curves["val_loss"][-1], curves["val_acc"][-1])
            if curves.get("val_acc")
            else to_host(engine.evaluate(state.params, state.batch_stats, mask, exp.val)[:2])
        )
    is_prunable = exp.is_prunable
    params_host, mask_host, theta0_host, thetak_host = to_host((state.params, mask, theta0, theta_rewind))
    rows = []
    for i, seed in enumerate(exp.seeds):
        params_i, mask_i = _unstack(params_host, i), _unstack(mask_host, i)
        dist0 = metrics.learning_distances(_unstack(theta0_host, i), params_i, mask_i, is_prunable)
        distk = metrics.learning_distances(_unstack(thetak_host, i), params_i, mask_i, is_prunable)
        labels_i, relabelled_i = (noisy[i], relabelled[i]) if noisy.ndim == 2 else (noisy, relabelled)
        split = metrics.accuracy_split(train_pred[i], labels_i, ds.y_train_clean, relabelled_i)
        kept, total = masks.count(mask_i, is_prunable)
        kept = int(kept)
        test_curve = [c[i] for c in curves["test_acc"] if c is not None]
        rows.append(
            {
                "seed": seed,
                "density": kept / total,
                "sparsity": (total - kept) / total,
                "kept_weights": kept,
                "train_acc": float(split["train_acc"]),
                "train_acc_clean": float(split["train_acc_clean"]),
                "train_acc_noisy_subset": float(split["train_acc_noisy_subset"]),
                "train_loss": float(np.asarray(train_loss)[i]),
                "test_acc": float(np.asarray(test_acc)[i]),
                "test_acc_best": float(max(test_curve)) if test_curve else float("nan"),
                "test_loss": float(np.asarray(test_loss)[i]),
                "learning_distance": dist0["learning_distance"],
                "learning_distance_unpruned": dist0["learning_distance_unpruned"],
                "learning_distance_rewind": distk["learning_distance"],
                "learning_distance_rewind_unpruned": distk["learning_distance_unpruned"],
                **(
                    {}
                    if val is None
                    else {
                        "val_loss": float(np.asarray(val[0])[i]),
                        "val_acc": float(np.asarray(val[1])[i]),
                        **_selected_by_validation(curves, i),
                    }
                ),
                "layer_density": {k: float(v) for k, v in masks.layer_densities(mask_i, is_prunable).items()},
                "layer_learning_distance": dist0["per_layer"],
                "layer_learning_distance_rewind": distk["per_layer"],
            }
        )
    return rows
