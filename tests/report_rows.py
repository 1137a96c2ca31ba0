"""Result rows shaped like the paper's Fig. 1, shared by the tests of ``sdd_jax.phases``,
``table``, ``figure`` and ``report`` (``tests/`` is on ``sys.path`` when pytest runs them)."""

import numpy as np


def segment_curves(n_light, n_critical, n_sweet, n_collapsed, rng):
    """Mean train/test curves (dense level first) shaped like the paper's Fig. 1, with the
    given number of levels in each phase, and the labels they are built to have."""
    train, test = [], []
    dense_test = 0.86
    # light: memorises (train ~1), test dips below dense
    for i in range(n_light):
        train.append(1.0 - rng.uniform(0.0, 0.005))
        test.append(dense_test - 0.06 * i / max(n_light, 1))
    # critical: train falls off the plateau, test climbs but stays below the sweet spot
    for i in range(n_critical):
        frac = (i + 1) / (n_critical + 1)
        train.append(0.95 - 0.12 * frac)
        test.append(0.80 + 0.12 * frac)
    # sweet: best test accuracy, train at the clean-label level
    for i in range(n_sweet):
        train.append(0.81 - 0.002 * i)
        test.append(0.965 - 0.004 * abs(i - n_sweet // 2) * (1 if i else 0.5))
    # collapsed: both crash
    for i in range(n_collapsed):
        train.append(0.5 / (i + 1))
        test.append(0.6 / (i + 1))
    labels = ["light"] * n_light + ["critical"] * n_critical + ["sweet"] * n_sweet + ["collapsed"] * n_collapsed
    return np.array(train), np.array(test), labels


def paper_like_rows(seeds=2, branch="imp", rng_seed=1):
    rng = np.random.default_rng(rng_seed)
    train, test, _ = segment_curves(5, 4, 3, 3, np.random.default_rng(7))
    rows = []
    for seed in range(seeds):
        for level, (tr, te) in enumerate(zip(train, test)):
            density = 0.8**level
            rows.append(
                {
                    "seed": seed,
                    "level": level,
                    "density": density,
                    "sparsity": 1 - density,
                    "train_acc": float(np.clip(tr + rng.normal(0, 1e-3), 0, 1)),
                    "train_acc_clean": 1.0,
                    "train_acc_noisy_subset": float(max(0.0, (tr - 0.8) * 5)),
                    "train_loss": 0.1,
                    "test_acc": float(te + rng.normal(0, 1e-3)),
                    "test_acc_best": float(te),
                    "test_loss": 0.5,
                    "learning_distance": 0.1 * level + float(rng.normal(0, 1e-3)),
                    "learning_distance_unpruned": float("nan"),
                    "branch": branch,
                }
            )
    return rows
