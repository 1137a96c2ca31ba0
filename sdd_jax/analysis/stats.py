"""Statistics over seeds and levels (host side, numpy/scipy): bootstrap intervals over seeds,
rank correlations across levels, and the phase statistics of a sparse double descent curve.

A per-seed quantity is an array ``(seeds, levels)``. Every statistic is computed on the mean
curve over seeds; its interval comes from resampling the seeds with replacement
(``scipy.stats.bootstrap``, percentile method) and recomputing the statistic on the resampled
mean curve. A resample can be degenerate (with two seeds, one seed's candidate constant over the
levels, e.g. memorisation saturated at 1, makes the rank correlation of that seed's resample
undefined): its NaN statistic is dropped, the percentiles are taken over the defined ones, and the
number dropped is reported with the interval (``ci_dropped``). With one seed there is nothing to
resample: the interval is undefined (NaN), not the zero-width ``[value, value]``. With few seeds
the intervals are coarse (two seeds give three distinct resamples): they say how much the
statistic depends on which seeds were trained, not more.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import stats as sps

CORRELATIONS = ("spearman", "kendall")


def rank_correlation(x: np.ndarray, y: np.ndarray, method: str = "spearman") -> float:
    """Spearman's ρ (``scipy.stats.spearmanr``) or Kendall's τ-b (``scipy.stats.kendalltau``)
    between two 1-D arrays over their finite pairs; NaN for fewer than 3 pairs or a constant
    input."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    fn = {"spearman": sps.spearmanr, "kendall": sps.kendalltau}[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(x[ok], y[ok]).statistic)


class Interval(NamedTuple):
    """A statistic and its bootstrap interval: ``value`` on the full data, ``low``/``high`` (NaN
    when undefined) and ``dropped``, the number of resamples whose statistic was not finite."""

    value: float
    low: float
    high: float
    dropped: int


def bootstrap_interval(
    per_seed: tuple[np.ndarray, ...],
    statistic: Callable[..., float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``statistic(*means)`` on the means over seeds of the arrays ``per_seed`` (each (seeds, ...),
    the same seeds in the same order: resampled together), and its percentile bootstrap interval
    at ``confidence`` from ``n_resamples`` resamples of the seeds (``scipy.stats.bootstrap``,
    ``numpy`` generator seeded with ``seed``). Resamples with a non-finite statistic are dropped
    (``dropped``) and the percentiles (linear interpolation, as scipy's) taken over the others;
    without such resamples the interval is scipy's own. NaN bounds: a statistic that is NaN on the
    full data, a single seed (nothing to resample), or every resample dropped."""
    arrays = [np.asarray(a, np.float64) for a in per_seed]
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError("every per-seed array needs the same number of seeds")

    def on(index):
        index = np.asarray(index, int)
        return statistic(*[np.nanmean(a[index], axis=0) for a in arrays])

    value = float(on(np.arange(n)))
    if not np.isfinite(value) or n < 2:
        return Interval(value, float("nan"), float("nan"), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sps.bootstrap(
            (np.arange(n),),
            on,
            n_resamples=int(n_resamples),
            vectorized=False,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    lo, hi = result.confidence_interval
    distribution = np.asarray(result.bootstrap_distribution, np.float64)
    finite = np.isfinite(distribution)
    dropped = int(distribution.size - finite.sum())
    if dropped and finite.any():
        tail = (1.0 - confidence) / 2
        lo, hi = np.quantile(distribution[finite], [tail, 1.0 - tail])
    elif dropped:
        lo = hi = float("nan")
    return Interval(value, float(lo), float(hi), dropped)


def bootstrap_over_seeds(
    per_seed: tuple[np.ndarray, ...],
    statistic: Callable[..., float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(value, low, high)`` of :func:`bootstrap_interval` (without the count of dropped
    resamples)."""
    return bootstrap_interval(per_seed, statistic, n_resamples=n_resamples, confidence=confidence, seed=seed)[:3]


def correlation_table(
    test_acc: np.ndarray,
    candidates: dict[str, np.ndarray],
    levels: np.ndarray,
    scopes: dict[str, np.ndarray] | None = None,
    **bootstrap,
) -> list[dict]:
    """Rows ``{scope, candidate, method, value, ci_low, ci_high, ci_dropped, levels}``: the rank
    correlation across levels between the mean test accuracy and the mean of each candidate (each
    (seeds, levels)), for each scope (a boolean mask over levels; default all levels), with
    bootstrap intervals over seeds (:func:`bootstrap_interval`; ``ci_dropped`` resamples had an
    undefined correlation)."""
    scopes = scopes or {"all": np.ones(len(levels), bool)}
    rows = []
    for scope, keep in scopes.items():
        for name, values in candidates.items():
            for method in CORRELATIONS:

                def stat(t, c, method=method, keep=keep):
                    return rank_correlation(t[keep], c[keep], method)

                value, lo, hi, dropped = bootstrap_interval((test_acc, values), stat, **bootstrap)
                rows.append(
                    {
                        "scope": scope,
                        "candidate": name,
                        "method": method,
                        "value": value,
                        "ci_low": lo,
                        "ci_high": hi,
                        "ci_dropped": dropped,
                        "levels": int(np.sum(keep)),
                    }
                )
    return rows


def phase_statistics(
    test_acc: np.ndarray, levels: np.ndarray, dense: int, worst: int, best: int, **bootstrap
) -> list[dict]:
    """Rows ``{quantity, level, value, ci_low, ci_high, ci_dropped}`` for the mean test accuracy at the
    ``dense``, ``worst`` and ``best`` levels, the ``dip`` (dense − worst) and the ``recovery``
    (best − worst) and the ``gain`` (best − dense), with bootstrap intervals over seeds. The three
    levels are fixed (chosen on the full mean curve); only the seeds are resampled."""
    levels = list(np.asarray(levels).tolist())
    i_dense, i_worst, i_best = levels.index(dense), levels.index(worst), levels.index(best)
    quantities = {
        "dense": (dense, lambda t: t[i_dense]),
        "worst": (worst, lambda t: t[i_worst]),
        "best": (best, lambda t: t[i_best]),
        "dip": (None, lambda t: t[i_dense] - t[i_worst]),
        "recovery": (None, lambda t: t[i_best] - t[i_worst]),
        "gain": (None, lambda t: t[i_best] - t[i_dense]),
    }
    rows = []
    for name, (level, fn) in quantities.items():
        value, lo, hi, dropped = bootstrap_interval((test_acc,), fn, **bootstrap)
        rows.append(
            {"quantity": name, "level": level, "value": value, "ci_low": lo, "ci_high": hi, "ci_dropped": dropped}
        )
    return rows
