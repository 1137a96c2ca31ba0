"""The engine: the pure per-seed functions of :mod:`sdd_jax.train` under ``jax.jit``, mapped over
a leading seed axis, run all at once or in chunks of seeds, on one device or on a mesh.

:class:`Engine` holds no training state: it builds the jitted functions once (each compiles once
per input shape, the train state donated) and composes them. How the seed axis is mapped is
decided in one place, :func:`sdd_jax.seed_axis.over_seeds`:

* ``vmap``: the seeds as one batched program. Ideal for MLPs; convolution kernels batched over
  seeds lower to grouped convolutions, which GPUs run far below ordinary ones.
* ``sequential``: the seeds one after another (``lax.map``) inside the same compiled call, so
  every convolution is an ordinary one, and a seed runs the same program whatever the number of
  seeds beside it (bit-identical alone or among others).

With a :func:`sdd_jax.seed_axis.seed_mesh`, the seeds are split over the ``seeds`` axis of the mesh
(``shard_map``: no communication between seeds), each device mapping its own seeds as above;
an optional ``data`` axis splits each seed's batch (BatchNorm statistics are then reduced over
that seed's whole batch, never across seeds).

The seed axis is a replica axis: anything stacked like the train state (in ``in_axes`` 0) is per
replica. A study (:mod:`sdd_jax.study`) stacks the training labels the same way: a
:class:`~sdd_jax.train.DeviceData` whose ``y`` is ``(replicas, N)`` is mapped beside the state
(``in_axes`` 0, chunked and split over the mesh's ``seeds`` axis with it) instead of shared, in
training, evaluation and the saliency gradients; the images stay shared.
"""

from __future__ import annotations

from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sdd_jax import models, train
from sdd_jax.choices import AUTO, EPOCH_LOOPS
from sdd_jax.config import OptimConfig
from sdd_jax.distributed import put, to_host
from sdd_jax.seed_axis import over_seeds
from sdd_jax.train import DeviceData, TrainState


def resolve_seed_execution(execution: str, convolutional: bool | nn.Module) -> str:
    """``auto``: ``sequential`` for convolutional models on GPUs (vmapped convolutions become
    grouped convolutions there: 9.9× one seed's time for 4 seeds of ResNet-18 on an H200, see
    docs/benchmarks.md), ``vmap`` otherwise (MLPs, CPUs, TPUs). ``convolutional``: the model
    family's flag (:func:`sdd_jax.models.is_convolutional`), or a built model whose family is
    looked up (:func:`has_convolutions`)."""
    if execution != AUTO:
        return execution
    if jax.default_backend() != "gpu":
        return "vmap"
    return "sequential" if _convolutional(convolutional) else "vmap"


