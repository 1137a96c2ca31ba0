"""The registry of pruning criteria: a name -> a small frozen :class:`Criterion` entry.

An entry holds the score function ``(params, key, grads) -> scores`` (a tree like ``params``;
the lowest scores are pruned first) and says whether it needs the gradients (``needs_grads``:
the engine then averages ``dL/dw`` over ``pruning.saliency_batches`` training batches, see
:func:`sdd_jax.experiment.criterion_grads`) or a per-seed key (``needs_key``). The arguments a
criterion does not need are ``None``. :func:`sdd_jax.pruning.scores` reads the entry,
:mod:`sdd_jax.validate` reads the names. A new criterion is one module calling
:func:`register` (``docs/extending.md`` shows SNIP's |w·g|); as open_lth's ``registry.py`` and
jaxpruner's ``register_algorithm``, there is no class hierarchy.

The built-in criteria are those of the paper's OpenLTH-based code (``pruning/magnitude.py``,
``gradient.py``, ``random.py``): ``magnitude`` |w|, ``saliency`` |w · dL/dw| and ``random``
uniform [0, 1) scores, one independent key per leaf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

ScoreFn = Callable[[Any, "jax.Array | None", Any], Any]


@dataclasses.dataclass(frozen=True)
class Criterion:
    """One pruning criterion: ``score(params, key, grads)`` -> float scores, same tree as ``params``.

    ``params`` and ``grads`` are one seed's (unbatched) trees; ``key`` is that seed's key from the
    ``mask`` stream. The scores must be computable under ``jax.jit`` and ``jax.vmap``.
    """

    name: str
    score: ScoreFn
    needs_grads: bool = False
    needs_key: bool = False


CRITERIA: dict[str, Criterion] = {}


def register(criterion: Criterion) -> Criterion:
    """Add ``criterion`` to the registry and return it; :class:`ValueError` if the name is taken."""
    if not isinstance(criterion, Criterion):
        raise TypeError(f"register expects a Criterion, got {type(criterion).__name__}")
    if criterion.name in CRITERIA:
        raise ValueError(f"pruning criterion {criterion.name!r} is already registered")
    CRITERIA[criterion.name] = criterion
    return criterion


def names() -> tuple[str, ...]:
    """The registered criterion names, in registration order (the built-ins first)."""
    return tuple(CRITERIA)


def random_scores(params: Any, key: jax.Array) -> Any:
    """Uniform [0, 1) scores, one independent key per leaf (split from ``key``)."""
    leaves, tree_def = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [jax.random.uniform(k, jnp.shape(leaf), jnp.float32) for k, leaf in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree_def, out)


def _magnitude(params: Any, key: Any, grads: Any) -> Any:
    del key, grads
    return jax.tree_util.tree_map(lambda w: jnp.abs(w).astype(jnp.float32), params)


def _saliency(params: Any, key: Any, grads: Any) -> Any:
    del key
    return jax.tree_util.tree_map(lambda w, g: jnp.abs(w * g).astype(jnp.float32), params, grads)


def _random(params: Any, key: jax.Array, grads: Any) -> Any:
    del grads
    return random_scores(params, key)


MAGNITUDE = register(Criterion("magnitude", _magnitude))
SALIENCY = register(Criterion("saliency", _saliency, needs_grads=True))
RANDOM = register(Criterion("random", _random, needs_key=True))
