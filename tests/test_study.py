"""Studies (``sdd-jax sweep``): every point of a grid equals the same configuration run alone
(``sdd-jax run``, and ``sdd-jax reinit`` for reinit points), resumes after kills at any level or
epoch, trains only what is missing, runs the same on 8 devices, and refuses bad grids before
writing anything. Tiny: the smoke preset on 256 digits, a 32-unit MLP, 2 epochs, 2 levels."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from conftest import simulated_devices_env

from sdd_jax import branches, cli, imp, presets, results, runopen, saved, study
from sdd_jax.checkpoints import RunStore
from sdd_jax.config import override
from sdd_jax.engine import Engine
from sdd_jax.rundir import RunDir
from sdd_jax.runid import run_path
from sdd_jax.study_grid import STUDY_FILE

TESTS = Path(__file__).resolve().parent
SET = (
    "data.train_size=256",
    "data.test_size=256",
    "optim.epochs=2",
    "pruning.levels=2",
    "model.name=mlp",
    "model.widths=32",
    "run.eval_batch_size=128",
)
GRID = ("noise.rate=0.2,0.4", "pruning.criterion=magnitude,saliency")
TABLES = (results.RESULTS_FILE, results.CURVES_FILE, results.LAYERS_FILE)


def resolve(workdir, grid=GRID, execution="sequential", *extra):
    return study.resolve_study(
        "smoke", grid, overrides=[*SET, f"run.seed_execution={execution}", *extra], seeds=2, workdir=str(workdir)
    )


def sweep(workdir, grid=GRID, execution="sequential", *extra):
    resolved = resolve(workdir, grid, execution, *extra)
    assert study.run(resolved, write_report=False) == resolved.path
    return resolved


def lone(point, workdir) -> Path:
    """The point's configuration run alone (``sdd-jax run``) in another workdir."""
    return imp.run_imp(override(point.config, {"run.workdir": str(workdir)}), write_report=False)


def table_diff(a: Path, b: Path) -> float:
    """The largest difference over every numeric column of results/curves/layers.csv of two run
    (or branch) directories; every other column must be equal, row for row."""
    worst = 0.0
    for name in TABLES:
        rows_a, rows_b = results.read_csv(a / name), results.read_csv(b / name)
        assert len(rows_a) == len(rows_b) > 0, name
        for x, y in zip(rows_a, rows_b):
            assert x.keys() == y.keys(), name
            for key, value in x.items():
                if isinstance(value, float) and isinstance(y[key], float):
                    if not (np.isnan(value) and np.isnan(y[key])):
                        worst = max(worst, abs(value - y[key]))
                else:
                    assert value == y[key], (name, key, value, y[key])
    return worst


def assert_same_weights(a, b) -> None:
    """Every stored level's weights and mask (and θ0, θk of a run) bit-identical."""
    assert a.levels() == b.levels() and a.levels()
    for level in a.levels():
        chex.assert_trees_all_equal(a.level(level), b.level(level))


def branch_of(point) -> Path:
    return point.run_dir if point.init == "lottery" else point.run_dir / "branches" / "reinit"


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """2 noise rates x 2 criteria x 2 seeds under ``run.seed_execution=sequential``, and each
    point's configuration run alone."""
    root = tmp_path_factory.mktemp("sequential")
    resolved = sweep(root / "study")
    return resolved, {p: lone(p, root / "lone") for p in resolved.points}


