"""Training and evaluation of one seed as pure functions of explicit state.

Nothing here is jitted or vmapped: :mod:`sdd_jax.engine` composes ``jax.jit``, ``jax.vmap`` over
seeds and chunking around these functions. Every function takes a :class:`Spec` first (the
model, optimiser, schedule and data-shape constants; bind it with ``functools.partial``).

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
from collections.abc import Callable
from functools import partial
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sdd_jax import rng as rng_streams
from sdd_jax.config import OptimConfig
from sdd_jax.data.device import normalize, random_crop_flip
from sdd_jax.masks import apply_mask

PyTree = Any


@flax.struct.dataclass
class Weights:
    """The weights of a network (one seed, or stacked over seeds on a leading axis):
    ``params`` and BatchNorm ``batch_stats`` (``{}`` for models without BatchNorm)."""

    params: PyTree
    batch_stats: PyTree


@flax.struct.dataclass
class LevelWeights:
    """The final weights of a pruning level and the mask they were trained on (0/1, shaped like
    ``params``)."""

    params: PyTree
    batch_stats: PyTree
    mask: PyTree

    @property
    def weights(self) -> Weights:
        return Weights(self.params, self.batch_stats)


@flax.struct.dataclass
class TrainState:
    """Per-seed training state (a leading seed axis on every leaf in :class:`sdd_jax.engine.Engine`).

    ``rng`` holds the raw key data of the seed's ``data_order`` and ``augment`` streams
    (shape (2, 2) uint32); epoch and iteration numbers are folded in, so no key is ever advanced
    and a resumed run draws the same numbers as an uninterrupted one.
    """

    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    step: jax.Array
    rng: jax.Array

    @property
    def weights(self) -> Weights:
        return Weights(self.params, self.batch_stats)


@dataclasses.dataclass(frozen=True)
class DeviceData:
    """A split resident on the device: images (uint8 or float) and int32 labels."""

    x: jax.Array
    y: jax.Array

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


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


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a step needs besides the state: model, optimiser, schedule and data constants.

    ``mean``/``std`` normalise images inside the step (images stay uint8 on the device);
    ``augment`` switches on the pad-4 random crop + flip; ``eval_batch_size`` examples are
    evaluated at a time; ``batch_sharding`` (or None) splits each training batch over devices.
    """

    model: nn.Module
    optimizer: optax.GradientTransformation
    schedule: Callable[[jax.Array], jax.Array]
    train_size: int
    batch_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False
    eval_batch_size: int = 1000
    batch_sharding: Any = None  # a sharding of one seed's batch (the mesh's ``data`` axis)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.train_size, self.batch_size)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def init_state(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    init_key: jax.Array,
    rng_data: jax.Array,
    sample_input: jax.Array,
) -> TrainState:
    """A fresh state for one seed (vmap it over stacked keys)."""
    variables = model.init({"params": init_key}, sample_input, train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        params=params,
        batch_stats=batch_stats,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=rng_data,
    )


def seed_rng_data(seed: int) -> np.ndarray:
    """The ``TrainState.rng`` value of one seed: key data of its data_order and augment streams."""
    return np.stack(
        [np.asarray(jax.random.key_data(rng_streams.stream_key(seed, s))) for s in ("data_order", "augment")]
    )


def seeds_rng_data(seeds) -> jax.Array:
    """:func:`seed_rng_data` stacked over ``seeds`` (the ``rng`` of a seed-stacked state)."""
    return jnp.asarray(np.stack([seed_rng_data(s) for s in seeds]))


def loss_fn(spec: Spec, params, batch_stats, mask, images, labels, weights, train: bool):
    """Weighted mean cross-entropy of the masked network on normalised ``images``; returns
    (loss, (logits, new batch_stats))."""
    variables = {"params": apply_mask(params, mask)}
    has_bn = bool(jax.tree.leaves(batch_stats))
    if has_bn:
        variables["batch_stats"] = batch_stats
    if train and has_bn:
        logits, updates = spec.model.apply(variables, images, train=True, mutable=["batch_stats"])
        new_batch_stats = updates["batch_stats"]
    else:
        logits = spec.model.apply(variables, images, train=train)
        new_batch_stats = batch_stats
    losses = cross_entropy(logits, labels)
    loss = jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return loss, (logits, new_batch_stats)


def train_step(spec: Spec, state: TrainState, mask, images, labels, weights, active):
    """One SGD update on a normalised batch; a no-op where ``active`` is false. Returns the state
    and (summed loss, correct, examples) of the batch."""
    params = apply_mask(state.params, mask)  # weight decay then never sees a pruned weight
    grad_fn = jax.value_and_grad(partial(loss_fn, spec), has_aux=True)
    (loss, (logits, new_batch_stats)), grads = grad_fn(params, state.batch_stats, mask, images, labels, weights, True)
    grads = apply_mask(grads, mask)
    updates, new_opt_state = spec.optimizer.update(grads, state.opt_state, params)
    lr = spec.schedule(state.step)
    new_params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
    new_params = apply_mask(new_params, mask)
    new_state = state.replace(
        params=new_params, batch_stats=new_batch_stats, opt_state=new_opt_state, step=state.step + 1
    )
    # Inactive steps (before a rewind point / after a stop point) leave the state untouched.
    new_state = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
    w = jnp.sum(weights) * active
    return new_state, (loss * w, correct * active, w)


