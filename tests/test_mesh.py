"""Seeds across devices, a data axis, and seeds one after another on one device.

The multi-device checks run once in a subprocess with 8 simulated CPU devices
(``tests/mesh_checks.py``); the sequential-seed checks run here on one device.
"""

import json
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import simulated_devices_env
from thin_models import thin_resnet

from sdd_jax import engine as engine_lib
from sdd_jax import rng
from sdd_jax.config import ModelConfig, OptimConfig
from sdd_jax.engine import Engine, resolve_seed_execution
from sdd_jax.models import build_model
from sdd_jax.seed_axis import over_seeds, seed_mesh
from sdd_jax.train import DeviceData

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def mesh_facts():
    env = simulated_devices_env(8)
    done = subprocess.run(
        [sys.executable, str(TESTS / "mesh_checks.py")], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_eight_seeds_over_eight_devices_match_one_device(mesh_facts):
    assert mesh_facts["devices"] == 8
    assert mesh_facts["eight_mesh"] == {"seeds": 8, "data": 1}
    assert mesh_facts["eight_state_devices"] == 8  # the stacked weights really live on 8 devices
    assert mesh_facts["eight_vs_one"] <= 1e-5  # same numbers up to float reduction order


def test_six_seeds_over_four_devices_use_three_and_say_so(mesh_facts):
    assert mesh_facts["six_on_four_mesh"] == {"seeds": 3, "data": 1}
    assert "6 seeds use 3 of 4" in mesh_facts["six_on_four_warning"]
    assert mesh_facts["six_vs_one"] <= 1e-5


def test_a_seeds_by_data_mesh_step_equals_the_unsharded_step(mesh_facts):
    assert mesh_facts["data_mesh"] == {"seeds": 2, "data": 4}
    assert mesh_facts["data_mesh_params_diff"] <= 1e-5
    assert mesh_facts["data_mesh_stats_diff"] <= 1e-5
    # BatchNorm statistics are per seed: seed 1 among two equals seed 1 alone, unlike seed 0.
    assert mesh_facts["seed1_stats_vs_alone"] <= 1e-5
    assert mesh_facts["seed0_vs_seed1_stats"] > 1e-3


def test_a_killed_sharded_run_resumes_to_identical_results(mesh_facts):
    assert mesh_facts["killed_at_level"] == 0
    assert mesh_facts["resumed_equals_straight"]


def test_mesh_settings_are_checked():
    cpu = jax.devices()[:1] * 4  # four entries are enough to size a mesh
    with pytest.raises(ValueError, match="run.seed_devices=3 must divide run.seeds=4"):
        seed_mesh(4, 3, 1, cpu)
    with pytest.raises(ValueError, match="run.data_devices=8 exceeds"):
        seed_mesh(4, 0, 8, cpu)
    assert seed_mesh(4, 1, 1, cpu) is None  # one device: no mesh, the single-device program


def test_auto_seed_execution_is_sequential_only_for_conv_nets_on_gpus(monkeypatch):
    mlp = build_model(ModelConfig(name="mlp", widths=(8,)), 4)
    conv = build_model(ModelConfig(name="vgg11", width_multiplier=0.125), 4)
    assert resolve_seed_execution("auto", mlp) == resolve_seed_execution("auto", conv) == "vmap"  # CPU
    monkeypatch.setattr(engine_lib.jax, "default_backend", lambda: "gpu")
    assert resolve_seed_execution("auto", conv) == "sequential"
    assert resolve_seed_execution("auto", mlp) == "vmap"
    assert resolve_seed_execution("sequential", mlp) == "sequential"
    with pytest.raises(ValueError, match="seed_execution"):
        over_seeds(lambda x: x, (0,), "parallel")


def _sequential_epochs(seeds, epochs=1):
    model = thin_resnet(10, stages=1)
    optim = OptimConfig(lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=16, epochs=epochs)
    x = np.random.default_rng(0).integers(0, 256, (48, 16, 16, 3), dtype=np.uint8)
    data = DeviceData(jnp.asarray(x), jnp.asarray(np.arange(48) % 10, jnp.int32))
    engine = Engine(
        model, optim, 48, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, seed_execution="sequential", epoch_loop="scan"
    )
    state = engine.init(rng.seed_keys(seeds, "init"), seeds, jnp.zeros((1, 16, 16, 3)))
    mask = jax.tree.map(jnp.ones_like, state.params)
    for epoch in range(epochs):
        state, *_ = engine.train_epoch_sums(state, mask, data, epoch)
    return jax.device_get(state)


def test_sequential_seeds_are_bit_identical_alone_or_among_others():
    """Over 3 steps of a BatchNorm ResNet with momentum, where vmapped seeds drift apart (on
    this CPU, seed 0 vmapped alone and among 4 differs by about 2e-7 after them)."""
    alone = _sequential_epochs([0])
    among = _sequential_epochs([0, 1, 2, 3])
    first = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)  # noqa: E731
    chex.assert_trees_all_equal(first(among.params), first(alone.params))
    chex.assert_trees_all_equal(first(among.batch_stats), first(alone.batch_stats))
    chex.assert_trees_all_equal(first(among.opt_state), first(alone.opt_state))
    assert not np.array_equal(np.asarray(among.params["fc"]["kernel"][0]), np.asarray(among.params["fc"]["kernel"][1]))
