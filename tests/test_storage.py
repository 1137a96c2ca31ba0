"""Run directories on a local disk and on Cloud Storage (an emulator on 127.0.0.1, the
``gcs_bucket`` fixture): sdd_jax.storage's round trips, atomic writes, the gs:// lock of
sdd_jax.runlock and the orbax store of sdd_jax.checkpoints on a gs:// run directory."""

import json
import os
import pathlib
import socket
import stat
import subprocess
import sys
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from sdd_jax import checkpoints as ck
from sdd_jax import runlock, storage

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def gcs_dir(gcs_bucket, request):
    """A fresh prefix of the emulated bucket for one test."""
    return f"{gcs_bucket}/{request.node.name}-{uuid.uuid4().hex[:6]}"


def _round_trip(root):
    """The same storage calls on a local folder or a gs:// prefix; returns what a run directory sees."""
    storage.mkdir(f"{root}/run")
    storage.write_json(f"{root}/run/config.json", {"name": "lenet", "rate": float("nan")})
    storage.write_text(f"{root}/run/notes/a.txt", "één\n")
    storage.write_bytes(f"{root}/run/notes/b.bin", bytes(range(256)))
    storage.write_text(f"{root}/run2/other.txt", "a sibling whose name starts like run")
    seen = {
        "config": storage.read_text(f"{root}/run/config.json"),
        "a": storage.read_text(f"{root}/run/notes/a.txt"),
        "b": storage.read_bytes(f"{root}/run/notes/b.bin"),
        "dir": [storage.is_dir(f"{root}/run/notes"), storage.is_file(f"{root}/run/notes")],
        "file": [storage.is_file(f"{root}/run/config.json"), storage.is_dir(f"{root}/run/config.json")],
        "missing": [storage.exists(f"{root}/run/nope"), storage.listdir(f"{root}/run/nope")],
        "listing": [p.name for p in storage.listdir(f"{root}/run")],
        "glob": [p.name for p in storage.glob(f"{root}/run", "notes/*.txt")],
    }
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"{root}/run/nope")
    # a value that fails to serialise half-way writes nothing: the old content stays, no new file
    with pytest.raises(TypeError):
        storage.write_json(f"{root}/run/config.json", {"a": 1, "b": object()})
    with pytest.raises(TypeError):
        storage.write_json(f"{root}/run/fresh.json", {"a": 1, "b": object()})
    seen["after failed writes"] = [
        storage.read_text(f"{root}/run/config.json"),
        storage.exists(f"{root}/run/fresh.json"),
    ]
    storage.write_text(f"{root}/run/config.json", "replaced")
    seen["replaced"] = storage.read_text(f"{root}/run/config.json")
    storage.remove_file(f"{root}/run/notes/b.bin")
    storage.remove_file(f"{root}/run/notes/b.bin")  # missing is fine
    seen["after remove_file"] = [p.name for p in storage.listdir(f"{root}/run/notes")]
    storage.remove_tree(f"{root}/run")
    storage.remove_tree(f"{root}/run")  # missing is fine
    seen["after remove_tree"] = [storage.exists(f"{root}/run"), storage.read_text(f"{root}/run2/other.txt")]
    return seen


EXPECTED = {
    "config": '{\n  "name": "lenet",\n  "rate": NaN\n}\n',
    "a": "één\n",
    "b": bytes(range(256)),
    "dir": [True, False],
    "file": [True, False],
    "missing": [False, []],
    "listing": ["config.json", "notes"],
    "glob": ["a.txt"],
    "after failed writes": ['{\n  "name": "lenet",\n  "rate": NaN\n}\n', False],
    "replaced": "replaced",
    "after remove_file": ["a.txt"],
    "after remove_tree": [False, "a sibling whose name starts like run"],
}


