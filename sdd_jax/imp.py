"""Iterative magnitude pruning: the level loop and its four retraining schedules.

Level 0 trains the dense network from θ0 (saved) and captures θk at the rewind iteration k
(saved). Every later level prunes ``pruning.fraction`` of the remaining prunable weights of the
previous level's final weights, then retrains by ``pruning.schedule``:

* ``lottery``   weights reset to θk (θ0 when k = 0) on the new mask, a fresh optimiser, and the
  learning-rate schedule continued from iteration k to the end (as OpenLTH's ``lottery`` runs);
* ``finetune``  continue from the previous final weights at the constant ``finetune_lr`` for
  ``finetune_epochs`` (reference: 0.001 for CIFAR, 0.1 for MNIST);
* ``lr_rewind`` continue from the previous final weights with the whole original schedule;
* ``scratch``   a fresh random initialisation at every level (``init`` stream, level folded in).

The loop is plain Python over levels and epochs (checkpoints, progress and resume live there);
each epoch is one jitted, seed-vmapped ``lax.scan`` (:mod:`sdd_jax.train`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sdd_jax import checkpoints, masks, metrics, pruning, report
from sdd_jax import rng as rng_streams
from sdd_jax.config import Config, OptimConfig
from sdd_jax.data import Dataset, load_dataset
from sdd_jax.models import build_model, prunable_predicate
from sdd_jax.progress import Progress
from sdd_jax.train import DeviceData, Engine, TrainState, check_finite

SCHEDULES = ("lottery", "finetune", "lr_rewind", "scratch")


class SimulatedInterrupt(RuntimeError):
    """Raised by ``stop_after_level`` (tests simulate a killed run with it)."""


@dataclasses.dataclass
class Setup:
    """Everything a run needs that is derived from its config (built once per process)."""

    config: Config
    dataset: Dataset
    model: Any
    is_prunable: Callable[[tuple[str, ...]], bool]
    engine: Engine
    train: DeviceData
    test: DeviceData
    val: DeviceData | None  # the held-out validation split (clean labels), if any
    seeds: list[int]
    run_dir: Path
    store: checkpoints.RunStore
    pruners: dict = dataclasses.field(default_factory=dict)
    engines: dict = dataclasses.field(default_factory=dict)

    def sample_input(self) -> jax.Array:
        return jnp.zeros((1, *self.dataset.x_train.shape[1:]), jnp.float32)

    def engine_for(self, optim: OptimConfig) -> Engine:
        """The engine of ``optim`` (finetuning, re-dense), built once per run."""
        if optim == self.engine.optim:
            return self.engine
        if optim not in self.engines:
            self.engines[optim] = make_engine(self.config, self.model, self.dataset, optim)
        return self.engines[optim]


def validate(config: Config) -> None:
    """Reject settings that cannot run, before anything is written."""
    p, o = config.pruning, config.optim
    if p.schedule not in SCHEDULES:
        raise ValueError(f"unknown pruning.schedule {p.schedule!r}; choose one of {SCHEDULES}")
    if not 0.0 < p.fraction < 1.0:
        raise ValueError(f"pruning.fraction must be in (0, 1), got {p.fraction}")
    if p.levels < 0:
        raise ValueError(f"pruning.levels must be >= 0, got {p.levels}")
    if o.epochs <= 0:
        raise ValueError(f"optim.epochs must be positive, got {o.epochs}")
    if config.run.seeds <= 0:
        raise ValueError(f"run.seeds must be positive, got {config.run.seeds}")
    if p.rewind_iteration < 0:
        raise ValueError(f"pruning.rewind_iteration must be >= 0, got {p.rewind_iteration}")
    if p.criterion not in pruning.CRITERIA:
        raise ValueError(f"unknown pruning.criterion {p.criterion!r}; choose one of {pruning.CRITERIA}")
    if p.scope not in ("global", "layer"):
        raise ValueError(f"unknown pruning.scope {p.scope!r}; choose 'global' or 'layer'")
    pruning.fraction_ratio(p.fraction)
    if o.batch_size <= 0:
        raise ValueError(f"optim.batch_size must be positive, got {o.batch_size}")


def make_engine(config: Config, model, dataset: Dataset, optim: OptimConfig) -> Engine:
    return Engine(model, optim, len(dataset.y_train), mean=dataset.mean, std=dataset.std,
                  augment=config.data.augment, eval_batch_size=config.run.eval_batch_size,
                  seeds_per_chunk=config.run.seeds_per_chunk, epoch_loop=config.run.epoch_loop)


def data_fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the arrays a run trains and tests on (images, noisy and clean labels)."""
    digest = hashlib.sha256()
    for array in (dataset.x_train, dataset.y_train, dataset.y_train_clean, dataset.x_test, dataset.y_test):
        a = np.ascontiguousarray(array)
        digest.update(str((a.shape, a.dtype.str)).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _check_execution(run_dir: Path, execution: dict) -> None:
    """Warn when a run is continued with other execution settings: they are outside the run's
    identity but can move the last float bits (see ``train.Engine``)."""
    path = run_dir / "execution.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = {k: (before.get(k), v) for k, v in execution.items() if before.get(k) != v}
        if changed and (run_dir / "levels").is_dir():
            warnings.warn(f"{run_dir.name} continues with other execution settings "
                          f"{ {k: f'{a} -> {b}' for k, (a, b) in changed.items()} }: levels computed "
                          f"before and after may differ in the last float bits", stacklevel=3)
    checkpoints.atomic_write_json(path, execution)


def make_setup(config: Config, dataset: Dataset | None = None) -> Setup:
    validate(config)
    if dataset is None:
        dataset = load_dataset(config.data, config.noise)
    model = build_model(config.model, dataset.num_classes)
    engine = make_engine(config, model, dataset, config.optim)
    total = config.optim.epochs * engine.steps_per_epoch
    if config.pruning.rewind_iteration >= total:
        raise ValueError(f"pruning.rewind_iteration={config.pruning.rewind_iteration} is not below "
                         f"the {total} iterations of a training run")
    shapes = jax.eval_shape(lambda key, x: model.init(key, x, train=False), jax.random.key(0),
                            jnp.zeros((1, *dataset.x_train.shape[1:]), jnp.float32))
    by_model = prunable_predicate(config.model)
    prunable_names = [masks.path_str(p) for p in masks.paths(shapes["params"]) if by_model(p)]
    is_prunable = masks.exclude(by_model, config.pruning.ignore)  # also rejects a bad regex
    for pattern in config.pruning.ignore:
        if not any(re.search(pattern, name) for name in prunable_names):
            raise ValueError(f"pruning.ignore pattern {pattern!r} matches no prunable parameter "
                             f"(prunable: {', '.join(prunable_names)})")
    x_train = jnp.asarray(dataset.x_train)
    train = DeviceData(x_train, jnp.asarray(dataset.y_train, jnp.int32))
    test = DeviceData(jnp.asarray(dataset.x_test), jnp.asarray(dataset.y_test, jnp.int32))
    val = None
    if dataset.x_val is not None and len(dataset.x_val):
        val = DeviceData(jnp.asarray(dataset.x_val), jnp.asarray(dataset.y_val, jnp.int32))
    run_dir = checkpoints.run_dir(config.run.workdir, config)
    metadata = {**dataset.metadata, "fingerprint": data_fingerprint(dataset)}
    stored = run_dir / "dataset.json"
    if stored.is_file():
        previous = json.loads(stored.read_text()).get("fingerprint")
        if previous is not None and previous != metadata["fingerprint"]:
            raise ValueError(f"{run_dir} was computed on different data (fingerprint {previous[:12]}…, "
                             f"now {metadata['fingerprint'][:12]}…): another reader or data_dir gives "
                             f"other examples or order; use another run.workdir")
    run_dir = checkpoints.prepare_run_dir(config.run.workdir, config)
    checkpoints.atomic_write_json(stored, metadata)
    _check_execution(run_dir, {"seeds_per_chunk": config.run.seeds_per_chunk,
                               "epoch_loop": engine.epoch_loop, "backend": jax.default_backend()})
    return Setup(config=config, dataset=dataset, model=model, is_prunable=is_prunable,
                 engine=engine, train=train, test=test, val=val, seeds=config.seed_list,
                 run_dir=run_dir, store=checkpoints.RunStore(run_dir))


# ----- masks and weights -----------------------------------------------------------------------

def unstack(tree, i):
    return jax.tree.map(lambda leaf: leaf[i], tree)


def init_keys(seeds, *extra: int) -> jax.Array:
    return jnp.stack([rng_streams.stream_key(s, "init", *extra) for s in seeds])


def fresh_state(setup: Setup, engine: Engine, level: int | None = None, salt: tuple = ()) -> TrainState:
    """A newly initialised stacked state. The dense run uses the bare ``init`` stream; ``level``
    (scratch retraining) and ``salt`` (branches) are folded in for other draws."""
    extra = (*salt, *(() if level is None else (level,)))
    return engine.init(init_keys(setup.seeds, *extra), setup.seeds, setup.sample_input())


def abstract_state(setup: Setup) -> TrainState:
    """Shapes and dtypes of a stacked fresh state (restore targets; nothing is allocated)."""
    return setup.engine.init_shapes(init_keys(setup.seeds), setup.seeds, setup.sample_input())


def abstract_level(setup: Setup) -> dict:
    """The restore target of a finished level: final params, batch stats and mask."""
    shapes = abstract_state(setup)
    return {"params": shapes.params, "batch_stats": shapes.batch_stats, "mask": shapes.params}


def abstract_weights(setup: Setup) -> dict:
    """The restore target of θ0 and θk."""
    shapes = abstract_state(setup)
    return {"params": shapes.params, "batch_stats": shapes.batch_stats}


def dense_mask(setup: Setup):
    return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), abstract_state(setup).params)


