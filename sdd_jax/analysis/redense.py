"""Re-dense training (He et al., ICML 2022, Fig. 6 and 37-39): a level's sparse training run to
its end, then every pruned weight released (initialised at exactly 0) and the whole network
trained densely for as many epochs again at the last learning rate of the sparse schedule.

Both stages run through the level runner's epoch loop (:func:`sdd_jax.level.train_epochs`,
writing nothing into the run directory), each epoch evaluated by its ``after_epoch`` callback.
The sparse stage is the level's own training, replayed from its start state
(:func:`sdd_jax.imp.start_state`, the run's schedule) so that every epoch can be evaluated, and
checked against the stored level (the largest weight difference is recorded; the same program on
the same machine gives 0). The dense stage uses the engine the ``redense`` branch
(:mod:`sdd_jax.branches`) builds, the run's optimiser at a constant learning rate
(``OptimConfig.constant_lr``), on an all-ones mask, its epochs numbered on after the sparse
stage's (fresh data orders, as a continuing training loop).

Momentum: the reference code keeps training the same optimiser after re-opening the weights,
so its momentum buffer carries over (zero at the pruned coordinates, whose gradients were
masked); ``analysis.redense_momentum=keep`` (default) does the same, ``reset`` starts a fresh
buffer as the ``redense`` branch does. Without replay (``analysis.replay_sparse=false``) the
sparse stage is read from the stored level (its curves: training metrics of the training pass,
test metrics every ``run.eval_every_epochs``) and the buffer is necessarily fresh.

Every epoch of both stages is evaluated (the reference evaluates the test set only at the start):
loss and accuracy on the training set with its noisy labels (evaluation mode, no augmentation),
accuracy against the clean labels, memorisation of the relabelled examples, and test loss and
accuracy.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sdd_jax import imp, masks, metrics
from sdd_jax.experiment import Experiment
from sdd_jax.level import LevelPlan, train_epochs
from sdd_jax.progress import Progress
from sdd_jax.rundir import RunDir
from sdd_jax.train import TrainState, Weights

CURVE_KEYS = ("train_loss", "train_acc", "train_acc_clean", "train_acc_noisy_subset", "test_loss", "test_acc")


def last_learning_rate(exp: Experiment) -> float:
    """The learning rate of the last iteration of a training run under the run's schedule
    (``optim.lr`` times ``gamma`` per passed milestone): 0.1 for LeNet, 0.001 for the CIFAR
    presets."""
    engine = exp.engine
    return float(engine.spec.schedule(jnp.int32(exp.config.optim.epochs * engine.steps_per_epoch - 1)))


def _evaluate(exp: Experiment, engine, state: TrainState, mask) -> dict:
    ds = exp.dataset
    train_loss, train_acc, pred = engine.evaluate(state.params, state.batch_stats, mask, exp.train)
    test_loss, test_acc, _ = engine.evaluate(state.params, state.batch_stats, mask, exp.test)
    split = metrics.accuracy_split(np.asarray(pred), ds.y_train, ds.y_train_clean, ds.y_train != ds.y_train_clean)
    return {
        "train_loss": np.asarray(train_loss),
        "train_acc": np.asarray(train_acc),
        "train_acc_clean": split["train_acc_clean"],
        "train_acc_noisy_subset": split["train_acc_noisy_subset"],
        "test_loss": np.asarray(test_loss),
        "test_acc": np.asarray(test_acc),
    }


def _append(curves: dict, epoch: int, stage: str, values: dict) -> None:
    curves["epoch"].append(epoch)
    curves["stage"].append(stage)
    for k in CURVE_KEYS:
        v = values.get(k)
        curves[k].append(None if v is None else np.asarray(v, np.float64).tolist())


def _train(
    exp: Experiment, plan: LevelPlan, state: TrainState, mask, stage: str, curves: dict, level: int, progress: Progress
) -> TrainState:
    """``plan``'s epochs through the level runner's loop (nothing written), every epoch
    evaluated into ``curves`` as ``stage``."""

    def after_epoch(epoch, trained):
        _append(curves, len(curves["epoch"]) + 1, stage, _evaluate(exp, plan.engine, trained, mask))

    state, _ = train_epochs(
        exp, None, plan, state, mask, level=level, progress=progress, evaluate=False, after_epoch=after_epoch
    )
    return state


def redense_level(
    exp: Experiment,
    run: RunDir,
    level: int,
    *,
    epochs: int,
    lr: float,
    momentum: str = "keep",
    replay: bool = True,
    progress: Progress | None = None,
):
    """Sparse then dense training at ``level`` (stacked over seeds). Returns ``(curves, sparse,
    redense, info)``: per-epoch curves (``epoch`` 1.., ``stage`` sparse|redense, and
    :data:`CURVE_KEYS`, each a list of per-seed values or None), the sparse and the re-densed
    :class:`~sdd_jax.train.Weights`, and ``info`` (epochs, lr, momentum, ``replay_max_abs_diff``).
    ``progress`` (default: silent) counts every epoch."""
    cfg = exp.config
    progress = progress or Progress(0, verbosity=0)
    schedule = cfg.pruning.schedule
    stored = jax.tree.map(jnp.asarray, jax.device_get(run.level(level)))  # one array kind: no recompiles
    mask = stored.mask
    plan = imp.schedule_plan(exp, level, schedule)
    curves = {"epoch": [], "stage": [], **{k: [] for k in CURVE_KEYS}}
    info = {
        "level": level,
        "sparse_epochs": plan.num_epochs,
        "epochs": epochs,
        "lr": lr,
        "momentum": momentum if replay else "reset",
        "replay": replay,
    }
    if replay:
        start = imp.schedule_start(schedule, level)
        previous = run.level(level - 1).weights if start == imp.PREVIOUS else None
        state = imp.start_state(exp, run, plan, start, mask, previous)
        state = _train(exp, plan, state, mask, "sparse", curves, level, progress)
        diff = jax.tree.map(
            lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0)),
            jax.device_get(state.params),
            jax.device_get(stored.params),
        )
        info["replay_max_abs_diff"] = max(jax.tree.leaves(diff))
        sparse = Weights(*jax.device_get((state.params, state.batch_stats)))
    else:
        level_curves = run.store.level_metrics(level)["curves"]
        for i in range(len(level_curves["epoch"])):
            _append(
                curves, i + 1, "sparse", {k: level_curves.get(k, [None])[i] for k in CURVE_KEYS if k in level_curves}
            )
            progress.step()
        sparse = stored.weights
        state = None
        info["replay_max_abs_diff"] = None
    dense = masks.ones_like(mask)
    # The redense branch's engine; epochs numbered on after the sparse stage's (fresh data orders).
    engine = exp.engine_for(cfg.optim.constant_lr(lr, epochs))
    dense_plan = LevelPlan(engine, plan.epochs, 0, plan.epochs + epochs)  # the state starts at step 0
    start = imp.start_state(exp, run, dense_plan, imp.PREVIOUS, dense, sparse)
    if replay and momentum == "keep":
        start = dataclasses.replace(start, opt_state=state.opt_state)
    redensed = _train(exp, dense_plan, start, dense, "redense", curves, level, progress)
    return curves, sparse, Weights(*jax.device_get((redensed.params, redensed.batch_stats))), info
