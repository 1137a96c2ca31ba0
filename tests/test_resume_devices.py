"""A run continues on another device count: checkpoints saved over 4 devices are restored onto
1 device and those saved on 1 device onto 2 (levels, progress, θ0 and θk), with the same numbers
as an uninterrupted run on one device (up to float reduction order). The steps on 8 simulated CPU
devices run in processes of their own, the steps on one device in this one, which has one
(``tests/resume_devices_checks.py``)."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest
import resume_devices_checks
from conftest import simulated_devices_env

from sdd_jax import runlock

TESTS = Path(__file__).resolve().parent


def _on_eight_devices(workdir: Path, levels: int, seed_devices: int, stop_level: int | None = None) -> dict:
    env = simulated_devices_env(8)
    args = [str(workdir), str(levels), str(seed_devices)] + ([] if stop_level is None else [str(stop_level)])
    done = subprocess.run(
        [sys.executable, str(TESTS / "resume_devices_checks.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _max_relative_diff(a: list[dict], b: list[dict]) -> float:
    assert [(r["level"], r["seed"]) for r in a] == [(r["level"], r["seed"]) for r in b]
    diffs = [
        abs(x[k] - y[k]) / max(abs(y[k]), 1e-12)
        for x, y in zip(a, b)
        for k in x
        if isinstance(x[k], float) and isinstance(y[k], float)
    ]
    return max(diffs)


@pytest.fixture(scope="module")
def continued(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    # Levels 0-1 over 4 of 8 devices, stopped inside level 2 after its first progress checkpoint.
    four = _on_eight_devices(root / "moved", levels=2, seed_devices=4, stop_level=2)
    # The same run continued in a 1-device process (this one): θ0, θk, level 1 and level 2's
    # progress restored.
    assert jax.device_count() == 1
    one = resume_devices_checks.main(str(root / "moved"), 2, 1, None)
    for run_dir in (root / "moved").iterdir():  # as this process's exit would, for the next process
        runlock.unlock_run_dir(run_dir)
    # Extended to level 3 over 2 devices: level 2, saved on one device, restored onto two.
    two = _on_eight_devices(root / "moved", levels=3, seed_devices=2)
    straight = resume_devices_checks.main(str(root / "straight"), 3, 1, None)
    return four, one, two, straight


def test_a_run_continues_over_4_then_1_then_2_devices_as_on_one(continued):
    four, one, two, straight = continued
    assert four["stopped"] and four["devices"] == 8
    assert sorted({r["level"] for r in four["rows"]}) == [0, 1]
    assert sorted({r["level"] for r in one["rows"]}) == [0, 1, 2]
    assert _max_relative_diff(two["rows"], straight["rows"]) <= 1e-5
    assert [(r["level"], r["seed"]) for r in two["rows"]] == [(level, s) for level in range(4) for s in range(4)]


def test_continuing_on_other_devices_warns_about_execution_settings(continued):
    _, one, two, _ = continued
    for facts in (one, two):
        assert any("continues with other execution settings" in w for w in facts["warnings"]), facts["warnings"]
        assert not any("unreadable" in w or "topology" in w for w in facts["warnings"]), facts["warnings"]


def test_load_run_reads_a_sharded_run_on_one_device(continued):
    four, one, _, straight = continued
    assert one["devices"] == 1
    # The run saved over 4 devices, read back in a 1-device process, seeds first.
    assert one["load_run_levels"] == [0, 1, 2]
    assert one["load_run_kernel_shape"][0] == 4
    assert four["load_run_theta0_sum"] == one["load_run_theta0_sum"]  # the same file on 8 and on 1 device
    assert abs(one["load_run_theta0_sum"] / straight["load_run_theta0_sum"] - 1) <= 1e-5
