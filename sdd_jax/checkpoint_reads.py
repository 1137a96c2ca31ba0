"""Reading one checkpoint step back for :class:`sdd_jax.checkpoints.RunStore`: abstract restore
targets, the check of a target against what was saved, and the restore itself, with every
orbax/tensorstore/JSON failure turned into one :class:`UnreadableCheckpointError` naming the step.

A step folder holds two orbax items: ``state`` (the tree, :data:`TREE_ITEM`) and ``metrics`` (a
JSON dict, :data:`METRICS_ITEM`); it is finished once orbax wrote :data:`COMMIT_FILE` into it and
renamed it to its final name. Targets are restored against abstract trees
(``jax.ShapeDtypeStruct``), as orbax recommends, so no array is allocated twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from sdd_jax import storage
from sdd_jax.checkpoint_errors import (
    CheckpointError,
    CheckpointNotFoundError,
    TreeMismatchError,
    UnreadableCheckpointError,
    first_line,
)
from sdd_jax.masks import path_str

__all__ = [
    "COMMIT_FILE",
    "METRICS_ITEM",
    "TREE_ITEM",
    "abstract_tree",
    "check_target",
    "is_finished",
    "restore_step",
    "saved_target",
]

COMMIT_FILE = "commit_success.txt"  # written by orbax into a step just before its final rename
TREE_ITEM = "state"
METRICS_ITEM = "metrics"


def is_finished(step_dir: Path) -> bool:
    """Whether ``step_dir`` is a finished step (final name and :data:`COMMIT_FILE`)."""
    return step_dir.is_dir() and (step_dir / COMMIT_FILE).is_file()


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def abstract_tree(tree: Any) -> Any:
    """Replace every array leaf by a ``jax.ShapeDtypeStruct`` (jax arrays keep their sharding).

    Python scalars stay as they are (orbax restores them by value type); typed PRNG keys keep
    their key dtype and are restored as typed keys.
    """

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
        if isinstance(x, (np.ndarray, np.generic)):
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
        if isinstance(x, (bool, int, float)):
            return x
        raise CheckpointError(f"cannot checkpoint or restore a leaf of type {type(x).__name__}")

    return jax.tree.map(leaf, tree)


def check_target(saved_meta: Any, target: Any, where: str) -> None:
    """Raise :class:`TreeMismatchError` unless ``target`` has the saved paths, shapes and dtypes."""
    saved = {path_str(p) or "<root>": leaf for p, leaf in jax.tree_util.tree_flatten_with_path(saved_meta)[0]}
    wanted = {path_str(p) or "<root>": leaf for p, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}
    problems = [f"  missing in target: {k}" for k in sorted(set(saved) - set(wanted))]
    problems += [f"  not in checkpoint: {k}" for k in sorted(set(wanted) - set(saved))]
    for key in sorted(set(saved) & set(wanted)):
        meta, want = saved[key], wanted[key]
        if isinstance(want, (bool, int, float)):
            if tuple(getattr(meta, "shape", ())) != ():
                problems.append(f"  {key}: target is a scalar, saved shape {meta.shape}")
            continue
        if _is_key(want):  # typed keys are stored as their key data
            want = jax.eval_shape(jax.random.key_data, want)
        if isinstance(meta, ocp.metadata.ScalarMetadata) and want.shape == ():
            # a Python scalar was saved (stored as 64-bit); any scalar of the same kind fits
            if np.dtype(meta.dtype).kind == np.dtype(want.dtype).kind or {
                np.dtype(meta.dtype).kind,
                np.dtype(want.dtype).kind,
            } <= {"i", "u"}:
                continue
        if tuple(meta.shape) != tuple(want.shape) or np.dtype(meta.dtype) != np.dtype(want.dtype):
            problems.append(
                f"  {key}: saved {np.dtype(meta.dtype).name}{list(meta.shape)}, "
                f"target {np.dtype(want.dtype).name}{list(want.shape)}"
            )
    if problems:
        raise TreeMismatchError(f"restore target does not match {where}:\n" + "\n".join(problems[:20]))


def saved_target(manager: ocp.CheckpointManager, step: int, what: str) -> Any:
    """The saved tree's shapes and dtypes (``jax.ShapeDtypeStruct`` on this host's first
    device), read from the checkpoint's metadata: a restore target needing no model."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
        saved = manager.item_metadata(step)[TREE_ITEM]
        saved = saved.tree if hasattr(saved, "tree") else saved
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), saved)
    except Exception as err:  # noqa: BLE001
        raise UnreadableCheckpointError(
            f"{what}: {manager.directory / str(step)} is unreadable ({first_line(err)})",
            storage.as_path(manager.directory) / str(step),
        ) from None


def restore_step(
    manager: ocp.CheckpointManager, directory: Path, step: int, target: Any, metrics: bool, what: str
) -> tuple[Any, dict | None]:
    """``(tree, metrics)`` of the finished ``step`` in ``directory`` (``None`` for the tree when
    ``target`` is ``None``, for the metrics when ``metrics`` is false). The tree is restored into
    :func:`abstract_tree` of ``target`` after :func:`check_target`. Raises
    :class:`CheckpointNotFoundError` (no finished step), :class:`TreeMismatchError` or
    :class:`UnreadableCheckpointError` (its files do not read back; ``path``: the step)."""
    if not is_finished(directory / str(step)):
        raise CheckpointNotFoundError(f"{what}: no finished checkpoint in {directory / str(step)}")
    step_dir = directory / str(step)
    args = {}
    try:
        if target is not None:
            abstract = abstract_tree(target)
            saved = manager.item_metadata(step)[TREE_ITEM]
            if saved is None:
                raise CheckpointError(f"no {TREE_ITEM!r} item")
            check_target(saved.tree if hasattr(saved, "tree") else saved, abstract, what)
            args[TREE_ITEM] = ocp.args.StandardRestore(abstract)
        if metrics:
            args[METRICS_ITEM] = ocp.args.JsonRestore()
        restored = manager.restore(step, args=ocp.args.Composite(**args))
        if metrics and not isinstance(restored[METRICS_ITEM], dict):
            raise CheckpointError(f"no {METRICS_ITEM!r} item")
    except TreeMismatchError:
        raise
    except Exception as err:  # noqa: BLE001 - orbax/tensorstore/json raise many kinds
        raise UnreadableCheckpointError(f"{what}: {step_dir} is unreadable ({first_line(err)})", step_dir) from None
    return (restored[TREE_ITEM] if target is not None else None), (restored[METRICS_ITEM] if metrics else None)
