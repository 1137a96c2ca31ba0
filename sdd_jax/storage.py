"""Paths of a run directory, on the local disk or on Cloud Storage (``gs://BUCKET/...``).

:func:`as_path` gives a ``pathlib.Path`` for a local path and an ``etils.epath.Path`` for a
``gs://`` URL; both have the pathlib API (``/``, ``name``, ``parent``, ``exists``, ``is_dir``,
``iterdir``, ``read_bytes``...), and both can be handed to orbax. On ``gs://`` etils goes through
fsspec's ``gcsfs`` (tf.io.gfile only when tensorflow is installed and ``EPATH_USE_TF`` is not
false), and orbax writes arrays with tensorstore's own GCS driver.

Writes are atomic: a local file is written to a hidden temporary file beside it and renamed over
it (``os.replace``; a write killed half-way leaves a ``.NAME.XXXX.tmp`` that
:func:`sdd_jax.runlock.remove_leftovers` clears); an object is uploaded whole in one request
(Cloud Storage makes an object visible only once its upload is complete, so there is no rename
to do and nothing to clean). Either way the value is serialised in memory first, so a failing
serialiser writes nothing. Only process 0 writes (:func:`sdd_jax.distributed.is_primary`).

Cloud Storage has no folders: a "directory" is the prefix of the objects under it, which exists
once an object does (:func:`mkdir` creates nothing there), and listing it shows its immediate
children. Listings are not cached (``use_listings_cache=False`` for fsspec's gs filesystem):
tensorstore writes objects behind gcsfs's back, and a cached listing would hide them.

Credentials and endpoint are the Google clients' own: application-default credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login`` or a VM's service
account). An emulator needs ``STORAGE_EMULATOR_HOST=http://HOST:PORT`` (gcsfs and
google-cloud-storage), ``TENSORSTORE_GCS_HTTP_URL`` to the same URL (tensorstore, read once per
process) and ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` before gcsfs is imported (otherwise gcsfs
asks the Storage Control gRPC API, which emulators do not serve, about every bucket it touches,
waiting a minute each time).

Failures on ``gs://`` come back as one :class:`StorageError` line naming the path: an endpoint
that does not answer, a bucket that does not exist or cannot be read. A missing object is a
``FileNotFoundError`` as on a local disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import fsspec
from etils import epath

from sdd_jax.distributed import is_primary

REMOTE_PREFIX = "gs://"
GCS_ENDPOINT = "https://storage.googleapis.com"
CONNECT_TIMEOUT_S = 10  # how long the first contact with an endpoint may take before it is declared unreachable

for _protocol in ("gs", "gcs"):  # fsspec's config for gcsfs, applied when its filesystem is made
    fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)


class StorageError(ValueError):
    """Cloud Storage cannot be reached, or a bucket is missing or refused, for this path."""


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Cloud Storage URL (``gs://``)."""
    return os.fspath(path).startswith(REMOTE_PREFIX)


def as_path(path: str | os.PathLike) -> pathlib.Path | epath.Path:
    """``path`` as a ``pathlib.Path`` (local) or an ``epath.Path`` (``gs://BUCKET/...``).
    Raises :class:`StorageError` for ``gs:/...`` (a URL that went through ``pathlib.Path``,
    which folds ``//``) and for a ``gs://`` URL without a bucket."""
    text = os.fspath(path)
    if is_remote(text):
        if not urlsplit(text).netloc:
            raise StorageError(f"{text} names no bucket (expected gs://BUCKET/PATH)")
        return epath.Path(text)
    if text.startswith("gs:/"):
        raise StorageError(f"{text} is a gs:// URL that lost a slash (pass URLs as text, not through pathlib.Path)")
    return pathlib.Path(text)


def absolute(path: str | os.PathLike) -> pathlib.Path | epath.Path:
    """:func:`as_path` of ``path`` made absolute: a local path with ``~`` expanded (symlinks kept),
    a ``gs://`` URL as it is (``epath.Path.absolute()`` and ``resolve()`` would put the working
    directory in front of it)."""
    path = as_path(path)
    return path if is_remote(path) else path.expanduser().absolute()


def resolve(path: str | os.PathLike) -> pathlib.Path | epath.Path:
    """:func:`absolute` with local symlinks resolved (``Path.resolve``), to compare two paths."""
    path = as_path(path)
    return path if is_remote(path) else path.expanduser().resolve()


