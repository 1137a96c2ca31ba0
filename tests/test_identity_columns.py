"""Every results file of a run and of its branches says which configuration its rows belong to:
``branch``, the identity columns, then ``seed`` and ``level``; files written before the columns
existed are still read and get them when rewritten. One tiny run (the smoke preset shrunk: 256
digits, one epoch, two pruning levels, two seeds) with a ``reinit`` branch."""

import shutil

import pandas as pd
import pytest

from sdd_jax import branches, imp, presets, report, results, runopen
from sdd_jax.config import override
from sdd_jax.identity import IDENTITY_COLUMNS

LEAD = ["branch", *IDENTITY_COLUMNS, "seed", "level"]
FILES = ("results.csv", "curves.csv", "layers.csv")
COMBINED = ("results_all.csv", "curves_all.csv")


def _expected(branch: str) -> dict:
    """The smoke preset's identity, written out by hand (not through sdd_jax.identity)."""
    return {
        "preset": "smoke",
        "model": "lenet_300_100",
        "dataset": "mnist_embedded",
        "noise_kind": "random_labels",
        "noise_rate": 0.2,
        "criterion": "magnitude",
        "schedule": "lottery",
        "init": "reinit" if branch == "reinit" else "lottery",
    }


def _config(workdir):
    return override(
        presets.get("smoke"),
        {
            "data.train_size": 256,
            "optim.epochs": 1,
            "pruning.levels": 2,
            "run.seeds": 2,
            "run.workdir": str(workdir),
            "run.verbosity": 0,
        },
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("identity"))
    exp, run = runopen.open_run(config)
    imp.run_imp(config, prepared=(exp, run))
    branches.run_branch(exp, run, "reinit", [2])
    return config, run.path


def _header(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[0].split(",")


def test_every_results_file_starts_with_branch_then_the_identity_columns(tiny_run):
    _, path = tiny_run
    folders = {"imp": path, "reinit": path / "branches" / "reinit"}
    for branch, folder in folders.items():
        for name in FILES:
            assert _header(folder / name)[: len(LEAD)] == LEAD, folder / name
            rows = results.read_csv(folder / name)
            assert rows and all(r["branch"] == branch for r in rows)
            assert all({c: r[c] for c in IDENTITY_COLUMNS} == _expected(branch) for r in rows), folder / name
    for name in COMBINED:
        assert _header(path / name)[: len(LEAD)] == LEAD, name
        rows = results.read_csv(path / name)
        assert {r["branch"] for r in rows} == {"imp", "reinit"}
        assert all({c: r[c] for c in IDENTITY_COLUMNS} == _expected(r["branch"]) for r in rows), name
    # pandas.concat of the files compares the configurations without a join; noise_rate is a
    # key of the grouping, never averaged.
    frame = pd.concat([pd.read_csv(path / "results.csv"), pd.read_csv(path / "branches/reinit/results.csv")])
    means = frame.groupby(["init", "noise_rate", "level"]).test_acc.mean()
    assert sorted(means.index) == [("lottery", 0.2, 0), ("lottery", 0.2, 1), ("lottery", 0.2, 2), ("reinit", 0.2, 2)]
    agg = results.aggregate(results.read_results_csv(path / "results_all.csv"))
    assert {(e["init"], e["level"]) for e in agg} == {("lottery", 0), ("lottery", 1), ("lottery", 2), ("reinit", 2)}
    assert all(e["noise_rate"] == 0.2 and "noise_rate_mean" not in e for e in agg)


def test_a_run_written_before_the_identity_columns_is_read_and_rewritten_with_them(tiny_run, tmp_path):
    config, path = tiny_run
    copy = tmp_path / path.name
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns(".lock*"))
    before = {}
    for name in FILES:  # the files as an older version wrote them: no identity columns
        frame = pd.read_csv(copy / name)
        before[name] = frame
        frame.drop(columns=list(IDENTITY_COLUMNS)).to_csv(copy / name, index=False)
    out = report.report(copy)  # still read; the combined files get the columns from config.json
    assert [e["level"] for e in out["aggregate"]] == [0, 1, 2]
    for name in COMBINED:
        rows = results.read_csv(copy / name)
        assert _header(copy / name)[: len(LEAD)] == LEAD
        assert all({c: r[c] for c in IDENTITY_COLUMNS} == _expected(r["branch"]) for r in rows), name
    imp.run_imp(override(config, {"run.workdir": str(tmp_path)}), write_report=False)  # finished: rewrites the files
    for name in FILES:
        assert _header(copy / name)[: len(LEAD)] == LEAD, name
        pd.testing.assert_frame_equal(pd.read_csv(copy / name), before[name])
