"""Shared fixtures. Tests that need real data sets find them in ``<repo>/../shared`` and skip
when it is absent; the package itself never needs it."""

import os
from pathlib import Path

import pytest

# Single-threaded XLA CPU kernels: test processes (often several under pytest-xdist) share few cores.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared`` (real MNIST IDX files, a prepared tfds MNIST), or a skip."""
    path = (REPO.parent / "shared").resolve()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (it holds the real MNIST files these tests read)")
    return path


def pytest_collection_modifyitems(config, items):
    """The slow reproduction test first: under ``pytest -n 2`` one worker runs it from the start
    while the other takes the rest, instead of the suite waiting for it at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept otherwise


@pytest.fixture(scope="session")
def gcs_bucket() -> str:
    """``gs://BUCKET``: an empty bucket on a Cloud Storage emulator started on 127.0.0.1 for the
    session (``tests/gcs_emulator.py``), with gcsfs, google-cloud-storage and tensorstore of this
    process and of the processes it starts pointed at it; stopped at the end. One per process, as
    tensorstore reads its endpoint once per process. Tests share it: each uses its own prefix."""
    from gcs_emulator import emulated_gcs  # its packages are loaded only by the tests that use it

    with emulated_gcs("sdd-jax-test"):
        yield "gs://sdd-jax-test"