def epoch_order(spec: Spec, state: TrainState, epoch):
    """The batches of epoch ``epoch`` for one seed: example indices and weights, each
    (steps_per_epoch, batch). The last batch is padded with weight-0 examples."""
    n, spe, bs = spec.train_size, spec.steps_per_epoch, spec.batch_size
    order_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng[0]), epoch)
    perm = jax.random.permutation(order_key, n)
    padded = spe * bs
    index = jnp.resize(perm, padded)  # the permutation, repeated into the padding
    weights = (jnp.arange(padded) < n).astype(jnp.float32)
    return index.reshape(spe, bs), weights.reshape(spe, bs)


def batch_step(
    spec: Spec, state: TrainState, mask, x_train, y_train, iteration, idx, w, start_iteration, stop_iteration
):
    """One iteration for one seed on the examples ``idx`` (weights ``w``); a no-op unless
    ``start_iteration <= iteration < stop_iteration``."""
    images = jnp.take(x_train, idx, axis=0)
    if spec.batch_sharding is not None:
        images = jax.lax.with_sharding_constraint(images, spec.batch_sharding)
    if spec.augment:
        augment_key = jax.random.wrap_key_data(state.rng[1])
        images = random_crop_flip(jax.random.fold_in(augment_key, iteration), images)
    images = normalize(images, spec.mean, spec.std)
    labels = jnp.take(y_train, idx, axis=0)
    active = (iteration >= start_iteration) & (iteration < stop_iteration)
    return train_step(spec, state, mask, images, labels, w, active)


def train_epoch(spec: Spec, state: TrainState, mask, x_train, y_train, epoch, start_iteration, stop_iteration):
    """One epoch for one seed: batches of a fresh permutation under ``lax.scan``.

    Only iterations ``start_iteration <= it < stop_iteration`` update the state (``it`` is the
    global iteration ``epoch * steps_per_epoch + i``): this runs partial epochs at rewind points
    without retracing. Returns the state and (summed loss, correct, examples).
    """
    index, weights = epoch_order(spec, state, epoch)

    def body(st, inputs):
        i, idx, w = inputs
        return batch_step(
            spec, st, mask, x_train, y_train, epoch * spec.steps_per_epoch + i, idx, w, start_iteration, stop_iteration
        )

    state, (loss_sums, correct, counts) = jax.lax.scan(body, state, (jnp.arange(spec.steps_per_epoch), index, weights))
    return state, (jnp.sum(loss_sums), jnp.sum(correct), jnp.sum(counts))


def _batched(spec: Spec, x, y):
    n, eb = x.shape[0], min(spec.eval_batch_size, x.shape[0])
    nb = math.ceil(n / eb)
    pad = nb * eb - n
    xb = jnp.concatenate([x, x[:pad]]) if pad else x
    yb = jnp.concatenate([y, y[:pad]]) if pad else y
    w = (jnp.arange(nb * eb) < n).astype(jnp.float32)
    return (xb.reshape(nb, eb, *x.shape[1:]), yb.reshape(nb, eb), w.reshape(nb, eb)), n


def evaluate(spec: Spec, params, batch_stats, mask, x, y):
    """Loss, accuracy and predicted labels of one seed on a whole split (eval-mode BN)."""
    (xb, yb, wb), n = _batched(spec, x, y)

    def body(_, inputs):
        images, labels, w = inputs
        loss, (logits, _) = loss_fn(
            spec, params, batch_stats, mask, normalize(images, spec.mean, spec.std), labels, w, False
        )
        pred = jnp.argmax(logits, -1).astype(jnp.int32)
        return None, (loss * jnp.sum(w), jnp.sum((pred == labels) * w), pred)

    _, (loss_sums, correct, preds) = jax.lax.scan(body, None, (xb, yb, wb))
    return jnp.sum(loss_sums) / n, jnp.sum(correct) / n, preds.reshape(-1)[:n]


def train_epoch_and_evaluate(
    spec: Spec, state: TrainState, mask, x_train, y_train, epoch, start_iteration, stop_iteration, x_eval, y_eval
):
    """:func:`train_epoch`, then :func:`evaluate` of the trained state on ``(x_eval, y_eval)``, as
    one program (the evaluation is not a second call after the epoch). Returns the state, the
    epoch's (summed loss, correct, examples) and the evaluation's (loss, accuracy)."""
    state, sums = train_epoch(spec, state, mask, x_train, y_train, epoch, start_iteration, stop_iteration)
    loss, accuracy, _ = evaluate(spec, state.params, state.batch_stats, mask, x_eval, y_eval)
    return state, sums, (loss, accuracy)


def mean_gradient(spec: Spec, params, batch_stats, mask, images, labels):
    """Gradient of the training loss wrt the (masked) parameters averaged over the given
    batches (shape (n_batches, batch, ...)), for saliency scores."""

    def one(_, inputs):
        imgs, labs = inputs
        grads = jax.grad(
            lambda p: loss_fn(
                spec,
                p,
                batch_stats,
                mask,
                normalize(imgs, spec.mean, spec.std),
                labs,
                jnp.ones(labs.shape, jnp.float32),
                True,
            )[0]
        )(params)
        return None, grads

    _, grads = jax.lax.scan(one, None, (images, labels))
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)


def check_finite(losses, *, what: str, seeds=None) -> None:
    """Raise :class:`TrainingDiverged` naming the seeds whose loss is not finite."""
    values = np.asarray(losses)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        names = [seeds[i] for i in bad] if seeds is not None else bad.tolist()
        raise TrainingDiverged(
            f"non-finite training loss {values[bad].tolist()} for seed(s) {names} "
            f"{what}; lower the learning rate or check the data"
        )


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""
