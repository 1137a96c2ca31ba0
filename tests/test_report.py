"""``sdd_jax.report``: the table and figure of a run directory, rebuilt from its results files."""

import os
import re
import subprocess
import sys

import chex
import numpy as np
import pytest
from report_rows import paper_like_rows

from sdd_jax import report as sdd_report
from sdd_jax.report import report
from sdd_jax.results import write_results_csv
from sdd_jax.table import summary_table

# Hand-made results: per level, three seeds whose mean and sample SD (ddof=1) are known by
# construction (values m - d, m, m + d have SD d). (mean, sd) per level for each column:
KNOWN = {
    "density": [(1.0, 0.0), (0.5, 0.0), (0.25, 0.0)],
    "test_acc": [(0.82, 0.02), (0.88, 0.03), (0.75, 0.05)],
    "train_acc": [(1.0, 0.0), (0.92, 0.02), (0.66, 0.06)],
    "train_acc_noisy_subset": [(0.9, 0.1), (0.5, 0.0), (0.1, 0.1)],
    "learning_distance": [(2.0, 1.0), (4.0, 2.0), (3.0, 0.0)],
}
ONESHOT_TEST = (0.6, 0.7)  # one branch level at density 0.25, two seeds: mean 0.65, SD 0.1 / sqrt(2)


def _write_known_results(run_dir):
    """``results.csv`` (and a one-shot branch) written as text, not through sdd_jax.results."""
    header = (
        "seed,level,density,sparsity,train_acc,train_acc_clean,train_acc_noisy_subset,train_loss,"
        "test_acc,test_acc_best,test_loss,learning_distance,learning_distance_unpruned,branch"
    )
    lines = [header]
    for level in range(3):
        for seed, step in enumerate((-1, 0, 1)):
            v = {k: repr(round(known[level][0] + step * known[level][1], 10)) for k, known in KNOWN.items()}
            lines.append(
                f"{seed},{level},{v['density']},{1 - float(v['density'])!r},{v['train_acc']},1.0,"
                f"{v['train_acc_noisy_subset']},0.1,{v['test_acc']},{v['test_acc']},0.5,"
                f"{v['learning_distance']},,imp"
            )
    (run_dir / "results.csv").write_text("\n".join(lines) + "\n")
    (run_dir / "branches" / "oneshot").mkdir(parents=True)
    rows = [
        f"{seed},3,0.25,0.75,0.5,0.5,0.0,0.1,{acc!r},{acc!r},0.5,1.0,,oneshot" for seed, acc in enumerate(ONESHOT_TEST)
    ]
    (run_dir / "branches" / "oneshot" / "results.csv").write_text("\n".join([header, *rows]) + "\n")


def _pairs(line: str) -> list[tuple[float, float]]:
    """The ``mean ± sd`` cells of a table line, in order, as numbers."""
    return [(float(m), float(d)) for m, d in re.findall(r"([-+\d.e]+) ± +([-+\d.e]+)", line)]


def _close(got, expected, atol=1e-9):
    chex.assert_trees_all_close(np.asarray(got, np.float64), np.asarray(expected, np.float64), atol=atol)


