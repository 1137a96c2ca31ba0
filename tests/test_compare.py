"""``sdd-jax compare`` and the report of a study directory, on hand-made run and study directories
whose results are known: the table against numpy computed here (per seed, then mean and sample
sd, ddof=1), the figure's series, colours and panels against the --by/--panel values, and bad
input refused with one line, exit 2 and nothing written."""

import json
import shlex
import warnings

import numpy as np
import pytest

from sdd_jax import cli, presets
from sdd_jax.atomic import atomic_write_json
from sdd_jax.compare import compare, report_study
from sdd_jax.compare_figure import PALETTE, curve, make_comparison_figure
from sdd_jax.config import override, to_dict
from sdd_jax.exports import curve_rows, write_curves_csv
from sdd_jax.identity import IDENTITY_COLUMNS
from sdd_jax.results import read_csv, write_results_csv

LEVELS = 6  # levels 0..5 (pruning.levels = 5)
# A sparse double descent by construction: a dip at level 2, the best at level 4, a collapse at
# level 5 lower than the dip (the worst level must stay before the best one).
SHAPE = np.array([0.80, 0.76, 0.72, 0.80, 0.86, 0.50])
TRAIN = np.array([1.00, 1.00, 0.97, 0.88, 0.80, 0.50])


def _curves(rate: float, seeds: int, salt: int) -> np.ndarray:
    """Test accuracy (fractions), shape (seeds, LEVELS): SHAPE moved down with the noise, plus
    small per-seed noise; the last seed of rate 0.8 dips one level early."""
    rng = np.random.default_rng(salt)
    test = SHAPE - 0.1 * rate + rng.normal(0, 0.004, (seeds, LEVELS))
    if rate == 0.8:
        test[-1, 1] = test[-1, 2] - 0.01
    return test


def _config(**settings):
    return override(presets.get("smoke"), {"pruning.levels": LEVELS - 1, **settings})


def _write_run(folder, config, test, branch="imp", with_config=True):
    """``results.csv`` of ``test`` (seeds x levels) in ``folder`` (rows without identity columns,
    as an older version wrote them) and the run's ``config.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    if with_config:
        atomic_write_json(folder / "config.json", to_dict(config))
    rows = []
    for seed, per_level in enumerate(test):
        for level, acc in enumerate(per_level):
            if branch != "imp" and level == 0:
                continue
            rows.append(
                {
                    "branch": branch,
                    "seed": seed,
                    "level": level,
                    "density": 0.8**level,
                    "sparsity": 1 - 0.8**level,
                    "train_acc": float(TRAIN[level]),
                    "train_acc_clean": 0.9,
                    "train_acc_noisy_subset": 0.5,
                    "train_loss": 0.1,
                    "test_acc": float(acc),
                    "test_acc_best": float(acc),
                    "test_loss": 0.5,
                    "learning_distance": float(level + seed),
                    "learning_distance_unpruned": 1.0,
                }
            )
    write_results_csv(rows, folder / "results.csv")


def _oracle(test: np.ndarray, first_level: int = 0) -> dict:
    """Per seed (rows of ``test``, in %), then mean and ddof=1 sd: dense, best sparse level,
    worst level up to it, dip and recovery."""
    t = 100 * test
    per = {k: [] for k in ("dense", "worst_level", "worst", "best_level", "best", "dip", "recovery")}
    for row in t:
        sparse0 = 1 if first_level == 0 else 0
        b = int(np.argmax(row[sparse0:])) + sparse0
        w = int(np.argmin(row[: b + 1]))
        dense = row[0] if first_level == 0 else np.nan
        for k, v in (
            ("dense", dense),
            ("worst_level", w + first_level),
            ("worst", row[w]),
            ("best_level", b + first_level),
            ("best", row[b]),
            ("dip", dense - row[w]),
            ("recovery", row[b] - row[w]),
        ):
            per[k].append(v)
    return {k: (np.mean(v), np.std(v, ddof=1)) for k, v in per.items()}


def _check_row(row, oracle):
    for name, (mean, sd) in oracle.items():
        if np.isnan(mean):
            assert row[f"{name}_mean"] is None
            continue
        np.testing.assert_allclose([row[f"{name}_mean"], row[f"{name}_sd"]], [mean, sd], atol=1e-9, err_msg=name)


def _lines(fig, kind):
    """{(value, panel index): colour} of the drawn lines of ``kind`` (test, train, distance)."""
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            gid = line.get_gid() or ""
            if gid.startswith(f"{kind}|"):
                _, value, panel = gid.split("|")
                out[(value, int(panel))] = line.get_color()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three run directories at 20/40/80% noise (3 seeds), given in shuffled order."""
    root = tmp_path_factory.mktemp("runs")
    tests, paths = {}, []
    for salt, rate in enumerate((0.4, 0.8, 0.2)):
        tests[rate] = _curves(rate, 3, salt)
        paths.append(root / f"run-{rate}")
        _write_run(paths[-1], _config(**{"noise.rate": rate}), tests[rate])
    curves = {"epoch": [1, 2], "test_acc": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]}
    write_curves_csv(curve_rows("imp", 0, [0, 1, 2], curves), paths[0] / "curves.csv")
    return paths, tests