def test_each_point_is_bit_identical_to_its_configuration_run_alone(sequential):
    resolved, alone = sequential
    for point, lone_dir in alone.items():
        assert point.run_dir.name == lone_dir.name  # the very directory `sdd-jax run` writes
        assert point.run_dir.parent == resolved.path / "points"
        assert table_diff(point.run_dir, lone_dir) == 0.0
        a, b = saved.load_run(point.run_dir), saved.load_run(lone_dir)
        assert_same_weights(a, b)
        chex.assert_trees_all_equal(a.theta0(), b.theta0())
        chex.assert_trees_all_equal(a.theta_rewind(), b.theta_rewind())
        for name in ("dataset.json", "result_fields.json"):  # its labels, fingerprint and identity
            assert json.loads((point.run_dir / name).read_text()) == json.loads((lone_dir / name).read_text())
    # The points really differ: noise rates relabel differently, criteria prune differently.
    masks = {p.coords: saved.load_run(p.run_dir).level(2).mask for p in resolved.points}
    leaves = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(m)]) for m in masks.values()]
    assert all(not np.array_equal(leaves[i], leaves[j]) for i in range(4) for j in range(i))
    record = json.loads((resolved.path / STUDY_FILE).read_text())
    assert [a["kind"] for a in record["axes"]] == ["replica", "replica"]
    assert [p["coords"] for p in record["points"]] == [dict(p.coords) for p in resolved.points]
    assert all(p["done"] and p["branch"] == "imp" for p in record["points"])
    assert {p["run_dir"] for p in record["points"]} == {f"points/{d.name}" for d in alone.values()}


def test_a_finished_study_trains_nothing_and_rewrites_a_lost_results_file(sequential, monkeypatch):
    resolved, alone = sequential
    point = resolved.points[1]
    (point.run_dir / results.RESULTS_FILE).unlink()  # as a kill between a level's checkpoint and its files
    trained = count_trainings(monkeypatch)
    study.run(resolved, write_report=False)
    assert trained == []
    assert table_diff(point.run_dir, alone[point]) == 0.0


def test_a_vmapped_study_equals_its_lone_vmapped_runs_within_float_rounding(tmp_path):
    """On this CPU the largest difference measured was 2.4e-7 (a batched computation may round
    differently with more replicas beside it)."""
    resolved = sweep(tmp_path / "study", GRID, "vmap")
    worst = max(table_diff(p.run_dir, lone(p, tmp_path / "lone")) for p in resolved.points[1::2])  # saliency
    assert worst <= 1e-5


def test_lottery_and_reinit_points_equal_a_run_and_its_reinit_branch(tmp_path, monkeypatch):
    lottery = resolve(tmp_path / "a", ("init=lottery,reinit",)).points[0]
    oracle = lone(lottery, tmp_path / "lone")
    branches.run_branch(*runopen.open_run(oracle), "reinit", [1, 2])  # sdd-jax reinit RUN --levels 1,2

    joint = sweep(tmp_path / "a", ("init=lottery,reinit",))  # reinit replicas beside their partners
    assert [p.branch for p in joint.points] == ["imp", "reinit"]
    assert table_diff(joint.points[0].run_dir, oracle) == 0.0
    assert table_diff(branch_of(joint.points[1]), oracle / "branches" / "reinit") == 0.0
    assert_same_weights(
        saved.load_run(oracle).branch("reinit"), saved.load_run(joint.points[1].run_dir).branch("reinit")
    )

    # A study whose lottery point is already finished trains only the reinit point, from the
    # partner's stored masks.
    later = resolve(tmp_path / "b", ("init=lottery,reinit",))
    shutil.copytree(oracle, later.points[0].run_dir, ignore=shutil.ignore_patterns("branches", ".lock*"))
    trained = count_trainings(monkeypatch)
    study.run(later, write_report=False)
    assert trained == [("reinit", 1), ("reinit", 2)]
    assert table_diff(branch_of(later.points[1]), oracle / "branches" / "reinit") == 0.0
    assert json.loads((later.path / STUDY_FILE).read_text())["points"][1]["done"]


def count_trainings(monkeypatch) -> list:
    """Record every finished level training as (branch, level) (a point's main run: ``imp``)."""
    seen = []
    original = RunDir.finish_level

    def counted(self, level, *args, **kwargs):
        seen.append((self.name, level) if self.name != "imp" else (self.path.name, level))
        return original(self, level, *args, **kwargs)

    monkeypatch.setattr(RunDir, "finish_level", counted)
    return seen


