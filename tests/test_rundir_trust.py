"""A run directory you can trust: one process at a time, one clear line for every failure (the
path named, exit code 2, no new file behind), corrupt caches recomputed, files that respect the
umask, and a run read back from its directory alone."""

import errno
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import chex
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sdd_jax import cli, rundir
from sdd_jax.results import read_results_csv
from sdd_jax.saved import load_run

TESTS = Path(__file__).resolve().parent
SMALL = [
    "--set",
    "pruning.levels=2",
    "--set",
    "data.train_size=256",
    "--set",
    "data.test_size=256",
    "--set",
    "run.eval_batch_size=256",
]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time (the lock's owner note,
    rewritten by whoever takes the lock, left out)."""
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + [n for n in names if n != rundir.OWNER_FILE]:
            path = Path(folder) / name
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size if path.is_file() else 0, info.st_mtime_ns)
    return found


def one_error_line(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("sdd-jax: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small smoke run (levels 0-2) and its results, made once; tests copy it."""
    workdir = tmp_path_factory.mktemp("finished")
    assert cli.main(["run", "smoke", "-q", "--workdir", str(workdir), *SMALL]) == 0
    run = next(workdir.iterdir())
    return run, read_results_csv(run / "results.csv")


def copy_run(finished, tmp_path) -> Path:
    source, _ = finished
    target = tmp_path / "runs" / source.name
    shutil.copytree(source, target)
    return target


# ----- one process per run directory -------------------------------------------------------------


def test_a_second_process_is_refused_while_the_first_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        "-m",
        "sdd_jax",
        "run",
        "smoke",
        "-q",
        "--workdir",
        str(tmp_path),
        "--set",
        "optim.epochs=400",
        "--set",
        "pruning.levels=0",
    ]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob("*/" + rundir.OWNER_FILE)) and time.time() < deadline:
            time.sleep(0.2)
        owner_files = list(tmp_path.glob("*/" + rundir.OWNER_FILE))
        assert owner_files, "the first run never took its lock"
        run_dir = owner_files[0].parent
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        branch = subprocess.run(
            [sys.executable, "-m", "sdd_jax", "oneshot", str(run_dir), "--levels", "1", "-q"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.poll() is None, "the first run must still be running"
    finally:
        first.kill()
        first.wait()
    for refused in (second, branch):
        assert refused.returncode == 2
        one_error_line(refused.stderr, str(run_dir), f"in use by process {first.pid} on host")
    assert not (run_dir / "branches").exists()


def test_the_same_process_may_open_its_run_again(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL)
    assert code == 0, err
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL)
    assert code == 0, err


# ----- one clear line for every failure --------------------------------------------------------


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    before = files(tmp_path)
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", blocker, *SMALL)
    assert code == 2
    one_error_line(err, str(blocker), "a file stands where a folder is needed")
    assert files(tmp_path) == before


def test_read_only_storage_is_one_line_for_run_and_report(finished, tmp_path, capsys, monkeypatch):
    run = copy_run(finished, tmp_path)
    before = files(run)

    def refuse(src, dst, *args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL)
    assert code == 2
    one_error_line(err, str(run), "Read-only file system", "writable --workdir")
    code, _, err = run_cli(capsys, "report", run)
    assert code == 2
    one_error_line(err, str(run), "Read-only file system")
    monkeypatch.undo()
    assert files(run) == before  # nothing half-written, no temporary file left


def test_disk_full_in_a_checkpoint_is_one_line_and_the_rerun_is_identical(finished, tmp_path, capsys, monkeypatch):
    _, straight = finished
    workdir = tmp_path / "runs"
    original = ocp.CheckpointManager.save
    calls = {"n": 0}

    def full_disk(self, step, *args, **kwargs):
        calls["n"] += 1
        if "levels" in str(self.directory) and step == 1:  # tensorstore's message, shortened
            raise ValueError(
                'INTERNAL: Error writing local file "/x/ocdbt.process_0/d/3f": '
                "[OS error 28: No space left on device] " + "x" * 2000
            )
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", workdir, *SMALL)
    assert code == 2
    line = one_error_line(err, "No space left on device", "levels/1", "rerun the same command")
    assert len(line) < 400
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", workdir, *SMALL)
    assert code == 0, err
    assert read_results_csv(next(workdir.iterdir()) / "results.csv") == straight


def _garble(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "commit_success.txt":
            path.write_bytes(b"\x00garbled" * 3)


def test_a_corrupt_finished_level_is_named_with_its_remedy(finished, tmp_path, capsys):
    _, straight = finished
    run = copy_run(finished, tmp_path)
    _garble(run / "levels" / "2")
    before = files(run)
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL, "--set", "pruning.levels=3")
    assert code == 2
    one_error_line(err, f"{run}/levels/2 is unreadable", f"delete {run}/levels/2 and rerun")
    assert set(files(run)) == set(before)
    shutil.rmtree(run / "levels" / "2")  # the remedy
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL)
    assert code == 0, err
    assert read_results_csv(run / "results.csv") == straight