def test_report_rebuilds_the_figure_from_results_csv(tmp_path, monkeypatch):
    """The table, the aggregate, the figure data and the drawn curves hold the means, sample SDs
    and min/max of hand-made rows, known without the functions report() calls."""
    _write_known_results(tmp_path)
    drawn = []
    real_make_figure = sdd_report.make_figure
    monkeypatch.setattr(sdd_report, "make_figure", lambda *a, **k: drawn.append(real_make_figure(*a, **k)) or drawn[-1])
    out = report(tmp_path)
    assert out["figures"] == [str(tmp_path / "figure.png"), str(tmp_path / "figure.svg")]
    assert all(os.path.getsize(p) > 0 for p in out["figures"])
    assert (tmp_path / "summary.txt").read_text() == out["table"]

    # The table: level, n, sparsity %, weights %, then mean ± sd of test, train, memorised (in %)
    # and of the learning distance; an SD of 0 is printed as such.
    main_table, branch_table = out["table"].split("branch: oneshot")
    assert main_table.startswith("branch: imp")
    body = [line for line in main_table.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert len(body) == 3
    for level, line in enumerate(body):
        cells = line.split()
        assert (int(cells[0]), int(cells[1])) == (level, 3)
        density = KNOWN["density"][level][0]
        chex.assert_trees_all_close((float(cells[2]), float(cells[3])), (100 * (1 - density), 100 * density))
        expected = [
            (100 * m, 100 * d)
            for m, d in (KNOWN[c][level] for c in ("test_acc", "train_acc", "train_acc_noisy_subset"))
        ]
        expected.append(KNOWN["learning_distance"][level])
        chex.assert_trees_all_close(_pairs(line), expected, atol=5e-3)  # printed with 2 decimals
    (oneshot_line,) = [line for line in branch_table.splitlines() if line.strip().startswith("3 ")]
    chex.assert_trees_all_close(_pairs(oneshot_line)[0], (65.0, 10 / np.sqrt(2)), atol=5e-3)

    # The aggregate of the main curve, to float precision.
    assert [e["branch"] for e in out["aggregate"]] == ["imp"] * 3
    assert [(e["level"], e["n_seeds"]) for e in out["aggregate"]] == [(0, 3), (1, 3), (2, 3)]
    for column, known in KNOWN.items():
        got = [(e[f"{column}_mean"], e[f"{column}_std"]) for e in out["aggregate"]]
        chex.assert_trees_all_close(got, known, atol=1e-9)
        got = [(e[f"{column}_min"], e[f"{column}_max"]) for e in out["aggregate"]]
        chex.assert_trees_all_close(got, [(m - d, m + d) for m, d in known], atol=1e-9)

    # What is plotted (in %, x = remaining weights) and what is drawn.
    main = out["figure_data"]["main"]
    x = [100 * m for m, _ in KNOWN["density"]]
    test, train = KNOWN["test_acc"], KNOWN["train_acc"]
    expected = {
        "x": x,
        "test_mean": [100 * m for m, _ in test],
        "test_lo": [100 * (m - d) for m, d in test],
        "test_hi": [100 * (m + d) for m, d in test],
        "train_mean": [100 * m for m, _ in train],
        "train_lo": [100 * (m - d) for m, d in train],
        "train_hi": [100 * (m + d) for m, d in train],
        "learning_distance": [m for m, _ in KNOWN["learning_distance"]],
    }
    for key, values in expected.items():
        _close(main[key], values)
    assert out["figure_data"]["main"]["phases"] == out["phases"]
    assert main["dense_test"] == pytest.approx(82.0)
    _close(out["figure_data"]["others"]["oneshot"]["test_mean"], [65.0])
    (fig,) = drawn
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    for gid, known in (("test", test), ("train", train)):
        _close(lines[gid].get_xdata(), x)
        _close(lines[gid].get_ydata(), [100 * m for m, _ in known])
    # Each learning distance is drawn over its own maximum (4.0 at level 1).
    _close(lines["learning_distance"].get_ydata(), [0.5, 1.0, 0.75])
    assert "learning_distance_unpruned" not in lines  # no values: not drawn
    _close(lines["test_oneshot"].get_ydata(), [65.0])


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

    from sdd_jax.exports import curve_rows, write_curves_csv

    rows = paper_like_rows(seeds=2)
    write_results_csv(rows, tmp_path / "results.csv")
    oneshot = [dict(r, branch="oneshot", only_here=7) for r in paper_like_rows(seeds=1, rng_seed=3) if r["level"] < 3]
    write_branch(tmp_path, "oneshot", oneshot)
    curves = {
        "epoch": [1, 2],
        "train_loss": [[1.0, 2.0], [0.5, 1.5]],
        "train_acc": [[0.1, 0.2], [0.3, 0.4]],
        "test_loss": [None, [0.7, 0.8]],
        "test_acc": [None, [0.6, 0.65]],
        "val_acc": [None, [0.5, 0.55]],
    }
    write_curves_csv(curve_rows("imp", 0, [0, 1], curves), tmp_path / "curves.csv")
    write_curves_csv(
        curve_rows("oneshot", 2, [0], {k: v for k, v in curves.items() if k != "val_acc"}),
        tmp_path / "branches" / "oneshot" / "curves.csv",
    )
    out = report(tmp_path)
    assert out["combined"] == [str(tmp_path / "results_all.csv"), str(tmp_path / "curves_all.csv")]

    table = pd.read_csv(tmp_path / "results_all.csv")
    assert table.columns[0] == "branch" and len(table) == len(rows) + len(oneshot)
    mean = table.groupby(["branch", "level"]).test_acc.mean()
    assert mean[("oneshot", 2)] == pytest.approx(oneshot[2]["test_acc"])
    assert mean[("imp", 4)] == pytest.approx(np.mean([r["test_acc"] for r in rows if r["level"] == 4]))
    assert table.only_here.isna().sum() == len(rows)  # a column one file lacks is empty there

    long = pd.read_csv(tmp_path / "curves_all.csv")
    assert list(long.columns) == [
        "branch",
        "seed",
        "level",
        "epoch",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "val_acc",
    ]
    assert len(long) == 2 * 2 + 2
    seed1 = long[(long.branch == "imp") & (long.seed == 1)]
    assert seed1.train_loss.tolist() == [2.0, 1.5] and seed1.val_acc.tolist()[1] == 0.55
    assert np.isnan(seed1.test_acc.tolist()[0])  # not evaluated in epoch 1
    assert long[long.branch == "oneshot"].val_acc.isna().all()
