import math
import os
import subprocess
import sys

import chex
import numpy as np
import pytest

from sdd_jax import report as R


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
    labels = (["light"] * n_light + ["critical"] * n_critical + ["sweet"] * n_sweet
              + ["collapsed"] * n_collapsed)
    return np.array(train), np.array(test), labels


def agg_from_curves(train, test):
    return [
        {"level": i, "train_acc_mean": float(a), "test_acc_mean": float(b)}
        for i, (a, b) in enumerate(zip(train, test))
    ]


def paper_like_rows(seeds=2, branch="imp", rng_seed=1):
    rng = np.random.default_rng(rng_seed)
    train, test, _ = segment_curves(5, 4, 3, 3, np.random.default_rng(7))
    rows = []
    for seed in range(seeds):
        for level, (tr, te) in enumerate(zip(train, test)):
            density = 0.8**level
            rows.append({
                "seed": seed, "level": level, "density": density, "sparsity": 1 - density,
                "train_acc": float(np.clip(tr + rng.normal(0, 1e-3), 0, 1)),
                "train_acc_clean": 1.0, "train_acc_noisy_subset": float(max(0.0, (tr - 0.8) * 5)),
                "train_loss": 0.1, "test_acc": float(te + rng.normal(0, 1e-3)),
                "test_acc_best": float(te), "test_loss": 0.5,
                "learning_distance": 0.1 * level + float(rng.normal(0, 1e-3)),
                "learning_distance_unpruned": float("nan"), "branch": branch,
            })
    return rows


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def test_csv_round_trip_preserves_values_types_and_extra_columns(tmp_path):
    rows = make_rows(seeds=2, levels=3)
    rows[0]["test_loss"] = float("nan")
    rows[1]["train_loss"] = np.float32(0.25)  # numpy scalars are written as plain numbers
    rows[2]["zeta_extra"] = np.int64(7)
    rows[3]["learning_distance"] = float("inf")
    path = tmp_path / "results.csv"
    assert R.write_results_csv(rows, path) == str(path)

    header = path.read_text().splitlines()[0].split(",")
    assert header == list(R.RESULT_COLUMNS) + ["alpha_note", "zeta_extra"]

    back = R.read_results_csv(path)
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
    R.write_results_csv(rows, path)
    back = R.read_results_csv(path)
    assert back[0]["branch"] == "imp" and back[0]["note"] is None
    assert back[1]["branch"] is None and back[1]["note"] is None


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    R.write_results_csv(make_rows(seeds=1, levels=2), path)
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(R.os, "replace", broken_replace)
    with pytest.raises(OSError):
        R.write_results_csv(make_rows(seeds=2, levels=4, rng_seed=5), path)
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["results.csv"]


@pytest.mark.parametrize("column", ["seed", "test_acc", "learning_distance_unpruned"])
def test_missing_required_column_is_named(tmp_path, column):
    rows = make_rows(seeds=1, levels=3)
    del rows[2][column]
    path = tmp_path / "results.csv"
    with pytest.raises(ValueError, match=column):
        R.write_results_csv(rows, path)
    assert not path.exists()


def test_read_rejects_missing_file_and_missing_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        R.read_results_csv(tmp_path / "nope.csv")
    path = tmp_path / "bad.csv"
    path.write_text("seed,level\n0,0\n")
    with pytest.raises(ValueError, match="density"):
        R.read_results_csv(path)


# ---------------------------------------------------------------------------------------------
# aggregate
# ---------------------------------------------------------------------------------------------


def test_aggregate_matches_numpy():
    rows = make_rows(seeds=4, levels=5, rng_seed=3)
    shuffled = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    agg = R.aggregate(shuffled)
    assert [e["level"] for e in agg] == list(range(5))
    numeric = [c for c in R.RESULT_COLUMNS if c not in ("seed", "level")] + ["zeta_extra"]
    for entry in agg:
        group = [r for r in rows if r["level"] == entry["level"]]
        assert entry["n_seeds"] == 4
        assert entry["alpha_note"] == "x"
        for c in numeric:
            values = np.array([r[c] for r in group], dtype=np.float64)
            expected = {"mean": np.mean(values), "std": np.std(values), "min": np.min(values),
                        "max": np.max(values)}
            got = {k: entry[f"{c}_{k}"] for k in expected}
            chex.assert_trees_all_close(got, expected, rtol=1e-12)
        assert "seed_mean" not in entry and "level_mean" not in entry


