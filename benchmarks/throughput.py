"""Training throughput of the engine: masked LeNet-300-100 on MNIST-shaped data.

Trains 1, 4 and 8 seeds together (vmapped, one scanned epoch per call) and prints one line per
seed count, then, as its last line, one JSON object:

    {"examples_per_second": {"1": ..., "4": ..., "8": ...},    # all seeds counted
     "flop_share": {...},   # achieved training FLOP/s over a measured float32 matmul rate
     "matmul_flops_per_second": ..., "device": ..., "train_size": ..., "batch_size": ...}

The FLOP estimate is 3 × the forward multiply-adds × 2 (forward, and backward for activations
and weights): 6 × 266,200 per example for LeNet-300-100 (biases and the optimiser ignored).

    python benchmarks/throughput.py [--train-size 60000] [--epochs 2] [--seeds 1,4,8]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from sdd_jax import rng as rng_streams
from sdd_jax.config import ModelConfig, OptimConfig
from sdd_jax.models import build_model
from sdd_jax.engine import Engine
from sdd_jax.train import DeviceData

LENET_MACS = 784 * 300 + 300 * 100 + 100 * 10


def matmul_flops_per_second(size: int = 1024, repeats: int = 20) -> float:
    """A float32 matmul rate on this device: a practical ceiling for dense-layer training."""
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    out.block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def measure(n_seeds: int, train_size: int, epochs: int, batch_size: int) -> float:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, size=(train_size, 28, 28, 1), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, size=train_size), jnp.int32)
    data = DeviceData(x, y)
    engine = Engine(build_model(ModelConfig(name="lenet_300_100"), 10),
                    OptimConfig(lr=0.1, batch_size=batch_size, epochs=epochs), train_size,
                    mean=(0.1307,), std=(0.3081,))
    seeds = list(range(n_seeds))
    keys = rng_streams.seed_keys(seeds, "init")
    state = engine.init(keys, seeds, jnp.zeros((1, 28, 28, 1)))
    mask = jax.tree.map(lambda p: (jnp.arange(p.size).reshape(p.shape) % 5 != 0).astype(p.dtype),
                        state.params)  # 80% density: a masked run, as in a pruning level
    state, loss, _ = engine.train_epoch(state, mask, data, 0)  # compile + warm up
    loss.block_until_ready()
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        state, loss, _ = engine.train_epoch(state, mask, data, epoch)
    loss.block_until_ready()
    seconds = time.perf_counter() - start
    return n_seeds * train_size * epochs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", default="1,4,8")
    args = parser.parse_args()
    peak = matmul_flops_per_second()
    rates, shares = {}, {}
    for n in [int(s) for s in args.seeds.split(",")]:
        rate = measure(n, args.train_size, args.epochs, args.batch_size)
        rates[str(n)] = round(rate)
        shares[str(n)] = round(rate * 6 * LENET_MACS / peak, 3)
        print(f"{n} seed(s): {rate:,.0f} examples/s ({rate / n:,.0f} per seed), "
              f"{100 * shares[str(n)]:.0f}% of the matmul rate", flush=True)
    print(json.dumps({"examples_per_second": rates, "flop_share": shares,
                      "matmul_flops_per_second": round(peak), "device": str(jax.devices()[0]),
                      "train_size": args.train_size, "batch_size": args.batch_size}))


if __name__ == "__main__":
    main()
