"""Multi-device checks, run by tests/test_mesh.py in a subprocess with 8 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before jax is imported).
Prints one JSON object of measured facts; the tests assert on them."""

import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

assert "device_count=8" in os.environ.get("XLA_FLAGS", ""), "run with 8 simulated devices"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from thin_models import thin_resnet  # noqa: E402

from sdd_jax import imp, results, rng, runopen  # noqa: E402
from sdd_jax.config import (
    Config,
    DataConfig,
    ModelConfig,
    NoiseConfig,
    OptimConfig,  # noqa: E402
    PruningConfig,
    RunConfig,
    override,
)
from sdd_jax.engine import Engine  # noqa: E402
from sdd_jax.rundir import RunDir  # noqa: E402
from sdd_jax.seed_axis import seed_mesh  # noqa: E402
from sdd_jax.train import DeviceData  # noqa: E402


def tiny(workdir, seeds, **overrides) -> Config:
    config = Config(
        name="tiny",
        data=DataConfig(name="mnist_embedded", train_size=256, test_size=256),
        noise=NoiseConfig(kind="random_labels", rate=0.2),
        model=ModelConfig(name="mlp", widths=(32,)),
        optim=OptimConfig(lr=0.1, momentum=0.5, weight_decay=1e-4, batch_size=64, epochs=2),
        pruning=PruningConfig(levels=1, rewind_iteration=3),
        run=RunConfig(seeds=seeds, workdir=str(workdir), verbosity=0, eval_batch_size=128),
    )
    return override(config, overrides)


def rows(config):
    return results.read_results_csv(imp.run_imp(config) / "results.csv")


def max_diff(a, b) -> float:
    """Largest absolute difference over the float columns of two results files (inf: the rows
    or their keys differ)."""
    if [(r["level"], r["seed"]) for r in a] != [(r["level"], r["seed"]) for r in b]:
        return float("inf")
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x if isinstance(x[k], float))


def main() -> dict:
    out = {"devices": jax.device_count()}
    root = Path(tempfile.mkdtemp())

    # 8 seeds over 8 devices against one device.
    one = rows(tiny(root / "one", 8, **{"run.seed_devices": 1}))
    exp, run = runopen.open_run(tiny(root / "eight", 8))
    out["eight_mesh"] = dict(exp.engine.mesh.shape)
    eight = results.read_results_csv(imp.run_imp(exp.config, prepared=(exp, run)) / "results.csv")
    out["eight_vs_one"] = max_diff(one, eight)
    level = run.level(1)
    out["eight_state_devices"] = len(level.params["fc1"]["kernel"].sharding.device_set)

    # 6 seeds over 4 devices: 3 of them used, with a warning.
    devices = jax.devices()[:4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mesh = seed_mesh(6, 0, 1, devices)
    out["six_on_four_mesh"] = dict(mesh.shape)
    out["six_on_four_warning"] = " ".join(str(w.message) for w in caught)
    six_many = rows(tiny(root / "six4", 6, **{"run.seed_devices": 3}))
    out["six_vs_one"] = max_diff([r for r in one if r["seed"] < 6], six_many)  # seeds 0-5 of one device

    # A 2 x 4 (seeds x data) mesh step against the unsharded step: thin BN ResNet.
    model = thin_resnet(10, stages=1)
    optim = OptimConfig(lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=16, epochs=1)
    # One step (16 examples, batch 16): BN nets amplify rounding differences step after step.
    x = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    data = DeviceData(jnp.asarray(x), jnp.asarray(np.arange(16) % 10, jnp.int32))
    seeds = [0, 1]

    def one_epoch(engine, seed_list):
        state = engine.init(rng.seed_keys(seed_list, "init"), seed_list, jnp.zeros((1, 16, 16, 3)))
        mask = jax.tree.map(jnp.ones_like, state.params)
        state, *_ = engine.train_epoch_sums(state, mask, data, 0)
        return jax.device_get(state)

    common = dict(mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, epoch_loop="scan")
    plain = one_epoch(Engine(model, optim, 16, **common), seeds)
    mesh24 = seed_mesh(2, 2, 4)
    sharded = one_epoch(Engine(model, optim, 16, mesh=mesh24, **common), seeds)
    alone = one_epoch(Engine(model, optim, 16, **common), [1])
    leaves = lambda t: [np.asarray(v, np.float64) for v in jax.tree.leaves(t)]  # noqa: E731
    out["data_mesh"] = dict(mesh24.shape)
    out["data_mesh_params_diff"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(leaves(plain.params), leaves(sharded.params))
    )
    out["data_mesh_stats_diff"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(leaves(plain.batch_stats), leaves(sharded.batch_stats))
    )
    # BatchNorm statistics per seed: seed 1 among two equals seed 1 alone, and differs from seed 0.
    out["seed1_stats_vs_alone"] = max(
        float(np.max(np.abs(a[1] - b[0]))) for a, b in zip(leaves(sharded.batch_stats), leaves(alone.batch_stats))
    )
    out["seed0_vs_seed1_stats"] = min(float(np.max(np.abs(a[0] - a[1]))) for a in leaves(sharded.batch_stats))

    # Resume after a kill in the sharded run gives the results of an uninterrupted one.
    straight = eight  # the uninterrupted sharded run
    config = tiny(root / "killed", 8, **{"run.checkpoint_every_epochs": 1})
    original = RunDir.finish_level

    def finish_then_die(self, level, *args, **kwargs):
        original(self, level, *args, **kwargs)
        if level == 0:
            raise KeyboardInterrupt

    RunDir.finish_level = finish_then_die
    try:
        imp.run_imp(config)
    except KeyboardInterrupt:
        out["killed_at_level"] = 0
    RunDir.finish_level = original
    resumed = rows(config)
    out["resumed_equals_straight"] = resumed == straight
    return out


if __name__ == "__main__":
    json.dump(main(), sys.stdout)