def test_local_round_trip_and_file_modes(tmp_path):
    old = os.umask(0o022)
    try:
        storage.write_text(tmp_path / "mode.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "mode.txt").stat().st_mode) == 0o644
    assert _round_trip(str(tmp_path)) == EXPECTED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mode.txt", "run2"]  # no temporary file left
    assert type(storage.as_path(tmp_path / "x")) is type(tmp_path)  # local paths stay pathlib
    assert not storage.is_remote(tmp_path)


def test_gcs_round_trip_matches_local(gcs_dir):
    assert _round_trip(gcs_dir) == EXPECTED
    path = storage.as_path(f"{gcs_dir}/run/config.json")
    assert isinstance(path, epath.Path) and str(path) == f"{gcs_dir}/run/config.json"
    assert storage.is_remote(path) and str(path.parent / "x") == f"{gcs_dir}/run/x"
    storage.mkdir(f"{gcs_dir}/empty")  # no folders on Cloud Storage: nothing to see until an object is written
    assert not storage.exists(f"{gcs_dir}/empty")


def test_absolute_paths_keep_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert storage.absolute("link/x") == tmp_path / "link" / "x"
    assert storage.resolve("link/x") == (tmp_path / "real" / "x").resolve()
    assert storage.absolute("~/x") == pathlib.Path.home() / "x"
    for make in (storage.absolute, storage.resolve):  # epath's own absolute()/resolve() prepend the cwd
        assert str(make("gs://bucket/runs/r")) == "gs://bucket/runs/r"


def test_paths_that_lost_their_url_are_refused():
    with pytest.raises(storage.StorageError, match="lost a slash"):
        storage.as_path(pathlib.Path("gs://bucket/runs"))
    with pytest.raises(storage.StorageError, match="names no bucket"):
        storage.as_path("gs:///runs")


def test_unreachable_endpoint_and_missing_bucket_are_one_line(gcs_bucket, monkeypatch, capfd):
    with pytest.raises(storage.StorageError) as missing:
        storage.write_text("gs://no-such-bucket/runs/x.txt", "1")
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    with pytest.raises(storage.StorageError) as unreachable:
        ck.RunStore(f"{gcs_bucket}/runs/r")
    for err, text in (
        (missing, "gs://no-such-bucket/runs/x.txt: bucket no-such-bucket does not exist at http://127.0.0.1:"),
        (unreachable, f"{gcs_bucket}/runs/r: cannot reach Cloud Storage at http://127.0.0.1:{port} ("),
    ):
        assert str(err.value).startswith(text) and "\n" not in str(err.value), str(err.value)
    assert "Traceback" not in capfd.readouterr().err


# --------------------------------------------------------------------------- the lock

_CHILD = """
import sys
from sdd_jax import runlock
try:
    runlock.lock_run_dir(sys.argv[1])
except runlock.RunDirBusyError as err:
    print(err)
runlock.lock_run_dir(sys.argv[2])
print("took", sys.argv[2])
"""


def test_gcs_lock_refuses_a_second_holder_and_is_released_at_exit(gcs_dir):
    held, other = f"{gcs_dir}/held", f"{gcs_dir}/other"
    runlock.lock_run_dir(held)
    runlock.lock_run_dir(held + "/")  # the same process again: a no-op
    owner = json.loads(storage.read_text(f"{held}/{runlock.LOCK_FILE}"))
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, held, other], env=env, capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    refusal, took = child.stdout.splitlines()
    assert refusal.startswith(
        f"{held} is in use by process {os.getpid()} on host {socket.gethostname()} (since {owner['since']}): "
    )
    assert f"'gcloud storage rm {held}/{runlock.LOCK_FILE}'" in refusal
    assert took == f"took {other}"
    assert not storage.exists(f"{other}/{runlock.LOCK_FILE}")  # the child released its lock when it exited
    # a lock left by a killed process of this host (the child's pid is free now) is named as such
    storage.write_text(f"{other}/{runlock.LOCK_FILE}", json.dumps({**owner, "pid": _dead_pid()}))
    with pytest.raises(runlock.RunDirBusyError, match="which is no longer running: .* and rerun$"):
        runlock.lock_run_dir(other)
    runlock.unlock_run_dir(held)
    assert not storage.exists(f"{held}/{runlock.LOCK_FILE}")
    runlock.lock_run_dir(held)  # free again
    runlock.unlock_run_dir(held)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --------------------------------------------------------------------------- the orbax store


