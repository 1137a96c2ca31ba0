"""Unstructured pruning: scores -> a new mask that keeps an exact number of weights.

Pure per-seed functions that run under ``jax.jit`` and ``jax.vmap`` over seeds (global pruning
must be computed per seed, so vmap them rather than pooling seeds). Follows the paper's
OpenLTH-based code (``pruning/magnitude.py``, ``gradient.py``, ``random.py``, with
``pruning_scope`` global or layer):

* criteria (entries of the :mod:`sdd_jax.criteria` registry): ``magnitude`` |w|; ``saliency``
  |w * dL/dw| (the caller averages the gradient over its batches; the reference uses one batch);
  ``random`` uniform scores from a JAX key; ``largest_first`` negates the score so the largest
  are pruned first.
* scope: ``global`` — one ranking over the concatenation of all prunable leaves, with no per-layer
  normalisation (as the reference); ``layer`` — each leaf ranked on its own.
* amount: ``ceil(fraction * remaining)`` more weights per level (per leaf for ``layer``).

Where this differs from the reference, on purpose: the reference keeps ``|w| > sorted[n]``,
which removes ``n + 1`` weights when scores are distinct and more when they tie, and with
``prune_max_magnitude`` keeps only ``n`` weights; its global count of remaining weights also
includes ignored layers. Here the realised count is exactly ``n`` of the non-ignored weights;
ties are broken by flat index (lower index pruned first), so masks are deterministic. Weights
already pruned rank below every live weight, so masks are nested.
"""

from __future__ import annotations

import dataclasses
import fractions
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sdd_jax import criteria as criteria_lib
from sdd_jax import masks as masks_lib
from sdd_jax.choices import SCOPES
from sdd_jax.criteria import random_scores

_MAX_DENOMINATOR = 2**15
_NO_PRUNABLE = "no prunable leaves: the predicate (minus ignored paths) matched no parameter"


class PruningError(ValueError):
    """Bad pruning options or inputs."""


def __getattr__(name: str):
    if name == "CRITERIA":  # the registered names, read when asked (a registered criterion counts)
        return criteria_lib.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _criterion(name: str) -> criteria_lib.Criterion:
    """The registry entry of ``name``; :class:`PruningError` listing the registered ones."""
    entry = criteria_lib.CRITERIA.get(name)
    if entry is None:
        raise PruningError(f"unknown criterion {name!r}; choose from {', '.join(criteria_lib.names())}")
    return entry


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise PruningError(f"unknown scope {scope!r}; choose from {', '.join(SCOPES)}")


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """How weights are ranked and grouped (OpenLTH: pruning_strategy, pruning_scope, prune_max_magnitude).

    ``criterion``: a registered name (:mod:`sdd_jax.criteria`: magnitude | saliency | random and any
    added); ``scope``: global | layer; ``largest_first``
    prunes the highest scores first. Which leaves may be pruned at all is the caller's
    predicate (ignore lists: :func:`sdd_jax.masks.exclude`).
    """

    criterion: str = "magnitude"
    scope: str = "global"
    largest_first: bool = False

    def __post_init__(self) -> None:
        _criterion(self.criterion)
        _check_scope(self.scope)

    @classmethod
    def from_config(cls, pruning_config: Any) -> PruneOptions:
        """The options held by a ``PruningConfig`` (``criterion``, ``scope``, ``largest_first``)."""
        return cls(
            criterion=pruning_config.criterion,
            scope=pruning_config.scope,
            largest_first=pruning_config.largest_first,
        )


# ----------------------------------------------------------------------------- counts


def fraction_ratio(fraction: float) -> tuple[int, int]:
    """``fraction`` as an exact ratio ``(p, q)`` with ``q <= 2**15`` (0.2 -> (1, 5)).

    Counting with integers keeps ``ceil(fraction * remaining)`` exact inside jit and equal to
    the reference's float64 ``np.ceil`` (float32 goes wrong above 2**24 remaining weights, e.g.
    ``ceil(0.2 * 16777221)`` gives 3355444 instead of 3355445).
    """
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise PruningError(f"fraction must be a number, got {fraction!r}") from None
    if not 0.0 <= value <= 1.0:
        raise PruningError(f"fraction must lie in [0, 1], got {value}")
    ratio = fractions.Fraction(value).limit_denominator(_MAX_DENOMINATOR)
    if abs(float(ratio) - value) > 1e-12:
        raise PruningError(f"fraction {value} is not a ratio p/q with q <= {_MAX_DENOMINATOR}; use e.g. 0.2 = 1/5")
    return ratio.numerator, ratio.denominator


