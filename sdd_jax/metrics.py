"""Host-side metrics in NumPy float64: learning distance and the memorisation split.

Learning distance as the paper defines it: ``D = ||theta_0 - m * theta_T||_2`` over the
prunable weights, with ``theta_0`` the dense model's initialisation at iteration 0 and
``theta_T`` the trained weights; a pruned coordinate counts as zero, so it contributes
``theta_0**2``. The variant over unpruned coordinates only is ``||m * (theta_T - theta_0)||_2``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from sdd_jax import masks as masks_lib


class MetricsError(ValueError):
    """Inputs that do not fit together (structures, shapes, label arrays)."""


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _leaf_terms(ref: np.ndarray, theta: np.ndarray, m: np.ndarray, axes) -> tuple[np.ndarray, np.ndarray]:
    keep = m != 0
    full = np.sum(np.square(ref - np.where(keep, theta, 0.0)), axis=axes)
    unpruned = np.sum(np.square(np.where(keep, theta - ref, 0.0)), axis=axes)
    return full, unpruned


def learning_distances(
    theta_ref: Any,
    params: Any,
    mask: Any,
    is_prunable: masks_lib.Predicate,
    *,
    seed_axis: bool = False,
) -> dict | list[dict]:
    """Learning distances of ``params`` (masked by ``mask``; ``None`` = dense) from ``theta_ref``.

    Returns ``{"learning_distance", "learning_distance_unpruned", "per_layer": {path_str:
    {"full", "unpruned"}}}`` as Python floats. With ``seed_axis=True`` every leaf of ``params``
    and ``mask`` has a leading seed axis and a list with one such dict per seed comes back;
    ``theta_ref`` may be stacked the same way or unstacked (shared by all seeds).
    """
    if mask is None:
        mask = jax.tree_util.tree_map(np.ones_like, params)
    try:
        masks_lib.check_like(mask, params)
    except masks_lib.MaskError as err:
        raise MetricsError(str(err)) from None
    if jax.tree_util.tree_structure(theta_ref) != jax.tree_util.tree_structure(params):
        raise MetricsError("theta_ref and params have different tree structures")
    flags = masks_lib.prunable_flags(params, is_prunable)
    if not any(flags):
        raise MetricsError("no prunable leaves: the predicate matched no parameter path")

    names = [masks_lib.path_str(p) for p in masks_lib.paths(params)]
    leaves = zip(
        names,
        flags,
        jax.tree_util.tree_leaves(theta_ref),
        jax.tree_util.tree_leaves(params),
        jax.tree_util.tree_leaves(mask),
    )
    per_layer = {}
    for name, flag, ref, theta, m in leaves:
        if not flag:
            continue
        ref, theta, m = _f64(ref), _f64(theta), np.asarray(m)
        if seed_axis:
            if theta.ndim == 0:
                raise MetricsError("seed_axis=True needs a leading seed axis on every leaf")
            if ref.shape == theta.shape[1:]:
                ref = np.broadcast_to(ref, theta.shape)
            axes = tuple(range(1, theta.ndim))
        else:
            axes = None
        if ref.shape != theta.shape:
            raise MetricsError(f"theta_ref leaf {name} has shape {ref.shape}, params have {theta.shape}")
        per_layer[name] = _leaf_terms(ref, theta, m, axes)

    def summary(select) -> dict:
        full = sum(select(v[0]) for v in per_layer.values())
        unpruned = sum(select(v[1]) for v in per_layer.values())
        return {
            "learning_distance": float(np.sqrt(full)),
            "learning_distance_unpruned": float(np.sqrt(unpruned)),
            "per_layer": {
                k: {"full": float(np.sqrt(select(v[0]))), "unpruned": float(np.sqrt(select(v[1])))}
                for k, v in per_layer.items()
            },
        }

    if not seed_axis:
        return summary(lambda x: x)
    seeds = next(iter(per_layer.values()))[0].shape[0]
    return [summary(lambda x, s=s: x[s]) for s in range(seeds)]


def accuracy_split(pred_labels: Any, y_noisy: Any, y_clean: Any, is_noisy: Any) -> dict:
    """Training accuracy split by label noise (float64, Python floats).

    ``train_acc``: agreement with the (noisy) training labels. ``train_acc_clean``: agreement
    with the clean labels, over all examples. ``train_acc_noisy_subset``: the fraction of the
    corrupted examples predicted as their noisy label (memorisation); NaN when none is corrupted.
    ``pred_labels`` may carry a leading seed axis: then each value is a list, one per seed.
    """
    pred = np.asarray(pred_labels)
    y_noisy, y_clean, is_noisy = np.asarray(y_noisy), np.asarray(y_clean), np.asarray(is_noisy)
    for name, arr in (("y_noisy", y_noisy), ("y_clean", y_clean), ("is_noisy", is_noisy)):
        if arr.ndim != 1:
            raise MetricsError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.shape[0] != y_noisy.shape[0]:
            raise MetricsError(f"{name} has {arr.shape[0]} examples, y_noisy has {y_noisy.shape[0]}")
    if pred.ndim not in (1, 2) or pred.shape[-1] != y_noisy.shape[0]:
        raise MetricsError(f"pred_labels shape {pred.shape} does not end in {y_noisy.shape[0]} examples")
    if y_noisy.shape[0] == 0:
        raise MetricsError("no examples")
    if is_noisy.dtype != bool:
        raise MetricsError(f"is_noisy must be boolean, got {is_noisy.dtype}")

    hit_noisy = (pred == y_noisy).astype(np.float64)
    hit_clean = (pred == y_clean).astype(np.float64)
    n_noisy = int(is_noisy.sum())
    train_acc = hit_noisy.mean(axis=-1)
    train_acc_clean = hit_clean.mean(axis=-1)
    if n_noisy:
        memorised = hit_noisy[..., is_noisy].mean(axis=-1)
    else:
        memorised = np.full(train_acc.shape, np.nan)
    out = {"train_acc": train_acc, "train_acc_clean": train_acc_clean, "train_acc_noisy_subset": memorised}
    if pred.ndim == 1:
        return {k: float(v) for k, v in out.items()}
    return {k: [float(x) for x in v] for k, v in out.items()}
