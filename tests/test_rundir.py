"""The run directory: identity (result fields, hash, name), preparation and conflicts."""

import dataclasses
import json
import types

import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax import rundir
from sdd_jax.atomic import atomic_write_json, atomic_write_text
from sdd_jax.config import Config, override, to_dict
from sdd_jax.describe import describe
from sdd_jax.runid import result_fields, result_hash
from sdd_jax.train import LevelWeights, Weights

DATA = types.SimpleNamespace(
    metadata={"train_size": 4},
    x_train=np.zeros((4, 2), np.float32),
    y_train=np.arange(4),
    y_train_clean=np.arange(4),
    x_test=np.ones((2, 2), np.float32),
    y_test=np.arange(2),
)
SHAPES = LevelWeights({"w": jnp.zeros((2, 3))}, {}, {"w": jnp.zeros((2, 3))})


def open_dir(workdir, config) -> "rundir.RunDir":
    """The run directory of ``config`` under ``workdir`` on a four-example data set."""
    return rundir.open_run_dir(override(config, {"run.workdir": str(workdir)}), DATA, {}, SHAPES, [0, 1])


def test_result_hash_ignores_paths_and_verbosity_but_not_noise():
    base = Config(name="lenet")
    moved = override(base, {"run.workdir": "/elsewhere", "run.verbosity": 2, "run.eval_batch_size": 17})
    assert result_hash(moved) == result_hash(base)
    assert rundir.run_path("a", moved).name == rundir.run_path("b", base).name == f"lenet-{result_hash(base)}"
    noisy = override(base, {"noise.rate": 0.2})
    assert result_hash(noisy) != result_hash(base)
    assert rundir.run_path("w", noisy) != rundir.run_path("w", base)


def test_open_run_dir_writes_readable_config(tmp_path):
    config = override(
        Config(name="lenet"), {"noise.kind": "symmetric", "noise.rate": 0.2, "run.workdir": str(tmp_path)}
    )
    path = open_dir(tmp_path, config).path
    assert path == tmp_path / f"lenet-{result_hash(config)}" and path.is_dir()
    text = (path / "config.json").read_text()
    assert text.startswith('{\n  "name": "lenet"')
    # the description is generated from the config, never left as given
    assert json.loads(text) == to_dict(dataclasses.replace(config, description=describe(config)))
    assert (
        json.loads(text)["description"]
        == "LeNet-300-100 · MNIST · 20% symmetric noise · lottery k=0 · 200 epochs · 1 seed"
    )
    assert json.loads((path / "result_fields.json").read_text()) == json.loads(json.dumps(result_fields(config)))
    quieter = override(config, {"run.verbosity": 0})
    assert open_dir(tmp_path, quieter).path == path  # resume with other non-result settings
    assert json.loads((path / "config.json").read_text())["run"]["verbosity"] == 0
    # no temporary file left behind; the lock and its owner note are the only hidden files
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == [rundir.LOCK_FILE, rundir.OWNER_FILE]


def test_open_run_dir_conflict(tmp_path):
    config = Config(name="lenet")
    path = open_dir(tmp_path, config).path
    stored = to_dict(override(config, {"noise.rate": 0.4}))
    atomic_write_json(path / "config.json", stored)
    (path / "result_fields.json").unlink()
    with pytest.raises(rundir.RunDirConflictError, match=r"noise.rate: stored 0.4, now 0.0"):
        open_dir(tmp_path, config)
    atomic_write_json(path / "config.json", {"bogus": 1})
    with pytest.raises(rundir.RunDirConflictError, match="does not hold a config this version can read"):
        open_dir(tmp_path, config)
    (path / "config.json").unlink()
    other = types.SimpleNamespace(**{**vars(DATA), "y_train": DATA.y_train[::-1].copy()})
    with pytest.raises(rundir.RunDirConflictError, match="computed on different data"):
        rundir.open_run_dir(override(config, {"run.workdir": str(tmp_path)}), other, {}, SHAPES, [0, 1])


def test_bad_run_name():
    with pytest.raises(ValueError, match="config.name"):
        rundir.run_path("w", dataclasses.replace(Config(), name="a/b"))


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": [1, 2]})
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    assert target.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_the_quickstart_identity_is_pinned():
    """Every run directory is named by this hash: a change to the result fields or to their
    serialisation orphans users' runs. If that is intended, say so and update the pin."""
    from sdd_jax import presets

    assert result_hash(presets.get("quickstart")) == "95ebac173541"


def test_a_branch_keeps_its_own_levels_and_shares_theta0(tmp_path):
    run = open_dir(tmp_path, Config(name="tiny"))
    path = run.path
    run.theta0.save(Weights({"w": jnp.ones((2, 3))}, {}))
    branch = run.branch("redense-e1", "redense")
    assert branch.theta0.saved() and float(branch.theta0.load().params["w"].sum()) == 6.0
    level = LevelWeights({"w": jnp.full((2, 3), 2.0)}, {}, {"w": jnp.ones((2, 3))})
    rows = [
        {
            "seed": s,
            **{
                c: 0.5
                for c in (
                    "density",
                    "sparsity",
                    "train_acc",
                    "train_acc_clean",
                    "train_acc_noisy_subset",
                    "train_loss",
                    "test_acc",
                    "test_acc_best",
                    "test_loss",
                    "learning_distance",
                    "learning_distance_unpruned",
                )
            },
        }
        for s in (0, 1)
    ]
    branch.finish_level(3, level, rows, {"epoch": [1]})
    assert branch.finished_levels() == [3] and run.finished_levels() == []
    assert float(branch.level(3).params["w"][0, 0]) == 2.0
    assert not (path / "results.csv").exists()
    written = [(r["branch"], r["level"], r["seed"]) for r in branch.rows()]
    assert written == [("redense", 3, 0), ("redense", 3, 1)]
    assert (path / "branches" / "redense-e1" / "results.csv").is_file() and branch.results_complete()
