"""The benchmark scripts and ``sdd-jax estimate`` run end to end on tiny settings and end with one
JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdd_jax import cli, estimate

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "data.train_size=256", "--set", "data.test_size=200"]


def last_json(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_throughput_and_sweep_time_scripts():
    report = last_json(
        "benchmarks/throughput.py", "--model", "lenet_300_100", "--examples", "512", "--seeds", "1,2", "--epochs", "1"
    )
    assert set(report["seeds"]) == {"1", "2"}
    for result in report["seeds"].values():
        for key in ("seconds_per_epoch", "seconds_per_seed_epoch", "examples_per_second", "first_epoch_seconds"):
            assert result[key] > 0, key
    assert report["seeds"]["2"]["time_ratio"] > 0 and report["seeds"]["2"]["speedup"] > 0
    assert report["seed_execution"] in ("vmap", "sequential")
    assert {"backend", "jax_version", "devices", "device"} <= set(report)

    sweep = last_json("benchmarks/sweep_time.py", "smoke", "--epochs", "1", *TINY)  # sdd-jax estimate
    assert sweep["preset"] == "smoke" and sweep["train_size"] == 256 and sweep["timed_epochs"] == 1


def test_estimate_projects_every_level_of_the_sweep(capsys):
    assert cli.main(["estimate", "smoke", "--epochs", "2", "--seeds", "1", "--set", "pruning.levels=2", *TINY]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    for key in ("seconds_per_epoch", "projected_seconds", "first_epoch_seconds", "test_eval_seconds"):
        assert report[key] > 0, key
    # Lottery retraining: every level trains the preset's 2 epochs and evaluates after each.
    assert (report["levels"], report["epochs_total"], report["seeds"], report["timed_epochs"]) == (3, 6, 1, 2)
    assert report["test_evals_total"] == 3 * estimate.evaluations_per_level(0, 2, 1) == 3 * 2
    assert report["projected_train_seconds"] == pytest.approx(6 * report["seconds_per_epoch"], rel=1e-3, abs=0.05)
    parts = report["projected_train_seconds"] + report["projected_eval_seconds"] + report["compile_seconds"]
    assert report["projected_seconds"] == pytest.approx(parts, abs=0.2)
    assert report["overrides"] == ["pruning.levels=2", "data.train_size=256", "data.test_size=200"]
    assert lines[0].startswith("smoke: lenet_300_100 ×1 float32, 256 training examples, 1 seed(s)")
    assert lines[2].startswith("sweep: 3 levels, 6 epochs, 6 test evaluations during training")


def test_estimate_refuses_bad_input_in_one_line(capsys):
    assert cli.main(["estimate", "smoke", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err
    assert cli.main(["estimate", "no_such_preset"]) == 2
    assert "unknown preset 'no_such_preset'" in capsys.readouterr().err