def test_compare_runs_table_figure_and_stacked_rows(runs, tmp_path):
    paths, tests = runs
    out = compare(paths, by="noise.rate", out=tmp_path / "cmp")
    assert out["values"] == [0.2, 0.4, 0.8]  # numbers ascending, whatever the order given
    assert [r["noise.rate"] for r in out["rows"]] == [0.2, 0.4, 0.8]
    for row in out["rows"]:
        _check_row(row, _oracle(tests[row["noise.rate"]]))
        assert row["worst_level_mean"] <= 2 and row["best_level_mean"] == 4  # the collapse is not the dip
        assert row["n_seeds"] == 3 and row["done"] is True and row["noise_rate"] == row["noise.rate"]
    # The written table is the returned one.
    back = read_csv(tmp_path / "cmp" / "comparison.csv")
    assert [r["dip_mean"] for r in back] == [r["dip_mean"] for r in out["rows"]]
    assert (tmp_path / "cmp" / "comparison.txt").read_text(encoding="utf-8").count("±") >= 3 * 7
    for suffix in ("png", "svg"):
        assert (tmp_path / "cmp" / f"comparison.{suffix}").stat().st_size > 1000
    # One colour per value, in value order; test and train lines of the same colour; one panel.
    fig = out["figure"]
    expected = {(f"{v:g}", 0): PALETTE[i] for i, v in enumerate([0.2, 0.4, 0.8])}
    assert _lines(fig, "test") == expected and _lines(fig, "train") == expected
    assert len(fig.axes) == 1 and not _lines(fig, "distance")
    legend = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert {"0.2", "0.4", "0.8"} <= set(legend) and any("± 1 sd over 3 seeds" in t for t in legend)
    assert any("noisy training labels" in t for t in legend)
    # The band is ± one ddof=1 sd over seeds.
    drawn = curve(read_csv(paths[1] / "results.csv"))
    np.testing.assert_allclose(drawn["test_sd"], 100 * np.std(tests[0.8], axis=0, ddof=1), atol=1e-9)
    # Every series' rows stacked, identity columns first (filled from config.json).
    stacked = read_csv(tmp_path / "cmp" / "results_all.csv")
    assert len(stacked) == 3 * 3 * LEVELS
    assert list(stacked[0])[: len(IDENTITY_COLUMNS) + 1] == ["branch", *IDENTITY_COLUMNS]
    assert sorted({r["noise_rate"] for r in stacked}) == [0.2, 0.4, 0.8]
    stacked_curves = read_csv(tmp_path / "cmp" / "curves_all.csv")
    assert len(stacked_curves) == 6 and {r["noise_rate"] for r in stacked_curves} == {0.4}


def _study(root, distance=False):
    """A study of noise.rate x init: 0.2 and 0.4 done (lottery and reinit), 0.8's lottery point
    unfinished (levels 0-2) and its reinit point not started."""
    tests = {}
    points = []
    for salt, rate in enumerate((0.2, 0.4, 0.8)):
        run_dir = f"points/smoke-{rate}"
        lottery = _curves(rate, 2, 10 + salt)
        reinit = _curves(rate, 2, 20 + salt) - 0.02
        if rate == 0.8:
            lottery = lottery[:, :3]
        tests[(rate, "lottery")], tests[(rate, "reinit")] = lottery, reinit[:, 1:]
        _write_run(root / run_dir, _config(**{"noise.rate": rate}), lottery)
        if rate != 0.8:
            _write_run(root / run_dir / "branches" / "reinit", None, reinit, "reinit", with_config=False)
        for init, branch in (("lottery", "imp"), ("reinit", "reinit")):
            done = rate != 0.8
            coords = {"noise.rate": rate, "init": init}
            points.append({"coords": coords, "run_dir": run_dir, "branch": branch, "done": done})
    study = {
        "format": 1,
        "name": "hand-made",
        "preset": "smoke",
        "figure": "",
        "by": "init",
        "panel": "noise.rate",
        "axes": [
            {"key": "noise.rate", "values": [0.2, 0.4, 0.8], "kind": "replica"},
            {"key": "init", "values": ["lottery", "reinit"], "kind": "replica"},
        ],
        "seeds": [0, 1],
        "points": points,
        "distance": distance,
    }
    (root / "study.json").write_text(json.dumps(study), encoding="utf-8")
    return tests