def _tree():
    keys = jax.random.split(jax.random.key(5), 3)
    return {
        "params": {"kernel": jax.random.normal(keys[0], (2, 3, 4)), "bias": jnp.ones((2, 4), jnp.bfloat16)},
        "mask": jax.random.bernoulli(keys[1], 0.8, (2, 3, 4)),
        "step": jnp.arange(2, dtype=jnp.int32),
        "epoch": 7,
        "rng": jax.random.split(keys[2], 2),
    }


def _bits(tree):
    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return (np.asarray(x).dtype.str, np.shape(x), np.asarray(x).tobytes())

    return jax.tree.map(leaf, tree)


def _use(store, tree):
    """Saves and reads of one run's store; returns everything read back as bits."""
    store.save_tree("theta0", tree)
    store.save_level(0, tree, {"test_accuracy": [0.5, 0.25]})
    store.save_level(2, jax.tree.map(lambda x: x + 1 if isinstance(x, int) else x, tree), {"test_accuracy": [1.0]})
    for epoch in (1, 3):
        store.save_progress(1, epoch, tree, {"epoch": epoch})
    out = {"levels": store.finished_levels(), "progress": store.latest_progress(1)}
    out["theta0"] = _bits(store.restore_tree("theta0", tree))
    level, metrics = store.restore_level(2, jax.tree.map(jnp.zeros_like, tree))
    out["level 2"], out["metrics"] = _bits(level), metrics
    epoch, restored, metrics = store.restore_progress(1, tree)
    out["epoch"], out["progress tree"], out["progress metrics"] = epoch, _bits(restored), metrics
    store.clear_progress(1)
    store.clear_progress(1)  # nothing to clear is fine
    out["cleared"] = store.latest_progress(1)
    return out


def test_gcs_store_equals_local_store_bit_for_bit(gcs_dir, tmp_path):
    tree = _tree()
    storage.write_json(f"{gcs_dir}/config.json", {})  # a run directory exists once it holds an object
    with ck.RunStore(tmp_path) as local, ck.RunStore(gcs_dir) as remote:
        assert isinstance(remote.run_dir, epath.Path) and isinstance(local.run_dir, pathlib.Path)
        on_disk, on_gcs = _use(local, tree), _use(remote, tree)
    assert on_gcs == on_disk
    assert on_gcs["levels"] == [0, 2] and on_gcs["epoch"] == 3 and on_gcs["cleared"] is None
    assert on_gcs["theta0"] == _bits(tree) and on_gcs["metrics"] == {"test_accuracy": [1.0]}
    assert not storage.exists(f"{gcs_dir}/progress/level_001")
    # a save killed half-way on Cloud Storage leaves its final-named folder without the commit file:
    # never read, and removed when a writer next opens the levels
    storage.write_bytes(f"{gcs_dir}/levels/1/state/manifest.ocdbt", b"half written")
    with ck.RunStore(gcs_dir, read_only=True) as reader:
        assert reader.finished_levels() == [0, 2]
        _, metrics = reader.read_level(0)
        assert metrics == {"test_accuracy": [0.5, 0.25]}
    with ck.RunStore(gcs_dir) as writer:
        assert writer.finished_levels() == [0, 2]
        writer.save_level(1, tree, {"test_accuracy": [0.75]})
        assert writer.finished_levels() == [0, 1, 2]
        assert _bits(writer.restore_level(1, tree)[0]) == _bits(tree)
