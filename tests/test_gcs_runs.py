"""Run directories on Cloud Storage end to end, against an emulator on 127.0.0.1 (the ``gcs_bucket``
fixture): a run killed inside level 1 and resumed on ``gs://`` equals the same run on a local disk
(results files, level weights bit for bit, TensorBoard events); ``report``, ``load_run``, a branch
command, ``analyze`` and ``export`` on the ``gs://`` run; its lock refusing a second process and
removed by ``--force-unlock``; a missing bucket or an unreachable endpoint in one line; SIGTERM
stopping a run as Ctrl-C does."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import fsspec
import jax
import numpy as np
import pandas as pd
import pytest
from analysis_settings import TINY_ANALYSIS

from sdd_jax import cli, export, imp, runlock, storage, study
from sdd_jax.checkpoint_reads import is_finished
from sdd_jax.config import override
from sdd_jax.experiment import build
from sdd_jax.presets import smoke
from sdd_jax.rundir import RunDir, open_run_dir
from sdd_jax.saved import load_run

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    """This process's environment (the emulator's variables included), this checkout first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


SETTINGS = [
    "data.train_size=256",
    "optim.epochs=2",
    "pruning.levels=2",
    "run.seeds=2",
    "run.checkpoint_every_epochs=1",
    "run.verbosity=0",
]
RESULTS_FILES = ("results.csv", "curves.csv", "layers.csv", "results_all.csv", "curves_all.csv", "summary.txt")


def _run(config, exp):
    """``config``'s run, trained with ``exp`` (the same compiled engine whatever the workdir)."""
    exp = dataclasses.replace(exp, config=config)
    run = open_run_dir(config, exp.dataset, exp.execution(), exp.level_shapes, exp.seeds)
    imp.run_imp(config, prepared=(exp, run))
    return run


@pytest.fixture(scope="module")
def runs(gcs_bucket, tmp_path_factory):
    """The same tiny run on a local disk (straight through) and on ``gs://``, killed inside level 1
    right after its epoch-1 progress checkpoint, then rerun; returns both run directories."""
    local = override(smoke.config(), [*SETTINGS, f"run.workdir={tmp_path_factory.mktemp('local')}"])
    remote = override(local, [f"run.workdir={gcs_bucket}/runs-{uuid.uuid4().hex[:6]}"])
    exp = build(local)
    local_run = _run(local, exp)

    killed = {}

    def save_then_die(self, level, epoch, *args, **kwargs):
        original(self, level, epoch, *args, **kwargs)
        if level == 1:
            self.store.wait()  # as a kill just after the checkpoint was written
            killed.update(level=level, epoch=epoch, run=self)
            raise KeyboardInterrupt

    original = RunDir.save_progress
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunDir, "save_progress", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            _run(remote, exp)
    dead = killed["run"]
    dead.tracker.close()  # what the killed process's exit does
    dead.store.close()
    assert killed["epoch"] == 1 and dead.finished_levels() == [0] and dead.store.latest_progress(1) == 1
    remote_run = _run(remote, exp)
    assert str(remote_run.path).startswith("gs://") and remote_run.path.name == local_run.path.name
    assert not storage.exists(remote_run.path / "progress" / "level_001")  # resumed, then cleared
    return local_run.path, str(remote_run.path)


def _csv(path) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(storage.read_text(path)))


def test_a_killed_and_resumed_gcs_run_equals_the_local_run(runs):
    local, remote = runs
    for name in RESULTS_FILES:
        if name.endswith(".csv"):
            pd.testing.assert_frame_equal(_csv(f"{remote}/{name}"), _csv(local / name), check_exact=True, obj=name)
    assert storage.read_text(f"{remote}/summary.txt") == (local / "summary.txt").read_text()
    on_disk, on_gcs = load_run(local), load_run(remote)
    assert on_gcs.levels() == on_disk.levels() == [0, 1, 2]
    assert on_gcs.seeds == on_disk.seeds == [0, 1]
    pairs = [(on_gcs.theta0(), on_disk.theta0()), (on_gcs.theta_rewind(), on_disk.theta_rewind())]
    pairs += [(on_gcs.level(k), on_disk.level(k)) for k in on_disk.levels()]
    for a, b in pairs:
        for x, y in zip(_leaves(a), _leaves(b), strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    assert on_gcs.metrics(1) == on_disk.metrics(1)


def _leaves(weights) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(dataclasses.asdict(weights))]