def state_from(engine: Engine, setup: Setup, params, batch_stats, mask, step: int) -> TrainState:
    """A training state on ``mask`` from given weights, with a fresh optimiser at ``step``."""
    template = fresh_state(setup, engine)
    params = jax.tree.map(lambda p, m: p * m, params, mask)
    batch_stats = jax.tree.map(jnp.array, batch_stats)  # a copy: the state will be donated
    opt_state = jax.vmap(engine.optimizer.init)(params)
    return template.replace(params=params, batch_stats=batch_stats, opt_state=opt_state,
                            step=jnp.full_like(template.step, step))


def next_mask(setup: Setup, params, batch_stats, mask, level: int, fraction: float | None = None):
    """Prune ``fraction`` (default ``pruning.fraction``) of the remaining prunable weights of the
    stacked ``params`` (trained on ``mask``) by the config's criterion, each seed on its own."""
    p = setup.config.pruning
    fraction = p.fraction if fraction is None else float(fraction)
    grads = None
    if p.criterion == "saliency":
        key = rng_streams.stream_key(setup.config.run.first_seed, "mask", level, 1)
        grads = setup.engine.mean_gradient(params, batch_stats, mask, setup.train, key,
                                           p.saliency_batches)
    keys = jnp.stack([rng_streams.stream_key(s, "mask", level) for s in setup.seeds])
    if fraction not in setup.pruners:  # compiled once per run
        options = {**pruning.options_from_config(p), "fraction": fraction, "ignore": ()}
        setup.pruners[fraction] = pruning.seed_pruner(setup.is_prunable, **options)
    return setup.pruners[fraction](params, mask, keys, grads)


