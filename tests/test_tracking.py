"""Live metrics: every scalar of the TensorBoard event files (read back with TensorBoard's own event
reader), of MLflow (a local file store) and of W&B (a recording module in place of ``wandb``)
equals ``curves.csv`` / ``results.csv`` of the same run and the learning-rate schedule, each step
once; the events are on disk while a level trains; a run killed inside a level after a progress
checkpoint and resumed, then a finished level deleted and recomputed, still shows each step once
with the uninterrupted run's numbers; a tracker that is not installed is one line and writes
nothing."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import shutil
import sys
import types
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sdd_jax import cli, imp, presets, rundir, tracking
from sdd_jax.config import override, to_dict
from sdd_jax.identity import IDENTITY_COLUMNS
from sdd_jax.runopen import open_run

RUNS = ("seed_0", "seed_1", "mean")
LR, GAMMA, MILESTONE = 0.1, 0.1, 2  # epochs after the milestone train at LR * GAMMA


def tiny(workdir: Path, **more):
    return override(
        presets.get("smoke"),
        {
            "data.train_size": 256,
            "optim.epochs": 3,
            "pruning.levels": 1,
            "run.seeds": 2,
            "run.checkpoint_every_epochs": 1,
            "run.verbosity": 0,
            "optim.lr": LR,
            "optim.gamma": GAMMA,
            "optim.milestones": str(MILESTONE),
            "run.workdir": str(workdir),
            "run.log_to": "tensorboard,wandb,mlflow",
            **more,
        },
    )


# ----- a recording stand-in for the wandb module -----------------------------------------------------


class RecordedRun:
    """One W&B run as the service would hold it: what was logged, against which x-axis."""

    def __init__(self, run_id: str, settings: dict):
        self.id, self.settings = run_id, settings
        self.history: list[dict] = []
        self.axes: dict[str, str] = {}
        self.finished = False

    def define_metric(self, name, step_metric=None):
        self.axes[name] = step_metric

    def log(self, data):
        assert not self.finished, "logged to a finished run"
        self.history.append(dict(data))

    def finish(self):
        self.finished = True

    def points(self) -> dict[str, list[tuple[int, float]]]:
        out = defaultdict(list)
        for data in self.history:
            for key, value in data.items():
                if key in self.axes:
                    out[key].append((data[self.axes[key]], value))
        return out


def recording_wandb() -> types.ModuleType:
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    module.runs = {}

    def init(*, id=None, resume=None, **settings):
        if id in module.runs and resume == "allow":  # resumed: the same history goes on
            module.runs[id].finished = False
            return module.runs[id]
        run = RecordedRun(id or f"run{len(module.runs)}", settings)
        module.runs[run.id] = run
        return run

    module.init = init
    return module


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """The recording ``wandb`` module and an MLflow file store, for the module's runs."""
    store = tmp_path_factory.mktemp("mlflow")
    wandb = recording_wandb()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "wandb", wandb)
        mp.setenv("MLFLOW_TRACKING_URI", f"file:{store}")
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
        yield wandb


# ----- reading back --------------------------------------------------------------------------------


