"""A study on 8 simulated CPU devices against the same study on one, run by tests/test_study.py in a
subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=8`` must be set before jax is
imported). Prints one JSON object of measured facts; the test asserts on them."""

import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

assert "device_count=8" in os.environ.get("XLA_FLAGS", ""), "run with 8 simulated devices"

import jax
import numpy as np

from sdd_jax import results, saved, study
from sdd_jax.study_stack import Program

# 1 noise rate x 2 scopes x lottery/reinit, 2 seeds: 4 replicas at level 0 (the lottery points),
# 8 at level 1.
GRID = ["pruning.scope=global,layer", "init=lottery,reinit"]
SET = [
    "data.train_size=256",
    "data.test_size=256",
    "optim.epochs=2",
    "pruning.levels=1",
    "model.name=mlp",
    "model.widths=32",
    "run.eval_batch_size=128",
]


def sweep(workdir: Path, *extra: str):
    resolved = study.resolve_study("smoke", GRID, overrides=[*SET, *extra], seeds=2, workdir=str(workdir), verbosity=0)
    study.run(resolved, write_report=False)
    return resolved


def rows_of(point) -> list[dict]:
    folder = point.run_dir if point.init == "lottery" else point.run_dir / "branches" / "reinit"
    out = []
    for name in (results.RESULTS_FILE, results.CURVES_FILE, results.LAYERS_FILE):
        out += results.read_csv(folder / name)
    return out


def max_diff(a: list[dict], b: list[dict]) -> float:
    if len(a) != len(b) or any(x.keys() != y.keys() for x, y in zip(a, b)):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        for key, value in x.items():
            if isinstance(value, float) and not (np.isnan(value) and np.isnan(y[key])):
                worst = max(worst, abs(value - y[key]))
            elif not isinstance(value, float) and value != y[key]:
                return float("inf")
    return worst


def main() -> dict:
    out = {"devices": jax.device_count()}
    root = Path(tempfile.mkdtemp())
    meshes = []
    original = Program.stack

    def recorded(self, indices, path):
        stack, run = original(self, indices, path)
        mesh = stack.engine.mesh
        meshes.append([len(stack.replicas), None if mesh is None else dict(mesh.shape)])
        return stack, run

    Program.stack = recorded
    one = sweep(root / "one", "run.seed_devices=1")
    out["one_device_meshes"] = meshes[:]
    meshes.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eight = sweep(root / "eight")
    out["eight_device_meshes"] = meshes[:]
    out["warnings"] = [str(w.message) for w in caught]
    out["points"] = len(eight.points)
    out["max_diff"] = max(max_diff(rows_of(a), rows_of(b)) for a, b in zip(one.points, eight.points))
    out["level_mask_equal"] = all(
        bool(np.array_equal(a, b))
        for p, q in zip(one.points, eight.points)
        if p.init == "lottery"
        for a, b in zip(
            jax.tree.leaves(saved.load_run(p.run_dir).level(1).mask),
            jax.tree.leaves(saved.load_run(q.run_dir).level(1).mask),
        )
    )
    return out


if __name__ == "__main__":
    json.dump(main(), sys.stdout)