def test_aggregate_single_seed_has_zero_std_and_ignores_nan():
    rows = make_rows(seeds=1, levels=3)
    agg = R.aggregate(rows)
    assert all(e["n_seeds"] == 1 and e["test_acc_std"] == 0.0 for e in agg)

    rows = make_rows(seeds=3, levels=2)
    rows[0]["test_loss"] = float("nan")  # seed 0, level 0
    for r in rows:
        r["learning_distance_unpruned"] = float("nan")
    agg = R.aggregate(rows)
    finite = [r["test_loss"] for r in rows[1:] if r["level"] == 0]
    assert agg[0]["test_loss_mean"] == pytest.approx(np.mean(finite))
    assert agg[0]["test_loss_std"] == pytest.approx(np.std(finite))
    assert math.isnan(agg[0]["learning_distance_unpruned_mean"])


def test_aggregate_groups_branches_and_rejects_bad_input():
    rows = make_rows(seeds=2, levels=3, branch="imp") + make_rows(seeds=2, levels=2, branch="oneshot",
                                                                  rng_seed=9)
    agg = R.aggregate(rows)
    assert [(e["branch"], e["level"]) for e in agg] == [
        ("imp", 0), ("imp", 1), ("imp", 2), ("oneshot", 0), ("oneshot", 1)]
    oneshot0 = [r["test_acc"] for r in rows if r["branch"] == "oneshot" and r["level"] == 0]
    assert agg[3]["test_acc_mean"] == pytest.approx(np.mean(oneshot0))

    with pytest.raises(ValueError, match="duplicate"):
        R.aggregate(rows + [dict(rows[0])])
    with pytest.raises(ValueError, match="no result rows"):
        R.aggregate([])


# ---------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [(4, 3, 3, 2), (1, 1, 1, 1), (6, 5, 2, 4), (3, 6, 4, 1)])
def test_phases_on_synthetic_curves(lengths):
    train, test, expected = segment_curves(*lengths, np.random.default_rng(sum(lengths)))
    assert R.phases(agg_from_curves(train, test)) == expected


def test_phases_follow_entry_order_and_keys():
    train, test, expected = segment_curves(3, 3, 2, 2, np.random.default_rng(0))
    agg = agg_from_curves(train, test)
    perm = np.random.default_rng(1).permutation(len(agg))
    assert R.phases([agg[i] for i in perm]) == [expected[i] for i in perm]
    renamed = [{"level": e["level"], "a_mean": e["train_acc_mean"], "b_mean": e["test_acc_mean"]}
               for e in agg]
    assert R.phases(renamed, train_key="a", test_key="b") == expected


def test_phases_are_monotone_on_random_curves():
    rng = np.random.default_rng(42)
    order = {p: i for i, p in enumerate(R.PHASES)}
    seen = set()
    for _ in range(300):
        n = int(rng.integers(1, 20))
        train = np.clip(1.0 - np.cumsum(rng.uniform(0, 0.06, n)) + rng.normal(0, 0.01, n), 0, 1)
        test = rng.uniform(0.1, 1.0, n)
        labels = R.phase_labels(train, test)
        ranks = [order[p] for p in labels]
        assert labels[0] == "light"
        assert ranks == sorted(ranks)
        seen.update(labels)
        light_end, sweet_start, collapse_start = R.phase_boundaries(train, test)
        assert 1 <= light_end <= sweet_start <= collapse_start <= n
        # the rule, checked level by level
        assert np.all(train[1:light_end] >= train[0] - 0.02)
        if light_end < n:
            assert train[light_end] < train[0] - 0.02
        if sweet_start < collapse_start:
            assert test[sweet_start] >= test[1:].max() - 0.01
            assert np.all(test[light_end:sweet_start] < test[1:].max() - 0.01)
        if collapse_start < n:
            assert collapse_start >= light_end
            peak = sweet_start + int(np.argmax(test[sweet_start:])) if sweet_start < collapse_start else None
            if peak is None:
                assert test[collapse_start] < test[0] - 0.01
            else:
                assert collapse_start > peak
                assert (test[collapse_start] < test[0] - 0.01
                        or train[collapse_start] < train[peak] - 0.10)
    assert seen == set(R.PHASES)


