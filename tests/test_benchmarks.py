"""The benchmark scripts run end to end on tiny settings and end with one JSON line."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_json(*args: str) -> dict:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_throughput_and_sweep_time_scripts():
    report = last_json("benchmarks/throughput.py", "--model", "lenet_300_100", "--examples", "512",
                       "--seeds", "1,2", "--epochs", "1")
    assert set(report["seeds"]) == {"1", "2"}
    for result in report["seeds"].values():
        for key in ("seconds_per_epoch", "seconds_per_seed_epoch", "examples_per_second", "first_epoch_seconds"):
            assert result[key] > 0, key
    assert report["seeds"]["2"]["time_ratio"] > 0 and report["seeds"]["2"]["speedup"] > 0
    assert report["seed_execution"] in ("vmap", "sequential")
    assert {"backend", "jax_version", "devices", "device"} <= set(report)

    sweep = last_json("benchmarks/sweep_time.py", "smoke", "--epochs", "1")
    for key in ("seconds_per_epoch", "projected_seconds", "first_epoch_seconds", "test_eval_seconds"):
        assert sweep[key] > 0, key
    assert sweep["levels"] == 4 and sweep["epochs_total"] == 8  # smoke: 3 levels after the dense one, 2 epochs
    assert {"compile_seconds", "projected_hours", "backend", "jax_version"} <= set(sweep)
