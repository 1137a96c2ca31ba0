"""Pruning masks: pytrees of 0/1 with exactly the structure, shapes and dtypes of the params.

A mask never has ``None`` leaves; leaves that are not prunable are all ones. Which leaves are
prunable is decided by a predicate over the leaf's *path* in the unbatched params tree, e.g.
``is_prunable(("fc1", "kernel")) -> True`` — never by ``ndim``, because with a leading seed axis
a bias looks 2-D. Functions taking ``prunable`` accept either such a predicate or the static
tree of Python bools made by :func:`prunable_tree`.

Every function works on a seed-stacked tree (a leading seed axis on every leaf) as well: the
paths are the same, and the counting functions take ``seed_axis=True`` to return one value per
seed (or can be wrapped in ``jax.vmap``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Union

import jax
import jax.numpy as jnp

Path = tuple[str, ...]
Predicate = Callable[[Path], bool]
Prunable = Union[Predicate, Any]  # a predicate, or a pytree of Python bools


class MaskError(ValueError):
    """A mask (or prunability tree) that does not fit the params it is used with."""


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_path(keypath: Iterable[Any]) -> Path:
    """A ``jax.tree_util`` key path as a tuple of strings, e.g. ``("fc1", "kernel")``."""
    return tuple(_key_name(entry) for entry in keypath)


def path_str(path: Path) -> str:
    """``("fc1", "kernel") -> "fc1/kernel"`` (the form used in reports and ignore regexes)."""
    return "/".join(str(p) for p in path)


def paths(tree: Any) -> list[Path]:
    """The path of every leaf, in ``jax.tree_util`` leaf order."""
    return [leaf_path(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def prunable_tree(params: Any, is_prunable: Predicate) -> Any:
    """A pytree of Python bools (static), ``True`` where ``is_prunable(path)``."""
    if not callable(is_prunable):
        raise MaskError(f"is_prunable must be a callable over path tuples, got {type(is_prunable).__name__}")
    return jax.tree_util.tree_map_with_path(lambda kp, _: bool(is_prunable(leaf_path(kp))), params)


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


def prunable_flags(tree: Any, prunable: Prunable) -> list[bool]:
    """One static bool per leaf of ``tree`` (in leaf order)."""
    if callable(prunable):
        return [bool(prunable(p)) for p in paths(tree)]
    flags, flag_def = jax.tree_util.tree_flatten(prunable)
    tree_def = jax.tree_util.tree_structure(tree)
    if flag_def != tree_def:
        raise MaskError(f"prunable tree structure {flag_def} does not match {tree_def}")
    try:
        return [bool(f) for f in flags]
    except jax.errors.ConcretizationTypeError:
        raise MaskError("prunable must hold static Python bools, not traced arrays") from None


def check_like(tree: Any, params: Any, what: str = "mask") -> None:
    """Raise :class:`MaskError` unless ``tree`` has the structure and leaf shapes of ``params``."""
    tree_def = jax.tree_util.tree_structure(tree)
    params_def = jax.tree_util.tree_structure(params)
    if tree_def != params_def:
        raise MaskError(f"{what} structure {tree_def} does not match params structure {params_def}")
    for path, a, b in zip(paths(params), jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(params)):
        if jnp.shape(a) != jnp.shape(b):
            raise MaskError(f"{what} leaf {path_str(path)} has shape {jnp.shape(a)}, params have {jnp.shape(b)}")


def ones_like(params: Any) -> Any:
    """The dense mask: ones everywhere, in each leaf's dtype."""
    return jax.tree_util.tree_map(jnp.ones_like, params)


def apply(params: Any, mask: Any) -> Any:
    """``params * mask`` leaf by leaf (pruned weights become exactly zero)."""
    check_like(mask, params)
    return jax.tree_util.tree_map(lambda p, m: p * jnp.asarray(m, p.dtype), params, mask)


def _leaf_counts(leaf: jax.Array, seed_axis: bool) -> tuple[jax.Array, int]:
    leaf = jnp.asarray(leaf)
    if seed_axis:
        if leaf.ndim == 0:
            raise MaskError("seed_axis=True needs a leading seed axis on every leaf")
        axes = tuple(range(1, leaf.ndim))
        return jnp.sum(leaf != 0, axis=axes, dtype=jnp.int32), leaf.size // leaf.shape[0]
    return jnp.sum(leaf != 0, dtype=jnp.int32), leaf.size


def layer_counts(mask: Any, prunable: Prunable, *, seed_axis: bool = False) -> dict[str, tuple[jax.Array, int]]:
    """``{path_str: (kept, total)}`` for every prunable leaf (``kept`` per seed with ``seed_axis``)."""
    flags = prunable_flags(mask, prunable)
    out = {}
    for path, leaf, flag in zip(paths(mask), jax.tree_util.tree_leaves(mask), flags):
        if flag:
            out[path_str(path)] = _leaf_counts(leaf, seed_axis)
    return out


def count(mask: Any, prunable: Prunable, *, seed_axis: bool = False) -> tuple[jax.Array, int]:
    """``(kept, total)`` over all prunable leaves: ``kept`` an int32 array (shape ``()``, or
    ``(seeds,)`` with ``seed_axis``), ``total`` a Python int (per seed)."""
    counts = layer_counts(mask, prunable, seed_axis=seed_axis)
    if not counts:
        raise MaskError("no prunable leaves: the predicate matched no parameter path")
    kept = sum(c for c, _ in counts.values())
    total = sum(t for _, t in counts.values())
    return kept, total


def density(mask: Any, prunable: Prunable, *, seed_axis: bool = False) -> jax.Array:
    """Fraction of prunable weights kept (one value, or one per seed with ``seed_axis``)."""
    kept, total = count(mask, prunable, seed_axis=seed_axis)
    return kept / total


def layer_densities(mask: Any, prunable: Prunable, *, seed_axis: bool = False) -> dict[str, jax.Array]:
    """``{path_str: kept/total}`` for every prunable leaf."""
    return {k: kept / total for k, (kept, total) in layer_counts(mask, prunable, seed_axis=seed_axis).items()}


def is_nested(new: Any, old: Any) -> jax.Array:
    """True iff every weight kept by ``new`` is kept by ``old`` (pruning never revives)."""
    check_like(new, old, "new mask")
    pairs = zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(old))
    checks = [jnp.all((n == 0) | (o != 0)) for n, o in pairs]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)