def resolve_epoch_loop(epoch_loop: str, convolutional: bool | nn.Module) -> str:
    """``auto``: ``steps`` for convolutional models on the CPU (see :class:`Engine`), ``scan``
    otherwise; ``convolutional`` as in :func:`resolve_seed_execution`."""
    if epoch_loop != AUTO:
        return epoch_loop
    return "steps" if jax.default_backend() == "cpu" and _convolutional(convolutional) else "scan"


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` is convolutional: the ``convolutional`` flag of the registered model
    family that builds its class (:mod:`sdd_jax.models.registry`). :class:`ValueError` for a
    module no family builds (pass ``convolutional`` to :class:`Engine` then)."""
    family = models.family_of_module(model)
    if family is None:
        raise ValueError(
            f"{type(model).__name__} is built by no registered model family: pass "
            "convolutional=True or False to the engine"
        )
    return family.convolutional


def _convolutional(flag: bool | nn.Module) -> bool:
    return flag if isinstance(flag, bool) else has_convolutions(flag)


def _n_seeds(leaf) -> int:
    return int(np.shape(leaf)[0])


def per_replica(data: DeviceData) -> bool:
    """Whether ``data`` holds one label array per replica (``y`` of shape ``(replicas, N)``, a
    study's stack) rather than labels shared by every seed."""
    return data.y.ndim == 2


class Engine:
    """Jitted, seed-vmapped training and evaluation for one model, optimiser and data set.

    ``mean``/``std`` normalise images inside the step; ``augment`` switches on the pad-4 random
    crop + flip. ``max_traces`` wraps the epoch and the step in ``chex.assert_max_traces`` (a
    retrace then raises). ``seeds_per_chunk`` (> 0) bounds device memory: the seeds then train
    and evaluate in chunks of that many, the other chunks' states waiting in host memory (each
    seed's numbers are the same up to float rounding: XLA may order a batched reduction
    differently).

    ``epoch_loop``: ``"scan"`` runs an epoch as one jitted ``lax.scan``; ``"steps"`` loops over
    the same jitted batch step from Python. XLA's CPU backend runs convolutions inside a loop
    body about 20× slower than outside one (jax issue 12868), so ``"auto"`` picks ``"steps"``
    for convolutional models on the CPU and ``"scan"`` everywhere else (equal up to float
    rounding).

    ``convolutional``: whether the model is a convolution net, for the ``auto`` choices (the
    experiment passes its model family's flag); ``None`` looks the family up from the module's
    class (:func:`has_convolutions`).
    """

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        train_size: int,
        *,
        mean,
        std,
        augment: bool = False,
        eval_batch_size: int = 1000,
        max_traces: int | None = None,
        seeds_per_chunk: int = 0,
        epoch_loop: str = "auto",
        seed_execution: str = "vmap",
        mesh: Mesh | None = None,
        convolutional: bool | None = None,
    ):
        if int(optim.batch_size) <= 0:
            raise ValueError(f"batch_size must be positive, got {optim.batch_size}")
        conv = model if convolutional is None else bool(convolutional)
        epoch_loop = resolve_epoch_loop(epoch_loop, conv)
        if epoch_loop not in EPOCH_LOOPS:
            raise ValueError(f"epoch_loop must be 'auto', 'scan' or 'steps', got {epoch_loop!r}")
        seed_execution = resolve_seed_execution(seed_execution, conv)
        if mesh is not None and mesh.shape["data"] > 1 and int(optim.batch_size) % mesh.shape["data"]:
            raise ValueError(
                f"optim.batch_size={optim.batch_size} is not divisible by run.data_devices={mesh.shape['data']}"
            )
        self.mesh = mesh
        self.seed_execution = seed_execution
        self.optim = optim
        self.optimizer = train.make_optimizer(optim)
        self.spec = train.Spec(
            model=model,
            optimizer=self.optimizer,
            schedule=train.learning_rate_schedule(optim, train.steps_per_epoch(int(train_size), int(optim.batch_size))),
            train_size=int(train_size),
            batch_size=int(optim.batch_size),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            augment=bool(augment),
            eval_batch_size=int(eval_batch_size),
            batch_sharding=None if mesh is None or mesh.shape["data"] == 1 else NamedSharding(mesh, P("data")),
        )
        self.steps_per_epoch = self.spec.steps_per_epoch
        self.seeds_per_chunk = int(seeds_per_chunk)
        self.epoch_loop = epoch_loop

        def traced(fn):
            bound = partial(fn, self.spec)
            if max_traces is None:
                return bound

            def counted(*args):  # a function of this engine's own, so traces count per engine
                return bound(*args)

            return chex.assert_max_traces(counted, n=max_traces)

        seeded = partial(over_seeds, execution=seed_execution, mesh=mesh)

        def shared_and_mapped(fn, in_axes, labels_at, **jit):
            """``fn`` jitted with its labels (argument ``labels_at``) shared by the seeds, and with
            one label array per replica mapped beside the state (a study's stack)."""
            mapped = tuple(0 if i == labels_at else axis for i, axis in enumerate(in_axes))
            return {False: jax.jit(seeded(fn, in_axes), **jit), True: jax.jit(seeded(fn, mapped), **jit)}

        donate = {"donate_argnums": (0,)}  # the train state
        self.label_fns = {
            "epoch": shared_and_mapped(traced(train.train_epoch), (0, 0, None, None, None, None, None), 3, **donate),
            "epoch_eval": shared_and_mapped(
                traced(train.train_epoch_and_evaluate), (0, 0, None, None, None, None, None, None, None), 3, **donate
            ),
            "step": shared_and_mapped(
                traced(train.batch_step), (0, 0, None, None, None, 0, 0, None, None), 3, **donate
            ),
            "eval": shared_and_mapped(partial(train.evaluate, self.spec), (0, 0, 0, None, None), 4),
            "grad": shared_and_mapped(partial(train.mean_gradient, self.spec), (0, 0, 0, None, None), 4),
        }
        self.eval_fn = self.label_fns["eval"][False]  # evaluation on a shared split (test, validation)
        self.order_fn = jax.jit(seeded(partial(train.epoch_order, self.spec), (0, None)))
        self.init_fn = jax.jit(seeded(partial(train.init_state, model, self.optimizer), (0, 0, None)))

    # ----- composition ------------------------------------------------------------------------
    def place(self, stacked):
        """Seed-stacked arrays split over the mesh's ``seeds`` axis (no-op without a mesh or when
        already placed)."""
        if self.mesh is None:
            return stacked
        return put(stacked, NamedSharding(self.mesh, P("seeds")))

    def _shared(self, tree):
        """Arrays every seed reads, copied to every device of the mesh (no-op without one or
        when already there)."""
        if self.mesh is None:
            return tree
        return put(tree, NamedSharding(self.mesh, P()))

    def replicate(self, data: DeviceData) -> DeviceData:
        """A split copied to every device of the mesh (itself without a mesh): do it once. Labels
        per replica (``y`` of shape ``(replicas, N)``) are split over the seed devices instead."""
        if per_replica(data):
            return DeviceData(self._shared(data.x), self.place(data.y))
        return DeviceData(*self._shared((data.x, data.y)))

    def _by_chunk(self, fn, stacked_args, n_seeds: int):
        """Apply ``fn`` to seed chunks of the stacked arguments; concatenate on the host."""
        size = self.seeds_per_chunk
        if size <= 0 or size >= n_seeds:
            return fn(*self.place(stacked_args))
        outs = []
        for start in range(0, n_seeds, size):
            chunk = slice(start, min(start + size, n_seeds))
            part = jax.tree.map(lambda leaf: jnp.asarray(leaf[chunk]), stacked_args)
            outs.append(to_host(fn(*self.place(part))))
        return jax.tree.map(lambda *leaves: np.concatenate(leaves), *outs)

    def _epoch_by_steps(
        self,
        state: TrainState,
        mask,
        x_train,
        y_train,
        epoch: int,
        start_iteration: int,
        stop_iteration: int,
        step_fn=None,
    ):
        """The scanned epoch (all seeds) with the loop over batches in Python: one jitted,
        donated call per active iteration (see ``epoch_loop``)."""
        step_fn = step_fn or self.label_fns["step"][False]
        index, weights = self.order_fn(state, jnp.int32(epoch))
        spe = self.steps_per_epoch
        sums = None
        for i in range(spe):
            iteration = epoch * spe + i
            if not start_iteration <= iteration < stop_iteration:
                continue  # an inactive step leaves the state as it is
            state, stats = step_fn(
                state,
                mask,
                x_train,
                y_train,
                jnp.int32(iteration),
                *self.place((index[:, i], weights[:, i])),
                jnp.int32(start_iteration),
                jnp.int32(stop_iteration),
            )
            sums = stats if sums is None else jax.tree.map(jnp.add, sums, stats)
        if sums is None:
            zeros = jnp.zeros(index.shape[0], jnp.float32)
            sums = (zeros, zeros, zeros)
        return state, sums

    # ----- seed-stacked API -------------------------------------------------------------------
    def init(self, init_keys: jax.Array, seeds, sample_input) -> TrainState:
        """Stacked fresh states: ``init_keys`` one per seed (leading axis), ``seeds`` for the data
        streams."""
        return self.init_fn(*self.place((init_keys, train.seeds_rng_data(seeds))), self._shared(sample_input))

    def init_shapes(self, init_keys: jax.Array, seeds, sample_input) -> TrainState:
        """The shapes, dtypes and shardings of :meth:`init`'s result, without computing it: the
        restore targets of checkpoints, which land where this engine computes (split over the
        mesh's seed devices, or on this host's first device), whatever devices saved them."""
        shapes = jax.eval_shape(self.init_fn, init_keys, train.seeds_rng_data(seeds), sample_input)
        if self.mesh is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        else:
            sharding = NamedSharding(self.mesh, P("seeds"))  # restore targets land on the mesh too
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

    def train_epoch_sums(
        self,
        state: TrainState,
        mask,
        data: DeviceData,
        epoch: int,
        start_iteration: int = 0,
        stop_iteration: int | None = None,
    ):
        """Run (part of) epoch ``epoch`` for all seeds. Returns (state, per-seed summed loss,
        correct predictions, examples), so that parts of an epoch add up.

        ``state`` is donated: do not use the argument again. The outputs are left on the device
        (dispatch returns before the epoch has run), except with ``seeds_per_chunk``.
        """
        state, (loss_sum, correct, count), _ = self.train_epoch_then_evaluate(
            state, mask, data, epoch, start_iteration, stop_iteration
        )
        return state, loss_sum, correct, count

    def train_epoch_then_evaluate(
        self,
        state: TrainState,
        mask,
        data: DeviceData,
        epoch: int,
        start_iteration: int = 0,
        stop_iteration: int | None = None,
        evaluate_on: DeviceData | None = None,
    ):
        """:meth:`train_epoch_sums`, and with ``evaluate_on`` the trained state's per-seed (loss,
        accuracy) on that split, in the same compiled call as the epoch (``epoch_loop`` scan; the
        step loop evaluates in a call of its own). Returns (state, (loss sum, correct, examples),
        (loss, accuracy) or None)."""
        if stop_iteration is None:
            stop_iteration = np.iinfo(np.int32).max
        data = self.replicate(data)
        held = None if evaluate_on is None else self.replicate(evaluate_on)
        epoch_args = (jnp.int32(epoch), jnp.int32(start_iteration), jnp.int32(stop_iteration))
        fns = self._label_fns(data)

        def run(st, msk, y):
            if self.epoch_loop == "steps":
                st, sums = self._epoch_by_steps(
                    st, msk, data.x, y, int(epoch), int(start_iteration), int(stop_iteration), fns["step"]
                )
                if held is None:
                    return st, sums, None
                return st, sums, self.eval_fn(st.params, st.batch_stats, msk, held.x, held.y)[:2]
            if held is None:
                return (*fns["epoch"](st, msk, data.x, y, *epoch_args), None)
            return fns["epoch_eval"](st, msk, data.x, y, *epoch_args, held.x, held.y)

        return self._by_labels(run, (state, mask), data.y, _n_seeds(state.step), per_replica(data))

    def train_epoch(
        self,
        state: TrainState,
        mask,
        data: DeviceData,
        epoch: int,
        start_iteration: int = 0,
        stop_iteration: int | None = None,
    ):
        """:meth:`train_epoch_sums` as (state, per-seed mean loss, accuracy)."""
        state, loss_sum, correct, count = self.train_epoch_sums(
            state, mask, data, epoch, start_iteration, stop_iteration
        )
        count = jnp.maximum(count, 1.0)
        return state, loss_sum / count, correct / count

    def evaluate(self, params, batch_stats, mask, data: DeviceData):
        """Per-seed (loss, accuracy, predictions) on ``data`` in eval mode."""
        data = self.replicate(data)
        fn = self._label_fns(data)["eval"]
        return self._by_labels(
            lambda p, b, m, y: fn(p, b, m, data.x, y),
            (params, batch_stats, mask),
            data.y,
            _n_seeds(jax.tree.leaves(params)[0]),
            per_replica(data),
        )

    def mean_gradient(self, params, batch_stats, mask, data: DeviceData, key: jax.Array, n_batches: int = 1):
        """Per-seed gradients averaged over ``n_batches`` random training batches (one shared
        draw from ``key``)."""
        n = data.size
        count = min(n, n_batches * self.spec.batch_size)
        n_batches = max(1, min(n_batches, count))
        idx = jax.random.permutation(key, n)[:count]
        per = count // n_batches
        idx = idx[: per * n_batches].reshape(n_batches, per)
        images = self._shared(jnp.take(data.x, idx, axis=0))
        labels = jnp.take(data.y, idx, axis=-1)  # (replicas, n_batches, per) for labels per replica
        labels = labels if per_replica(data) else self._shared(labels)
        fn = self._label_fns(data)["grad"]
        return self._by_labels(
            lambda p, b, m, y: fn(p, b, m, images, y),
            (params, batch_stats, mask),
            labels,
            _n_seeds(jax.tree.leaves(params)[0]),
            per_replica(data),
        )

    # ----- labels shared by the seeds, or one label array per replica ---------------------------
    def _label_fns(self, data: DeviceData) -> dict:
        """The jitted functions for ``data``'s labels: shared, or one array per replica."""
        mapped = per_replica(data)
        return {name: fns[mapped] for name, fns in self.label_fns.items()}

    def _by_labels(self, fn, stacked_args, labels, n_seeds: int, mapped: bool):
        """:meth:`_by_chunk` of ``fn(*stacked_args, labels)``: labels per replica (``mapped``) are
        chunked and placed with the stacked arguments, shared labels passed as they are."""
        if mapped:
            return self._by_chunk(fn, (*stacked_args, labels), n_seeds)
        return self._by_chunk(lambda *args: fn(*args, labels), stacked_args, n_seeds)
