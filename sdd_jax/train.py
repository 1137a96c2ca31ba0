"""The training engine: state, optimiser, one scanned epoch, evaluation — all vmapped over seeds.

Everything here is a pure function of explicit state. The functions in the first half act on one
seed; :class:`Engine` wraps them in ``jax.vmap`` over a leading seed axis and ``jax.jit`` (once per
shape), with the train state donated.

Choices fixed by the reference code (OpenLTH, on which the official code is built):

* SGD as ``torch.optim.SGD``: momentum without dampening, weight decay *added to the gradient*
  (coupled) and applied to every parameter; a fresh optimiser state for every training run.
* The learning rate is a function of the global iteration (``state.step``), milestones given in
  epochs and converted with ``steps_per_epoch``; optional linear warm-up ``min(1, it/warmup)``.
  Rewinding to iteration k sets ``state.step = k`` so the schedule continues from k.
* An epoch is ``ceil(N / batch)`` iterations, the last batch smaller, as PyTorch's DataLoader
  without ``drop_last``. Under ``lax.scan`` every batch has one shape, so the last batch is padded
  with examples from the start of the same permutation carrying weight 0: the loss, gradients and
  accuracy are exactly those of the smaller batch. For BatchNorm models the padded examples do
  enter that one batch's statistics (a deviation confined to one step per epoch).
* The data order of epoch e is ``permutation(fold_in(data_order_key(seed), e))``, so a rewound run
  sees the same batches at the same iterations as the dense run.
* Masks multiply the parameters in the forward pass (gradients at pruned positions are exactly
  zero), the gradient is masked before momentum, and the stored parameters are re-masked after
  every update, so pruned weights stay exactly zero through momentum and weight decay.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Callable

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sdd_jax import rng as rng_streams
from sdd_jax.config import OptimConfig
from sdd_jax.data.device import normalize, random_crop_flip

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Per-seed training state (a leading seed axis on every leaf inside :class:`Engine`).

    ``rng`` holds the raw key data of the seed's ``data_order`` and ``augment`` streams
    (shape (2, 2) uint32); epoch and iteration numbers are folded in, so no key is ever advanced
    and a resumed run draws the same numbers as an uninterrupted one.
    """

    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    step: jax.Array
    rng: jax.Array


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Iterations per epoch, as a DataLoader without ``drop_last``."""
    return math.ceil(num_examples / batch_size)


def learning_rate_schedule(optim: OptimConfig, steps_in_epoch: int) -> Callable[[jax.Array], jax.Array]:
    """Learning rate as a function of the global iteration: ×gamma at each milestone epoch,
    optional linear warm-up over ``warmup_epochs`` (``lr·min(1, it/warmup_steps)`` as OpenLTH)."""
    boundaries: dict[int, float] = {}
    for milestone in optim.milestones:
        boundary = int(milestone) * steps_in_epoch
        boundaries[boundary] = boundaries.get(boundary, 1.0) * optim.gamma
    piecewise = optax.piecewise_constant_schedule(optim.lr, boundaries or None)
    warmup_steps = int(round(optim.warmup_epochs * steps_in_epoch))
    if warmup_steps <= 0:
        return piecewise

    def schedule(step):
        return piecewise(step) * jnp.minimum(1.0, step / warmup_steps)

    return schedule


def make_optimizer(optim: OptimConfig) -> optax.GradientTransformation:
    """``torch.optim.SGD`` without the learning rate: coupled weight decay then momentum.

    The learning rate is applied by the train step from the global iteration, so a rewound run
    continues the schedule from the rewind point with a fresh momentum buffer.
    """
    transforms = []
    if optim.weight_decay:
        transforms.append(optax.add_decayed_weights(optim.weight_decay))
    if optim.momentum:
        transforms.append(optax.trace(decay=optim.momentum, nesterov=optim.nesterov))
    return optax.chain(*transforms) if transforms else optax.identity()


def apply_mask(tree: PyTree, mask: PyTree) -> PyTree:
    return jax.tree.map(lambda leaf, m: leaf * m.astype(leaf.dtype), tree, mask)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


@dataclasses.dataclass(frozen=True)
class DeviceData:
    """A split resident on the device: images (uint8 or float) and int32 labels."""

    x: jax.Array
    y: jax.Array

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


def init_state(model: nn.Module, optimizer: optax.GradientTransformation, init_key: jax.Array,
               rng_data: jax.Array, sample_input: jax.Array) -> TrainState:
    """A fresh state for one seed (vmap it over stacked keys)."""
    variables = model.init({"params": init_key}, sample_input, train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(params=params, batch_stats=batch_stats, opt_state=optimizer.init(params),
                      step=jnp.zeros((), jnp.int32), rng=rng_data)


def seed_rng_data(seed: int) -> np.ndarray:
    """The ``TrainState.rng`` value of one seed: key data of its data_order and augment streams."""
    return np.stack([np.asarray(jax.random.key_data(rng_streams.stream_key(seed, s)))
                     for s in ("data_order", "augment")])


class Engine:
    """Jitted, seed-vmapped training and evaluation for one model, optimiser and data set.

    ``mean``/``std`` normalise images inside the step (images stay uint8 on the device).
    ``augment`` switches on the pad-4 random crop + flip. The jitted functions are built once per
    Engine and compile once per input shape; the train state argument is donated. ``max_traces``
    wraps the epoch in ``chex.assert_max_traces`` (a retrace then raises). ``seeds_per_chunk``
    (> 0) bounds device memory: the seeds then train and evaluate in chunks of that many, the
    other chunks' states waiting in host memory (each seed's numbers are the same up to float
    rounding: XLA may order a batched reduction differently).

    ``epoch_loop``: ``"scan"`` runs an epoch as one jitted ``lax.scan``; ``"steps"`` loops over
    the same jitted batch step from Python. XLA's CPU backend runs convolutions inside a loop
    body about 20× slower than outside one (jax issue 12868), so ``"auto"`` picks ``"steps"``
    for convolutional models on the CPU and ``"scan"`` everywhere else (equal up to float rounding).
    """

    def __init__(self, model: nn.Module, optim: OptimConfig, train_size: int, *, mean, std,
                 augment: bool = False, eval_batch_size: int = 1000, max_traces: int | None = None,
                 seeds_per_chunk: int = 0, epoch_loop: str = "auto"):
        self.model = model
        self.optim = optim
        self.batch_size = int(optim.batch_size)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        self.train_size = int(train_size)
        self.steps_per_epoch = steps_per_epoch(self.train_size, self.batch_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = bool(augment)
        self.eval_batch_size = int(eval_batch_size)
        self.seeds_per_chunk = int(seeds_per_chunk)
        self.optimizer = make_optimizer(optim)
        self.schedule = learning_rate_schedule(optim, self.steps_per_epoch)
        if epoch_loop == "auto":
            epoch_loop = "steps" if jax.default_backend() == "cpu" and has_convolutions(model) else "scan"
        if epoch_loop not in ("scan", "steps"):
            raise ValueError(f"epoch_loop must be 'auto', 'scan' or 'steps', got {epoch_loop!r}")
        self.epoch_loop = epoch_loop
        epoch = self._epoch if max_traces is None else chex.assert_max_traces(self._epoch, n=max_traces)
        self.epoch_fn = jax.jit(jax.vmap(epoch, in_axes=(0, 0, None, None, None, None, None)),
                                donate_argnums=(0,))
        step = self._batch_step if max_traces is None else chex.assert_max_traces(self._batch_step, n=max_traces)
        self.step_fn = jax.jit(jax.vmap(step, in_axes=(0, 0, None, None, None, 0, 0, None, None)),
                               donate_argnums=(0,))
        self.order_fn = jax.jit(jax.vmap(self._epoch_order, in_axes=(0, None)))
        self.eval_fn = jax.jit(jax.vmap(self._evaluate, in_axes=(0, 0, 0, None, None)))
        self.grad_fn = jax.jit(jax.vmap(self._mean_gradient, in_axes=(0, 0, 0, None, None)))
        self.init_fn = jax.jit(jax.vmap(partial(init_state, model, self.optimizer),
                                        in_axes=(0, 0, None)))

    # ----- single-seed pure functions -------------------------------------------------------
    def _prepare(self, images: jax.Array) -> jax.Array:
        return normalize(images, self.mean, self.std)

    def _loss(self, params, batch_stats, mask, images, labels, weights, train: bool):
        variables = {"params": apply_mask(params, mask)}
        has_bn = bool(jax.tree.leaves(batch_stats))
        if has_bn:
            variables["batch_stats"] = batch_stats
        if train and has_bn:
            logits, updates = self.model.apply(variables, images, train=True, mutable=["batch_stats"])
            new_batch_stats = updates["batch_stats"]
        else:
            logits = self.model.apply(variables, images, train=train)
            new_batch_stats = batch_stats
        losses = cross_entropy(logits, labels)
        loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        return loss, (logits, new_batch_stats)

    def _train_step(self, state: TrainState, mask, images, labels, weights, active):
        params = apply_mask(state.params, mask)  # weight decay then never sees a pruned weight
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        (loss, (logits, new_batch_stats)), grads = grad_fn(
            params, state.batch_stats, mask, images, labels, weights, True)
        grads = apply_mask(grads, mask)
        updates, new_opt_state = self.optimizer.update(grads, state.opt_state, params)
        lr = self.schedule(state.step)
        new_params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        new_params = apply_mask(new_params, mask)
        new_state = state.replace(params=new_params, batch_stats=new_batch_stats,
                                  opt_state=new_opt_state, step=state.step + 1)
        # Inactive steps (before a rewind point / after a stop point) leave the state untouched.
        new_state = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
        correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
        w = jnp.sum(weights) * active
        return new_state, (loss * w, correct * active, w)

    def _epoch_order(self, state: TrainState, epoch):
        """The batches of epoch ``epoch`` for one seed: example indices and weights, each
        (steps_per_epoch, batch). The last batch is padded with weight-0 examples."""
        n, spe, bs = self.train_size, self.steps_per_epoch, self.batch_size
        order_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng[0]), epoch)
        perm = jax.random.permutation(order_key, n)
        padded = spe * bs
        index = jnp.resize(perm, padded)  # the permutation, repeated into the padding
        weights = (jnp.arange(padded) < n).astype(jnp.float32)
        return index.reshape(spe, bs), weights.reshape(spe, bs)

    def _batch_step(self, state: TrainState, mask, x_train, y_train, iteration, idx, w,
                    start_iteration, stop_iteration):
        """One iteration for one seed on the examples ``idx`` (weights ``w``); a no-op unless
        ``start_iteration <= iteration < stop_iteration``."""
        images = jnp.take(x_train, idx, axis=0)
        if self.augment:
            augment_key = jax.random.wrap_key_data(state.rng[1])
            images = random_crop_flip(jax.random.fold_in(augment_key, iteration), images)
        images = self._prepare(images)
        labels = jnp.take(y_train, idx, axis=0)
        active = (iteration >= start_iteration) & (iteration < stop_iteration)
        return self._train_step(state, mask, images, labels, w, active)

    def _epoch(self, state: TrainState, mask, x_train, y_train, epoch, start_iteration, stop_iteration):
        """One epoch for one seed: batches of a fresh permutation under ``lax.scan``.

        Only iterations ``start_iteration <= it < stop_iteration`` update the state (``it`` is
        the global iteration ``epoch * steps_per_epoch + i``): this runs partial epochs at rewind
        points without retracing. Returns the state and (summed loss, correct, examples).
        """
        index, weights = self._epoch_order(state, epoch)

        def body(st, inputs):
            i, idx, w = inputs
            return self._batch_step(st, mask, x_train, y_train, epoch * self.steps_per_epoch + i,
                                    idx, w, start_iteration, stop_iteration)

        state, (loss_sums, correct, counts) = jax.lax.scan(
            body, state, (jnp.arange(self.steps_per_epoch), index, weights))
        return state, (jnp.sum(loss_sums), jnp.sum(correct), jnp.sum(counts))

    def _epoch_by_steps(self, state: TrainState, mask, x_train, y_train, epoch, start_iteration,
                        stop_iteration):
        """The same epoch as :meth:`_epoch` (all seeds) with the loop over batches in Python:
        one jitted, donated call per active iteration (see ``epoch_loop``)."""
        index, weights = self.order_fn(state, jnp.int32(epoch))
        spe = self.steps_per_epoch
        sums = None
        for i in range(spe):
            iteration = epoch * spe + i
            if not start_iteration <= iteration < stop_iteration:
                continue  # an inactive step leaves the state as it is
            state, stats = self.step_fn(state, mask, x_train, y_train, jnp.int32(iteration),
                                        index[:, i], weights[:, i], jnp.int32(start_iteration),
                                        jnp.int32(stop_iteration))
            sums = stats if sums is None else jax.tree.map(jnp.add, sums, stats)
        if sums is None:
            zeros = jnp.zeros(index.shape[0], jnp.float32)
            sums = (zeros, zeros, zeros)
        return state, sums

    def _batched(self, x, y):
        n, eb = x.shape[0], min(self.eval_batch_size, x.shape[0])
        nb = math.ceil(n / eb)
        pad = nb * eb - n
        xb = jnp.concatenate([x, x[:pad]]) if pad else x
        yb = jnp.concatenate([y, y[:pad]]) if pad else y
        w = (jnp.arange(nb * eb) < n).astype(jnp.float32)
        return (xb.reshape(nb, eb, *x.shape[1:]), yb.reshape(nb, eb), w.reshape(nb, eb)), n

    def _evaluate(self, params, batch_stats, mask, x, y):
        """Loss, accuracy and predicted labels of one seed on a whole split (eval-mode BN)."""
        (xb, yb, wb), n = self._batched(x, y)

        def body(_, inputs):
            images, labels, w = inputs
            loss, (logits, _) = self._loss(params, batch_stats, mask, self._prepare(images),
                                           labels, w, False)
            pred = jnp.argmax(logits, -1).astype(jnp.int32)
            return None, (loss * jnp.sum(w), jnp.sum((pred == labels) * w), pred)

        _, (loss_sums, correct, preds) = jax.lax.scan(body, None, (xb, yb, wb))
        return jnp.sum(loss_sums) / n, jnp.sum(correct) / n, preds.reshape(-1)[:n]

    def _mean_gradient(self, params, batch_stats, mask, images, labels):
        """Gradient of the training loss wrt the (masked) parameters averaged over the given
        batches (shape (n_batches, batch, ...)), for saliency scores."""

        def one(_, inputs):
            imgs, labs = inputs
            grads = jax.grad(lambda p: self._loss(p, batch_stats, mask, self._prepare(imgs), labs,
                                                  jnp.ones(labs.shape, jnp.float32), True)[0])(params)
            return None, grads

        _, grads = jax.lax.scan(one, None, (images, labels))
        return jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)

    # ----- seed-stacked API -------------------------------------------------------------------
    def init(self, init_keys: jax.Array, seeds, sample_input) -> TrainState:
        """Stacked fresh states: ``init_keys`` one per seed (leading axis), ``seeds`` for the data
        streams."""
        rng_data = jnp.asarray(np.stack([seed_rng_data(s) for s in seeds]))
        return self.init_fn(init_keys, rng_data, sample_input)

    def init_shapes(self, init_keys: jax.Array, seeds, sample_input) -> TrainState:
        """The shapes and dtypes of :meth:`init`'s result, without computing it."""
        rng_data = jnp.asarray(np.stack([seed_rng_data(s) for s in seeds]))
        return jax.eval_shape(self.init_fn, init_keys, rng_data, sample_input)

    def _chunks(self, n_seeds: int) -> list[slice]:
        size = self.seeds_per_chunk
        if size <= 0 or size >= n_seeds:
            return [slice(None)]
        return [slice(i, min(i + size, n_seeds)) for i in range(0, n_seeds, size)]

    def _by_chunk(self, fn, stacked_args, n_seeds: int):
        """Apply ``fn`` to seed chunks of the stacked arguments; concatenate on the host."""
        chunks = self._chunks(n_seeds)
        if len(chunks) == 1:
            return fn(*stacked_args)
        outs = []
        for chunk in chunks:
            part = jax.tree.map(lambda leaf: jnp.asarray(leaf[chunk]), stacked_args)
            outs.append(jax.device_get(fn(*part)))
        return jax.tree.map(lambda *leaves: np.concatenate(leaves), *outs)

    def train_epoch_sums(self, state: TrainState, mask, data: DeviceData, epoch: int,
                         start_iteration: int = 0, stop_iteration: int | None = None):
        """Run (part of) epoch ``epoch`` for all seeds. Returns (state, per-seed summed loss,
        correct predictions, examples), so that parts of an epoch add up.

        ``state`` is donated: do not use the argument again.
        """
        if stop_iteration is None:
            stop_iteration = np.iinfo(np.int32).max
        scalars = (jnp.int32(epoch), jnp.int32(start_iteration), jnp.int32(stop_iteration))

        def run(st, msk):
            if self.epoch_loop == "steps":
                return self._epoch_by_steps(st, msk, data.x, data.y, int(epoch), int(start_iteration),
                                            int(stop_iteration))
            return self.epoch_fn(st, msk, data.x, data.y, *scalars)

        state, (loss_sum, correct, count) = self._by_chunk(run, (state, mask), _n_seeds(state.step))
        return state, loss_sum, correct, count

    def train_epoch(self, state: TrainState, mask, data: DeviceData, epoch: int,
                    start_iteration: int = 0, stop_iteration: int | None = None):
        """:meth:`train_epoch_sums` as (state, per-seed mean loss, accuracy)."""
        state, loss_sum, correct, count = self.train_epoch_sums(state, mask, data, epoch,
                                                                start_iteration, stop_iteration)
        count = jnp.maximum(count, 1.0)
        return state, loss_sum / count, correct / count

    def evaluate(self, params, batch_stats, mask, data: DeviceData):
        """Per-seed (loss, accuracy, predictions) on ``data`` in eval mode."""
        return self._by_chunk(lambda p, b, m: self.eval_fn(p, b, m, data.x, data.y),
                              (params, batch_stats, mask), _n_seeds(jax.tree.leaves(params)[0]))

    def mean_gradient(self, params, batch_stats, mask, data: DeviceData, key: jax.Array,
                      n_batches: int = 1):
        """Per-seed gradients averaged over ``n_batches`` random training batches (one shared
        draw from ``key``)."""
        n = data.size
        count = min(n, n_batches * self.batch_size)
        n_batches = max(1, min(n_batches, count))
        idx = jax.random.permutation(key, n)[:count]
        per = count // n_batches
        idx = idx[: per * n_batches].reshape(n_batches, per)
        images = jnp.take(data.x, idx, axis=0)
        labels = jnp.take(data.y, idx, axis=0)
        return self._by_chunk(lambda p, b, m: self.grad_fn(p, b, m, images, labels),
                              (params, batch_stats, mask), _n_seeds(jax.tree.leaves(params)[0]))


def _n_seeds(leaf) -> int:
    return int(np.shape(leaf)[0])


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` is convolutional (the CIFAR ResNets and VGGs; MLPs are not)."""
    from sdd_jax.models.mlp import MLP

    return not isinstance(model, MLP)


def check_finite(losses, *, what: str, seeds=None) -> None:
    """Raise :class:`TrainingDiverged` naming the seeds whose loss is not finite."""
    values = np.asarray(losses)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        names = [seeds[i] for i in bad] if seeds is not None else bad.tolist()
        raise TrainingDiverged(f"non-finite training loss {values[bad].tolist()} for seed(s) {names} "
                               f"{what}; lower the learning rate or check the data")


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""
