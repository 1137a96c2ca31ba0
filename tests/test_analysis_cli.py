"""``sdd-jax analyze`` end to end on a tiny finished run: every file written, re-dense curves
evaluated every epoch, a rerun served from the cache, bad input refused before anything is
written."""

import json

import numpy as np
import pytest
from analysis_settings import TINY_ANALYSIS

from sdd_jax import cli
from sdd_jax.analysis import figures, tables

TINY = TINY_ANALYSIS
TABLES = ("correlations.csv", "phase_stats.csv", "levels.csv", "redense.csv", "interpolation.csv", "landscape.csv")
STEMS = (
    "redense",
    "interpolation",
    "landscape",
    "distance_sharpness",
    "best_vs_last",
    "generalisation_gap",
    "level_curves",
    "reliability",
    "calibration",
)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs")
    assert (
        cli.main(
            [
                "run",
                "smoke",
                "--workdir",
                str(workdir),
                "--set",
                "pruning.levels=3",
                "--set",
                "data.train_size=256",
                "--set",
                "data.test_size=200",
                "-q",
            ]
        )
        == 0
    )
    (run_dir,) = workdir.iterdir()
    args = ["analyze", str(run_dir), "--levels", "0,2", "-q"]
    for item in TINY:
        args += ["--set", item]
    assert cli.main(args) == 0
    return run_dir, args


def test_analyze_writes_every_table_figure_and_the_report(analysed):
    run_dir, _ = analysed
    root = run_dir / "analysis"
    for name in TABLES:
        assert (root / name).stat().st_size > 0, name
    for stem in STEMS:
        for ext in ("png", "svg"):
            assert (root / "figures" / f"{stem}.{ext}").stat().st_size > 0, (stem, ext)
    assert not (root / "figures" / "reinit.png").exists()  # the run has no reinit branch
    report = (root / "report.md").read_text()
    for stem in STEMS:
        assert f"figures/{stem}.png" in report
    correlations = (root / "correlations.csv").read_text().splitlines()
    assert correlations[0] == "scope,candidate,method,value,ci_low,ci_high,levels"
    assert len(correlations) - 1 == len(tables.CANDIDATES) * 2  # no collapse in 3 levels: one scope
    levels = (root / "levels.csv").read_text().splitlines()
    assert len(levels) - 1 == 4 * 2  # every level of the run, per seed


def test_redense_curves_cover_every_epoch_of_both_stages(analysed):
    run_dir, _ = analysed
    (cache,) = (run_dir / "analysis" / "cache").glob("redense-*/level_002.json")
    data = json.loads(cache.read_text())
    curves = data["curves"]
    assert curves["stage"] == ["sparse", "sparse", "redense"]  # 2 sparse epochs (smoke), 1 re-dense
    assert all(v is not None and len(v) == 2 for v in curves["test_acc"])  # every epoch, both seeds
    assert data["info"]["replay_max_abs_diff"] == 0.0  # the replayed sparse stage is the stored level
    assert data["info"]["lr"] == pytest.approx(0.1)  # LeNet: the last (only) learning rate


def test_the_dense_level_is_not_redensed(analysed):
    """Level 0 has no pruned weight: no re-dense training, interpolation or re-dense 1-D curve,
    and the report says so; level 2 has all three."""
    run_dir, _ = analysed
    root = run_dir / "analysis"
    assert [p.name for p in root.glob("cache/redense-*/level_*.json")] == ["level_002.json"]
    assert {line.split(",")[1] for line in (root / "redense.csv").read_text().splitlines()[1:]} == {"2"}
    assert {line.split(",")[1] for line in (root / "interpolation.csv").read_text().splitlines()[1:]} == {"2"}
    solutions = {tuple(line.split(",")[1:3]) for line in (root / "landscape.csv").read_text().splitlines()[1:]}
    assert solutions == {("0", "sparse"), ("2", "sparse"), ("2", "redense")}
    (dense_line,) = [line for line in (root / "report.md").read_text().splitlines() if "level 0 (" in line]
    assert "not re-densed" in dense_line and "re-dense at lr" not in dense_line


def test_rerun_is_served_from_the_cache_and_warns_on_an_unfinished_run(analysed, capsys):
    run_dir, args = analysed
    root = run_dir / "analysis"
    before = {p.name: p.read_bytes() for p in root.glob("*.csv")}
    stamps = {p: p.stat().st_mtime_ns for p in (root / "cache").rglob("level_*.json")}
    # Asking the run for 5 levels (not in its identity) leaves levels 4 and 5 to train.
    stored = (run_dir / "config.json").read_text()
    config = json.loads(stored)
    config["pruning"]["levels"] = 5
    (run_dir / "config.json").write_text(json.dumps(config))
    try:
        capsys.readouterr()
        with pytest.warns(UserWarning, match=r"unfinished: 2 levels of 6 not trained yet \(4-5; .*levels 0-3"):
            assert cli.main(args) == 0
    finally:
        (run_dir / "config.json").write_text(stored)
    assert {p.name: p.read_bytes() for p in root.glob("*.csv")} == before
    assert {p: p.stat().st_mtime_ns for p in (root / "cache").rglob("level_*.json")} == stamps


def _snapshot(folder):
    """Every path under ``folder`` with its modification time and size: any write shows."""
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.stat().st_size) for p in [folder, *folder.rglob("*")]}


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, analysed, capsys):
    run_dir, _ = analysed
    assert (run_dir / "analysis" / "cache").is_dir()  # a finished analysis: something to overwrite
    refused = [
        (["analyze", str(tmp_path), "-q"], lambda err: "results.csv" in err),
        (
            ["analyze", str(run_dir), "--levels", "9", "-q"],
            lambda err: err.count("\n") == 1 and "[9]" in err and "finished" in err,
        ),
        (
            ["analyze", str(run_dir), "--set", "analysis.eigen_method=qr", "-q"],
            lambda err: "analysis.eigen_method" in err,
        ),
        (
            ["analyze", str(run_dir), "--set", "optim.lr=0.5", "-q"],
            lambda err: "'optim.lr=0.5'" in err and "sdd-jax analyze takes analysis.*" in err and "branch" not in err,
        ),
    ]
    capsys.readouterr()
    for args, says in refused:
        before = _snapshot(run_dir)
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert says(err) and err.count("\n") == 1, (args, err)
        assert _snapshot(run_dir) == before, args  # the run and its analysis/ untouched: no file, no mtime
        assert not list(tmp_path.iterdir()), args


def test_figures_draw_the_data(analysed):
    run_dir, _ = analysed
    # the distance/sharpness panels plot the per-level means written to levels.csv
    rows = [line.split(",") for line in (run_dir / "analysis" / "levels.csv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    lam = np.array([float(r[header.index("lambda_max")]) for r in body]).reshape(4, 2).mean(1)
    data = {
        "per_seed": {
            k: np.array([[float(r[header.index(k)]) for r in body if r[2] == s] for s in ("0", "1")])
            for k in ("test_acc", "lambda_max", "hessian_trace")
        },
        "density": np.array([float(r[header.index("density")]) for r in body[::2]]),
    }
    data["per_seed"]["learning_distance"] = data["per_seed"]["learning_distance_unpruned"] = data["per_seed"][
        "lambda_max"
    ]
    fig = figures.distance_sharpness(data)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    np.testing.assert_allclose(lines["lambda_max"].get_ydata(), lam)