def test_phases_edge_cases():
    # single level: the dense model
    assert R.phases([{"level": 0, "train_acc_mean": 1.0, "test_acc_mean": 0.9}]) == ["light"]
    # never leaves the memorising plateau: all light
    assert R.phase_labels([1.0] * 5, [0.9, 0.85, 0.8, 0.82, 0.84]) == ["light"] * 5
    # no dip: test climbs from the dense value as soon as train falls
    labels = R.phase_labels([1.0, 0.95, 0.9, 0.85, 0.84, 0.4], [0.86, 0.88, 0.92, 0.96, 0.955, 0.5])
    assert labels == ["light", "critical", "critical", "sweet", "sweet", "collapsed"]
    # no collapse: the run stops in the sweet spot
    train, test, expected = segment_curves(3, 2, 3, 0, np.random.default_rng(0))
    labels = R.phase_labels(train, test)
    assert labels == expected and "collapsed" not in labels
    # clean labels: train and test stay flat, then both crash; no critical phase
    labels = R.phase_labels([1.0, 1.0, 0.999, 1.0, 0.7, 0.3], [0.98, 0.981, 0.979, 0.98, 0.7, 0.2])
    assert labels == ["light"] * 4 + ["collapsed"] * 2
    # train crashes while test is still above the dense value
    labels = R.phase_labels([1.0, 1.0, 0.85, 0.82, 0.81, 0.6], [0.80, 0.78, 0.9, 0.95, 0.94, 0.85])
    assert labels == ["light", "light", "critical", "sweet", "sweet", "collapsed"]


def test_phase_tolerances_move_the_boundaries():
    train = [1.0, 0.99, 0.97, 0.9, 0.85, 0.2]
    test = [0.85, 0.82, 0.84, 0.93, 0.95, 0.3]
    assert R.phase_labels(train, test) == ["light", "light", "critical", "critical", "sweet", "collapsed"]
    assert R.phase_labels(train, test, tol_train=0.005)[:3] == ["light", "critical", "critical"]
    assert R.phase_labels(train, test, tol_sweet=0.03)[3] == "sweet"


def test_phases_reject_bad_input():
    with pytest.raises(ValueError, match="single branch"):
        R.phases([{"level": 0, "train_acc_mean": 1, "test_acc_mean": 1}] * 2)
    with pytest.raises(ValueError, match="test_acc_mean"):
        R.phases([{"level": 0, "train_acc_mean": 1.0}])
    with pytest.raises(ValueError, match="finite"):
        R.phase_labels([1.0, float("nan")], [0.9, 0.8])
    with pytest.raises(ValueError, match="no levels"):
        R.phases([])


# ---------------------------------------------------------------------------------------------
# table, figure, report
# ---------------------------------------------------------------------------------------------


def test_summary_table_lists_every_level_with_its_numbers_and_phase():
    rows = paper_like_rows(seeds=2)
    agg = R.aggregate(rows)
    labels = R.phases(agg)
    table = R.summary_table(rows)
    lines = table.strip().splitlines()
    assert lines[0] == "branch: imp"
    assert "test acc %" in lines[1] and "phase" in lines[1]
    body = lines[3:]
    assert len(body) == len(agg)
    widths = {len(line.rstrip()) for line in body}
    assert max(widths) - min(widths) <= len("collapsed") - len("sweet")  # fixed-width columns
    for line, entry, label in zip(body, agg, labels):
        cells = line.split()
        assert int(cells[0]) == entry["level"] and int(cells[1]) == entry["n_seeds"]
        assert float(cells[2]) == pytest.approx(100 * entry["sparsity_mean"], abs=0.005)
        assert cells[5] == "±"
        assert float(cells[4]) == pytest.approx(100 * entry["test_acc_mean"], abs=0.005)
        assert float(cells[6]) == pytest.approx(100 * entry["test_acc_std"], abs=0.005)
        assert float(cells[7]) == pytest.approx(100 * entry["train_acc_mean"], abs=0.005)
        assert cells[-1] == label


def test_summary_table_one_section_per_branch():
    rows = paper_like_rows(seeds=1) + paper_like_rows(seeds=1, branch="oneshot", rng_seed=4)
    table = R.summary_table(rows)
    assert "branch: imp" in table and "branch: oneshot" in table
    assert table.count("level") == 2


