"""The analysis figures (PNG and SVG, drawn from :func:`sdd_jax.analysis.tables.collect`'s data
alone; matplotlib imported only here, bare ``Figure`` objects on the Agg canvas):

* ``redense``            train/test accuracy and loss per epoch, sparse then re-dense (Fig. 6)
* ``interpolation``      loss and accuracy from the sparse (α=0) to the re-dense (α=1) solution (Fig. 7)
  (both over the chosen levels that have pruned weights, and left out when none has)
* ``landscape``          1-D filter-normalised training loss curves, one line per sparsity (Fig. 8)
* ``distance_sharpness`` learning distances, λmax and the Hessian trace beside test accuracy
  against the remaining weights (Fig. 9/12)
* ``reinit``             lottery ticket vs random re-initialisation, when the run has a ``reinit``
  branch (Fig. 10)
* ``best_vs_last``       best-epoch vs last-epoch test accuracy (Fig. 11)
* ``generalisation_gap`` train − test accuracy (Fig. 32)
* ``level_curves``       train/test accuracy against epoch at the chosen levels (Fig. 35-36)
* ``reliability``        reliability diagrams at the chosen levels; ``calibration``: ECE, NLL and
  Brier score against the remaining weights

Means over seeds are drawn as lines, ± 1 sample standard deviation over seeds (``ddof=1``, as
the summary table) as bands where it helps; every figure's caption says what the run is and over
how many seeds it is averaged. Panels side by side (the chosen levels) share their y axis, so
that their heights compare; epoch axes have integer ticks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdd_jax import storage
from sdd_jax.analysis.tables import redensed
from sdd_jax.figure import X_TICKS, save_figure


def _figure(ncols: int, nrows: int = 1, width: float = 3.4, height: float = 2.8, sharey: str | bool = False):
    """A bare figure of ``nrows`` x ``ncols`` axes (``sharey="row"``: the panels of a row share
    their y axis)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=130)
    axes = np.array(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey))
    return fig, axes


def n_seeds(data: dict) -> int:
    """The seeds the figures average over (``data["seeds"]``, else the rows of the per-seed test
    accuracy)."""
    if "seeds" in data:
        return len(data["seeds"])
    return int(np.asarray(data["per_seed"]["test_acc"]).shape[0])


def caption(data: dict, what: str, band: bool = False, stat: str = "mean") -> str:
    """``what`` then the run's description and ``mean of N seeds`` (plus what a band is)."""
    n = n_seeds(data)
    seeds = f"{stat} of {n} seed{'s' if n != 1 else ''}"
    if band and n > 1:
        seeds += ", band ± 1 sd (ddof=1)"
    described = data.get("description")
    return f"{what}\n{described + ' — ' if described else ''}{seeds}"


