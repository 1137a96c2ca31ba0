"""Several hosts, one run: start-up, which process writes, and per-seed arrays back on the host.

On a Cloud TPU pod slice (or any multi-process JAX job) every host runs the same command on the
same config. Each process builds the same data set, the seed mesh spans the devices of every
host (:func:`sdd_jax.seed_axis.seed_mesh` over ``jax.devices()``), and the compiled programs run as
one. What differs between processes:

* only process 0 (:func:`is_primary`) writes the run directory's files (JSON, ``results.csv``,
  ``summary.txt``, figures) and prints progress;
* checkpoints are written through orbax by every process together (orbax writes each shard
  once, from the process that holds it, and finalises the step on the primary host);
* arrays split over seeds on other hosts are gathered with
  :func:`jax.experimental.multihost_utils.process_allgather` (:func:`to_host`).

The run directory must be on a file system every host sees (e.g. a Filestore or GCS FUSE mount).

Liveness: every process sends heartbeats to the coordination service on process 0. A process whose
heartbeats stop for ``heartbeat_timeout_seconds`` (dead, preempted, or only starved of CPU) is
declared failed, and the service then ends every process of the job (each aborts with a
``CoordinationServiceError``, exit status -6 / 134); the run directory keeps its finished levels and
last checkpoint, so the same command on every host resumes it. jax's defaults (100 s heartbeat,
300 s to connect, 300 s to wait for the others at exit) are short for a loaded machine, a host
stalled by a maintenance event, or hosts that start minutes apart; :data:`TIMEOUTS` gives longer
ones, each overridable from the environment (:func:`timeouts`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from sdd_jax.choices import DISTRIBUTED

# Set by JAX's TPU runtime on every VM of a slice: one hostname per VM.
_TPU_HOSTS_ENV = "TPU_WORKER_HOSTNAMES"

# The coordination service's timeouts in seconds: (jax.distributed.initialize keyword, environment
# variable that overrides it, default). A longer heartbeat timeout survives longer stalls but lets
# the other hosts wait that long on a host that is really gone before the job ends.
TIMEOUTS = (
    ("initialization_timeout", "SDD_JAX_INIT_TIMEOUT", 900),  # hosts may start minutes apart
    ("heartbeat_timeout_seconds", "SDD_JAX_HEARTBEAT_TIMEOUT", 600),  # silence before a host is dead
    ("shutdown_timeout_seconds", "SDD_JAX_SHUTDOWN_TIMEOUT", 900),  # e.g. process 0 writes the report
)


def wanted(setting: str) -> bool:
    """Whether ``run.distributed`` = ``setting`` asks for :func:`jax.distributed.initialize`:
    ``on`` always, ``off`` never, ``auto`` on a multi-host Cloud TPU slice (``TPU_WORKER_HOSTNAMES``
    lists more than one host) or when a coordinator is named (``JAX_COORDINATOR_ADDRESS``)."""
    if setting not in DISTRIBUTED:
        raise ValueError(f"run.distributed must be one of {', '.join(DISTRIBUTED)}, got {setting!r}")
    if setting != "auto":
        return setting == "on"
    hosts = [h for h in os.environ.get(_TPU_HOSTS_ENV, "").split(",") if h.strip()]
    return len(hosts) > 1 or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def timeouts() -> dict[str, int]:
    """The coordination service's timeouts for :func:`jax.distributed.initialize`, in seconds:
    ``initialization_timeout`` (``SDD_JAX_INIT_TIMEOUT``, default 900: how long a process waits
    for the others to connect), ``heartbeat_timeout_seconds`` (``SDD_JAX_HEARTBEAT_TIMEOUT``,
    default 600: how long a process may go without a heartbeat before the whole job is ended) and
    ``shutdown_timeout_seconds`` (``SDD_JAX_SHUTDOWN_TIMEOUT``, default 900: how long a finished
    process waits at exit for the others). Every process of a job should see the same values.
    Raises :class:`ValueError` naming the variable when one is not a positive integer."""
    out = {}
    for key, env, default in TIMEOUTS:
        text = os.environ.get(env, "").strip()
        if not text:
            out[key] = default
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise ValueError(f"{env}={os.environ[env]!r} is not a positive number of seconds")
        out[key] = value
    return out


def initialize(setting: str) -> bool:
    """Join the multi-process job when :func:`wanted` (before anything else touches JAX's
    backends); returns whether it did. ``jax.distributed.initialize`` finds the coordinator,
    process count and index itself on Cloud TPU, SLURM and Open MPI; elsewhere set
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` in each process's environment. The coordination service's timeouts are
    :func:`timeouts`.
    Raises :class:`ValueError` naming ``run.distributed`` (or the timeout variable) when it cannot."""
    if not wanted(setting):
        return False
    if jax.distributed.is_initialized():
        return True
    named = timeouts()
    for env, key in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if os.environ.get(env, "").strip():
            try:
                named[key] = int(os.environ[env])
            except ValueError:
                raise ValueError(f"{env}={os.environ[env]!r} is not an integer") from None
    try:
        jax.distributed.initialize(**named)
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"run.distributed={setting}: cannot join the multi-process job ({first}); "
            "set run.distributed=off for a single host"
        ) from None
    return True


def is_primary() -> bool:
    """Whether this process writes the run directory's files and prints (process 0)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """``tree`` as numpy arrays on this host, each whole (all seeds), whichever process holds
    them: ``jax.device_get`` for arrays this process can address, an all-gather otherwise. Every
    process must call it with the same tree (it is a collective when arrays span hosts)."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(
        lambda x: (
            np.asarray(multihost_utils.process_allgather(x, tiled=True))
            if isinstance(x, jax.Array) and not x.is_fully_addressable
            else jax.device_get(x)
        ),
        tree,
    )


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """``jax.device_put(tree, sharding)``, also when ``sharding`` spans the devices of several
    processes: then each process builds its own shards from the whole value, which every process
    must hold alike (the same data on every host). Typed PRNG keys keep their key type."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(one(jax.random.key_data(leaf)), impl=impl)
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def barrier(name: str) -> None:
    """Wait until every process reaches ``name`` (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
