"""One process of a two-process job on the CPU, run by tests/test_multihost.py.

Usage: ``multihost_checks.py WORKDIR PHASE`` with ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` and two simulated devices per process in the
environment. Both processes run the same pruning run (4 seeds over the 4 devices of the two
processes) in the same run directory, as hosts of a pod slice would on a shared file system.
PHASE ``kill`` stops (exit 3) after level 1 is finished, ``run`` runs to the end. Prints one
JSON object: the files this process wrote outside orbax's checkpoint folders, and the mesh.
"""

import builtins
import json
import os
import sys
from pathlib import Path

import jax

from sdd_jax import imp, runopen
from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig
from sdd_jax.rundir import RunDir

ORBAX_FOLDERS = ("levels", "trees", "progress")


def tiny(workdir: str) -> Config:
    return Config(
        name="hosts",
        data=DataConfig(name="mnist_embedded", train_size=256, test_size=256),
        noise=NoiseConfig(kind="random_labels", rate=0.2),
        model=ModelConfig(name="mlp", widths=(32,)),
        optim=OptimConfig(lr=0.1, momentum=0.5, weight_decay=1e-4, batch_size=64, epochs=2),
        pruning=PruningConfig(levels=2, rewind_iteration=3),
        run=RunConfig(
            seeds=4, workdir=workdir, verbosity=1, eval_batch_size=128, checkpoint_every_epochs=1, distributed="on"
        ),
    )


def main() -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives across processes
    workdir, phase = Path(sys.argv[1]).resolve(), sys.argv[2]
    written = []

    def outside_orbax(path) -> bool:
        path = Path(path).resolve()
        if workdir not in path.parents:
            return False
        parts = path.relative_to(workdir).parts
        return not (len(parts) > 1 and parts[1] in ORBAX_FOLDERS)

    real_open, real_replace = builtins.open, os.replace

    def tracking_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and outside_orbax(file):
            written.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def tracking_replace(src, dst, *args, **kwargs):
        if outside_orbax(dst):
            written.append(str(dst))
        return real_replace(src, dst, *args, **kwargs)

    builtins.open, os.replace = tracking_open, tracking_replace
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def tracking_mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        if outside_orbax(name):
            written.append(name)
        return fd, name

    tempfile.mkstemp = tracking_mkstemp

    config = tiny(str(workdir))
    if phase == "kill":
        original = RunDir.finish_level

        def finish_then_die(self, level, *args, **kwargs):
            original(self, level, *args, **kwargs)
            if level == 1:  # both hosts stop here, as a preempted slice does
                print(json.dumps({"process": jax.process_index(), "written": written}), flush=True)
                raise SystemExit(3)

        RunDir.finish_level = finish_then_die
    exp, run = runopen.open_run(config)
    imp.run_imp(config, prepared=(exp, run))
    if jax.process_index() == 0:
        from sdd_jax import report

        report.report(run.path)
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "mesh": dict(exp.engine.mesh.shape),
                "written": written,
                "run_dir": str(run.path),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