def test_report_of_a_study_draws_its_by_and_panel(tmp_path, capsys):
    tests = _study(tmp_path, distance=True)
    with pytest.warns(UserWarning) as caught:
        out = report_study(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any("noise.rate=0.8, init=lottery is unfinished" in m for m in messages)
    assert any("noise.rate=0.8, init=reinit has no results yet" in m for m in messages)
    assert out["values"] == ["lottery", "reinit"] and out["panels"] == [0.2, 0.4, 0.8]
    for row in out["rows"]:
        first = 1 if row["init"] == "reinit" else 0
        _check_row(row, _oracle(tests[(row["noise.rate"], row["init"])], first))
        assert row["done"] is (row["noise.rate"] != 0.8)
    fig = out["figure"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["noise.rate = 0.2", "noise.rate = 0.4", "noise.rate = 0.8"]
    lottery, reinit = PALETTE[0], PALETTE[1]
    expected = {("lottery", 0): lottery, ("reinit", 0): reinit, ("lottery", 1): lottery, ("reinit", 1): reinit}
    assert _lines(fig, "test") == {**expected, ("lottery", 2): lottery}
    assert _lines(fig, "distance") == _lines(fig, "test")  # the study asks for the distance row
    for name in ("comparison.png", "comparison.svg", "comparison.txt", "comparison.csv", "results_all.csv"):
        assert (tmp_path / name).is_file(), name
    stacked = read_csv(tmp_path / "results_all.csv")
    assert {(r["init"], r["noise_rate"]) for r in stacked} == {
        ("lottery", 0.2),
        ("reinit", 0.2),
        ("lottery", 0.4),
        ("reinit", 0.4),
        ("lottery", 0.8),
    }
    # sdd-jax report STUDY_DIR prints the same table.
    (tmp_path / "comparison.csv").unlink()
    with pytest.warns(UserWarning) as again:
        assert cli.main(["report", str(tmp_path)]) == 0
    assert [str(w.message) for w in again] == messages
    assert out["table"] in capsys.readouterr().out and (tmp_path / "comparison.csv").is_file()


def test_compare_two_runs_from_the_command_line(runs, tmp_path, capsys, monkeypatch):
    paths, tests = runs
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", str(paths[2]), str(paths[0]), "--by", "noise_rate", "--panel", "noise.rate"]) == 0
    printed = capsys.readouterr().out
    assert "noise_rate" in printed and str(tmp_path / "comparison" / "comparison.png") in printed
    rows = read_csv(tmp_path / "comparison" / "comparison.csv")
    assert [(r["noise_rate"], r["noise.rate"]) for r in rows] == [(0.2, 0.2), (0.4, 0.4)]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown key", "--by 'noise.rat' is not a key (did you mean 'noise.rate'?)"),
        (
            "same for all",
            "--by model is lenet_300_100 for every series (3): it tells nothing apart; these differ: noise.rate; "
            "draw it with `sdd-jax compare ",
        ),
        ("no results.csv", "results.csv not found"),
        ("broken study.json", "study.json is not valid JSON"),
        ("no --by", "--by KEY is needed"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(runs, tmp_path, capsys, case, expected):
    paths, _ = runs
    out = tmp_path / "out"
    args = [*map(str, paths), "--out", str(out)]
    if case == "unknown key":
        args += ["--by", "noise.rat"]
    elif case == "same for all":
        args += ["--by", "model"]
    elif case == "no results.csv":
        (tmp_path / "empty").mkdir()
        args = [str(paths[0]), str(tmp_path / "empty"), "--by", "noise.rate", "--out", str(out)]
    elif case == "broken study.json":
        (tmp_path / "study").mkdir()
        (tmp_path / "study" / "study.json").write_text('{"points": [', encoding="utf-8")
        args = [str(tmp_path / "study"), "--by", "noise.rate", "--out", str(out)]
    assert cli.main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdd-jax: error: ") and expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_the_table_says_levels_are_means_and_the_csv_holds_no_per_seed_values(runs, tmp_path):
    paths, tests = runs
    out = compare(paths[:2], by="noise.rate", out=tmp_path)
    note = (tmp_path / "comparison.txt").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert "levels: mean over seeds" in note and "per seed then" not in note
    # What the note says of the files is true: comparison.csv one row per configuration, no
    # per-seed column; results_all.csv every seed's rows.
    table = read_csv(tmp_path / "comparison.csv")
    assert len(table) == 2 and not any("seed" in c and c != "n_seeds" for c in table[0])
    assert "comparison.csv holds the same means and sds; every seed's rows are in results_all.csv" in note
    stacked = read_csv(tmp_path / "results_all.csv")
    assert {(r["noise_rate"], r["seed"]) for r in stacked} == {(rate, s) for rate in (0.4, 0.8) for s in range(3)}
    # A fractional worst level: the mean of the seeds' levels (rate 0.8's last seed dips earlier).
    row = next(r for r in out["rows"] if r["noise.rate"] == 0.8)
    seeds_levels = [int(np.argmin(100 * t[: 4 + 1])) for t in tests[0.8]]
    assert row["worst_level_mean"] == pytest.approx(np.mean(seeds_levels)) and row["worst_level_mean"] % 1


def test_settings_that_differ_besides_by_are_named_once_in_a_warning(runs, tmp_path):
    paths, tests = runs
    other = tmp_path / "other"  # less data, more epochs: the difference is not noise.rate's alone
    _write_run(other, _config(**{"noise.rate": 0.6, "data.train_size": 300, "optim.epochs": 3}), tests[0.2])
    with pytest.warns(UserWarning) as caught:
        compare([paths[0], other], by="noise_rate", out=tmp_path / "cmp")
    (message,) = [str(w.message) for w in caught]
    assert "also differ in data.train_size (300, 512), optim.epochs (2, 3):" in message, message
    assert "noise" not in message.split("differences")[0]  # the by key's setting, in neither spelling
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same configurations but noise.rate: no warning
        compare(paths[:2], by="noise.rate", out=tmp_path / "cmp")
    # Settings are named once: criterion and pruning.criterion are one setting.
    crit = tmp_path / "crit"
    _write_run(crit, _config(**{"noise.rate": 0.4, "pruning.criterion": "random"}), tests[0.4])
    with pytest.raises(ValueError) as err:
        compare([paths[0], crit], by="noise.rate", out=tmp_path / "cmp")
    assert "these differ: pruning.criterion;" in str(err.value) and "criterion," not in str(err.value)
    assert str(err.value).endswith("--by pruning.criterion`") and str(paths[0]) in str(err.value)


def test_branches_by_init_keep_the_rows_init_tells_apart(runs, tmp_path):
    _, tests = runs
    run = tmp_path / "run"
    _write_run(run, _config(), tests[0.2])
    for branch in ("reinit", "oneshot", "random_prune"):
        _write_run(run / "branches" / branch, None, tests[0.4], branch, with_config=False)
    with pytest.warns(UserWarning) as caught:
        out = compare([run], by="init", branches=True, out=tmp_path / "cmp")
    assert out["values"] == ["lottery", "reinit"] and [s.branch for s in out["series"]] == ["imp", "reinit"]
    (message,) = [str(w.message) for w in caught]
    assert "oneshot, random_prune are left out" in message
    # --by branch keeps every branch.
    assert len(compare([run], by="branch", branches=True, out=tmp_path / "cmp")["series"]) == 4


def _three_axis_study(root, panel="init"):
    """noise.rate x pruning.criterion x init, every point done; study.json names ``panel``."""
    points = []
    for rate in (0.2, 0.4):
        for crit in ("magnitude", "random"):
            run_dir = f"points/smoke-{rate}-{crit}"
            config = _config(**{"noise.rate": rate, "pruning.criterion": crit})
            _write_run(root / run_dir, config, _curves(rate, 2, 1))
            _write_run(root / run_dir / "branches" / "reinit", None, _curves(rate, 2, 2), "reinit", with_config=False)
            for init, branch in (("lottery", "imp"), ("reinit", "reinit")):
                coords = {"noise.rate": rate, "pruning.criterion": crit, "init": init}
                points.append({"coords": coords, "run_dir": run_dir, "branch": branch, "done": True})
    axes = [("noise.rate", [0.2, 0.4]), ("pruning.criterion", ["magnitude", "random"]), ("init", ["lottery", "reinit"])]
    study = {"name": "three", "by": "noise.rate", "panel": panel, "points": points}
    study["axes"] = [{"key": k, "values": v} for k, v in axes]
    (root / "study.json").write_text(json.dumps(study), encoding="utf-8")


def test_a_study_its_keys_cannot_draw_names_a_command_that_can(tmp_path, capsys):
    _three_axis_study(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(they differ in pruning.criterion)" in err and "branch" not in err, err
    command = err.split("`")[1]
    assert command == f"sdd-jax compare {tmp_path} --by noise.rate --panel init --where pruning.criterion=magnitude"
    assert cli.main(shlex.split(command)[1:]) == 0  # the named command draws that part
    rows = read_csv(tmp_path / "comparison.csv")
    assert {(r["noise.rate"], r["init"], r["criterion"]) for r in rows} == {
        (rate, init, "magnitude") for rate in (0.2, 0.4) for init in ("lottery", "reinit")
    }
    # report takes --by/--panel/--where's keys too; a --where value that matches nothing is one line.
    assert cli.main(["report", str(tmp_path), "--by", "pruning.criterion", "--panel", "init"]) == 2
    assert "--where noise.rate=0.2" in capsys.readouterr().err
    assert cli.main(["compare", str(tmp_path), "--where", "noise.rate=0.3"]) == 2
    assert "--where noise.rate=0.3 matches no series (noise.rate is 0.2, 0.4)" in capsys.readouterr().err


def test_a_study_file_without_a_panel_gets_its_second_axis(tmp_path, capsys):
    """study.json as written before the panel default (by the first axis, no panel)."""
    _study(tmp_path)
    record = json.loads((tmp_path / "study.json").read_text())
    record.update(by="noise.rate", panel=None)
    (tmp_path / "study.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.warns(UserWarning):  # the unfinished 0.8 points
        out = report_study(tmp_path)
    assert out["values"] == [0.2, 0.4, 0.8] and out["panels"] == ["lottery", "reinit"]
    with pytest.warns(UserWarning):
        assert cli.main(["report", str(tmp_path), "--by", "init", "--panel", "noise.rate", "--distance"]) == 0
    assert "noise.rate" in read_csv(tmp_path / "comparison.csv")[0]
    assert cli.main(["report", str(tmp_path / "points" / "smoke-0.2"), "--by", "init"]) == 2
    assert "not a study directory" in capsys.readouterr().err


def _ticks(ax):
    return [t.get_text() for t in ax.get_xticklabels()], [t.get_window_extent() for t in ax.get_xticklabels()]


@pytest.mark.parametrize(
    "levels, panels, every",
    [(3, 1, True), (9, 1, True), (9, 3, False), (35, 1, False)],
    ids=["3 levels", "9 levels", "9 levels in 3 panels", "35 levels"],
)
def test_ticks_at_every_level_of_a_short_range_and_labels_apart(levels, panels, every):
    x = 100 * 0.8 ** np.arange(levels)
    series = {
        "x": x,
        "test_mean": np.linspace(80, 60, levels),
        "test_sd": np.ones(levels),
        "train_mean": np.linspace(90, 70, levels),
        "train_sd": np.ones(levels),
        "n_seeds": 2,
        "value": "0.2",
        "colour": PALETTE[0],
    }
    fig = make_comparison_figure(
        [(f"p{i}" if panels > 1 else "", [series]) for i in range(panels)], "noise.rate", ["0.2"]
    )
    fig.canvas.draw()
    labels, boxes = _ticks(fig.axes[0])
    expected = [f"{v:.3g}%" for v in x]  # as the run figure writes them
    if every:
        assert labels == expected
    elif levels < 10:  # every other level
        assert labels == expected[::2]
    else:  # the paper's ticks, thinned
        assert 3 <= len(labels) and set(labels) <= {f"{t:g}%" for t in (100, 50, 20, 10, 5, 1, 0.5, 0.1, 0.05)}
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), labels  # no two labels touch


def test_one_panel_with_the_distance_is_wide_not_tall():
    x = 100 * 0.8 ** np.arange(3)
    series = {"x": x, "n_seeds": 1, "value": "0.2", "colour": PALETTE[0]}
    for name in ("test", "train", "distance"):
        series[f"{name}_mean"], series[f"{name}_sd"] = np.arange(3.0), np.full(3, np.nan)
    fig = make_comparison_figure([("", [series])], "noise.rate", ["0.2"], distance=True)
    width, height = fig.get_size_inches()
    assert width > height
    acc, dist = fig.axes
    assert dist.get_position().x0 > acc.get_position().x1  # side by side
    assert _lines(fig, "distance") == _lines(fig, "test") == {("0.2", 0): PALETTE[0]}
