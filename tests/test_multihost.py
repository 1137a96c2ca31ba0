"""Several hosts: two real JAX processes on the CPU (gloo collectives), two devices each, one run
directory. Only process 0 writes the run's files, the seeds span both processes, the results
equal a one-process run, and a run killed on both hosts resumes to the same results."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import chex
import pytest

from sdd_jax import distributed, imp, results
from sdd_jax.atomic import atomic_write_json

TESTS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _job(workdir: Path, phase: str) -> list[subprocess.CompletedProcess]:
    """Both processes of the job, started together; their completed processes by index."""
    port = _free_port()
    procs, logs = [], []
    for index in range(2):
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
               "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": str(index), "JAX_PLATFORMS": "cpu",
               "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
        # Output to files, not pipes: a process blocked on a full pipe would stall the other at
        # their next barrier.
        out, err = (open(workdir.parent / f"{phase}-{index}.{kind}", "w+") for kind in ("out", "err"))
        logs.append((out, err))
        procs.append(subprocess.Popen([sys.executable, str(TESTS / "multihost_checks.py"), str(workdir), phase],
                                      env=env, stdout=out, stderr=err, text=True))
    done = []
    for proc, (out, err) in zip(procs, logs):
        proc.wait(timeout=600)
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
