"""Corrupted level and progress checkpoints: the command line refuses in one line naming the folder
and the remedy (a level) or starts the level over with one warning (progress, a cache), and
``load_run`` raises one exception and exits cleanly. Each corrupted run is read in a fresh
process: orbax's readers report a failed read from their own threads, and at interpreter exit."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdd_jax import imp
from sdd_jax.config import override
from sdd_jax.presets import smoke
from sdd_jax.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished smoke run (levels 0-2) and one stopped inside level 1 after its epoch-1 checkpoint."""
    root = tmp_path_factory.mktemp("corrupt")
    finished = imp.run_imp(
        override(smoke.config(), [f"run.workdir={root / 'finished'}", "pruning.levels=2", "run.verbosity=0"]),
        write_report=False,
    )
    original = RunDir.finish_level

    def die_at_level_one(self, level, *args, **kwargs):
        if level == 1:
            self.store.wait()  # as a kill after the level's last progress checkpoint was written
            raise KeyboardInterrupt
        original(self, level, *args, **kwargs)

    RunDir.finish_level = die_at_level_one
    try:
        with pytest.raises(KeyboardInterrupt):
            imp.run_imp(
                override(
                    smoke.config(),
                    [
                        f"run.workdir={root / 'partial'}",
                        "pruning.levels=2",
                        "run.verbosity=0",
                        "run.checkpoint_every_epochs=1",
                    ],
                ),
                write_report=False,
            )
    finally:
        RunDir.finish_level = original
    (partial,) = (root / "partial").iterdir()
    assert sorted(p.name for p in (partial / "levels").iterdir()) == ["0"]
    assert (partial / "progress" / "level_001" / "1").is_dir()
    return finished, partial


def copy(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def data_files(step: Path) -> list[Path]:
    """The array data files of a checkpoint step, largest first."""
    files = [p for p in (step / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def truncate(step: Path) -> None:
    os.truncate(data_files(step)[0], 100)  # as `truncate -s 100` on the largest data file


def overwrite(step: Path, how: str) -> None:
    """Every data file of ``step`` replaced by zeros or by random bytes of the same size."""
    rng = np.random.default_rng(0)
    for path in data_files(step):
        size = path.stat().st_size
        path.write_bytes(bytes(size) if how == "zeros" else rng.bytes(size))


def cli(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = [arg for setting in ["pruning.levels=2", *extra] for arg in ("--set", setting)]  # the last one counts
    args = ["run", "smoke", "--workdir", str(run_dir.parent), "-q", *sets]
    return subprocess.run(
        [sys.executable, "-m", "sdd_jax", *args], env=ENV, capture_output=True, text=True, timeout=600
    )


def assert_one_line(stderr: str, prefix: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(prefix), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("corrupt", ["truncated"])
def test_a_corrupt_level_is_refused_in_one_line_naming_it(runs, tmp_path, corrupt):
    finished, _ = runs
    run_dir = copy(finished, tmp_path)
    step = run_dir / "levels" / "2"
    truncate(step) if corrupt == "truncated" else overwrite(step, corrupt)
    done = cli(run_dir, "pruning.levels=3")  # extends the run: level 3 is pruned from level 2
    assert done.returncode == 2, done.stderr[-3000:]
    assert_one_line(done.stderr, "sdd-jax: error:", str(step), "delete", "rerun")


def test_a_corrupt_level_of_a_partial_run_is_refused_in_one_line(runs, tmp_path):
    _, partial = runs
    run_dir = copy(partial, tmp_path)
    step = run_dir / "levels" / "0"
    overwrite(step, "random")
    done = cli(run_dir)  # level 1 is pruned from level 0's weights
    assert done.returncode == 2, done.stderr[-3000:]
    assert_one_line(done.stderr, "sdd-jax: error:", str(step), "delete", "rerun")


@pytest.mark.parametrize("corrupt", ["truncated"])
def test_a_corrupt_progress_checkpoint_starts_the_level_over_with_one_warning(runs, tmp_path, corrupt):
    finished, partial = runs
    run_dir = copy(partial, tmp_path)
    step = run_dir / "progress" / "level_001" / "1"
    truncate(step) if corrupt == "truncated" else overwrite(step, corrupt)
    done = cli(run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_one_line(done.stderr, "sdd-jax: warning:", str(step), "starts again")
    assert (run_dir / "results.csv").read_text() == (finished / "results.csv").read_text()


LOAD = "import sys; from sdd_jax.saved import load_run; load_run(sys.argv[1]).level(int(sys.argv[2]))"


@pytest.mark.parametrize("corrupt", ["zeros", "random"])
def test_load_run_on_a_corrupt_level_raises_one_exception_and_exits_cleanly(runs, tmp_path, corrupt):
    finished, _ = runs
    run_dir = copy(finished, tmp_path)
    overwrite(run_dir / "levels" / "1", corrupt)
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(run_dir), "1"], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1
    assert done.stderr.count("Traceback (most recent call last)") == 1, done.stderr[-3000:]
    assert "shutting down" not in done.stderr and "Event loop is closed" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("sdd_jax.checkpoint_errors.UnreadableCheckpointError:")
        and str(run_dir / "levels" / "1") in last
    )
