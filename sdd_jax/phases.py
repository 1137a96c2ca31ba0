"""The four phases of sparse double descent (He et al., ICML 2022, Fig. 1): light, critical,
sweet and collapsed, labelled on the mean train and test accuracy curves of a pruning run,
ordered from the dense model to the sparsest one.

Host only: numpy and the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdd_jax.results import ResultsError

PHASES: tuple[str, ...] = ("light", "critical", "sweet", "collapsed")


def phase_boundaries(
    train: Sequence[float],
    test: Sequence[float],
    *,
    tol_train: float = 0.02,
    tol_sweet: float = 0.01,
    tol_collapse: float = 0.01,
    collapse_train_drop: float = 0.10,
) -> tuple[int, int, int]:
    """Indices ``(L, S, C)`` with ``1 <= L <= S <= C <= n`` splitting mean curves ordered from
    dense to sparse into light ``[0, L)``, critical ``[L, S)``, sweet ``[S, C)`` and collapsed
    ``[C, n)``. See :func:`phases` for the rule."""
    tr = np.asarray(train, dtype=np.float64)
    te = np.asarray(test, dtype=np.float64)
    if tr.ndim != 1 or tr.shape != te.shape:
        raise ResultsError(f"train and test curves must be 1-D of equal length, got {tr.shape}, {te.shape}")
    n = tr.size
    if n == 0:
        raise ResultsError("no levels to label")
    if not (np.all(np.isfinite(tr)) and np.all(np.isfinite(te))):
        raise ResultsError("train and test accuracy curves must be finite at every level")
    for name, tol in (
        ("tol_train", tol_train),
        ("tol_sweet", tol_sweet),
        ("tol_collapse", tol_collapse),
        ("collapse_train_drop", collapse_train_drop),
    ):
        if not tol >= 0:
            raise ResultsError(f"{name} must be >= 0, got {tol}")
    if n == 1:
        return 1, 1, 1

    # Light: the dense level and every following level that still memorises.
    below = np.nonzero(tr[1:] < tr[0] - tol_train)[0]
    light_end = int(below[0]) + 1 if below.size else n
    if light_end == n:
        return n, n, n

    # Sweet start: first level after memorisation within tol_sweet of the best sparse test acc,
    # provided that best generalises about as well as the dense net (a decline has no sweet phase).
    dense_test = te[0]
    best = float(np.max(te[1:]))
    near = np.nonzero(te[light_end:] >= best - tol_sweet)[0]
    sweet_start = int(near[0]) + light_end if near.size and best >= dense_test - tol_collapse else n

    if sweet_start < n:
        peak = sweet_start + int(np.argmax(te[sweet_start:]))
        after = np.arange(peak + 1, n)
        collapsed = (te[after] < dense_test - tol_collapse) | (tr[after] < tr[peak] - collapse_train_drop)
    else:
        after = np.arange(light_end, n)
        collapsed = te[after] < dense_test - tol_collapse
    hits = np.nonzero(collapsed)[0]
    collapse_start = int(after[hits[0]]) if hits.size else n
    if sweet_start == n:  # no sweet phase: critical runs up to the collapse
        sweet_start = collapse_start
    return light_end, sweet_start, collapse_start


def phase_labels(train: Sequence[float], test: Sequence[float], **tolerances: float) -> list[str]:
    """Phase of each level for mean curves ordered from dense to sparse (see :func:`phases`)."""
    light_end, sweet_start, collapse_start = phase_boundaries(train, test, **tolerances)
    n = len(train)
    labels = []
    for i in range(n):
        if i < light_end:
            labels.append("light")
        elif i < sweet_start:
            labels.append("critical")
        elif i < collapse_start:
            labels.append("sweet")
        else:
            labels.append("collapsed")
    return labels


def phases(
    agg: Sequence[Mapping[str, Any]],
    *,
    train_key: str = "train_acc",
    test_key: str = "test_acc",
    tol_train: float = 0.02,
    tol_sweet: float = 0.01,
    tol_collapse: float = 0.01,
    collapse_train_drop: float = 0.10,
) -> list[str]:
    """Label each level of one branch's :func:`~sdd_jax.results.aggregate` output with a phase
    of sparse double descent, returned in the order of ``agg``.

    The levels are ordered by ``level``; the first one (level 0, the dense model) is the
    reference, with mean train accuracy ``tr0`` and test accuracy ``te0`` (fractions). Let
    ``best`` be the highest mean test accuracy over the sparse levels (all but the first).

    * **light**: the dense level and the levels after it up to (excluding) the first sparse level
      whose train accuracy falls below ``tr0 - tol_train``: the net still memorises its
      (noisy) training set while its test accuracy dips or stays below the dense one.
    * **critical**: from the end of memorisation up to (excluding) the first level, at or after
      it, whose test accuracy is within ``tol_sweet`` of ``best``: train accuracy falls off the
      memorising plateau while test accuracy climbs out of its dip.
    * **sweet**: from there on, around the peak ``p`` (the best test accuracy from the sweet start
      onwards), up to (excluding) the first level after ``p`` that collapses. It starts after
      the light-phase dip whenever the dip lies more than ``tol_sweet`` below ``best``, and
      after ``p`` it keeps every level that still generalises about as well as the dense net.
    * **collapsed**: the first level after ``p`` whose test accuracy falls below
      ``te0 - tol_collapse``, or whose train accuracy falls more than ``collapse_train_drop``
      below its value at ``p``, and every level after it.

    Each phase is a contiguous run, so labels never go back in the order light -> critical ->
    sweet -> collapsed; any phase may be empty. A curve that never leaves the memorising plateau
    is all light (one level too); one whose test accuracy after memorisation never comes within
    ``tol_sweet`` of ``best``, or whose ``best`` stays below ``te0 - tol_collapse`` (test accuracy
    that only declines: no recovery, so no sweet spot), has no sweet phase, and its collapse is
    then the first level after memorisation below ``te0 - tol_collapse``.

    ``agg`` must hold one entry per level (filter rows to one branch first); the curves are read
    from ``f"{train_key}_mean"`` and ``f"{test_key}_mean"``.
    """
    if not agg:
        raise ResultsError("no levels to label")
    levels = [e.get("level") for e in agg]
    if len(set(levels)) != len(levels):
        raise ResultsError("phases() needs one entry per level; filter the rows to a single branch first")
    for key in (f"{train_key}_mean", f"{test_key}_mean"):
        if any(key not in e for e in agg):
            raise ResultsError(f"aggregate entries lack {key!r}")
    order = sorted(range(len(agg)), key=lambda i: levels[i])
    train = [agg[i][f"{train_key}_mean"] for i in order]
    test = [agg[i][f"{test_key}_mean"] for i in order]
    sorted_labels = phase_labels(
        train,
        test,
        tol_train=tol_train,
        tol_sweet=tol_sweet,
        tol_collapse=tol_collapse,
        collapse_train_drop=collapse_train_drop,
    )
    labels = [""] * len(agg)
    for rank, i in enumerate(order):
        labels[i] = sorted_labels[rank]
    return labels