def test_kills_inside_and_between_levels_resume_and_added_values_train_only_their_points(
    sequential, tmp_path, monkeypatch
):
    reference, _ = sequential
    first = ("noise.rate=0.2", "pruning.criterion=magnitude,saliency")
    killed = resolve(tmp_path, first, "sequential", "run.checkpoint_every_epochs=1")
    a, b = (p.run_dir for p in killed.points)

    # 1. Killed inside level 1 (its second epoch): every point holds the progress of epoch 1.
    calls = {"n": 0}
    epoch = Engine.train_epoch_then_evaluate

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # level 0: 2 epochs, level 1: the second epoch
            raise KeyboardInterrupt
        return epoch(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "train_epoch_then_evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        study.run(killed, write_report=False)
    monkeypatch.undo()
    stores = [saved.load_run(d) for d in (a, b)]
    assert [s.levels() for s in stores] == [[0], [0]]
    assert [RunStore(d, read_only=True).latest_progress(1) for d in (a, b)] == [1, 1]

    # 2. Killed between two points' records of level 1: a stands at level 1, b inside it.
    finish = RunDir.finish_level

    def between(self, level, *args, **kwargs):
        if level == 1 and self.path == b:
            raise KeyboardInterrupt
        return finish(self, level, *args, **kwargs)

    monkeypatch.setattr(RunDir, "finish_level", between)
    with pytest.raises(KeyboardInterrupt):
        study.run(killed, write_report=False)
    monkeypatch.undo()
    assert saved.load_run(a).levels() == [0, 1] and saved.load_run(b).levels() == [0]

    # 3. Resumed: b finishes level 1 from its epoch-1 checkpoint alone, then both train level 2.
    trained = count_trainings(monkeypatch)
    epochs = {"n": 0}

    def counted_epochs(self, *args, **kwargs):
        epochs["n"] += 1
        return epoch(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "train_epoch_then_evaluate", counted_epochs)
    study.run(killed, write_report=False)
    assert trained == [(b.name, 1), (a.name, 2), (b.name, 2)]
    assert epochs["n"] == 1 + 2

    # 4. Another noise rate added: only its two points train, all three levels.
    trained.clear()
    epochs["n"] = 0
    grown = resolve(tmp_path, GRID, "sequential", "run.checkpoint_every_epochs=1")
    assert grown.path == killed.path  # a value added to an axis keeps the study
    study.run(grown, write_report=False)
    new = {p.run_dir.name for p in grown.points} - {a.name, b.name}
    assert len(new) == 2 and sorted(trained) == sorted((name, level) for name in new for level in (0, 1, 2))
    assert epochs["n"] == 3 * 2

    # Every point equals the uninterrupted study that had them all from the start.
    for point, same in zip(grown.points, reference.points):
        assert point.coords == same.coords
        assert table_diff(point.run_dir, same.run_dir) == 0.0
        assert_same_weights(saved.load_run(point.run_dir), saved.load_run(same.run_dir))


def test_a_study_on_eight_devices_equals_one_device():
    env = simulated_devices_env(8)
    done = subprocess.run(
        [sys.executable, str(TESTS / "study_checks.py")], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["devices"] == 8 and facts["points"] == 4
    # Level 0 stacks the 2 lottery points (4 replicas), level 1 adds their reinit points (8).
    assert facts["one_device_meshes"] == [[4, None], [8, None]]
    assert facts["eight_device_meshes"] == [[4, {"seeds": 4, "data": 1}], [8, {"seeds": 8, "data": 1}]]
    assert facts["max_diff"] <= 1e-5  # the same numbers up to float reduction order (seeds: tests/test_mesh.py)
    assert facts["level_mask_equal"]


def test_a_study_preset_its_axes_and_the_identity_of_a_study(tmp_path):
    preset = study.resolve_study("quickstart-noise", workdir=str(tmp_path))
    assert [(a.key, a.values, a.kind) for a in preset.axes] == [("noise.rate", (0.2, 0.4, 0.8), "replica")]
    assert preset.seeds == [0, 1] and preset.path.name.startswith("quickstart-noise-study-")
    for point, rate in zip(preset.points, (0.2, 0.4, 0.8)):  # each point is the run preset's own run
        config = override(presets.get("quickstart"), {"noise.rate": rate, "run.workdir": str(preset.path / "points")})
        assert point.config == config and point.run_dir == run_path(preset.path / "points", config)
    # A value added to an axis (--grid replaces the preset's axis) keeps the study; an axis added
    # (a program axis here) makes another.
    more = study.resolve_study("quickstart-noise", ["noise.rate=0.2,0.4,0.8,0.6"], workdir=str(tmp_path))
    assert more.path == preset.path and len(more.points) == 4
    lrs = study.resolve_study("quickstart-noise", ["optim.lr=0.1,0.05"], workdir=str(tmp_path))
    assert lrs.path != preset.path and [a.kind for a in lrs.axes] == ["replica", "program"]
    assert [[p.label for p in program] for program in lrs.programs()] == [
        [f"noise.rate={r} optim.lr={lr}" for r in (0.2, 0.4, 0.8)] for lr in (0.1, 0.05)
    ]
    assert list(tmp_path.iterdir()) == []  # resolving writes nothing


BAD_GRIDS = [
    (["--grid", "noise.rat=0.2,0.4"], "did you mean 'noise.rate'"),
    (["--grid", "noise.rate=0.2,abc"], "noise.rate: expected float, got 'abc'"),
    (["--grid", "noise.rate=0.2", "--grid", "noise.rate=0.4"], "noise.rate is given twice"),
    (["--grid", "noise.rate=0.2,0.4", "--set", "noise.rate=0.3"], "noise.rate is given both by --grid and by --set"),
    (["--grid", "init=lottery,random"], "'random' is not an init"),
    (["--grid", "init=reinit"], "reinit needs lottery"),
    (["--grid", "noise.rate="], "noise.rate: the axis has no values"),
    (["--grid", "noise.rate=0.2,0.2"], "the value 0.2 is given twice"),
    (["--grid", "noise.rate=0.2,1.5"], "study point noise.rate=1.5: noise.rate must be in [0, 1]"),
    (["--grid", "noise.kind=none,symmetric"], "study point noise.kind=none: noise.rate=0.2 given with noise.kind none"),
    (["--grid", "run.verbosity=0,1"], "run.verbosity: this setting does not change results"),
    (["--grid", "noise.rate"], "--grid expects KEY=V1,V2,..."),
    ([], "smoke has no grid"),
    (["--grid", "noise.rate=0.2,0.4", "--set", "data.train_size=99999"], "train_size 99999 exceeds"),  # the data
    (["--grid", "noise.rate=0.2,0.4", "--by", "noise.rat"], "--by 'noise.rat' is not a key (did you mean"),
]


@pytest.mark.parametrize("args, message", BAD_GRIDS, ids=[m for _, m in BAD_GRIDS])
def test_a_bad_grid_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    workdir = tmp_path / "runs"
    assert cli.main(["sweep", "smoke", *args, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sdd-jax: error: ") and message in err, err
    assert not workdir.exists() and list(tmp_path.iterdir()) == []


def test_an_unknown_preset_names_the_study_presets_too(tmp_path, capsys):
    assert cli.main(["sweep", "quickstart-nois", "--workdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "quickstart-noise" in err and err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_the_sweep_command_end_to_end(tmp_path, capsys):
    args = ["sweep", "smoke", "--grid", "noise.rate=0.2,0.4", "--seeds", "1", "--workdir", str(tmp_path)]
    sets = [*SET, "pruning.levels=1", "optim.epochs=1"]
    assert cli.main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    (path,) = [line.split("study: ", 1)[1] for line in out if line.startswith("study: ")]
    record = json.loads((Path(path) / STUDY_FILE).read_text())
    assert Path(path).name.startswith("smoke-study-") and record["seeds"] == [0]
    assert [p["coords"] for p in record["points"]] == [{"noise.rate": 0.2}, {"noise.rate": 0.4}]
    for point in record["points"]:
        run_dir = Path(path) / point["run_dir"]
        assert point["done"] and any(point["run_dir"] in line and "2 of 2 levels" in line for line in out)
        assert (run_dir / "summary.txt").is_file() and (run_dir / "figure.png").is_file()  # the report
        rows = results.read_results_csv(run_dir / "results.csv")
        assert [(r["seed"], r["level"]) for r in rows] == [(0, 0), (0, 1)]
        assert {r["seed"] for r in rows} == {0} and rows[0]["density"] == 1.0
        assert saved.load_run(run_dir).levels() == [0, 1]  # a run directory like any other


def test_the_comparison_keys_of_a_grid_default_to_its_varying_axes(tmp_path):
    def keys(grid, preset="smoke", **options):
        resolved = study.resolve_study(preset, grid, workdir=str(tmp_path), **options)
        return resolved.by, resolved.panel, study.drawing_problem(resolved)

    # Two axes: the second is the panel, so that every point is told apart (README's examples).
    assert keys(["noise.rate=0.2,0.4", "init=lottery,reinit"]) == ("noise.rate", "init", None)
    assert keys(GRID) == ("noise.rate", "pruning.criterion", None)
    assert keys(["noise.rate=0.2", "init=lottery,reinit"]) == ("init", None, None)  # a one-value axis is no key
    assert keys(GRID, by="criterion") == ("criterion", "noise.rate", None)  # not its own twin
    assert keys(["noise.rate=0.2,0.4"], "fig10") == ("init", "noise.rate", None)  # an axis added to a preset
    assert keys(["noise.rate=0.2,0.4"], "fig2")[:2] == ("pruning.criterion", "pruning.criterion")  # the preset's
    by, panel, problem = keys([*GRID, "init=lottery,reinit"], by="init", panel="noise.rate", distance=True)
    assert (by, panel) == ("init", "noise.rate") and problem.count("\n") == 0
    assert "(they differ in pruning.criterion)" in problem
    assert problem.endswith("--by init --panel noise.rate --where pruning.criterion=magnitude`")
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_over_three_axes_warns_before_training_finishes_and_names_a_command_that_draws_it(tmp_path, capsys):
    """The tiny real sweep: the vmapped study's grid (2 noise rates x 2 criteria) times 2 noise
    draws, 1 seed, 1 level: the same 8 replicas and shapes, so its programs come from the
    compilation cache. Its by/panel cannot tell the 8 points apart: one warning up front, the
    sweep still trains every point, its report warns instead of failing, and the command it names
    draws a part."""
    grid = [*GRID, "noise.seed=0,1"]
    args = ["sweep", "smoke", *(x for g in grid for x in ("--grid", g)), *(x for s in SET for x in ("--set", s))]
    args += ["--set", "pruning.levels=1", "--seeds", "1", "--workdir", str(tmp_path), "--by", "noise.rate"]

    def show(message, category, filename, lineno, file=None, line=None):  # as the command line prints them
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        assert cli.main(args) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    first, last = [i for i, line in enumerate(lines) if "sdd-jax compare" in line]
    trained = [i for i, line in enumerate(lines) if " done " in line and line.count("level")]
    assert first < trained[0] and trained[-1] < last  # up front, then at the end
    assert lines[first].startswith("sdd-jax: warning: the comparison by --by noise.rate --panel pruning.criterion")
    assert "no comparison drawn" in lines[last]
    # The progress gives the range over the stack's points, not a mean over their replicas.
    assert all("of 8 points, 1 seed each" in lines[i] for i in trained) and len(trained) == 2
    (path,) = [Path(line.split("study: ", 1)[1]) for line in out.splitlines() if line.startswith("study: ")]
    record = json.loads((path / STUDY_FILE).read_text())
    assert (record["by"], record["panel"]) == ("noise.rate", "pruning.criterion")  # the second axis
    assert len(record["points"]) == 8 and all(p["done"] for p in record["points"])
    assert not (path / "comparison.csv").exists()
    command = lines[last].split("`")[1]
    assert command.endswith(f"{path} --by noise.rate --panel pruning.criterion --where noise.seed=0")
    assert cli.main(shlex.split(command)[1:]) == 0
    rows = results.read_csv(path / "comparison.csv")
    assert sorted((r["noise.rate"], r["criterion"]) for r in rows) == [
        (a, b) for a in (0.2, 0.4) for b in ("magnitude", "saliency")
    ]
