"""Shared fixtures. Tests that need real data sets find them in ``<repo>/../shared`` and skip
when it is absent; the package itself never needs it."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Single-threaded XLA CPU kernels: test processes (often several under pytest-xdist) share few cores.
PRODUCT_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"
# The suite compiles with XLA's backend optimisation off: its programs are many and small (tiny
# models, a few steps each), so compiling them was most of its time, and level 0 halved the
# compile-bound tests' time (the conv model tests: 96 s -> 54 s on 2 cores; the 8-device mesh
# check: 68 s -> 39 s). Every comparison a test makes is between numbers computed under the same
# flags. The reproduction test, the suite's one long training, runs as the product is compiled
# (tests/test_reproduction.py).
TEST_XLA_FLAGS = f"{PRODUCT_XLA_FLAGS} --xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)


def simulated_devices_env(count: int) -> dict[str, str]:
    """The environment of a subprocess with ``count`` simulated CPU devices (the suite's XLA
    flags, set before jax is imported there) that imports the checkout's package and the tests'
    helper modules."""
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={count} {TEST_XLA_FLAGS}",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }


# One XLA compilation cache for the whole session (every test, both xdist workers and the
# subprocesses they start): most tests build an engine for the same small configurations, and
# compiling their programs again was most of the suite's time. A cache hit loads the very
# executable a compile gives (keyed by the program, the XLA flags and the jax version), so no number
# changes. ``max_size`` turns on jax's file lock, which several processes writing at once need.
# Programs compiled in under 0.2 s (single operations run eagerly, tiny helpers) are left out:
# writing hundreds of them cost more CPU than compiling them again (measured on the pruning tests).
_CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(4 << 30),
}

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared`` (real MNIST IDX files, a prepared tfds MNIST), or a skip."""
    path = (REPO.parent / "shared").resolve()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (it holds the real MNIST files these tests read)")
    return path


def pytest_configure(config):
    """The session's compilation cache: made by the first pytest process (the xdist controller,
    whose environment the workers inherit), removed by it at the end; a cache directory already
    named in the environment is used as it is."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    path = tempfile.mkdtemp(prefix="sdd-jax-test-xla-cache-")
    os.environ.update(_CACHE_ENV, JAX_COMPILATION_CACHE_DIR=path)
    config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (``--dist loadgroup``, pyproject.toml)
def pytest_collection_modifyitems(config, items):
    """The slow reproduction test first: under ``pytest -n 2`` one worker runs it from the start
    while the other takes the rest, instead of the suite waiting for it at the end. Tests that share
    a module-scoped fixture (a training run, a subprocess of simulated devices) form one xdist
    group, so that one worker builds the fixture once instead of each worker building its own."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept otherwise
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shared = sorted(
            name
            for name, defs in (info.name2fixturedefs.items() if info else ())
            if defs and defs[-1].scope == "module"
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}:{'+'.join(shared)}"))


@pytest.fixture(scope="session")
def gcs_bucket() -> str:
    """``gs://BUCKET``: an empty bucket on a Cloud Storage emulator started on 127.0.0.1 for the
    session (``tests/gcs_emulator.py``), with gcsfs, google-cloud-storage and tensorstore of this
    process and of the processes it starts pointed at it; stopped at the end. One per process, as
    tensorstore reads its endpoint once per process. Tests share it: each uses its own prefix."""
    from gcs_emulator import emulated_gcs  # its packages are loaded only by the tests that use it

    with emulated_gcs("sdd-jax-test"):
        yield "gs://sdd-jax-test"