def relative(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to the folder ``root`` (both local, or both under the same ``gs://``
    bucket), as a POSIX string: ``points/run-1a2b`` for ``<root>/points/run-1a2b``.
    ``ValueError`` when ``path`` is not under ``root``."""
    path, root = absolute(path), absolute(root)
    if is_remote(path) or is_remote(root):
        inner, outer = str(path).rstrip("/"), str(root).rstrip("/") + "/"
        if not inner.startswith(outer):
            raise ValueError(f"{path} is not under {root}")
        return inner[len(outer) :]
    return pathlib.Path(path).relative_to(root).as_posix()


# --------------------------------------------------------------------------- Cloud Storage access


def _fs(version_aware: bool = False) -> Any:
    """fsspec's gs filesystem (gcsfs), imported by fsspec on first use."""
    return fsspec.filesystem("gs", version_aware=version_aware) if version_aware else fsspec.filesystem("gs")


def _endpoint() -> str:
    """The JSON API endpoint gcsfs talks to (``STORAGE_EMULATOR_HOST``, else Google's)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if host in ("", "default"):
        return GCS_ENDPOINT
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines() or [type(err).__name__])[0][:200]


_CHECKED: set[tuple[str, str]] = set()  # (endpoint, bucket) found reachable and readable by this process


def _proxied(scheme: str) -> bool:
    return any(
        os.environ.get(name) for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")
    )


def check_bucket(path: str | os.PathLike) -> None:
    """Make sure the bucket of the ``gs://`` ``path`` can be used (once per process and bucket):
    its endpoint accepts a connection within :data:`CONNECT_TIMEOUT_S` (a direct TCP connection,
    skipped behind an HTTP proxy), and the bucket exists (credentials with rights on its objects
    but not on the bucket itself, e.g. ``roles/storage.objectAdmin``, pass). Raises
    :class:`StorageError` naming the path otherwise. Nothing for a local path."""
    text = os.fspath(path)
    if not is_remote(text):
        return
    bucket = urlsplit(text).netloc
    endpoint = _endpoint()
    if (endpoint, bucket) in _CHECKED:
        return
    url = urlsplit(endpoint)
    if not _proxied(url.scheme):
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise StorageError(
                f"{text}: cannot reach Cloud Storage at {endpoint} ({_first_line(err)})"
                + ("; check STORAGE_EMULATOR_HOST" if endpoint != GCS_ENDPOINT else "; check the network")
            ) from None
    try:
        _fs().info(bucket)
    except FileNotFoundError:  # 404: no such bucket (one that exists but is not ours answers 403)
        raise StorageError(f"{text}: bucket {bucket} does not exist at {endpoint}") from None
    except OSError as err:
        if not str(err).startswith("Forbidden"):  # 403: objects may still be usable without storage.buckets.get
            raise StorageError(f"{text}: cannot use bucket {bucket} ({_first_line(err)})") from None
    except Exception as err:  # noqa: BLE001 - gcsfs, aiohttp and google-auth raise many kinds
        raise StorageError(f"{text}: cannot use bucket {bucket} ({_first_line(err)})") from None
    _CHECKED.add((endpoint, bucket))


@contextlib.contextmanager
def _remote(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Around an operation on the ``gs://`` ``path``: its bucket checked first
    (:func:`check_bucket`); failures other than a missing or existing object become one
    :class:`StorageError`."""
    check_bucket(path)
    try:
        yield
    except (FileNotFoundError, FileExistsError, StorageError):
        raise
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"{os.fspath(path)}: cannot {what} ({_first_line(err)})") from None


