"""The experiment: everything a run derives from its config, built once per process, and the
states and masks the pruning loop starts levels from.

:func:`build` validates the config, loads the data, builds the model, the engine and the
prunability predicate, and puts the splits on the device; it writes nothing. The functions below
it make the stacked (leading seed axis) training states and pruning masks of a level.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sdd_jax import criteria, distributed, masks, pruning, rng
from sdd_jax.config import Config, OptimConfig
from sdd_jax.data import Dataset, load_dataset
from sdd_jax.engine import Engine
from sdd_jax.models import build_model, is_convolutional, prunable_predicate
from sdd_jax.seed_axis import seed_mesh
from sdd_jax.train import DeviceData, LevelWeights, TrainState, Weights, seeds_rng_data
from sdd_jax.validate import validate


@dataclasses.dataclass
class Experiment:
    """The data, model and engine of one config (the device-resident splits included)."""

    config: Config
    dataset: Dataset
    model: Any
    is_prunable: Callable[[tuple[str, ...]], bool]  # by path, minus ``pruning.ignore``
    engine: Engine  # the config's own optimiser
    train: DeviceData  # noisy training labels
    test: DeviceData
    val: DeviceData | None  # the held-out validation split (clean labels), if any
    engines: dict = dataclasses.field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return self.config.seed_list

    def sample_input(self) -> jax.Array:
        return jnp.zeros((1, *self.dataset.x_train.shape[1:]), jnp.float32)

    def engine_for(self, optim: OptimConfig) -> Engine:
        """The engine of ``optim`` (finetuning, re-dense), built once per experiment."""
        if optim == self.engine.optim:
            return self.engine
        if optim not in self.engines:
            self.engines[optim] = make_engine(self.config, self.model, self.dataset, optim, self.engine.mesh)
        return self.engines[optim]

    @functools.cached_property
    def state_shapes(self) -> TrainState:
        """Shapes and dtypes of a stacked fresh state (restore targets; nothing is allocated)."""
        return self.engine.init_shapes(rng.seed_keys(self.seeds, "init"), self.seeds, self.sample_input())

    @functools.cached_property
    def level_shapes(self) -> LevelWeights:
        """Shapes and dtypes of a finished level's stacked weights and mask."""
        shapes = self.state_shapes
        return LevelWeights(shapes.params, shapes.batch_stats, shapes.params)

    @functools.cached_property
    def pruner(self):
        """``pruning.seed_pruner`` of the config (compiled once per experiment)."""
        p = self.config.pruning
        return pruning.seed_pruner(self.is_prunable, fraction=p.fraction, options=pruning.PruneOptions.from_config(p))

    def execution(self) -> dict:
        """Settings outside the run's identity that can move the last float bits (``execution.json``):
        the evaluation batch (``run.eval_batch_size``: losses are summed batch by batch), seed
        chunks, epoch loop, seed execution, backend and mesh (the run directory adds the software
        versions: :func:`sdd_jax.rundir.software_versions`)."""
        mesh = self.engine.mesh
        return {
            "eval_batch_size": self.config.run.eval_batch_size,
            "seeds_per_chunk": self.config.run.seeds_per_chunk,
            "epoch_loop": self.engine.epoch_loop,
            "seed_execution": self.engine.seed_execution,
            "backend": jax.default_backend(),
            "mesh": None if mesh is None else dict(mesh.shape),
        }


def make_engine(config: Config, model, dataset: Dataset, optim: OptimConfig, mesh=None) -> Engine:
    return Engine(
        model,
        optim,
        len(dataset.x_train),  # examples (a study's stack holds its labels per replica)
        mean=dataset.mean,
        std=dataset.std,
        augment=config.data.augment,
        eval_batch_size=config.run.eval_batch_size,
        seeds_per_chunk=config.run.seeds_per_chunk,
        epoch_loop=config.run.epoch_loop,
        seed_execution=config.run.seed_execution,
        mesh=mesh,
        convolutional=is_convolutional(config.model),
    )


def _device(x, y) -> DeviceData:
    return DeviceData(jnp.asarray(x), jnp.asarray(y, jnp.int32))