def test_plot_writes_png_and_svg(tmp_path):
    paths = R.plot(paper_like_rows(seeds=2), tmp_path / "fig", title="test")
    assert paths == [str(tmp_path / "fig.png"), str(tmp_path / "fig.svg")]
    png = (tmp_path / "fig.png").read_bytes()
    svg = (tmp_path / "fig.svg").read_text()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "<svg" in svg and "sweet phase" in svg and "remaining weights" in svg
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_figure_draws_figure_data():
    rows = paper_like_rows(seeds=3) + paper_like_rows(seeds=2, branch="oneshot", rng_seed=4)
    data = R.figure_data(rows)
    main = data["main"]
    imp_agg = R.aggregate([r for r in rows if r["branch"] == "imp"])
    np.testing.assert_allclose(main["test_mean"], [100 * e["test_acc_mean"] for e in imp_agg])
    np.testing.assert_allclose(main["train_hi"], [100 * e["train_acc_max"] for e in imp_agg])
    np.testing.assert_allclose(main["x"], [100 * 0.8**e["level"] for e in imp_agg])
    assert main["phases"] == R.phases(imp_agg)
    assert main["dense_test"] == pytest.approx(100 * imp_agg[0]["test_acc_mean"])
    assert list(data["others"]) == ["oneshot"]
    # spans tile the levels in phase order
    assert [s[0] for s in main["spans"]] == list(R.PHASES)
    assert all(s[1] > s[2] for s in main["spans"])
    assert all(a[2] == b[1] for a, b in zip(main["spans"], main["spans"][1:]))

    fig = R._make_figure(data)
    ax = fig.axes[0]
    lines = {line.get_gid(): line for a in fig.axes for line in a.get_lines() if line.get_gid()}
    np.testing.assert_array_equal(lines["test"].get_ydata(), main["test_mean"])
    np.testing.assert_array_equal(lines["train"].get_ydata(), main["train_mean"])
    np.testing.assert_array_equal(lines["learning_distance"].get_ydata(), main["learning_distance"])
    np.testing.assert_array_equal(lines["test_oneshot"].get_ydata(), data["others"]["oneshot"]["test_mean"])
    assert lines["dense_test"].get_ydata()[0] == pytest.approx(main["dense_test"])
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > 100 > right  # reversed: sparsity grows to the right
    ticks = list(ax.get_xticks())
    assert ticks[:2] == [100, 50] and set(ticks) <= {100, 50, 20, 10, 5, 1, 0.5}
    assert all(right <= t <= left for t in ticks)


def test_report_rebuilds_the_figure_from_results_csv(tmp_path):
    rows = paper_like_rows(seeds=3) + paper_like_rows(seeds=2, branch="oneshot", rng_seed=4)
    R.write_results_csv(rows, tmp_path / "results.csv")
    out = R.report(tmp_path)
    assert out["figures"] == [str(tmp_path / "figure.png"), str(tmp_path / "figure.svg")]
    assert all(os.path.getsize(p) > 0 for p in out["figures"])
    assert (tmp_path / "summary.txt").read_text() == out["table"] == R.summary_table(rows)

    imp_rows = [r for r in rows if r["branch"] == "imp"]
    assert [e["branch"] for e in out["aggregate"]] == ["imp"] * len(out["aggregate"])
    chex.assert_trees_all_close(
        [{k: v for k, v in e.items() if k != "branch"} for e in out["aggregate"]],
        [{k: v for k, v in e.items() if k != "branch"} for e in R.aggregate(imp_rows)],
        rtol=0, atol=0,
    )
    expected = R.figure_data(rows)
    for key in ("x", "test_mean", "test_lo", "test_hi", "train_mean", "train_lo", "train_hi",
                "learning_distance"):
        np.testing.assert_array_equal(out["figure_data"]["main"][key], expected["main"][key])
    assert out["figure_data"]["main"]["phases"] == out["phases"] == expected["main"]["phases"]
    np.testing.assert_array_equal(out["figure_data"]["others"]["oneshot"]["test_mean"],
                                  expected["others"]["oneshot"]["test_mean"])


def test_report_without_results_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv"):
        R.report(tmp_path)


def test_import_does_not_load_matplotlib():
    code = "import sys, sdd_jax.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
