"""``sdd_jax.report``: the table and figure of a run directory, rebuilt from its results files."""

import os
import subprocess
import sys

import chex
import numpy as np
import pytest
from report_rows import paper_like_rows

from sdd_jax.figure import figure_data
from sdd_jax.report import report
from sdd_jax.results import aggregate, write_results_csv
from sdd_jax.table import summary_table


def test_report_rebuilds_the_figure_from_results_csv(tmp_path):
    rows = paper_like_rows(seeds=3) + paper_like_rows(seeds=2, branch="oneshot", rng_seed=4)
    write_results_csv(rows, tmp_path / "results.csv")
    out = report(tmp_path)
    assert out["figures"] == [str(tmp_path / "figure.png"), str(tmp_path / "figure.svg")]
    assert all(os.path.getsize(p) > 0 for p in out["figures"])
    assert (tmp_path / "summary.txt").read_text() == out["table"] == summary_table(rows)

    imp_rows = [r for r in rows if r["branch"] == "imp"]
    assert [e["branch"] for e in out["aggregate"]] == ["imp"] * len(out["aggregate"])
    chex.assert_trees_all_close(
        [{k: v for k, v in e.items() if k != "branch"} for e in out["aggregate"]],
        [{k: v for k, v in e.items() if k != "branch"} for e in aggregate(imp_rows)],
        rtol=0, atol=0,
    )
    expected = figure_data(rows)
    for key in ("x", "test_mean", "test_lo", "test_hi", "train_mean", "train_lo", "train_hi",
                "learning_distance"):
        np.testing.assert_array_equal(out["figure_data"]["main"][key], expected["main"][key])
    assert out["figure_data"]["main"]["phases"] == out["phases"] == expected["main"]["phases"]
    np.testing.assert_array_equal(out["figure_data"]["others"]["oneshot"]["test_mean"],
                                  expected["others"]["oneshot"]["test_mean"])


def test_report_without_results_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv"):
        report(tmp_path)


def test_import_does_not_load_matplotlib():
    modules = ", ".join(f"sdd_jax.{m}" for m in ("results", "phases", "table", "figure", "report"))
    code = f"import sys, {modules}; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def write_branch(run_dir, folder, rows):
    (run_dir / "branches" / folder).mkdir(parents=True)
    write_results_csv(rows, run_dir / "branches" / folder / "results.csv")


def test_a_branch_never_blocks_the_main_run(tmp_path, capsys):
    """Two branch folders with one label (as re-dense variants were once labelled), and one
    garbled file: the report and the command leave those out with a warning naming them."""
    from sdd_jax.cli import main

    rows = paper_like_rows(seeds=2)
    write_results_csv(rows, tmp_path / "results.csv")
    variant = [dict(r, branch="redense") for r in paper_like_rows(seeds=2, rng_seed=5) if r["level"] in (3, 4)]
    write_branch(tmp_path, "redense-e1-lr0.1", variant)
    write_branch(tmp_path, "redense-e1-lr0.01", [dict(r, test_acc=0.5) for r in variant])
    (tmp_path / "branches" / "reinit").mkdir()
    (tmp_path / "branches" / "reinit" / "results.csv").write_bytes(b"\xff\xfe garbage")
    with pytest.warns(UserWarning) as caught:
        out = report(tmp_path)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "redense-e1-lr0.1/results.csv left out: branch label 'redense' is already used" in messages[0]
    assert "reinit/results.csv left out" in messages[1] and "not a UTF-8" in messages[1]
    assert out["table"] == summary_table(rows + [dict(r, test_acc=0.5) for r in variant])
    with pytest.warns(UserWarning):
        assert main(["report", str(tmp_path)]) == 0
    assert "branch: redense" in capsys.readouterr().out


def test_combined_results_and_curves_read_straight_into_pandas(tmp_path):
    import pandas as pd

    from sdd_jax.results import curve_rows, write_curves_csv

    rows = paper_like_rows(seeds=2)
    write_results_csv(rows, tmp_path / "results.csv")
    oneshot = [dict(r, branch="oneshot", only_here=7) for r in paper_like_rows(seeds=1, rng_seed=3)
               if r["level"] < 3]
    write_branch(tmp_path, "oneshot", oneshot)
    curves = {"epoch": [1, 2], "train_loss": [[1.0, 2.0], [0.5, 1.5]], "train_acc": [[0.1, 0.2], [0.3, 0.4]],
              "test_loss": [None, [0.7, 0.8]], "test_acc": [None, [0.6, 0.65]], "val_acc": [None, [0.5, 0.55]]}
    write_curves_csv(curve_rows("imp", 0, [0, 1], curves), tmp_path / "curves.csv")
    write_curves_csv(curve_rows("oneshot", 2, [0], {k: v for k, v in curves.items() if k != "val_acc"}),
                     tmp_path / "branches" / "oneshot" / "curves.csv")
    out = report(tmp_path)
    assert out["combined"] == [str(tmp_path / "results_all.csv"), str(tmp_path / "curves_all.csv")]

    table = pd.read_csv(tmp_path / "results_all.csv")
    assert table.columns[0] == "branch" and len(table) == len(rows) + len(oneshot)
    mean = table.groupby(["branch", "level"]).test_acc.mean()
    assert mean[("oneshot", 2)] == pytest.approx(oneshot[2]["test_acc"])
    assert mean[("imp", 4)] == pytest.approx(np.mean([r["test_acc"] for r in rows if r["level"] == 4]))
    assert table.only_here.isna().sum() == len(rows)  # a column one file lacks is empty there

    long = pd.read_csv(tmp_path / "curves_all.csv")
    assert list(long.columns) == ["branch", "seed", "level", "epoch", "train_loss", "train_acc",
                                  "test_loss", "test_acc", "val_acc"]
    assert len(long) == 2 * 2 + 2
    seed1 = long[(long.branch == "imp") & (long.seed == 1)]
    assert seed1.train_loss.tolist() == [2.0, 1.5] and seed1.val_acc.tolist()[1] == 0.55
    assert np.isnan(seed1.test_acc.tolist()[0])  # not evaluated in epoch 1
    assert long[long.branch == "oneshot"].val_acc.isna().all()
