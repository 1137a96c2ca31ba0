"""``sdd_jax.results``: writing and reading the results file, averaging over seeds, branches."""

import math
import os

import chex
import numpy as np
import pytest

from sdd_jax.exports import LAYER_COLUMNS, curve_rows, layer_rows, write_layers_csv
from sdd_jax.identity import IDENTITY_COLUMNS
from sdd_jax.results import (
    RESULT_COLUMNS,
    ResultsError,
    aggregate,
    main_branch,
    read_csv,
    read_results_csv,
    split_branches,
    write_results_csv,
)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def make_rows(seeds=3, levels=6, rng_seed=0, branch=None, extra=True):
    """Result rows with random accuracies: one per seed x level."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(seeds):
        for level in range(levels):
            density = 0.8**level
            row = {
                "seed": seed,
                "level": level,
                "density": density,
                "sparsity": 1.0 - density,
                "train_acc": float(rng.uniform(0.5, 1.0)),
                "train_acc_clean": float(rng.uniform(0.5, 1.0)),
                "train_acc_noisy_subset": float(rng.uniform(0.0, 1.0)),
                "train_loss": float(rng.uniform(0.0, 2.0)),
                "test_acc": float(rng.uniform(0.5, 1.0)),
                "test_acc_best": float(rng.uniform(0.5, 1.0)),
                "test_loss": float(rng.uniform(0.0, 2.0)),
                "learning_distance": float(rng.uniform(0.0, 3.0)),
                "learning_distance_unpruned": float(rng.uniform(0.0, 3.0)),
            }
            if extra:
                row["zeta_extra"] = int(rng.integers(0, 100))
                row["alpha_note"] = "x"
            if branch is not None:
                row["branch"] = branch
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def _identified(rows, rate, init="lottery"):
    """``rows`` with a branch and identity columns appended last (the writer must move them first)."""
    identity = {
        "preset": "p",
        "model": "m",
        "dataset": "d",
        "noise_kind": "random_labels",
        "noise_rate": rate,
        "criterion": "magnitude",
        "schedule": "lottery",
        "init": init,
    }
    return [{**r, "branch": "imp", **identity} for r in rows]


def test_branch_and_identity_columns_lead_and_are_keys_never_averaged(tmp_path):
    low, high = _identified(make_rows(2, 3, 1), 0.2), _identified(make_rows(2, 3, 2), 0.8)
    path = tmp_path / "results.csv"
    write_results_csv(low + high, path)
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["branch", *IDENTITY_COLUMNS, *RESULT_COLUMNS, "alpha_note", "zeta_extra"]
    back = read_results_csv(path)
    agg = aggregate(back)  # the same (branch, level, seed) in two configurations: two groups, no duplicate
    assert [(e["noise_rate"], e["level"]) for e in agg] == [(0.2, 0), (0.2, 1), (0.2, 2), (0.8, 0), (0.8, 1), (0.8, 2)]
    assert all("noise_rate_mean" not in e and e["init"] == "lottery" and e["n_seeds"] == 2 for e in agg)
    for entry in agg:
        mine = [r["test_acc"] for r in back if r["noise_rate"] == entry["noise_rate"] and r["level"] == entry["level"]]
        assert entry["test_acc_mean"] == pytest.approx(np.mean(mine)) and len(mine) == 2
    with pytest.raises(ResultsError, match="duplicate result row"):
        aggregate(low + low)


def test_csv_round_trip_preserves_values_types_and_extra_columns(tmp_path):
    rows = make_rows(seeds=2, levels=3)
    rows[0]["test_loss"] = float("nan")
    rows[1]["train_loss"] = np.float32(0.25)  # numpy scalars are written as plain numbers
    rows[2]["zeta_extra"] = np.int64(7)
    rows[3]["learning_distance"] = float("inf")
    path = tmp_path / "results.csv"
    assert write_results_csv(rows, path) == str(path)

    header = path.read_text().splitlines()[0].split(",")
    assert header == list(RESULT_COLUMNS) + ["alpha_note", "zeta_extra"]

    back = read_results_csv(path)
    assert len(back) == len(rows)
    for original, read in zip(rows, back):
        assert set(read) == set(original)
        for key, value in original.items():
            got = read[key]
            if isinstance(value, str):
                assert got == value
            elif isinstance(value, (int, np.integer)):
                assert isinstance(got, int) and got == value, key
            elif math.isnan(value):
                assert isinstance(got, float) and math.isnan(got), key
            else:
                assert isinstance(got, float) and got == float(value), key


def test_csv_rows_with_different_extra_keys_and_empty_cells(tmp_path):
    rows = make_rows(seeds=1, levels=2, extra=False)
    rows[0]["branch"] = "imp"
    rows[1]["note"] = None
    path = tmp_path / "r.csv"
    write_results_csv(rows, path)
    back = read_results_csv(path)
    assert back[0]["branch"] == "imp" and back[0]["note"] is None
    assert back[1]["branch"] is None and back[1]["note"] is None


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    write_results_csv(make_rows(seeds=1, levels=2), path)
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_results_csv(make_rows(seeds=2, levels=4, rng_seed=5), path)
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["results.csv"]


@pytest.mark.parametrize("column", ["seed", "test_acc", "learning_distance_unpruned"])
def test_missing_required_column_is_named(tmp_path, column):
    rows = make_rows(seeds=1, levels=3)
    del rows[2][column]
    path = tmp_path / "results.csv"
    with pytest.raises(ValueError, match=column):
        write_results_csv(rows, path)
    assert not path.exists()


def test_read_rejects_missing_file_and_missing_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_results_csv(tmp_path / "nope.csv")
    path = tmp_path / "bad.csv"
    path.write_text("seed,level\n0,0\n")
    with pytest.raises(ValueError, match="density"):
        read_results_csv(path)


# ---------------------------------------------------------------------------------------------
# aggregate
# ---------------------------------------------------------------------------------------------


def test_aggregate_matches_numpy():
    rows = make_rows(seeds=4, levels=5, rng_seed=3)
    shuffled = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    agg = aggregate(shuffled)
    assert [e["level"] for e in agg] == list(range(5))
    numeric = [c for c in RESULT_COLUMNS if c not in ("seed", "level")] + ["zeta_extra"]
    for entry in agg:
        group = [r for r in rows if r["level"] == entry["level"]]
        assert entry["n_seeds"] == 4
        assert entry["alpha_note"] == "x"
        for c in numeric:
            values = np.array([r[c] for r in group], dtype=np.float64)
            expected = {
                "mean": np.mean(values),
                "std": np.std(values, ddof=1),
                "min": np.min(values),
                "max": np.max(values),
            }
            got = {k: entry[f"{c}_{k}"] for k in expected}
            chex.assert_trees_all_close(got, expected, rtol=1e-12)
        assert "seed_mean" not in entry and "level_mean" not in entry


def test_aggregate_std_is_the_sample_std_nan_for_one_seed_and_ignores_nan():
    rows = make_rows(seeds=1, levels=3)
    agg = aggregate(rows)
    assert all(e["n_seeds"] == 1 and math.isnan(e["test_acc_std"]) for e in agg)
    # Two seeds 84.0% and 78.14%: the sample std is sqrt(2) times the population std.
    two = [dict(r, seed=s, test_acc=a) for s, (r, a) in enumerate(zip(make_rows(seeds=2, levels=1), (0.84, 0.7814)))]
    assert aggregate(two)[0]["test_acc_std"] == pytest.approx(abs(0.84 - 0.7814) / math.sqrt(2))

    rows = make_rows(seeds=3, levels=2)
    rows[0]["test_loss"] = float("nan")  # seed 0, level 0
    for r in rows:
        r["learning_distance_unpruned"] = float("nan")
    agg = aggregate(rows)
    finite = [r["test_loss"] for r in rows[1:] if r["level"] == 0]
    assert agg[0]["test_loss_mean"] == pytest.approx(np.mean(finite))
    assert agg[0]["test_loss_std"] == pytest.approx(np.std(finite, ddof=1))
    assert math.isnan(agg[0]["learning_distance_unpruned_mean"])


def test_aggregate_groups_branches_and_rejects_bad_input():
    rows = make_rows(seeds=2, levels=3, branch="imp") + make_rows(seeds=2, levels=2, branch="oneshot", rng_seed=9)
    agg = aggregate(rows)
    assert [(e["branch"], e["level"]) for e in agg] == [
        ("imp", 0),
        ("imp", 1),
        ("imp", 2),
        ("oneshot", 0),
        ("oneshot", 1),
    ]
    oneshot0 = [r["test_acc"] for r in rows if r["branch"] == "oneshot" and r["level"] == 0]
    assert agg[3]["test_acc_mean"] == pytest.approx(np.mean(oneshot0))

    with pytest.raises(ValueError, match="duplicate"):
        aggregate(rows + [dict(rows[0])])
    with pytest.raises(ValueError, match="no result rows"):
        aggregate([])


# ---------------------------------------------------------------------------------------------
# branches
# ---------------------------------------------------------------------------------------------


def test_main_branch_splits_rows_and_split_branches_groups_entries():
    plain = make_rows(seeds=1, levels=2)
    assert main_branch(plain) == (None, plain, {})
    imp = make_rows(seeds=2, levels=2, branch="imp")
    oneshot = make_rows(seeds=1, levels=2, branch="oneshot", rng_seed=2)
    name, rows, others = main_branch(oneshot + imp)
    assert name == "imp" and rows == imp and others == {"oneshot": oneshot}
    assert main_branch(oneshot) == ("oneshot", oneshot, {})  # the only branch is the main curve
    with pytest.raises(ResultsError, match="none is 'imp'"):
        main_branch(oneshot + make_rows(seeds=1, levels=2, branch="reinit"))

    groups = split_branches(aggregate(imp + oneshot))
    assert list(groups) == ["imp", "oneshot"]
    assert [(e["level"], e["n_seeds"]) for e in groups["imp"]] == [(0, 2), (1, 2)]
    assert [(e["level"], e["n_seeds"]) for e in groups["oneshot"]] == [(0, 1), (1, 1)]
    assert list(split_branches(aggregate(plain))) == [None]


# ---------------------------------------------------------------------------------------------
# curves and layers
# ---------------------------------------------------------------------------------------------


def test_curve_rows_one_row_per_seed_and_epoch_with_every_curve():
    curves = {
        "epoch": [3, 4],
        "train_loss": [[1.0, 2.0], [0.5, 1.5]],
        "test_acc": [None, [0.6, 0.7]],
        "val_loss": [[0.9, 0.8], None],
    }
    rows = curve_rows("reinit", 5, [10, 11], curves)
    assert [(r["seed"], r["epoch"]) for r in rows] == [(10, 3), (10, 4), (11, 3), (11, 4)]
    assert all(r["branch"] == "reinit" and r["level"] == 5 for r in rows)
    assert [r["train_loss"] for r in rows] == [1.0, 0.5, 2.0, 1.5]
    assert [r["test_acc"] for r in rows] == [None, 0.6, None, 0.7]
    assert [r["val_loss"] for r in rows] == [0.9, None, 0.8, None]


def test_layer_rows_spread_per_layer_dicts_into_columns(tmp_path):
    stored = [
        {
            "seed": 4,
            "density": 0.5,
            "layer_density": {"b/kernel": 0.25, "a/kernel": 0.75},
            "layer_learning_distance": {
                "a/kernel": {"full": 1.0, "unpruned": 0.5},
                "b/kernel": {"full": 2.0, "unpruned": 1.5},
            },
            "layer_learning_distance_rewind": {"a/kernel": {"full": 3.0, "unpruned": 2.5}},
        }
    ]
    rows = layer_rows("imp", 2, stored)
    assert [r["layer"] for r in rows] == ["a/kernel", "b/kernel"]
    assert rows[0] == {
        "branch": "imp",
        "seed": 4,
        "level": 2,
        "layer": "a/kernel",
        "density": 0.75,
        "learning_distance": 1.0,
        "learning_distance_unpruned": 0.5,
        "learning_distance_rewind": 3.0,
        "learning_distance_rewind_unpruned": 2.5,
    }
    write_layers_csv(rows, tmp_path / "layers.csv")
    back = read_csv(tmp_path / "layers.csv")
    assert list(back[0])[: len(LAYER_COLUMNS)] == list(LAYER_COLUMNS)
    assert back[1]["learning_distance_rewind"] is None and back[1]["learning_distance"] == 2.0
