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
