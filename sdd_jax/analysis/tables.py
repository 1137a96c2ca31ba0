"""The analysis as numbers: everything the figures and the report use, gathered from the run's
``results.csv`` and the cached steps (:func:`collect`), and written as CSV files (:func:`write`).

Files under ``RUN_DIR/analysis/`` (accuracies are fractions, losses in nats):

* ``correlations.csv``  scope, candidate, method (spearman/kendall), value, ci_low, ci_high, levels
* ``phase_stats.csv``   quantity (dense/worst/best/dip/recovery/gain), level, value, ci_low, ci_high
* ``levels.csv``        per level and seed: density, test accuracy, sharpness (λmax, Hutchinson
  trace and its standard error), calibration (ECE, NLL, Brier) and memorisation
* ``redense.csv``       per chosen level, epoch and seed: stage, train (noisy, clean, memorised)
  and test metrics
* ``interpolation.csv`` per chosen level, α and seed
* ``landscape.csv``     per chosen level, solution (sparse/redense), α and seed

A chosen level with no pruned weight (the dense level 0) is not re-densed: it has no rows in
``redense.csv`` and ``interpolation.csv``, and only its ``sparse`` solution in ``landscape.csv``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from sdd_jax.analysis import stats
from sdd_jax.atomic import atomic_write_text
from sdd_jax.describe import describe
from sdd_jax.phases import phases
from sdd_jax.results import aggregate, read_results_csv

# Candidate explanations of the test accuracy across levels: label -> column.
CANDIDATES = {
    "learning distance from θ0": "learning_distance",
    "learning distance from θ0, unpruned": "learning_distance_unpruned",
    "learning distance from θk": "learning_distance_rewind",
    "learning distance from θk, unpruned": "learning_distance_rewind_unpruned",
    "λmax": "lambda_max",
    "Hessian trace": "hessian_trace",
    "train accuracy": "train_acc",
}
RESULT_COLUMNS = (
    "density",
    "test_acc",
    "test_acc_best",
    "train_acc",
    "train_acc_clean",
    "train_loss",
    "test_loss",
    "learning_distance",
    "learning_distance_unpruned",
    "learning_distance_rewind",
    "learning_distance_rewind_unpruned",
)


def _matrix(rows: list[dict], column: str, seeds: list[int], levels: list[int]) -> np.ndarray:
    """(seeds, levels) values of ``column`` (NaN where absent)."""
    out = np.full((len(seeds), len(levels)), np.nan)
    si, li = {s: i for i, s in enumerate(seeds)}, {lv: i for i, lv in enumerate(levels)}
    for r in rows:
        v = r.get(column)
        if v is not None and r["seed"] in si and r["level"] in li:
            out[si[r["seed"]], li[r["level"]]] = float(v)
    return out


def collect(rows: list[dict], per_level: dict, chosen: dict, cfg, run, exp) -> dict:
    """Everything the tables, figures and report need, as plain numbers (see the module doc)."""
    seeds = list(exp.seeds)
    levels = sorted(per_level)
    per_seed = {c: _matrix(rows, c, seeds, levels) for c in RESULT_COLUMNS}
    for name, key in (("lambda_max", "lambda_max"), ("hessian_trace", "trace"), ("hessian_trace_se", "trace_se")):
        per_seed[name] = np.array([per_level[lv]["sharpness"][key] for lv in levels], np.float64).T
    for key in ("ece", "nll", "brier", "noisy_subset_acc_noisy", "noisy_subset_acc_true"):
        per_seed[key] = np.array([per_level[lv]["calibration"][key] for lv in levels], np.float64).T
    agg = aggregate(rows)
    labels = phases(agg)
    boot = {"n_resamples": cfg.bootstrap, "confidence": cfg.confidence, "seed": cfg.seed}
    scopes = {"all levels": np.ones(len(levels), bool)}
    before = np.array([p != "collapsed" for p in labels])
    if not before.all():
        scopes["before the collapse"] = before
    candidates = {label: per_seed[col] for label, col in CANDIDATES.items()}
    correlations = stats.correlation_table(per_seed["test_acc"], candidates, np.array(levels), scopes, **boot)
    phase_rows = []
    roles = {role: lv for role, lv in _roles(per_seed["test_acc"], levels).items()}
    if {"dense", "worst", "best"} <= set(roles):
        phase_rows = stats.phase_statistics(
            per_seed["test_acc"], np.array(levels), roles["dense"], roles["worst"], roles["best"], **boot
        )
    reinit = None
    reinit_csv = run.path / "branches" / "reinit" / "results.csv"
    if reinit_csv.is_file():
        reinit_rows = read_results_csv(reinit_csv)
        if reinit_rows:
            reinit = aggregate(reinit_rows)
    reliability = {
        role: {
            k: per_level[c["level"]]["calibration"][k] for k in ("bin_count", "bin_confidence", "bin_accuracy", "ece")
        }
        for role, c in chosen.items()
    }
    return {
        "run": run.path.name,
        "name": exp.config.name,
        "description": describe(exp.config),
        "seeds": seeds,
        "levels": levels,
        "phases": labels,
        "density": np.nanmean(per_seed["density"], axis=0),
        "per_seed": per_seed,
        "chosen": chosen,
        "correlations": correlations,
        "phase_stats": phase_rows,
        "reinit": reinit,
        "reliability": reliability,
        "ece_bins": cfg.ece_bins,
        "schedule": exp.config.pruning.schedule,
        "has_batch_norm": any(c["interpolation"].get("batch_norm_batches") for c in redensed(chosen).values()),
    }


def redensed(chosen: dict) -> dict:
    """The chosen levels that were re-densed (a level with no pruned weight is not)."""
    return {role: c for role, c in chosen.items() if c["redense"] is not None}


def _roles(test_acc: np.ndarray, levels: list[int]) -> dict[str, int]:
    """dense, worst (lowest mean test accuracy before the best) and best (highest over the sparse
    levels) of the mean curve."""
    mean = np.nanmean(test_acc, axis=0)
    if len(levels) < 3:
        return {}
    best = 1 + int(np.argmax(mean[1:]))
    if best < 2:
        return {}
    worst = 1 + int(np.argmin(mean[1:best]))
    return {"dense": levels[0], "worst": levels[worst], "best": levels[best]}


def _csv(columns: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            ["" if v is None else (repr(float(v)) if isinstance(v, (float, np.floating)) else v) for v in row]
        )
    return buf.getvalue()


def _value(v, i):
    if v is None:
        return None
    v = v[i] if isinstance(v, (list, tuple)) else v
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def write(root: Path, data: dict) -> list[str]:
    """Write the CSV files of the module docstring under ``root``; returns their paths."""
    seeds, levels, ps = data["seeds"], data["levels"], data["per_seed"]
    files = {}
    files["correlations.csv"] = _csv(
        ["scope", "candidate", "method", "value", "ci_low", "ci_high", "levels"],
        [
            [r[k] for k in ("scope", "candidate", "method", "value", "ci_low", "ci_high", "levels")]
            for r in data["correlations"]
        ],
    )
    files["phase_stats.csv"] = _csv(
        ["quantity", "level", "value", "ci_low", "ci_high"],
        [[r[k] for k in ("quantity", "level", "value", "ci_low", "ci_high")] for r in data["phase_stats"]],
    )
    level_cols = [
        "density",
        "test_acc",
        "train_acc",
        "lambda_max",
        "hessian_trace",
        "hessian_trace_se",
        "ece",
        "nll",
        "brier",
        "noisy_subset_acc_noisy",
        "noisy_subset_acc_true",
    ]
    files["levels.csv"] = _csv(
        ["level", "phase", "seed", *level_cols],
        [
            [lv, data["phases"][j], s, *[ps[c][i, j] for c in level_cols]]
            for j, lv in enumerate(levels)
            for i, s in enumerate(seeds)
        ],
    )
    keys = ("train_loss", "train_acc", "train_acc_clean", "train_acc_noisy_subset", "test_loss", "test_acc")
    rows = []
    for role, c in redensed(data["chosen"]).items():
        cv = c["redense"]["curves"]
        for e, stage in enumerate(cv["stage"]):
            for i, s in enumerate(seeds):
                rows.append([role, c["level"], cv["epoch"][e], stage, s, *[_value(cv[k][e], i) for k in keys]])
    files["redense.csv"] = _csv(["role", "level", "epoch", "stage", "seed", *keys], rows)
    ikeys = ("train_loss", "train_acc", "train_loss_clean", "train_acc_clean", "test_loss", "test_acc")
    rows = []
    for role, c in redensed(data["chosen"]).items():
        it = c["interpolation"]
        for i, s in enumerate(seeds):
            for p, a in enumerate(it["alpha"]):
                rows.append([role, c["level"], a, s, *[it[k][i][p] for k in ikeys]])
    files["interpolation.csv"] = _csv(["role", "level", "alpha", "seed", *ikeys], rows)
    lkeys = ("train_loss", "train_acc", "train_loss_clean", "test_loss", "test_acc")
    rows = []
    for role, c in data["chosen"].items():
        ls = c["landscape"]
        for solution in [name for name in ("sparse", "redense") if name in ls]:
            for i, s in enumerate(seeds):
                for p, a in enumerate(ls["alpha"]):
                    rows.append([role, c["level"], solution, a, s, *[ls[solution][k][i][p] for k in lkeys]])
    files["landscape.csv"] = _csv(["role", "level", "solution", "alpha", "seed", *lkeys], rows)
    paths = []
    for name, text in files.items():
        atomic_write_text(root / name, text)
        paths.append(str(root / name))
    return paths
