"""Several hosts: two real JAX processes on the CPU (gloo collectives), two devices each, one run
directory. Only process 0 writes the run's files, the seeds span both processes, the results
equal a one-process run, and a run killed on both hosts resumes to the same results."""

import dataclasses
import inspect
import json
import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import pytest
from conftest import simulated_devices_env

from sdd_jax import distributed, imp, results
from sdd_jax.atomic import atomic_write_json

TESTS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


# A loaded machine starves both processes (and their heartbeat threads) for minutes: the job gets
# generous coordination-service timeouts (sdd_jax.distributed.timeouts), and each process runs its
# XLA CPU kernels on its own thread rather than competing with the other through Eigen's pool.
STARVED = {"SDD_JAX_INIT_TIMEOUT": "1200", "SDD_JAX_HEARTBEAT_TIMEOUT": "1200", "SDD_JAX_SHUTDOWN_TIMEOUT": "1200"}
JOB_SECONDS = 1800  # per phase, then both processes are killed


def _job(workdir: Path, phase: str) -> list[subprocess.CompletedProcess]:
    """Both processes of the job, started together; their completed processes by index."""
    port = _free_port()
    procs, logs = [], []
    for index in range(2):
        env = {
            **simulated_devices_env(2),
            **STARVED,
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(index),
            "JAX_PLATFORMS": "cpu",
        }
        # Output to files, not pipes: a process blocked on a full pipe would stall the other at
        # their next barrier.
        out, err = (open(workdir.parent / f"{phase}-{index}.{kind}", "w+") for kind in ("out", "err"))
        logs.append((out, err))
        procs.append(
            subprocess.Popen(
                [sys.executable, str(TESTS / "multihost_checks.py"), str(workdir), phase],
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )
        )
    done = []
    for proc, (out, err) in zip(procs, logs):
        try:
            proc.wait(timeout=JOB_SECONDS)
        except subprocess.TimeoutExpired:  # no process left behind; the logs say where it stood
            for other in procs:
                other.kill()
                other.wait()
        out.seek(0)
        err.seek(0)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()))
        out.close()
        err.close()
    return done


def _facts(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_hosts_stopped_and_resumed_write_once_and_match_one_process(tmp_path):
    """One test, not a shared fixture: under pytest-xdist a module fixture would start a job on
    every worker that runs one of its tests."""
    killed = _job(tmp_path / "shared", "kill")
    resumed = _job(tmp_path / "shared", "run")
    for phase, codes in ((killed, [3, 3]), (resumed, [0, 0])):
        assert [p.returncode for p in phase] == codes, [p.stderr[-2000:] for p in phase]

    # Only process 0 writes the run's files and prints progress.
    zero, one = _facts(resumed[0]), _facts(resumed[1])
    assert (zero["process"], one["process"], zero["processes"]) == (0, 1, 2)
    assert one["written"] == [] and _facts(killed[1])["written"] == []
    names = {Path(p).name for p in zero["written"]}
    assert {"config.json", "results.csv", "summary.txt", "figure.png"} <= names
    assert "density" not in resumed[1].stderr
    assert "density" in resumed[0].stderr

    # The seeds span both processes' devices, and the results equal a one-process run's.
    assert zero["mesh"] == {"seeds": 4, "data": 1}
    shared = results.read_results_csv(Path(zero["run_dir"]) / "results.csv")
    assert sorted({(r["level"], r["seed"]) for r in shared}) == [(lv, s) for lv in range(3) for s in range(4)]
    sys.path.insert(0, str(TESTS))
    try:
        import multihost_checks
    finally:
        sys.path.remove(str(TESTS))
    config = multihost_checks.tiny(str(tmp_path / "alone"))  # the same run in this process, one device
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, distributed="off", verbosity=0))
    single = results.read_results_csv(imp.run_imp(config, write_report=False) / "results.csv")
    assert [(r["level"], r["seed"]) for r in single] == [(r["level"], r["seed"]) for r in shared]
    for a, b in zip(single, shared):
        for key, value in a.items():
            if isinstance(value, float):
                chex.assert_trees_all_close(value, b[key], atol=1e-5, rtol=1e-5)


def test_coordination_timeouts_come_from_the_environment(monkeypatch):
    jax_defaults = {k: v.default for k, v in inspect.signature(jax.distributed.initialize).parameters.items()}
    calls = []
    monkeypatch.setattr("jax.distributed.is_initialized", lambda: False)
    monkeypatch.setattr("jax.distributed.initialize", lambda **kwargs: calls.append(kwargs))
    for _, env, _ in distributed.TIMEOUTS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    monkeypatch.setenv("SDD_JAX_HEARTBEAT_TIMEOUT", "1234")
    assert distributed.initialize("on")
    defaults = {key: default for key, _, default in distributed.TIMEOUTS}
    assert calls == [{**defaults, "heartbeat_timeout_seconds": 1234, "num_processes": 2, "process_id": 1}]
    for key, value in defaults.items():  # keywords jax takes, each more generous than jax's default
        assert value > jax_defaults[key], key
    for bad in ("soon", "0", "-5", "1.5"):
        monkeypatch.setenv("SDD_JAX_SHUTDOWN_TIMEOUT", bad)
        with pytest.raises(ValueError, match=f"SDD_JAX_SHUTDOWN_TIMEOUT='{bad}' is not a positive"):
            distributed.initialize("on")
    assert len(calls) == 1


def test_a_non_primary_process_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr("jax.process_index", lambda: 1)
    assert not distributed.is_primary()
    atomic_write_json(tmp_path / "results.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr("jax.process_index", lambda: 0)
    atomic_write_json(tmp_path / "results.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_run_distributed_auto_joins_only_a_multi_host_slice(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0")
    assert not distributed.wanted("auto")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0,t1k-w-1")
    assert distributed.wanted("auto")
    assert not distributed.wanted("off") and distributed.wanted("on")
    with pytest.raises(ValueError, match="run.distributed"):
        distributed.wanted("yes")