def _tensorboard_points(folder, scratch: Path) -> dict:
    """(run, tag) -> sorted (step, value) of every event file under ``folder``/<run>/, local or
    gs:// (downloaded to ``scratch`` and read by TensorBoard's own loader)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out = defaultdict(list)
    for path in storage.glob(folder, "*/*tfevents*"):
        copy = scratch / f"{uuid.uuid4().hex}.{path.name}"
        copy.write_bytes(storage.read_bytes(path))
        for event in LegacyEventFileLoader(str(copy)).Load():
            for value in event.summary.value:
                out[(path.parent.name, value.tag)].append((event.step, value.simple_value))
    return {key: sorted(points) for key, points in out.items()}


def test_tensorboard_events_on_gcs_hold_each_step_once_as_on_disk(runs, tmp_path):
    local, remote = runs
    on_gcs = _tensorboard_points(f"{remote}/tb/imp", tmp_path)
    on_disk = _tensorboard_points(local / "tb" / "imp", tmp_path)
    assert {run for run, _ in on_gcs} == {"seed_0", "seed_1", "mean"}
    assert [step for step, _ in on_gcs[("seed_1", "level_01/train_loss")]] == [1, 2]  # the killed epoch once
    assert [step for step, _ in on_gcs[("mean", "levels/test_acc")]] == [0, 1, 2]
    assert on_gcs == on_disk


def test_report_load_run_branch_and_export_on_gcs(runs, capsys):
    local, remote = runs
    assert cli.main(["report", remote]) == 0
    out = capsys.readouterr().out
    assert f"complete (3 of 3 levels): {remote}/results.csv" in out
    assert storage.read_bytes(f"{remote}/figure.png")[:4] == b"\x89PNG"
    assert cli.main(["oneshot", remote, "--levels", "1", "-q"]) == 0
    branch = load_run(remote).branch("oneshot")
    assert load_run(remote).branches() == ["oneshot"] and branch.levels() == [1]
    rows = _csv(f"{remote}/branches/oneshot/results.csv")
    assert list(rows["branch"]) == ["oneshot", "oneshot"] and list(rows["level"]) == [1, 1]
    assert set(_csv(f"{remote}/results_all.csv")["branch"]) == {"imp", "oneshot"}
    assert cli.main(["export", remote, "--level", "2", "--seed", "1"]) == 0
    exported = f"{remote}/exports/level2-seed1.npz"
    assert f"level 2, seed 1: {exported} (npz)" in capsys.readouterr().out
    written = export.to_arrays(export.load(exported), "npz")  # read back from gs://
    expected = export.to_arrays(export.level_model(local, 2, 1)[0], "npz")  # the local run's network
    assert sorted(written) == sorted(expected)
    for key in expected:
        if key != export.META:
            assert written[key].tobytes() == expected[key].tobytes(), key


def test_analyze_on_gcs(runs):
    _, remote = runs
    args = ["analyze", remote, "--levels", "2", "-q"]  # one chosen level: each costs seconds of CPU
    for item in TINY_ANALYSIS:
        args += ["--set", item]
    assert cli.main(args) == 0
    root = f"{remote}/analysis"
    for name in ("correlations.csv", "levels.csv", "redense.csv", "interpolation.csv", "landscape.csv"):
        assert len(_csv(f"{root}/{name}")) > 0, name
    assert storage.read_bytes(f"{root}/figures/redense.png")[:4] == b"\x89PNG"
    report = storage.read_text(f"{root}/report.md")
    assert "(figures/redense.png)" in report and "(levels.csv)" in report  # links relative to the report
    assert sorted(set(_csv(f"{root}/levels.csv")["level"])) == [0, 1, 2]


# --------------------------------------------------------------------------- the lock

_SECOND = """
import sys
from sdd_jax import cli
print("plain", cli.main(sys.argv[1:]))
print("forced", cli.main([*sys.argv[1:], "--force-unlock"]))
"""


def test_a_second_process_is_refused_by_the_gcs_lock(runs):
    _, remote = runs  # this process holds its lock
    child = subprocess.run(
        [sys.executable, "-c", _SECOND, "reinit", remote, "--levels", "1", "-q"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.stdout.split() == ["plain", "2", "forced", "2"], child.stderr
    busy, still_running = child.stderr.strip().splitlines()
    since = json.loads(storage.read_text(f"{remote}/{runlock.LOCK_FILE}"))["since"]
    who = f"process {os.getpid()} on host {socket.gethostname()} (since {since})"
    assert busy.startswith(f"sdd-jax: error: {remote} is in use by {who}") and "--force-unlock" in busy
    assert still_running == f"sdd-jax: error: {remote} is in use by {who}, which is still running: stop it, then rerun"
    assert not storage.exists(f"{remote}/branches/reinit")


def test_force_unlock_removes_only_a_dead_owners_lock(runs, tmp_path, capsys):
    _, remote = runs
    runlock.unlock_run_dir(remote)  # as if this process had been killed on another VM
    lock = f"{remote}/{runlock.LOCK_FILE}"
    stale = {"pid": 4242, "host": "preempted-vm", "since": "2025-01-01 00:00:00 UTC", "token": "x"}
    storage.write_text(lock, json.dumps(stale))
    before = fsspec.filesystem("gs").find(remote)  # every object under the run
    with pytest.raises(runlock.RunDirBusyError, match="--force-unlock"):
        runlock.lock_run_dir(remote)
    assert cli.main(["oneshot", remote, "--levels", "1", "-q", "--force-unlock"]) == 0  # level 1 is done already
    err = capsys.readouterr().err
    assert (
        err == f"sdd-jax: removed the lock {lock} of process 4242 on host preempted-vm (since {stale['since']}); "
        "nothing else was touched\n"
    )
    assert json.loads(storage.read_text(lock))["pid"] == os.getpid()  # the command took the lock then
    after = fsspec.filesystem("gs").find(remote)
    kept = {p for p in before if "/tb/" not in p}  # the branch rewrites its events' levels/ files
    assert kept <= set(after)
    assert runlock.force_unlock(tmp_path).endswith(
        "nothing to unlock (on a local disk the lock is freed when its process exits)"
    )


# --------------------------------------------------------------------------- unusable storage


def test_a_missing_bucket_or_unreachable_endpoint_is_one_line(gcs_bucket, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    settings = [arg for item in SETTINGS for arg in ("--set", item)]
    assert cli.main(["run", "smoke", "--workdir", "gs://sdd-jax-no-such-bucket/runs", *settings]) == 2
    assert cli.main(["report", "gs://sdd-jax-no-such-bucket/runs/smoke-0123"]) == 2
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    assert cli.main(["oneshot", f"{gcs_bucket}/runs/smoke-0123", "--levels", "1"]) == 2
    captured = capsys.readouterr()
    missing = "bucket sdd-jax-no-such-bucket does not exist at http://127.0.0.1:"
    assert [line.split(": ", 3)[-1][: len(missing)] for line in captured.err.splitlines()][:2] == [missing] * 2
    lines = captured.err.splitlines()
    assert len(lines) == 3 and all(line.startswith("sdd-jax: error: gs://") for line in lines), lines
    assert f"cannot reach Cloud Storage at http://127.0.0.1:{port}" in lines[2]
    assert captured.out == "" and list(tmp_path.iterdir()) == []  # nothing written


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_stops_a_run_cleanly(tmp_path):
    """A preempted VM's processes get SIGTERM: the run stops as on Ctrl-C (its in-flight progress
    checkpoint settled), in one line, and Python exits normally with 143 (killed by the signal it
    would be -15), so its exit handlers run: one of them releases a gs:// lock
    (tests/test_storage.py checks that a process's exit releases it)."""
    # Far more epochs than it runs before the signal: however slow or fast the machine, the run is
    # still training when it gets the signal.
    settings = [arg for item in [*SETTINGS, "optim.epochs=100000", "pruning.levels=1"] for arg in ("--set", item)]
    child = subprocess.Popen(
        [sys.executable, "-m", "sdd_jax", "run", "smoke", "--workdir", str(tmp_path), *settings],
        env={**_env(), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not any(p.name.isdigit() and is_finished(p) for p in tmp_path.glob("*/progress/level_*/*")):
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        try:
            out, err = child.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # stuck: its threads' stacks (PYTHONFAULTHANDLER) say where
            child.send_signal(signal.SIGABRT)
            pytest.fail(f"no exit 120 s after SIGTERM:\n{child.communicate(timeout=60)[1][-6000:]}")
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "sdd-jax: stopped by SIGTERM; rerun the same command to resume"
    assert "Traceback" not in err
    (run_dir,) = tmp_path.iterdir()
    # the rerun resumes from the last finished step: there is one, and every step under a final name
    # is complete (a save cut short leaves only a temporary folder, which the rerun's orbax removes)
    steps = [p for p in (run_dir / "progress").glob("*/*") if p.name.isdigit()]
    assert steps and all(is_finished(p) for p in steps), steps


def test_a_study_on_gcs_holds_the_points_its_lone_runs_hold(gcs_bucket, tmp_path):
    """``sdd-jax sweep`` with a gs:// workdir: study.json and the points' run directories on Cloud
    Storage, each point's results those of the same study on a local disk, and the comparison
    written beside them."""
    grid, settings = ["noise.rate=0.2,0.4"], ["data.train_size=256", "optim.epochs=1", "pruning.levels=1"]
    local = study.run_study("smoke", grid, overrides=settings, seeds=1, workdir=str(tmp_path), verbosity=0)
    remote = study.run_study("smoke", grid, overrides=settings, seeds=1, workdir=f"{gcs_bucket}/studies", verbosity=0)
    assert str(remote).startswith("gs://") and remote.name == local.name
    stored = json.loads(storage.read_text(remote / "study.json"))
    assert stored == json.loads((local / "study.json").read_text())
    assert all(point["done"] for point in stored["points"])
    for point in stored["points"]:
        pd.testing.assert_frame_equal(
            _csv(remote / point["run_dir"] / "results.csv"), _csv(local / point["run_dir"] / "results.csv")
        )
    assert storage.is_file(remote / "comparison.png") and storage.is_file(remote / "comparison.csv")
