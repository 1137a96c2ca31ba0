"""A run continued on another device count, run by tests/test_resume_devices.py in subprocesses
(``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before jax is imported).

    python tests/resume_devices_checks.py WORKDIR LEVELS SEED_DEVICES [STOP_LEVEL]

runs (or continues) the tiny MLP run of 4 seeds in WORKDIR to level LEVELS over SEED_DEVICES
devices, saving progress every epoch; with STOP_LEVEL it stops (as a kill would) right after the
first progress checkpoint of that level. Prints one JSON object: the results rows, the warnings,
and what ``load_run`` reads back from the run directory on this device count.
"""

import json
import sys
import warnings
from pathlib import Path

import jax
import numpy as np

from sdd_jax import imp, results
from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig
from sdd_jax.rundir import RunDir
from sdd_jax.saved import load_run


def tiny(workdir: str, levels: int, seed_devices: int) -> Config:
    return Config(
        name="tiny",
        data=DataConfig(name="mnist_embedded", train_size=128, test_size=128),
        noise=NoiseConfig(kind="random_labels", rate=0.2),
        model=ModelConfig(name="mlp", widths=(16,)),
        optim=OptimConfig(lr=0.1, momentum=0.5, weight_decay=1e-4, batch_size=64, epochs=2),
        pruning=PruningConfig(levels=levels, rewind_iteration=1),
        run=RunConfig(
            seeds=4,
            workdir=workdir,
            verbosity=0,
            eval_batch_size=128,
            seed_devices=seed_devices,
            checkpoint_every_epochs=1,
        ),
    )


def main(workdir: str, levels: int, seed_devices: int, stop_level: int | None) -> dict:
    out = {"devices": jax.device_count(), "stopped": False}
    if stop_level is not None:
        original = RunDir.save_progress

        def save_then_stop(self, level, *args, **kwargs):
            original(self, level, *args, **kwargs)
            if level == stop_level:
                self.store.wait()
                raise KeyboardInterrupt

        RunDir.save_progress = save_then_stop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = imp.run_imp(tiny(workdir, levels, seed_devices), write_report=False)
        except KeyboardInterrupt:
            out["stopped"] = True
            path = next(Path(workdir).iterdir())
    out["warnings"] = [str(w.message) for w in caught]
    out["rows"] = results.read_results_csv(path / "results.csv")
    run = load_run(path)
    out["load_run_levels"] = run.levels()
    out["load_run_theta0_sum"] = float(sum(np.sum(np.abs(v)) for v in jax.tree.leaves(run.theta0().params)))
    out["load_run_kernel_shape"] = list(run.level(run.levels()[-1]).params["fc1"]["kernel"].shape)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    json.dump(main(args[0], int(args[1]), int(args[2]), int(args[3]) if len(args) > 3 else None), sys.stdout)
