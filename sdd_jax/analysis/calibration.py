"""Calibration of a classifier's probabilities (host side, float64): expected calibration error
with 15 equal-width confidence bins (Guo, Pleiss, Sun, Weinberger, ICML 2017; bins ``(lo, hi]``
as their reference ``_ECELoss``), negative log-likelihood, the multi-class Brier score (Brier,
1950: ``Σ_k (p_k - [k = y])²`` averaged over examples, in [0, 2]) and the reliability diagram's
per-bin data; and memorisation measured against the noisy and the true labels.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from sdd_jax.metrics import accuracy_split

ECE_BINS = 15


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per bin of ``bins`` equal-width confidence bins ``(i/bins, (i+1)/bins]``: ``count``,
    mean ``confidence`` and ``accuracy`` (NaN in empty bins), and ``edges`` (bins + 1,)."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    if confidence.ndim != 1 or confidence.shape != correct.shape or confidence.size == 0:
        raise ValueError(
            f"confidence and correct must be 1-D of one non-zero length, got {confidence.shape} and {correct.shape}"
        )
    if bins < 1:
        raise ValueError(f"analysis.ece_bins must be >= 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # (lo, hi]: a confidence in (edges[i], edges[i+1]] goes to bin i; confidence 0 to bin 0.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, weights=confidence, minlength=bins) / count
        acc = np.bincount(index, weights=correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": conf, "accuracy": acc}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """``Σ_b (n_b / n)·|acc_b - conf_b|`` over the confidence bins (a fraction in [0, 1])."""
    r = reliability(confidence, correct, bins)
    used = r["count"] > 0
    n = r["count"].sum()
    return float(np.sum(r["count"][used] / n * np.abs(r["accuracy"][used] - r["confidence"][used])))


def calibration(logits: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """From ``logits`` (n, classes) and integer ``labels`` (n,): ``acc``, ``ece``, ``nll`` (mean
    ``-log p_y``, nats), ``brier`` and the ``reliability`` bins."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (n, classes) and labels (n,), got {logits.shape} and {labels.shape}")
    logp = log_softmax(logits, axis=-1)
    p = np.exp(logp)
    pred = np.argmax(logits, -1)
    correct = pred == labels
    onehot = np.zeros_like(p)
    onehot[np.arange(len(labels)), labels] = 1.0
    return {
        "acc": float(correct.mean()),
        "ece": expected_calibration_error(p.max(-1), correct, bins),
        "nll": float(-logp[np.arange(len(labels)), labels].mean()),
        "brier": float(np.sum((p - onehot) ** 2, axis=-1).mean()),
        "reliability": reliability(p.max(-1), correct, bins),
    }


def memorisation(pred: np.ndarray, y_noisy: np.ndarray, y_clean: np.ndarray) -> dict:
    """On the relabelled training examples (``y_noisy != y_clean``): the share predicted as their
    noisy label (``noisy_subset_acc_noisy``, the run's ``train_acc_noisy_subset``, from
    :func:`sdd_jax.metrics.accuracy_split`) and as their true label (``noisy_subset_acc_true``);
    NaN when no label was changed."""
    y_noisy, y_clean, pred = np.asarray(y_noisy), np.asarray(y_clean), np.asarray(pred)
    relabelled = y_noisy != y_clean
    split = accuracy_split(pred, y_noisy, y_clean, relabelled)
    true = float(np.mean(pred[relabelled] == y_clean[relabelled])) if relabelled.any() else float("nan")
    return {
        "train_acc": split["train_acc"],
        "train_acc_clean": split["train_acc_clean"],
        "noisy_subset_acc_noisy": split["train_acc_noisy_subset"],
        "noisy_subset_acc_true": true,
    }


def per_seed(logits: np.ndarray, pred: np.ndarray, dataset, bins: int) -> dict[str, list]:
    """Calibration and memorisation of each seed: ``logits`` (seeds, test examples, classes) on
    ``dataset.y_test``, ``pred`` (seeds, train examples) on the noisy and clean training labels;
    one list (over seeds) per quantity, the reliability diagram's bins as ``bin_*``."""
    out: dict[str, list] = {}
    for i in range(len(logits)):
        c = calibration(logits[i], dataset.y_test, bins)
        m = memorisation(pred[i], dataset.y_train, dataset.y_train_clean)
        for k, v in {
            "test_acc": c["acc"],
            "ece": c["ece"],
            "nll": c["nll"],
            "brier": c["brier"],
            **m,
            "bin_count": c["reliability"]["count"],
            "bin_confidence": c["reliability"]["confidence"],
            "bin_accuracy": c["reliability"]["accuracy"],
        }.items():
            out.setdefault(k, []).append(v)
    return out