def test_a_corrupt_theta0_is_named_with_its_remedy(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    shutil.rmtree(run / "levels" / "2")
    _garble(run / "trees" / "theta0")
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL)
    assert code == 2
    one_error_line(err, "trees/theta0", "θ0 is drawn again from the seeds")


@pytest.mark.parametrize("name", ["config.json", "result_fields.json", "dataset.json", "execution.json"])
def test_invalid_json_names_the_file(finished, tmp_path, capsys, name):
    run = copy_run(finished, tmp_path)
    (run / name).write_text("{ not json")
    before = files(run)
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL)
    assert code == 2
    one_error_line(err, str(run / name), "is not valid JSON", "delete it and rerun")
    assert files(run) == before


@pytest.mark.parametrize("command", ["oneshot", "analyze"])
def test_commands_on_a_run_with_a_garbled_config_name_it(finished, tmp_path, capsys, command):
    run = copy_run(finished, tmp_path)
    (run / "config.json").write_text("{ not json")
    before = files(run)
    code, _, err = run_cli(capsys, command, run, *(["--levels", "1", "-q"] if command == "oneshot" else []))
    assert code == 2
    one_error_line(err, str(run / "config.json"), "is not valid JSON")
    assert files(run) == before


def test_a_garbled_level_metrics_file_names_the_level(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    (run / "results.csv").unlink()  # the rerun must read every level's metrics to rewrite it
    metrics = next((run / "levels" / "1" / "metrics").rglob("*"))
    for path in (run / "levels" / "1" / "metrics").rglob("*"):
        if path.is_file():
            path.write_text("{ garbled")
    assert metrics.exists()
    code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL)
    assert code == 2
    one_error_line(err, f"{run}/levels/1 is unreadable", "delete")


def test_a_corrupt_progress_checkpoint_restarts_its_level(finished, tmp_path, capsys, monkeypatch):
    _, straight = finished
    workdir = tmp_path / "runs"
    from sdd_jax.rundir import RunDir

    original = RunDir.save_progress

    def save_then_stop(self, level, *args, **kwargs):
        original(self, level, *args, **kwargs)
        if level == 1:
            self.store.wait()
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_progress", save_then_stop)
    every = ["--set", "run.checkpoint_every_epochs=1"]
    code, _, _ = run_cli(capsys, "run", "smoke", "-q", "--workdir", workdir, *SMALL, *every)
    assert code == 130
    monkeypatch.undo()
    run = next(workdir.iterdir())
    progress = run / "progress" / "level_001"
    assert progress.is_dir()
    _garble(progress)
    with pytest.warns(UserWarning, match="level 1 starts again") as caught:
        code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", workdir, *SMALL, *every)
    assert code == 0, err
    assert [str(w.message) for w in caught if str(progress) in str(w.message)]
    assert cli._warning_line(caught[0].message, UserWarning, "f.py", 1).count("\n") == 1
    assert read_results_csv(run / "results.csv") == straight