# --------------------------------------------------------------------------- writes


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: pathlib.Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_local(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: give the mode open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (local parent folders are created): readers see the
    old content or the new, never part of it. In a multi-host job only process 0 writes; the
    others return."""
    if not is_primary():
        return
    data = bytes(data)
    if is_remote(path):
        with _remote(path, "write"):
            _fs().pipe_file(os.fspath(path), data)  # one upload: the object appears whole or not at all
        return
    _replace_local(as_path(path), data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`write_bytes` of UTF-8 ``text`` (newlines written as given)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """:func:`write_text` of ``json.dumps(obj)`` and a newline (NaN/inf as JSON extensions). A value
    that does not serialise raises before anything is written."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


# --------------------------------------------------------------------------- reads and queries


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of the file or object ``path`` (``FileNotFoundError`` when there is none)."""
    if is_remote(path):
        with _remote(path, "read"):
            return as_path(path).read_bytes()
    return as_path(path).read_bytes()


def read_text(path: str | os.PathLike) -> str:
    """:func:`read_bytes` decoded as UTF-8."""
    return read_bytes(path).decode("utf-8")


def exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file or a directory (on Cloud Storage: an object, or a prefix of some)."""
    if is_remote(path):
        with _remote(path, "look up"):
            return as_path(path).exists()
    return as_path(path).exists()


def is_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file (an object)."""
    if is_remote(path):
        with _remote(path, "look up"):
            return as_path(path).is_file()
    return as_path(path).is_file()


def is_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory (on Cloud Storage: the prefix of at least one object)."""
    if is_remote(path):
        with _remote(path, "look up"):
            return as_path(path).is_dir()
    return as_path(path).is_dir()


def listdir(path: str | os.PathLike) -> list[pathlib.Path | epath.Path]:
    """The entries directly in the directory ``path``, sorted by name (empty when it is missing)."""
    if not is_dir(path):
        return []
    if is_remote(path):
        with _remote(path, "list"):
            return sorted(as_path(path).iterdir(), key=lambda p: p.name)
    return sorted(as_path(path).iterdir(), key=lambda p: p.name)


def glob(path: str | os.PathLike, pattern: str) -> list[pathlib.Path | epath.Path]:
    """The entries matching ``pattern`` (a ``pathlib`` glob) under the directory ``path``, sorted."""
    if is_remote(path):
        with _remote(path, "list"):
            return sorted(as_path(path).glob(pattern), key=str)
    return sorted(as_path(path).glob(pattern), key=str)


def mkdir(path: str | os.PathLike) -> None:
    """Create the local directory ``path`` and its parents (existing is fine). Nothing on Cloud
    Storage, where a directory exists once an object is written under it."""
    if not is_remote(path):
        as_path(path).mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------- removal


def remove_file(path: str | os.PathLike, *, missing_ok: bool = True) -> None:
    """Remove the file or object ``path``."""
    if is_remote(path):
        with _remote(path, "remove"):
            try:
                _fs().rm_file(os.fspath(path))
            except FileNotFoundError:
                if not missing_ok:
                    raise
        return
    as_path(path).unlink(missing_ok=missing_ok)


def remove_tree(path: str | os.PathLike) -> None:
    """Remove the directory ``path`` and everything under it (nothing when it is missing). On
    Cloud Storage each object is deleted on its own: a removal cut short leaves some of them."""
    if is_remote(path):
        with _remote(path, "remove"):
            fs = _fs()
            objects = fs.find(os.fspath(path), withdirs=False)
            if objects:
                fs.rm(objects)
        return
    shutil.rmtree(as_path(path), ignore_errors=True)


# --------------------------------------------------------------------------- preconditions (locks)


def create_new(path: str | os.PathLike, data: bytes) -> str | None:
    """Upload the object ``path`` only if none exists (``ifGenerationMatch=0``: the server
    decides, so of two processes racing exactly one wins). Returns the new object's generation,
    or ``None`` when an object was already there. Cloud Storage paths only."""
    if not is_remote(path):
        raise ValueError(f"create_new takes a gs:// path, got {os.fspath(path)}")
    with _remote(path, "create"):
        try:
            _fs().pipe_file(os.fspath(path), bytes(data), mode="create")
        except FileExistsError:
            return None
        return object_generation(path)


def object_generation(path: str | os.PathLike) -> str | None:
    """The generation (version number) of the object ``path``, ``None`` when there is none."""
    with _remote(path, "look up"):
        try:
            return str(_fs().info(os.fspath(path))["generation"])
        except FileNotFoundError:
            return None


def remove_object(path: str | os.PathLike, generation: str) -> bool:
    """Delete the object ``path`` only in its version ``generation`` (a newer object of the same
    name stays). Returns whether it was deleted."""
    with _remote(path, "remove"):
        try:
            _fs(version_aware=True).rm_file(f"{os.fspath(path)}#{generation}")
        except FileNotFoundError:
            return False
        return True


class _DropGcsfsRetries(logging.Filter):
    """gcsfs logs a traceback when it gives up on a request; the exception itself reaches the
    caller, and :func:`_remote` turns it into one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def _install_log_filter() -> None:
    logger = logging.getLogger("gcsfs")
    if not any(isinstance(f, _DropGcsfsRetries) for f in logger.filters):
        logger.addFilter(_DropGcsfsRetries())


_install_log_filter()