def num_to_prune(remaining, fraction: float):
    """``ceil(fraction * remaining)``, exact; ``remaining`` a Python int or an int (traced) array."""
    p, q = fraction_ratio(fraction)
    if isinstance(remaining, (int, np.integer)):
        return -((-int(remaining) * p) // q)
    remaining = jnp.asarray(remaining, jnp.int32)
    whole, rest = remaining // q, remaining % q
    return whole * p + (rest * p + (q - 1)) // q  # rest*p < 2**30: no int32 overflow


def kept_after_levels(total: int, fraction: float, levels: int) -> int:
    """Weights kept after ``levels`` iterative levels from ``total`` (``remaining -= ceil(f*remaining)``)."""
    if levels < 0:
        raise PruningError(f"levels must be >= 0, got {levels}")
    remaining = int(total)
    for _ in range(int(levels)):
        remaining -= num_to_prune(remaining, fraction)
    return remaining


# ----------------------------------------------------------------------------- scores


def scores(
    params: Any,
    criterion: str = "magnitude",
    *,
    grads: Any = None,
    key: jax.Array | None = None,
    largest_first: bool = False,
) -> Any:
    """Per-weight scores (same tree as ``params``) of the registered ``criterion``; the lowest
    are pruned first. ``grads`` (a tree like ``params``) is passed to criteria that need it,
    ``key`` to those that need one, ``None`` otherwise."""
    entry = _criterion(criterion)
    if entry.needs_grads:
        if grads is None:
            raise PruningError(f"criterion {criterion!r} needs grads (dL/dw averaged over batches)")
        masks_lib.check_like(grads, params, "grads")
    if entry.needs_key and key is None:
        raise PruningError(f"criterion {criterion!r} needs a key (one per seed)")
    out = entry.score(params, key if entry.needs_key else None, grads if entry.needs_grads else None)
    if largest_first:
        out = jax.tree_util.tree_map(jnp.negative, out)
    return out


# ----------------------------------------------------------------------------- selection


def _keep_top(score: jax.Array, alive: jax.Array, keep) -> jax.Array:
    """Boolean vector keeping the ``keep`` highest-scoring live entries (``keep <= alive``).

    Entries are ordered by (live, score, index): dead first, then ascending score, ties by flat
    index. The last ``keep`` positions are kept. Works with a traced ``keep``.
    """
    n = score.shape[0]
    index = jnp.arange(n, dtype=jnp.int32)
    _, _, order = lax.sort((alive.astype(jnp.int32), score, index), num_keys=3)
    return jnp.zeros(n, bool).at[order].set(index >= n - keep)


def _select(
    score_tree: Any,
    mask: Any,
    prunable: masks_lib.Predicate,
    scope: str,
    target: Callable[[str | None, jax.Array], jax.Array],
    alive_from_mask: bool = True,
) -> Any:
    """New mask keeping ``target(name, alive_count)`` weights per group (all prunable leaves for
    ``global``, name None; each leaf for ``layer``). Non-prunable leaves keep their mask."""
    _check_scope(scope)
    names = [masks_lib.path_str(p) for p in masks_lib.paths(mask)]
    flags = masks_lib.prunable_flags(mask, prunable)
    mask_leaves, tree_def = jax.tree_util.tree_flatten(mask)
    score_leaves = jax.tree_util.tree_leaves(score_tree)
    chosen = [i for i, f in enumerate(flags) if f]
    if not chosen:
        raise PruningError(_NO_PRUNABLE)

    def alive_of(i):
        if alive_from_mask:
            return jnp.ravel(mask_leaves[i]) != 0
        return jnp.ones(jnp.size(mask_leaves[i]), bool)

    new_leaves = list(mask_leaves)

    def write(i, keep_flat):
        leaf = mask_leaves[i]
        new_leaves[i] = keep_flat.reshape(jnp.shape(leaf)).astype(jnp.asarray(leaf).dtype)

    if scope == "global":
        score = jnp.concatenate([jnp.ravel(score_leaves[i]).astype(jnp.float32) for i in chosen])
        alive = jnp.concatenate([alive_of(i) for i in chosen])
        live = jnp.sum(alive, dtype=jnp.int32)
        keep = _keep_top(score, alive, jnp.minimum(target(None, live), live))
        offset = 0
        for i in chosen:
            size = int(jnp.size(mask_leaves[i]))
            write(i, keep[offset : offset + size])
            offset += size
    else:
        for i in chosen:
            score = jnp.ravel(score_leaves[i]).astype(jnp.float32)
            alive = alive_of(i)
            live = jnp.sum(alive, dtype=jnp.int32)
            write(i, _keep_top(score, alive, jnp.minimum(target(names[i], live), live)))
    return jax.tree_util.tree_unflatten(tree_def, new_leaves)


# ----------------------------------------------------------------------------- public API


def _option_scores(params: Any, options: PruneOptions, key: jax.Array | None, grads: Any) -> Any:
    return scores(params, options.criterion, grads=grads, key=key, largest_first=options.largest_first)


def prune(
    params: Any,
    mask: Any,
    is_prunable: masks_lib.Predicate,
    *,
    fraction: float = 0.2,
    options: PruneOptions = PruneOptions(),
    key: jax.Array | None = None,
    grads: Any = None,
) -> Any:
    """One pruning level: remove ``ceil(fraction * remaining)`` more prunable weights.

    ``remaining`` counts the live weights of the leaves where ``is_prunable(path)`` holds (per
    leaf for ``options.scope == "layer"``); other leaves are left as they are and not counted.
    Per seed: vmap it (see :func:`seed_pruner`). ``fraction`` must be static (a Python float).
    """
    masks_lib.check_like(mask, params)
    fraction_ratio(fraction)  # validate before tracing anything
    score_tree = _option_scores(params, options, key, grads)
    return _select(score_tree, mask, is_prunable, options.scope, lambda _, live: live - num_to_prune(live, fraction))


def prune_to_count(
    params: Any,
    mask: Any,
    is_prunable: masks_lib.Predicate,
    *,
    kept: int | jax.Array | Mapping[str, int],
    options: PruneOptions = PruneOptions(),
    key: jax.Array | None = None,
    grads: Any = None,
) -> Any:
    """Prune directly to ``kept`` live prunable weights (one-shot pruning, with the targets of
    :func:`oneshot_targets`).

    ``kept``: an int (``global``; may be traced) or ``{path_str: int}`` for every prunable leaf
    (``layer``). A target above the live count keeps the mask as it is: nothing is revived.
    """
    masks_lib.check_like(mask, params)
    layer_totals = {k: t for k, (_, t) in masks_lib.layer_counts(mask, is_prunable).items()}
    if options.scope == "global":
        if isinstance(kept, Mapping):
            raise PruningError("scope 'global' takes kept as one int, not a per-layer mapping")
        if isinstance(kept, int) and not 0 <= kept <= sum(layer_totals.values()):
            raise PruningError(f"kept={kept} outside [0, {sum(layer_totals.values())}] prunable weights")

        def target(_, live):
            return jnp.asarray(kept, jnp.int32)
    else:
        if not isinstance(kept, Mapping):
            raise PruningError("scope 'layer' takes kept as {path_str: int} for every prunable leaf")
        missing = sorted(set(layer_totals) - set(kept))
        extra = sorted(set(kept) - set(layer_totals))
        if missing or extra:
            raise PruningError(f"kept per layer: missing {missing}, not prunable {extra}")
        for name, value in kept.items():
            if isinstance(value, int) and not 0 <= value <= layer_totals[name]:
                raise PruningError(f"kept[{name!r}]={value} outside [0, {layer_totals[name]}]")

        def target(name, live):
            return jnp.asarray(kept[name], jnp.int32)

    score_tree = _option_scores(params, options, key, grads)
    return _select(score_tree, mask, is_prunable, options.scope, target)


def oneshot_targets(
    params: Any,
    is_prunable: masks_lib.Predicate,
    *,
    levels: int,
    fraction: float = 0.2,
    scope: str = "global",
) -> int | dict[str, int]:
    """Kept counts that iterative pruning reaches after ``levels`` levels from dense: one int
    (``global``) or ``{path_str: int}`` (``layer``). Pass to :func:`prune_to_count`."""
    _check_scope(scope)
    totals = {k: t for k, (_, t) in masks_lib.layer_counts(masks_lib.ones_like(params), is_prunable).items()}
    if not totals:
        raise PruningError(_NO_PRUNABLE)
    if scope == "global":
        return kept_after_levels(sum(totals.values()), fraction, levels)
    return {k: kept_after_levels(t, fraction, levels) for k, t in totals.items()}


def random_mask_like(mask: Any, is_prunable: masks_lib.Predicate, key: jax.Array) -> Any:
    """A mask with the same kept count per prunable leaf as ``mask``, at random positions
    (the paper's random-pruning control). Each key gives its own positions."""
    counts = {k: c for k, (c, _) in masks_lib.layer_counts(mask, is_prunable).items()}
    score_tree = random_scores(mask, key)
    return _select(score_tree, mask, is_prunable, "layer", lambda name, _: counts[name], alive_from_mask=False)


def seed_pruner(
    is_prunable: masks_lib.Predicate,
    *,
    fraction: float = 0.2,
    options: PruneOptions = PruneOptions(),
) -> Callable[..., Any]:
    """``jit(vmap(prune))``: ``fn(params, mask, keys=None, grads=None) -> masks``, every argument
    stacked over seeds (leading axis), each seed pruned on its own (its own global ranking and,
    for ``random``, its own key). Build once and reuse: it compiles once per shape."""
    fraction_ratio(fraction)
    one = partial(prune, is_prunable=is_prunable, fraction=fraction, options=options)
    batched = jax.jit(jax.vmap(lambda params, mask, keys, grads: one(params, mask, key=keys, grads=grads)))

    def run(params, mask, keys=None, grads=None):
        return batched(params, mask, keys, grads)

    return run


def replica_pruner(
    is_prunable: masks_lib.Predicate,
    *,
    fraction: float = 0.2,
    criteria: tuple[str, ...] = ("magnitude",),
    scopes: tuple[str, ...] = ("global",),
    largest_first: bool = False,
) -> Callable[..., Any]:
    """:func:`seed_pruner` with the criterion and the scope chosen per replica (a study's stack):
    ``fn(params, mask, criterion_index, scope_index, keys, grads=None) -> masks``, every argument
    stacked over replicas; ``criterion_index[r]`` indexes ``criteria`` and ``scope_index[r]``
    ``scopes`` (int32). Each replica's scores are its own criterion's (``lax.switch``: under
    ``vmap`` every listed criterion is computed and the replica's one selected), ranked in its own
    scope, so its mask is the one :func:`seed_pruner` with that criterion and scope gives it.
    ``keys`` (one ``mask`` key per replica) are always passed; ``grads`` only when a listed
    criterion needs them (then for every replica)."""
    fraction_ratio(fraction)
    entries = [_criterion(name) for name in criteria]
    for scope in scopes:
        _check_scope(scope)
    if not entries or not scopes:
        raise PruningError("replica_pruner needs at least one criterion and one scope")

    def target(_, live):
        return live - num_to_prune(live, fraction)

    def one(params, mask, criterion_index, scope_index, key, grads):
        score_tree = lax.switch(
            criterion_index,
            [partial(scores, params, e.name, grads=grads, key=key, largest_first=largest_first) for e in entries],
        )
        return lax.switch(scope_index, [partial(_select, score_tree, mask, is_prunable, s, target) for s in scopes])

    batched = jax.jit(jax.vmap(one))

    def run(params, mask, criterion_index, scope_index, keys, grads=None):
        return batched(params, mask, criterion_index, scope_index, keys, grads)

    return run