def build(config: Config, dataset: Dataset | None = None) -> Experiment:
    """The experiment of ``config`` (``dataset`` defaults to the one the config describes).
    Raises :class:`ValueError` naming the setting for anything that cannot run. Joins a
    multi-host job first when ``run.distributed`` asks (:func:`sdd_jax.distributed.initialize`)."""
    validate(config)
    distributed.initialize(config.run.distributed)
    if dataset is None:
        dataset = load_dataset(config.data, config.noise)
    model = build_model(config.model, dataset.num_classes)
    run = config.run
    mesh = seed_mesh(run.seeds, run.seed_devices, run.data_devices)
    if mesh is not None and run.seeds_per_chunk and run.seeds_per_chunk % mesh.shape["seeds"]:
        raise ValueError(
            f"run.seeds_per_chunk={run.seeds_per_chunk} must be a multiple of the {mesh.shape['seeds']} seed devices"
        )
    engine = make_engine(config, model, dataset, config.optim, mesh)
    total = config.optim.epochs * engine.steps_per_epoch
    if config.pruning.rewind_iteration >= total:
        raise ValueError(
            f"pruning.rewind_iteration={config.pruning.rewind_iteration} is not below "
            f"the {total} iterations of a training run"
        )
    shapes = jax.eval_shape(
        lambda key, x: model.init(key, x, train=False),
        jax.random.key(0),
        jnp.zeros((1, *dataset.x_train.shape[1:]), jnp.float32),
    )
    by_model = prunable_predicate(config.model)
    prunable_names = [masks.path_str(p) for p in masks.paths(shapes["params"]) if by_model(p)]
    is_prunable = masks.exclude(by_model, config.pruning.ignore)  # also rejects a bad regex
    for pattern in config.pruning.ignore:
        if not any(re.search(pattern, name) for name in prunable_names):
            raise ValueError(
                f"pruning.ignore pattern {pattern!r} matches no prunable parameter "
                f"(prunable: {', '.join(prunable_names)})"
            )
    if config.pruning.ignore and not any(is_prunable(p) for p in masks.paths(shapes["params"])):
        raise ValueError(
            f"pruning.ignore={list(config.pruning.ignore)} leaves no parameter to prune "
            f"(prunable: {', '.join(prunable_names)}): ignore fewer of them"
        )
    val = None
    if dataset.x_val is not None and len(dataset.x_val):
        val = engine.replicate(_device(dataset.x_val, dataset.y_val))
    return Experiment(
        config=config,
        dataset=dataset,
        model=model,
        is_prunable=is_prunable,
        engine=engine,
        train=engine.replicate(_device(dataset.x_train, dataset.y_train)),
        test=engine.replicate(_device(dataset.x_test, dataset.y_test)),
        val=val,
    )


# ----- training states --------------------------------------------------------------------------


def fresh_state(exp: Experiment, engine: Engine, *extra: int) -> TrainState:
    """A newly initialised stacked state from the ``init`` stream; ``extra`` integers are folded
    into the key for other draws (scratch retraining: the level; branches: a salt)."""
    return engine.init(rng.seed_keys(exp.seeds, "init", *extra), exp.seeds, exp.sample_input())


def state_from(exp: Experiment, engine: Engine, weights: Weights, mask, step: int) -> TrainState:
    """A training state on ``mask`` from stacked ``weights`` (masked), a fresh optimiser state and
    the schedule at iteration ``step``."""
    params = masks.apply_mask(weights.params, mask)
    batch_stats = jax.tree.map(jnp.array, weights.batch_stats)  # a copy: the state will be donated
    return TrainState(
        params=params,
        batch_stats=batch_stats,
        opt_state=jax.vmap(engine.optimizer.init)(params),
        step=jnp.full((len(exp.seeds),), step, jnp.int32),
        rng=seeds_rng_data(exp.seeds),
    )


def dense_mask(exp: Experiment):
    """All ones, stacked over seeds (split over the seed devices, like the state)."""
    return exp.engine.place(jax.tree.map(lambda s: np.ones(s.shape, s.dtype), exp.state_shapes.params))


def densities(exp: Experiment, mask) -> np.ndarray:
    """Per-seed fraction of the prunable weights that ``mask`` keeps."""
    return np.asarray(distributed.to_host(masks.density(mask, exp.is_prunable, seed_axis=True)))


# ----- masks ------------------------------------------------------------------------------------


def criterion_grads(exp: Experiment, weights: LevelWeights, *extra: int):
    """Per-seed mean training gradients for the pruning criterion's scores (``None`` unless its
    registry entry ``needs_grads``, as ``saliency``), over ``pruning.saliency_batches`` batches
    drawn from the ``mask`` stream of the first seed with ``extra`` folded in (one draw shared by
    all seeds)."""
    p = exp.config.pruning
    if not criteria.CRITERIA[p.criterion].needs_grads:
        return None
    key = rng.stream_key(exp.config.run.first_seed, "mask", *extra, 1)
    return exp.engine.mean_gradient(
        weights.params, weights.batch_stats, weights.mask, exp.train, key, p.saliency_batches
    )


def next_mask(exp: Experiment, previous: LevelWeights, level: int):
    """Prune ``pruning.fraction`` of the remaining prunable weights of ``previous`` (the last
    level's stacked final weights) by the config's criterion, each seed on its own."""
    keys = rng.seed_keys(exp.seeds, "mask", level)
    return exp.pruner(previous.params, previous.mask, keys, criterion_grads(exp, previous, level))


def oneshot_mask(exp: Experiment, dense: LevelWeights, k: int):
    """Per seed, prune the dense level-0 weights once to the kept count of iterative level ``k``."""
    p = exp.config.pruning
    one = jax.tree.map(lambda leaf: leaf[0], dense.params)
    targets = pruning.oneshot_targets(one, exp.is_prunable, levels=k, fraction=p.fraction, scope=p.scope)
    keys = rng.seed_keys(exp.seeds, "mask", 0, k)
    grads = criterion_grads(exp, dense, 0, k)
    options = pruning.PruneOptions.from_config(p)

    def prune_one(params, mask, key, g):
        return pruning.prune_to_count(params, mask, exp.is_prunable, kept=targets, options=options, key=key, grads=g)

    in_axes = (0, 0, 0, 0 if grads is not None else None)
    return jax.jit(jax.vmap(prune_one, in_axes=in_axes))(dense.params, dense.mask, keys, grads)


def random_masks(exp: Experiment, mask, *extra: int):
    """Per seed, a random mask with ``mask``'s per-layer counts (``mask`` stream, ``extra``
    folded in)."""
    keys = rng.seed_keys(exp.seeds, "mask", *extra)
    return jax.jit(jax.vmap(lambda m, key: pruning.random_mask_like(m, exp.is_prunable, key)))(mask, keys)