def tensorboard_points(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every (step, value) per tag of the event files in ``folder``, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out = defaultdict(list)
    for path in sorted(folder.glob("*tfevents*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                out[value.tag].append((event.step, value.simple_value))
    return out


def mlflow_points(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict]:
    """The metric histories and parameters of the MLflow run of the run directory ``run_dir``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("sdd-jax")
    (run,) = [
        r for r in client.search_runs([experiment.experiment_id]) if r.data.tags["sdd_jax.run_dir"] == str(run_dir)
    ]
    assert run.info.run_name == run_dir.name
    out = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] for key in run.data.metrics
    }
    return out, run.data.params


def expected_points(run_dir: Path) -> dict[tuple[str, str], dict[int, float]]:
    """(TensorBoard run, tag) -> {step: value}, from the run's CSV files and the schedule alone."""
    curves, rows = pd.read_csv(run_dir / "curves.csv"), pd.read_csv(run_dir / "results.csv")
    columns = [c for c in curves.columns if c not in ("branch", "seed", "level", "epoch", *IDENTITY_COLUMNS)]
    out = {}
    for (seed, level), group in curves.groupby(["seed", "level"]):
        for column in columns:
            kept = group.dropna(subset=[column])
            out[(f"seed_{seed}", f"level_{level:02d}/{column}")] = dict(zip(kept.epoch, kept[column]))
    for (level, epoch), group in curves.groupby(["level", "epoch"]):
        for column in columns:
            if group[column].notna().sum() == 2:
                out.setdefault(("mean", f"level_{level:02d}/{column}"), {})[epoch] = group[column].mean()
        for run in RUNS:
            out.setdefault((run, f"level_{level:02d}/lr"), {})[epoch] = LR * (GAMMA if epoch > MILESTONE else 1.0)
    numeric = [c for c in rows.select_dtypes("number").columns if c not in ("seed", "level", *IDENTITY_COLUMNS)]
    for _, row in rows.iterrows():
        for column in numeric:
            if np.isfinite(row[column]):
                out.setdefault((f"seed_{int(row.seed)}", f"levels/{column}"), {})[int(row.level)] = row[column]
    for level, group in rows.groupby("level"):
        for column in numeric:
            if np.isfinite(group[column]).all():
                out.setdefault(("mean", f"levels/{column}"), {})[level] = group[column].mean()
    return out


def assert_each_step_once(observed: dict[tuple[str, str], list], expected: dict[tuple[str, str], dict]):
    assert sorted(observed) == sorted(expected)
    for key, points in observed.items():
        steps = Counter(step for step, _ in points)
        assert all(n == 1 for n in steps.values()), f"{key}: steps written more than once {steps}"
        got = dict(points)
        assert sorted(got) == sorted(expected[key]), key
        np.testing.assert_allclose(  # float32 in the event files
            [got[s] for s in sorted(got)], [expected[key][s] for s in sorted(got)], rtol=1e-6, err_msg=str(key)
        )


def tensorboard_observed(run_dir: Path, branch: str = "imp") -> dict:
    out = {}
    for run in RUNS:
        for tag, points in tensorboard_points(run_dir / "tb" / branch / run).items():
            out[(run, tag)] = points
    return out


def split_keys(points: dict[str, list]) -> dict[tuple[str, str], list]:
    return {tuple(key.split("/", 1)): value for key, value in points.items()}


# ----- the runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight(services, tmp_path_factory):
    """An uninterrupted run with the three trackers; at each level's first epoch, what TensorBoard
    could read of that level from disk (before the level ends)."""
    config = tiny(tmp_path_factory.mktemp("straight"))
    exp, run = open_run(config)
    seen_while_training = {}
    original = tracking.LevelLog.epoch

    def epoch_then_read(self, curves):
        original(self, curves)
        if len(curves["epoch"]) == 1:
            tags = tensorboard_points(run.path / "tb" / "imp" / "seed_0")
            prefix = tracking.level_prefix(self.level) + "/"
            seen_while_training[self.level] = {tag: points for tag, points in tags.items() if tag.startswith(prefix)}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking.LevelLog, "epoch", epoch_then_read)
        run_dir = imp.run_imp(config, prepared=(exp, run), write_report=False)
    run.tracker.close()
    return config, exp, run_dir, seen_while_training


def test_event_files_hold_every_curve_and_result_once(straight):
    config, _, run_dir, _ = straight
    expected = expected_points(run_dir)
    assert ("seed_1", "level_01/test_acc") in expected and ("mean", "levels/learning_distance_rewind") in expected
    assert_each_step_once(tensorboard_observed(run_dir), expected)
    assert sorted(p.name for p in (run_dir / "tb").iterdir()) == ["imp"]


def test_events_are_on_disk_while_the_level_trains(straight):
    _, _, _, seen = straight
    assert sorted(seen) == [0, 1]
    for level, tags in seen.items():
        prefix = tracking.level_prefix(level)
        assert {f"{prefix}/{name}" for name in ("train_loss", "train_acc", "test_loss", "test_acc", "lr")} == set(tags)
        assert all([step for step, _ in points] == [1] for points in tags.values())


def test_mlflow_holds_the_config_and_the_same_scalars(straight):
    config, _, run_dir, _ = straight
    points, params = mlflow_points(run_dir)
    assert_each_step_once(split_keys(points), expected_points(run_dir))
    assert params["optim.lr"] == str(LR) and params["run.log_to"] == json.dumps(list(config.run.log_to))
    assert len(params) == len(tracking.trackers.flat_params(to_dict(config)))


def test_wandb_holds_the_config_and_the_same_scalars(straight, services):
    config, _, run_dir, _ = straight
    (recorded,) = [r for r in services.runs.values() if r.settings["dir"] == str(run_dir)]
    assert recorded.settings["config"] == to_dict(config) and recorded.settings["name"] == run_dir.name
    assert recorded.finished
    assert (
        recorded.axes["seed_0/level_01/test_acc"] == "level_01/epoch"
        and recorded.axes["mean/levels/density"] == "level"
    )
    assert_each_step_once(split_keys(recorded.points()), expected_points(run_dir))


def test_a_resumed_run_and_a_recomputed_level_show_each_step_once(straight, services, tmp_path):
    """Killed at level 1's last epoch, after its scalars were written and past the progress
    checkpoint of epoch 2: the rerun recomputes epoch 3. Then level 1 is deleted and recomputed."""
    config0, exp0, straight_dir, _ = straight
    config = dataclasses.replace(config0, run=dataclasses.replace(config0.run, workdir=str(tmp_path)))
    exp = dataclasses.replace(exp0, config=config)  # the same compiled engine: only the workdir differs

    def reopened():
        return rundir.open_run_dir(config, exp.dataset, exp.execution(), exp.level_shapes, exp.seeds)

    run = reopened()
    original = tracking.LevelLog.epoch

    def epoch_then_die(self, curves):
        original(self, curves)
        if self.level == 1 and curves["epoch"][-1] == 3:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking.LevelLog, "epoch", epoch_then_die)
        with pytest.raises(KeyboardInterrupt):
            imp.run_imp(config, prepared=(exp, run), write_report=False)
    run.tracker.close()  # what the exit of the killed process does
    assert run.store.latest_progress(1) == 2 and run.finished_levels() == [0]
    assert [s for s, _ in tensorboard_points(run.path / "tb/imp/seed_0")["level_01/train_loss"]] == [1, 2, 3]

    run = reopened()
    imp.run_imp(config, prepared=(exp, run), write_report=False)
    run.tracker.close()
    expected = expected_points(straight_dir)  # the uninterrupted run's numbers
    assert pd.read_csv(run.path / "curves.csv").equals(pd.read_csv(straight_dir / "curves.csv"))
    assert_each_step_once(tensorboard_observed(run.path), expected)
    assert_each_step_once(split_keys(mlflow_points(run.path)[0]), expected)
    (recorded,) = [r for r in services.runs.values() if r.settings["dir"] == str(run.path)]
    assert_each_step_once(split_keys(recorded.points()), expected)

    shutil.rmtree(run.path / "levels" / "1")  # a finished level deleted: recomputed (same numbers)
    run = reopened()
    imp.run_imp(config, prepared=(exp, run), write_report=False)
    run.tracker.close()
    assert_each_step_once(tensorboard_observed(run.path), expected)
    assert_each_step_once(split_keys(mlflow_points(run.path)[0]), expected)
    assert_each_step_once(split_keys(recorded.points()), expected)


# ----- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_one_line_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, name, None)  # not importable, whatever is installed
    workdir = tmp_path / "runs"
    code = cli.main(["run", "smoke", "--workdir", str(workdir), "--set", f"run.log_to=tensorboard,{name}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"run.log_to={name}" in err and f"pip install 'sdd-jax[{name}]'" in err
    assert not workdir.exists()


def test_log_to_takes_known_trackers_once_and_empty_turns_logging_off(tmp_path, capsys):
    config = tiny(tmp_path)
    for bad in ("tensorbord", "tensorboard,tensorboard"):
        assert cli.main(["show", "smoke", "--set", f"run.log_to={bad}"]) == 2
        assert "run.log_to must be a list of tensorboard, wandb, mlflow" in capsys.readouterr().err
    off = override(config, {"run.log_to": ""})
    assert off.run.log_to == ()
    tracker = tracking.open_tracker(off, tmp_path / "run", [0, 1])
    assert tracker.sinks == [] and tracker.branch("oneshot", tmp_path / "b").sinks == []
    assert not (tmp_path / "run").exists()