# ----- one training run ------------------------------------------------------------------------

@dataclasses.dataclass
class LevelPlan:
    """Where one training run starts and ends (global iterations) and what to capture."""

    engine: Engine
    first_epoch: int
    start_iteration: int
    epochs: int
    capture_iteration: int | None = None  # level 0: capture θk here


def train_run(setup: Setup, plan: LevelPlan, state: TrainState, mask, *, level: int,
              progress: Progress, store: checkpoints.RunStore | None = None,
              progress_key: int | None = None, curves=None,
              on_capture: Callable[[TrainState], None] | None = None):
    """Train ``state`` on ``mask`` from ``plan.first_epoch`` to ``plan.epochs``; evaluate on the
    test set every ``run.eval_every_epochs`` and at the end. Saves in-progress checkpoints every
    ``run.checkpoint_every_epochs`` in ``store`` under ``progress_key`` (both or neither).
    Returns (state, curves)."""
    engine, run_cfg = plan.engine, setup.config.run
    spe = engine.steps_per_epoch
    curves = curves or {"epoch": [], "train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
    what = f"at level {level}, epoch {{}}"
    for epoch in range(plan.first_epoch, plan.epochs):
        start = max(plan.start_iteration, epoch * spe)
        k = plan.capture_iteration
        parts = []
        if k is not None and epoch * spe <= k < (epoch + 1) * spe:
            if k > start:  # the epoch in two parts around the rewind point
                state, *sums = engine.train_epoch_sums(state, mask, setup.train, epoch, start, k)
                check_finite(sums[0], what=what.format(epoch + 1), seeds=setup.seeds)
                parts.append(sums)
            on_capture(state)
            start = k
        state, *sums = engine.train_epoch_sums(state, mask, setup.train, epoch, start)
        parts.append(sums)
        loss_sum, correct, count = (sum(np.asarray(p[i], np.float64) for p in parts) for i in range(3))
        count = np.maximum(count, 1.0)
        check_finite(loss_sum, what=what.format(epoch + 1), seeds=setup.seeds)
        curves["epoch"].append(epoch + 1)
        curves["train_loss"].append((loss_sum / count).tolist())
        curves["train_acc"].append((correct / count).tolist())
        last = epoch + 1 == plan.epochs
        every = max(run_cfg.eval_every_epochs, 1)
        if last or (epoch + 1) % every == 0:
            test_loss, test_acc, _ = engine.evaluate(state.params, state.batch_stats, mask, setup.test)
            curves["test_loss"].append(np.asarray(test_loss).tolist())
            curves["test_acc"].append(np.asarray(test_acc).tolist())
        else:
            curves["test_loss"].append(None)
            curves["test_acc"].append(None)
        progress.epoch_done(test_acc=_last_mean(curves["test_acc"]))
        ckpt_every = run_cfg.checkpoint_every_epochs
        if progress_key is not None and ckpt_every and (epoch + 1) % ckpt_every == 0 and not last:
            store.save_progress(progress_key, epoch + 1, {"state": state, "mask": mask},
                                {"curves": curves})
    return state, curves


def train_level(setup: Setup, store: checkpoints.RunStore, plan: LevelPlan, key: int, mask,
                start: Callable[[], TrainState], *, level: int, progress: Progress,
                on_capture: Callable[[TrainState], None] | None = None):
    """One training run that resumes from ``store``'s progress checkpoint ``key`` when there is
    one (else starts from ``start()``). Returns (state, mask, curves)."""
    curves = None
    if store.latest_progress(key) is not None:
        epoch, tree, extra = store.restore_progress(key, {"state": abstract_state(setup), "mask": mask})
        state, mask, curves = tree["state"], tree["mask"], extra["curves"]
        progress.skip_epochs(epoch - plan.first_epoch)
        plan = dataclasses.replace(plan, first_epoch=epoch,
                                   start_iteration=max(plan.start_iteration,
                                                       epoch * plan.engine.steps_per_epoch))
    else:
        state = start()
    state, curves = train_run(setup, plan, state, mask, level=level, progress=progress, store=store,
                              progress_key=key, curves=curves, on_capture=on_capture)
    return state, mask, curves


def _last_mean(values):
    for v in reversed(values):
        if v is not None:
            return float(np.mean(v))
    return None


def level_metrics(setup: Setup, engine: Engine, state: TrainState, mask, curves, theta0, theta_k):
    """Per-seed metrics of a finished training run (see :mod:`sdd_jax.metrics`)."""
    ds = setup.dataset
    test_loss, test_acc, _ = engine.evaluate(state.params, state.batch_stats, mask, setup.test)
    # Eval mode, no augmentation, on the noisy labels the network was trained on.
    train_loss, train_acc, train_pred = engine.evaluate(state.params, state.batch_stats, mask,
                                                        setup.train)
    check_finite(test_loss, what="on the test set at the end of training", seeds=setup.seeds)
    check_finite(train_loss, what="on the training set at the end of training", seeds=setup.seeds)
    train_pred = np.asarray(train_pred)
    # Memorisation is measured on the examples whose label was actually changed (with
    # random_labels about 1/K of the selected examples keep their true label).
    relabelled = ds.y_train != ds.y_train_clean
    val = None
    if setup.val is not None:
        val = engine.evaluate(state.params, state.batch_stats, mask, setup.val)[:2]
    is_prunable = setup.is_prunable
    params_host = jax.device_get(state.params)
    mask_host = jax.device_get(mask)
    theta0_host = jax.device_get(theta0)
    thetak_host = jax.device_get(theta_k)
    rows = []
    for i, seed in enumerate(setup.seeds):
        params_i, mask_i = unstack(params_host, i), unstack(mask_host, i)
        dist0 = metrics.learning_distances(unstack(theta0_host, i), params_i, mask_i, is_prunable)
        distk = metrics.learning_distances(unstack(thetak_host, i), params_i, mask_i, is_prunable)
        split = metrics.accuracy_split(train_pred[i], ds.y_train, ds.y_train_clean, relabelled)
        kept, total = masks.count(mask_i, is_prunable)
        kept = int(kept)
        test_curve = [c[i] for c in curves["test_acc"] if c is not None]
        rows.append({
            "seed": seed,
            "density": kept / total,
            "sparsity": (total - kept) / total,
            "kept_weights": int(kept),
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
            **({} if val is None else {"val_loss": float(np.asarray(val[0])[i]),
                                         "val_acc": float(np.asarray(val[1])[i])}),
            "layer_density": {k: float(v) for k, v in masks.layer_densities(mask_i, is_prunable).items()},
            "layer_learning_distance": dist0["per_layer"],
        })
    return rows


# ----- the level loop --------------------------------------------------------------------------

def schedule_plan(setup: Setup, level: int, schedule: str) -> LevelPlan:
    """The engine, first epoch and start iteration of ``level`` under ``schedule``."""
    cfg = setup.config
    k = cfg.pruning.rewind_iteration
    if level == 0:
        return LevelPlan(setup.engine, 0, 0, cfg.optim.epochs, capture_iteration=k)
    if schedule == "lottery":
        return LevelPlan(setup.engine, k // setup.engine.steps_per_epoch, k, cfg.optim.epochs)
    if schedule == "finetune":
        epochs = cfg.pruning.finetune_epochs or cfg.optim.epochs
        optim = dataclasses.replace(cfg.optim, lr=cfg.pruning.finetune_lr, milestones=(),
                                    warmup_epochs=0.0, epochs=epochs)
        return LevelPlan(setup.engine_for(optim), 0, 0, epochs)
    return LevelPlan(setup.engine, 0, 0, cfg.optim.epochs)  # lr_rewind, scratch


def start_state(setup: Setup, plan: LevelPlan, level: int, schedule: str, mask, previous, rewind):
    """The state a level starts from (see the module docstring)."""
    if level == 0:
        return fresh_state(setup, plan.engine)
    if schedule == "lottery":
        return state_from(plan.engine, setup, rewind["params"], rewind["batch_stats"], mask,
                          plan.start_iteration)
    if schedule == "scratch":
        state = fresh_state(setup, plan.engine, level)
        return state.replace(params=jax.tree.map(lambda p, m: p * m, state.params, mask))
    return state_from(plan.engine, setup, previous["params"], previous["batch_stats"], mask, 0)


def run_imp(config: Config, *, dataset: Dataset | None = None, stop_after_level: int | None = None,
            setup: Setup | None = None) -> Path:
    """Run (or resume) the iterative-pruning experiment of ``config``. Returns the run directory,
    holding ``results.csv``. A finished run is not recomputed."""
    setup = setup or make_setup(config, dataset)
    cfg, store = setup.config, setup.store
    levels = cfg.pruning.levels
    done = store.finished_levels()
    progress = Progress(total_epochs=_total_epochs(setup, levels), verbosity=cfg.run.verbosity,
                        desc=cfg.name)
    weights_target = abstract_weights(setup)
    theta0 = rewind = previous = None
    if store.has_tree("theta0"):
        theta0 = store.restore_tree("theta0", weights_target)
    if store.has_tree("theta_rewind"):
        rewind = store.restore_tree("theta_rewind", weights_target)
    for finished in done:
        progress.skip_epochs(_level_epochs(setup, finished))
        store.clear_progress(finished)  # left by a kill between a level's save and its clean-up
    last_done = max(done) if done else None
    if last_done is not None:
        previous, _ = store.restore_level(last_done, abstract_level(setup))
    try:
        for level in range(0 if last_done is None else last_done + 1, levels + 1):
            schedule = cfg.pruning.schedule
            plan = schedule_plan(setup, level, schedule)
            if level == 0:
                mask = dense_mask(setup)
            else:
                mask = next_mask(setup, previous["params"], previous["batch_stats"], previous["mask"],
                                 level)
            progress.start_level(level, float(np.mean(_densities(setup, mask))))

            def start(level=level, plan=plan, mask=mask):
                nonlocal theta0
                state = start_state(setup, plan, level, cfg.pruning.schedule, mask, previous, rewind)
                if level == 0 and theta0 is None:
                    theta0 = {"params": state.params, "batch_stats": state.batch_stats}
                    store.save_tree("theta0", theta0)
                    theta0 = jax.device_get(theta0)
                return state

            def capture(st):
                nonlocal rewind
                rewind = jax.device_get({"params": st.params, "batch_stats": st.batch_stats})
                store.save_tree("theta_rewind", rewind)

            if level == 0 and rewind is not None:
                plan = dataclasses.replace(plan, capture_iteration=None)
            state, mask, curves = train_level(setup, store, plan, level, mask, start, level=level,
                                              progress=progress, on_capture=capture)
            if rewind is None:  # k at the very end is rejected in make_setup; k=0 captured above
                raise RuntimeError("the rewind point was never reached")
            rows = level_metrics(setup, plan.engine, state, mask, curves, theta0["params"],
                                 rewind["params"])
            previous = {"params": state.params, "batch_stats": state.batch_stats, "mask": mask}
            store.save_level(level, previous, {"rows": rows, "curves": curves})
            store.clear_progress(level)
            progress.level_done(level, rows)
            write_results(setup)
            if stop_after_level is not None and level >= stop_after_level and level < levels:
                raise SimulatedInterrupt(f"stopped after level {level}")
    finally:
        progress.close()
    if not results_complete(setup):  # a kill between a level's checkpoint and its results row
        write_results(setup)
    return setup.run_dir


def _densities(setup: Setup, mask):
    return np.asarray(masks.density(mask, setup.is_prunable, seed_axis=True))


def _level_epochs(setup: Setup, level: int) -> int:
    plan = schedule_plan(setup, level, setup.config.pruning.schedule)
    return plan.epochs - plan.first_epoch


def _total_epochs(setup: Setup, levels: int) -> int:
    return sum(_level_epochs(setup, level) for level in range(levels + 1))


def collect_rows(store: checkpoints.RunStore, branch: str = "imp") -> list[dict]:
    rows = []
    for level in store.finished_levels():
        for row in store.level_metrics(level)["rows"]:
            flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
            rows.append({"branch": branch, "level": level, **flat})
    return rows


def results_complete(setup: Setup) -> bool:
    """Whether ``results.csv`` has a row for every seed of every finished level."""
    path = setup.run_dir / "results.csv"
    if not path.is_file():
        return False
    have = {(r["level"], r["seed"]) for r in report.read_results_csv(path)}
    return have == {(level, seed) for level in setup.store.finished_levels() for seed in setup.seeds}


def write_results(setup: Setup) -> Path:
    path = setup.run_dir / "results.csv"
    report.write_results_csv(collect_rows(setup.store), path)
    return path