def _caption(fig, data: dict, what: str, band: bool = False, stat: str = "mean") -> None:
    fig.suptitle(caption(data, what, band, stat), fontsize=9)


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _spread(y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) and mean ∓ 1 sample sd (``ddof=1``; no band with one seed)."""
    y = np.asarray(y, np.float64)
    mean = np.nanmean(y, axis=0)
    sd = np.nanstd(y, axis=0, ddof=1) if y.shape[0] > 1 else np.zeros_like(mean)
    return mean, mean - sd, mean + sd


def _sparsity_axis(ax, x: np.ndarray) -> None:
    """Reversed log axis of the remaining weights (%), as the paper's figures."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    left, right = float(np.max(x)) * 1.15, float(np.min(x)) / 1.15
    ax.set_xlim(left, right)
    ax.xaxis.set_major_locator(FixedLocator([t for t in X_TICKS if right <= t <= left]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.set_xlabel("remaining weights (%)")


def _mean(values) -> np.ndarray:
    """Per entry of ``values`` (a list over epochs of per-seed lists, or None where not
    evaluated): the mean over seeds, NaN where None."""
    return np.array([np.nan if v is None else float(np.mean(np.asarray(v, np.float64))) for v in values])


def _title(role: str, level: int, density: float) -> str:
    return f"{role} (level {level}, {100 * density:.3g}% weights)"


def _density_of(data: dict, level: int) -> float:
    return float(data["density"][data["levels"].index(level)])


def _save(fig, folder: Path, stem: str) -> list[str]:
    storage.mkdir(folder)
    fig.tight_layout()
    return save_figure(fig, folder / stem)


def redense(data: dict):
    chosen = redensed(data["chosen"])
    fig, axes = _figure(len(chosen), 2, sharey="row")
    for j, (role, c) in enumerate(chosen.items()):
        cv = c["redense"]["curves"]
        epochs = np.asarray(cv["epoch"])
        switch = sum(s == "sparse" for s in cv["stage"])
        for key, label, color in (
            ("train_acc", "train (noisy labels)", "C3"),
            ("train_acc_clean", "train (true labels)", "C1"),
            ("test_acc", "test", "C0"),
        ):
            y = 100 * _mean(cv[key])
            ok = np.isfinite(y)
            axes[0, j].plot(epochs[ok], y[ok], color=color, lw=1.2, label=label, gid=f"redense_{key}")
        for key, label, color in (("train_loss", "train (noisy labels)", "C3"), ("test_loss", "test", "C0")):
            y = _mean(cv[key])
            ok = np.isfinite(y)
            axes[1, j].plot(epochs[ok], y[ok], color=color, lw=1.2, label=label)
        for ax in axes[:, j]:
            ax.axvline(switch + 0.5, color="k", ls=":", lw=1)
            ax.set_xlabel("epoch")
            _integer_epochs(ax)
        axes[0, j].set_title(_title(role, c["level"], _density_of(data, c["level"])), fontsize=9)
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[1, 0].set_ylabel("loss")
    axes[0, 0].legend(fontsize=7)
    _caption(fig, data, "sparse training, then re-dense training (dotted line: weights released)")
    return fig


def interpolation(data: dict):
    chosen = redensed(data["chosen"])
    fig, axes = _figure(len(chosen), 2, sharey="row")
    for j, (role, c) in enumerate(chosen.items()):
        it = c["interpolation"]
        a = np.asarray(it["alpha"])
        for key, label, color in (
            ("train_loss", "train (noisy labels)", "C3"),
            ("train_loss_clean", "train (true labels)", "C1"),
            ("test_loss", "test", "C0"),
        ):
            axes[0, j].plot(a, np.mean(it[key], axis=0), color=color, lw=1.2, label=label, gid=f"interp_{key}")
        for key, label, color in (
            ("train_acc", "train (noisy labels)", "C3"),
            ("train_acc_clean", "train (true labels)", "C1"),
            ("test_acc", "test", "C0"),
        ):
            axes[1, j].plot(a, 100 * np.mean(it[key], axis=0), color=color, lw=1.2, label=label)
        axes[0, j].set_title(_title(role, c["level"], _density_of(data, c["level"])), fontsize=9)
        axes[1, j].set_xlabel("α (0: sparse, 1: re-dense)")
    axes[0, 0].set_ylabel("loss")
    axes[1, 0].set_ylabel("accuracy (%)")
    axes[0, 0].legend(fontsize=7)
    _caption(fig, data, "linear interpolation w(α) = (1−α)·w_sparse + α·w_redense")
    return fig


def landscape(data: dict):
    fig, axes = _figure(2, 1, width=4.2, height=3.2, sharey="row")
    for k, (solution, title) in enumerate(
        (("sparse", "sparse solutions (unpruned coordinates)"), ("redense", "re-dense solutions"))
    ):
        ax = axes[0, k]
        for j, (role, c) in enumerate(data["chosen"].items()):
            ls = c["landscape"]
            if solution not in ls:  # a level with no pruned weight: not re-densed
                continue
            d = _density_of(data, c["level"])
            ax.plot(
                ls["alpha"],
                np.mean(ls[solution]["train_loss"], axis=0),
                color=f"C{j}",
                lw=1.3,
                label=f"{role}, {100 * d:.3g}%",
                gid=f"landscape_{solution}_{c['level']}",
            )
            ax.plot(ls["alpha"], np.mean(ls[solution]["test_loss"], axis=0), color=f"C{j}", lw=1.0, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("α (filter-normalised direction)")
        ax.set_yscale("log")
    axes[0, 0].set_ylabel("loss (solid: train, dashed: test)")
    axes[0, 0].legend(fontsize=7)
    _caption(fig, data, "1-D loss curves along a filter-normalised direction")
    return fig


def _beside_test(ax, x, test, y, ylabel, color, gid):
    ax.plot(x, 100 * np.nanmean(test, axis=0), "o-", color="C0", ms=2.5, lw=1.2, label="test accuracy")
    ax.set_ylabel("test accuracy (%)", color="C0")
    ax2 = ax.twinx()
    mean, lo, hi = _spread(y)
    ax2.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    ax2.plot(x, mean, "^-", color=color, ms=2.5, lw=1.2, gid=gid)
    ax2.set_ylabel(ylabel, color=color)
    _sparsity_axis(ax, x)


def distance_sharpness(data: dict):
    ps, x = data["per_seed"], 100 * data["density"]
    fig, axes = _figure(2, 2, width=4.2, height=3.0)
    panels = (
        ("learning_distance", "learning distance ‖θ0 − m⊙θT‖"),
        ("learning_distance_unpruned", "‖m⊙(θT − θ0)‖ (unpruned)"),
        ("lambda_max", "λmax (unpruned subspace)"),
        ("hessian_trace", "Hessian trace (unpruned)"),
    )
    for ax, (key, label) in zip(axes.ravel(), panels):
        _beside_test(ax, x, ps["test_acc"], ps[key], label, "C2" if "distance" in key else "C4", key)
    _caption(fig, data, "candidate explanations beside test accuracy", band=True)
    return fig


def _over_sparsity(data: dict):
    """One panel against remaining weights: (figure, axes, per-seed columns, density in %)."""
    fig, axes = _figure(1, 1, width=5.0, height=3.4)
    return fig, axes[0, 0], data["per_seed"], 100 * data["density"]


def _test_accuracy_axes(ax, x) -> None:
    ax.set_ylabel("test accuracy (%)")
    _sparsity_axis(ax, x)
    ax.legend(fontsize=7)


def reinit(data: dict):
    fig, ax, ps, x = _over_sparsity(data)
    ax.plot(x, 100 * np.nanmean(ps["test_acc"], axis=0), "o-", ms=2.5, label="lottery ticket (θk)", gid="lottery")
    r = data["reinit"]
    ax.plot(
        [100 * e["density_mean"] for e in r],
        [100 * e["test_acc_mean"] for e in r],
        "s--",
        ms=2.5,
        label="random re-initialisation",
        gid="reinit",
    )
    _test_accuracy_axes(ax, x)
    _caption(fig, data, "lottery ticket against random re-initialisation")
    return fig


def best_vs_last(data: dict):
    fig, ax, ps, x = _over_sparsity(data)
    ax.plot(x, 100 * np.nanmean(ps["test_acc"], axis=0), "o-", ms=2.5, label="last epoch", gid="last")
    ax.plot(x, 100 * np.nanmean(ps["test_acc_best"], axis=0), "s--", ms=2.5, label="best epoch", gid="best")
    _test_accuracy_axes(ax, x)
    _caption(fig, data, "test accuracy at the best and at the last epoch")
    return fig


def generalisation_gap(data: dict):
    fig, ax, ps, x = _over_sparsity(data)
    mean, lo, hi = _spread(100 * (ps["train_acc"] - ps["test_acc"]))
    ax.fill_between(x, lo, hi, alpha=0.25, lw=0)
    ax.plot(x, mean, "o-", ms=2.5, gid="gap")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("train (noisy labels) − test accuracy (points)")
    _sparsity_axis(ax, x)
    _caption(fig, data, "generalisation gap", band=True)
    return fig


def level_curves(data: dict):
    chosen = data["chosen"]
    fig, axes = _figure(len(chosen), 1, sharey="row")
    for j, (role, c) in enumerate(chosen.items()):
        cv = c["curves"]
        ax = axes[0, j]
        epochs = np.asarray(cv["epoch"])
        for key, label, color in (("train_acc", "train (noisy labels)", "C3"), ("test_acc", "test", "C0")):
            y = 100 * _mean(cv[key])
            ok = np.isfinite(y)
            ax.plot(epochs[ok], y[ok], color=color, lw=1.2, marker="." if key == "test_acc" else None, label=label)
        ax.set_title(_title(role, c["level"], _density_of(data, c["level"])), fontsize=9)
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[0, 0].legend(fontsize=7)
    _caption(fig, data, "training curves at the chosen levels")
    return fig


def reliability(data: dict):
    chosen = data["chosen"]
    fig, axes = _figure(len(chosen), 1, width=3.0, height=3.0, sharey="row")
    bins = data["ece_bins"]
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for j, (role, c) in enumerate(chosen.items()):
        rel = data["reliability"][role]
        count = np.sum(rel["bin_count"], axis=0)
        correct = np.nansum(np.asarray(rel["bin_accuracy"], np.float64) * np.asarray(rel["bin_count"]), axis=0)
        with np.errstate(all="ignore"):
            acc = correct / count
        ax = axes[0, j]
        ax.bar(centres, np.nan_to_num(acc), width=1 / bins, edgecolor="k", lw=0.4, alpha=0.8, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ece = 100 * float(np.mean(rel["ece"]))
        ax.set_title(f"{_title(role, c['level'], _density_of(data, c['level']))}\nECE {ece:.1f}%", fontsize=8)
    axes[0, 0].set_ylabel("accuracy")
    _caption(fig, data, "reliability of the test predictions (ECE: mean over seeds)", stat="bins pooled over")
    return fig


def calibration(data: dict):
    ps, x = data["per_seed"], 100 * data["density"]
    fig, axes = _figure(3, 1, width=3.6, height=3.0)
    for ax, (key, label) in zip(axes.ravel(), (("ece", "ECE"), ("nll", "NLL (nats)"), ("brier", "Brier score"))):
        ax.plot(x, np.nanmean(ps[key], axis=0), "o-", ms=2.5, gid=key)
        ax.set_ylabel(f"test {label}")
        _sparsity_axis(ax, x)
    _caption(fig, data, "calibration of the test predictions against sparsity")
    return fig


def draw_all(folder: Path, data: dict) -> list[str]:
    """Draw every figure of the module docstring into ``folder`` (PNG and SVG); returns the paths."""
    makers = [
        *([("redense", redense), ("interpolation", interpolation)] if redensed(data["chosen"]) else []),
        ("landscape", landscape),
        ("distance_sharpness", distance_sharpness),
        ("best_vs_last", best_vs_last),
        ("generalisation_gap", generalisation_gap),
        ("level_curves", level_curves),
        ("reliability", reliability),
        ("calibration", calibration),
    ]
    if data.get("reinit"):
        makers.append(("reinit", reinit))
    paths = []
    for stem, make in makers:
        paths += _save(make(data), storage.as_path(folder), stem)
    return paths


def prune_stale(folder: Path, keep: list[str]) -> None:
    """Remove figures of an earlier analysis that this one did not draw (e.g. no reinit branch)."""
    keep = {storage.as_path(p).name for p in keep}
    for path in storage.listdir(folder):
        if storage.is_file(path) and path.name not in keep:
            storage.remove_file(path)
    if not storage.listdir(folder):
        storage.remove_tree(folder)