def test_a_missing_theta_rewind_restarts_level_zero(tmp_path, capsys, monkeypatch):
    workdir = tmp_path / "runs"
    args = [
        "run",
        "smoke",
        "-q",
        "--workdir",
        workdir,
        *SMALL,
        "--set",
        "optim.epochs=3",
        "--set",
        "pruning.rewind_iteration=2",
        "--set",
        "run.checkpoint_every_epochs=1",
    ]
    code, _, err = run_cli(capsys, *args, "--set", "pruning.levels=0")
    assert code == 0, err
    straight = read_results_csv(next(workdir.iterdir()) / "results.csv")
    shutil.rmtree(workdir)
    from sdd_jax.rundir import RunDir

    original = RunDir.save_progress

    def save_then_stop(self, level, epoch, *a, **k):
        original(self, level, epoch, *a, **k)
        if epoch == 2:
            self.store.wait()
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_progress", save_then_stop)
    assert run_cli(capsys, *args, "--set", "pruning.levels=0")[0] == 130
    monkeypatch.undo()
    run = next(workdir.iterdir())
    shutil.rmtree(run / "trees" / "theta_rewind")
    with pytest.warns(UserWarning, match="theta_rewind is missing"):
        code, _, err = run_cli(capsys, *args, "--set", "pruning.levels=0")
    assert code == 0, err
    assert read_results_csv(run / "results.csv") == straight


# ----- small but real ----------------------------------------------------------------------------


def test_files_respect_the_umask_and_leftover_temporaries_are_cleaned(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    leftover = run / ".results.csv.abc123.tmp"
    leftover.write_text("half a file")
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, "run", "smoke", "-q", "--workdir", run.parent, *SMALL)
    finally:
        os.umask(old)
    assert code == 0, err
    assert not leftover.exists()
    for name in ("results.csv", "config.json", "summary.txt", "figure.png"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


# ----- reading a run back ------------------------------------------------------------------------


def test_a_copied_run_opens_read_only_without_its_data(finished, tmp_path, monkeypatch):
    source, rows = finished
    run = copy_run(finished, tmp_path)
    before = files(run)

    def no_data(*args, **kwargs):
        raise AssertionError("loading a saved run must not need the data set")

    monkeypatch.setattr("sdd_jax.data.load_dataset", no_data)
    saved = load_run(run)
    assert saved.levels() == [0, 1, 2] and saved.seeds == [0, 1]
    level = saved.level(2)
    kernel = level.params["fc1"]["kernel"]
    assert isinstance(kernel, np.ndarray) and kernel.shape == (2, 784, 300)
    # Pruned weights are zero, and the mask keeps what results.csv says.
    chex.assert_trees_all_equal(kernel * (1 - level.mask["fc1"]["kernel"]), np.zeros_like(kernel))
    kept = sum(int(level.mask[k]["kernel"][0].sum()) for k in ("fc1", "fc2"))  # output layer kept whole
    row = next(r for r in rows if r["level"] == 2 and r["seed"] == 0)
    assert kept == row["kept_weights"]
    theta0, thetak = saved.theta0(), saved.theta_rewind()
    chex.assert_trees_all_equal(theta0.params, thetak.params)  # smoke rewinds to iteration 0
    assert saved.metrics(2)["rows"][0]["test_acc"] == row["test_acc"]
    with pytest.raises(FileNotFoundError):
        saved.level(5)
    assert files(run) == before  # nothing written, not even a lock
    monkeypatch.chdir(run.parent)  # a relative path (the docstring's "runs/<name>") reads the same
    chex.assert_trees_all_equal(load_run(run.name).level(2).params, level.params)
