"""Pruning masks: pytrees of 0/1 with exactly the structure, shapes and dtypes of the params.

A mask never has ``None`` leaves; leaves that are not prunable are all ones. Which leaves are
prunable is decided by a predicate over the leaf's *path* in the unbatched params tree, e.g.
``is_prunable(("fc1", "kernel")) -> True`` — never by ``ndim``, because with a leading seed axis
a bias looks 2-D. Paths are tuples of names; :func:`leaf_path` and :func:`path_str` are the one
place that turns ``jax.tree_util`` key paths into them.

Every function works on a seed-stacked tree (a leading seed axis on every leaf) as well: the
paths are the same, and the counting functions take ``seed_axis=True`` to return one value per
seed (or can be wrapped in ``jax.vmap``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp

Path = tuple[str, ...]
Predicate = Callable[[Path], bool]


class MaskError(ValueError):
    """A mask (or prunability predicate) that does not fit the params it is used with."""


def leaf_path(keypath: Iterable[Any]) -> Path:
    """A key path as a tuple of names, e.g. ``("fc1", "kernel")``.

    Entries may be ``jax.tree_util`` keys (``DictKey.key``, ``GetAttrKey.name``,
    ``SequenceKey.idx``, ``FlattenedIndexKey.key``) or plain names; anything else goes through
    ``str``.
    """
    names = []
    for entry in keypath:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                entry = getattr(entry, attr)
                break
        names.append(str(entry))
    return tuple(names)


def path_str(path: Iterable[Any]) -> str:
    """``("fc1", "kernel") -> "fc1/kernel"`` (the form used in reports and ignore regexes).

    ``path`` is a tuple of names or a ``jax.tree_util`` key path (``{"a": {"b": [x]}}`` gives
    ``"a/b/0"`` for ``x``).
    """
    return "/".join(leaf_path(path))


def paths(tree: Any) -> list[Path]:
    """The path of every leaf, in ``jax.tree_util`` leaf order."""
    return [leaf_path(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def exclude(is_prunable: Predicate, patterns: Iterable[str] = ()) -> Predicate:
    """``is_prunable`` minus the leaves whose path string matches any regex (``re.search``).

    Excluded leaves are treated as not prunable at all: never pruned and not counted in
    densities (OpenLTH's ``pruning_layers_to_ignore``). Anchor a pattern (``^fc3/kernel$``) to
    match one leaf exactly.
    """
    patterns = tuple(patterns)
    if not patterns:
        return is_prunable
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise MaskError(f"bad ignore regex {pattern!r}: {err}") from None

    def predicate(path: Path) -> bool:
        text = path_str(path)
        return bool(is_prunable(path)) and not any(r.search(text) for r in compiled)

    return predicate


def prunable_flags(tree: Any, prunable: Predicate) -> list[bool]:
    """One static bool per leaf of ``tree`` (in leaf order): ``prunable(path)``."""
    if not callable(prunable):
        raise MaskError(f"prunable must be a callable over path tuples, got {type(prunable).__name__}")
    return [bool(prunable(p)) for p in paths(tree)]


def check_like(tree: Any, params: Any, what: str = "mask") -> None:
    """Raise :class:`MaskError` unless ``tree`` has the structure and leaf shapes of ``params``."""
    tree_def = jax.tree_util.tree_structure(tree)
    params_def = jax.tree_util.tree_structure(params)
    if tree_def != params_def:
        raise MaskError(f"{what} structure {tree_def} does not match params structure {params_def}")
    for path, a, b in zip(paths(params), jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(params)):
        if jnp.shape(a) != jnp.shape(b):
            raise MaskError(f"{what} leaf {path_str(path)} has shape {jnp.shape(a)}, params have {jnp.shape(b)}")


def apply_mask(tree: Any, mask: Any) -> Any:
    """``tree * mask`` leaf by leaf, the mask cast to each leaf's dtype: pruned entries become
    exactly zero. The one way the package masks weights, gradients and updates."""
    return jax.tree_util.tree_map(lambda leaf, m: leaf * jnp.asarray(m).astype(leaf.dtype), tree, mask)


def ones_like(params: Any) -> Any:
    """The dense mask: ones everywhere, in each leaf's dtype."""
    return jax.tree_util.tree_map(jnp.ones_like, params)


@functools.partial(jax.jit, static_argnames="seed_axis")
def _kept(leaves: list[jax.Array], seed_axis: bool) -> list[jax.Array]:
    """The nonzero count (int32) of each leaf, per seed (over every axis but the first) with
    ``seed_axis``. One program per mask structure instead of an eager reduction per leaf shape."""
    return [
        jnp.sum(leaf != 0, axis=tuple(range(1, leaf.ndim)) if seed_axis else None, dtype=jnp.int32) for leaf in leaves
    ]


def layer_counts(mask: Any, prunable: Predicate, *, seed_axis: bool = False) -> dict[str, tuple[jax.Array, int]]:
    """``{path_str: (kept, total)}`` for every prunable leaf (``kept`` per seed with ``seed_axis``;
    ``total`` per seed, a Python int)."""
    flags = prunable_flags(mask, prunable)
    chosen = [(path, leaf) for path, leaf, flag in zip(paths(mask), jax.tree_util.tree_leaves(mask), flags) if flag]
    if seed_axis and any(jnp.ndim(leaf) == 0 for _, leaf in chosen):
        raise MaskError("seed_axis=True needs a leading seed axis on every leaf")
    kept = _kept([leaf for _, leaf in chosen], seed_axis)
    totals = [jnp.size(leaf) // (jnp.shape(leaf)[0] if seed_axis else 1) for _, leaf in chosen]
    return {path_str(path): (k, t) for (path, _), k, t in zip(chosen, kept, totals)}


def count(mask: Any, prunable: Predicate, *, seed_axis: bool = False) -> tuple[jax.Array, int]:
    """``(kept, total)`` over all prunable leaves: ``kept`` an int32 array (shape ``()``, or
    ``(seeds,)`` with ``seed_axis``), ``total`` a Python int (per seed)."""
    counts = layer_counts(mask, prunable, seed_axis=seed_axis)
    if not counts:
        raise MaskError("no prunable leaves: the predicate matched no parameter path")
    kept = sum(c for c, _ in counts.values())
    total = sum(t for _, t in counts.values())
    return kept, total


def density(mask: Any, prunable: Predicate, *, seed_axis: bool = False) -> jax.Array:
    """Fraction of prunable weights kept (one value, or one per seed with ``seed_axis``)."""
    kept, total = count(mask, prunable, seed_axis=seed_axis)
    return kept / total


def layer_densities(mask: Any, prunable: Predicate, *, seed_axis: bool = False) -> dict[str, jax.Array]:
    """``{path_str: kept/total}`` for every prunable leaf."""
    return {k: kept / total for k, (kept, total) in layer_counts(mask, prunable, seed_axis=seed_axis).items()}
