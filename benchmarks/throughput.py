"""Training throughput of the engine for 1, 4, 8, ... seeds of one model on synthetic data.

Models and shapes: ``lenet_300_100`` on MNIST shapes (60,000 × 28×28×1, plain SGD 0.1), and
``resnet18`` / ``vgg16`` on CIFAR shapes (50,000 × 32×32×3, pad-4 crop + flip, SGD 0.1 with
momentum 0.9 and weight decay 1e-4), batch 128: the paper's protocols. The images are random
uint8 arrays on the device (speed does not depend on their content); the pruning mask keeps
80% of each prunable kernel, as in a pruning level.

For each seed count, one warm-up epoch (compilation included) is followed by ``--epochs`` timed
epochs. One line per seed count gives seconds per epoch, per seed-epoch, examples per second
(all seeds counted), the time ratio to one seed (1.0 for ideal batching of the seeds, n for
none) and the share of a measured matmul rate. The last line is one JSON object:

    {"model": ..., "dtype": ..., "seed_execution": ..., "epoch_loop": ...,
     "seeds": {"1": {"seconds_per_epoch", "seconds_per_seed_epoch", "examples_per_second",
                     "time_ratio", "speedup", "first_epoch_seconds", "flop_share",
                     "peak_memory_bytes"}, ...},
     "examples_per_second": {"1": ..., ...}, "flop_share": {...},   # as earlier versions
     "train_flops_per_example": ..., "matmul_flops_per_second": ...,
     "device": ..., "devices": [...], "backend": ..., "jax_version": ..., ...}

``time_ratio`` is the epoch time over one seed's, ``speedup`` the throughput over one seed's
(both null when 1 is not among the seed counts). ``train_flops_per_example`` is 3 × the
forward FLOPs XLA counts for one example (forward, and backward for activations and weights);
``flop_share`` is the achieved training FLOP rate over a measured matmul rate in the compute
dtype. ``peak_memory_bytes`` is the device's peak so far (``memory_stats``; null on the CPU),
so it is the peak of the largest seed count measured up to then.

    python benchmarks/throughput.py [--model lenet_300_100|resnet18|vgg16] [--seeds 1,4,8]
        [--seed-execution auto|vmap|sequential] [--seeds-per-chunk K] [--dtype float32|bfloat16] [--examples N]
        [--epochs 2] [--width-multiplier 1.0] [--augment/--no-augment] [--momentum M]

A quick CPU check of the conv path: ``--model resnet18 --width-multiplier 0.125 --examples 2048``.
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
from sdd_jax.engine import Engine
from sdd_jax.estimate import device_facts
from sdd_jax.models import build_model, prunable_predicate
from sdd_jax.seed_axis import seed_mesh
from sdd_jax.train import DeviceData

# Per model: input shape, default examples, normalisation, and the paper's optimiser/augmentation.
MODELS = {
    "lenet_300_100": dict(
        shape=(28, 28, 1), examples=60000, mean=(0.1307,), std=(0.3081,), momentum=0.0, weight_decay=0.0, augment=False
    ),
    "resnet18": dict(
        shape=(32, 32, 3),
        examples=50000,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        momentum=0.9,
        weight_decay=1e-4,
        augment=True,
    ),
}
MODELS["vgg16"] = MODELS["resnet18"]


def matmul_flops_per_second(dtype: str = "float32", size: int | None = None, repeats: int = 20) -> float:
    """A matmul rate in ``dtype`` on this device: a practical ceiling for training."""
    if size is None:
        size = 1024 if jax.default_backend() == "cpu" else 8192
    a = jnp.ones((size, size), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    out.block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def forward_flops_per_example(model, shape, batch: int = 128) -> float | None:
    """The FLOPs XLA counts for one example's forward pass (eval mode), or None if unknown."""
    try:
        x = jnp.zeros((batch, *shape), jnp.float32)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1], train=False))
        compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost["flops"])
        return flops / batch if flops > 0 else None
    except Exception:  # a backend without cost analysis
        return None


def peak_memory_bytes() -> int | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def synthetic_data(shape, examples: int) -> DeviceData:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, size=(examples, *shape), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, size=examples), jnp.int32)
    return DeviceData(x, y)


def pruning_mask(params, model_cfg: ModelConfig):
    """80% of every prunable kernel kept (a fixed pattern), everything else kept."""
    is_prunable = prunable_predicate(model_cfg)

    def leaf_mask(path, p):
        if not is_prunable(path):
            return jnp.ones_like(p)
        return (jnp.arange(p.size).reshape(p.shape) % 5 != 0).astype(p.dtype)

    return jax.tree_util.tree_map_with_path(leaf_mask, params)


def make_engine(args, model, n_seeds: int) -> Engine:
    optim = OptimConfig(
        lr=0.1,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        epochs=args.epochs + 1,
    )
    mesh = None
    if args.seed_devices != 1 or args.data_devices != 1:
        mesh = seed_mesh(n_seeds, args.seed_devices, args.data_devices)
    spec = MODELS[args.model]
    return Engine(
        model,
        optim,
        args.examples,
        mean=spec["mean"],
        std=spec["std"],
        augment=args.augment,
        epoch_loop=args.epoch_loop,
        seed_execution=args.seed_execution,
        seeds_per_chunk=args.seeds_per_chunk,
        mesh=mesh,
    )


def measure(args, model, model_cfg: ModelConfig, data: DeviceData, n_seeds: int) -> tuple[dict, Engine]:
    """Time one warm-up epoch and ``args.epochs`` epochs of ``n_seeds`` seeds."""
    engine = make_engine(args, model, n_seeds)
    seeds = list(range(n_seeds))
    state = engine.init(
        rng_streams.seed_keys(seeds, "init"), seeds, jnp.zeros((1, *MODELS[args.model]["shape"]), jnp.float32)
    )
    mask = engine.place(pruning_mask(state.params, model_cfg))
    start = time.perf_counter()
    state, loss, _ = engine.train_epoch(state, mask, data, 0)  # compile + warm up
    loss.block_until_ready()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        state, loss, _ = engine.train_epoch(state, mask, data, epoch)
    loss.block_until_ready()
    per_epoch = (time.perf_counter() - start) / args.epochs
    return {
        "seconds_per_epoch": per_epoch,
        "seconds_per_seed_epoch": per_epoch / n_seeds,
        "examples_per_second": n_seeds * args.examples / per_epoch,
        "first_epoch_seconds": first,
        "peak_memory_bytes": peak_memory_bytes(),
        "mesh": None if engine.mesh is None else dict(engine.mesh.shape),
    }, engine


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet_300_100")
    parser.add_argument(
        "--examples",
        "--train-size",
        dest="examples",
        type=int,
        default=None,
        help="synthetic training examples (default: 60,000 for LeNet, 50,000 for the conv nets)",
    )
    parser.add_argument("--seeds", default="1,4,8", help="comma-separated seed counts")
    parser.add_argument("--seed-execution", choices=("auto", "vmap", "sequential"), default="auto")
    parser.add_argument("--epoch-loop", choices=("auto", "scan", "steps"), default="auto")
    parser.add_argument(
        "--seeds-per-chunk", type=int, default=0, help="run.seeds_per_chunk: seeds on the device at a time (0: all)"
    )
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype (model.dtype)"
    )
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pad-4 crop + flip (default: on for the conv nets)",
    )
    parser.add_argument("--momentum", type=float, default=None, help="default: 0.9 conv nets, 0 LeNet")
    parser.add_argument("--weight-decay", type=float, default=None, help="default: 1e-4 conv nets, 0 LeNet")
    parser.add_argument(
        "--seed-devices",
        type=int,
        default=1,
        help="devices the seeds are split over (1: one device; 0: as many as divide the seeds)",
    )
    parser.add_argument("--data-devices", type=int, default=1, help="devices each seed's batch is split over")
    args = parser.parse_args(argv)
    spec = MODELS[args.model]
    for name in ("examples", "augment", "momentum", "weight_decay"):
        if getattr(args, name) is None:
            setattr(args, name, spec[name])
    if args.epochs < 1 or args.examples < 1:
        parser.error("--epochs and --examples must be positive")
    args.seed_counts = [int(s) for s in args.seeds.split(",") if s.strip()]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    model_cfg = ModelConfig(name=args.model, width_multiplier=args.width_multiplier, dtype=args.dtype)
    model = build_model(model_cfg, 10)
    shape = MODELS[args.model]["shape"]
    data = synthetic_data(shape, args.examples)
    peak = matmul_flops_per_second(args.dtype)
    forward = forward_flops_per_example(model, shape)
    train_flops = None if forward is None else 3 * forward
    print(
        f"{args.model} ×{args.width_multiplier:g}, {args.dtype}, {args.examples:,} examples of "
        f"{'×'.join(map(str, shape))}, batch {args.batch_size}, augment={args.augment}, "
        f"momentum={args.momentum:g}, on {jax.devices()[0].device_kind} ({jax.default_backend()})",
        flush=True,
    )
    results, engine = {}, None
    for n in args.seed_counts:
        result, engine = measure(args, model, model_cfg, data, n)
        one = results.get("1")
        result["time_ratio"] = None if one is None else result["seconds_per_epoch"] / one["seconds_per_epoch"]
        result["speedup"] = None if one is None else result["examples_per_second"] / one["examples_per_second"]
        result["flop_share"] = None if train_flops is None else result["examples_per_second"] * train_flops / peak
        results[str(n)] = result
        ratio = (
            ""
            if one is None
            else (f", {result['time_ratio']:.2f}× one seed's time ({result['speedup']:.2f}× its throughput)")
        )
        share = "" if result["flop_share"] is None else f", {100 * result['flop_share']:.0f}% of the matmul rate"
        print(
            f"{n} seed(s), {engine.seed_execution}: {result['seconds_per_epoch']:.3f} s/epoch, "
            f"{result['seconds_per_seed_epoch']:.3f} s per seed-epoch, "
            f"{result['examples_per_second']:,.0f} examples/s{ratio}{share}; "
            f"first epoch with compilation {result['first_epoch_seconds']:.1f} s",
            flush=True,
        )
    rounded = {
        n: {k: (None if v is None else round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
        for n, r in results.items()
    }
    print(
        json.dumps(
            {
                "model": args.model,
                "dtype": args.dtype,
                "width_multiplier": args.width_multiplier,
                "seed_execution": engine.seed_execution if engine else args.seed_execution,
                "seed_execution_requested": args.seed_execution,
                "epoch_loop": engine.epoch_loop if engine else args.epoch_loop,
                "seeds_per_chunk": args.seeds_per_chunk,
                "mesh": None if engine is None or engine.mesh is None else dict(engine.mesh.shape),
                "train_size": args.examples,
                "input_shape": list(shape),
                "batch_size": args.batch_size,
                "augment": args.augment,
                "momentum": args.momentum,
                "weight_decay": args.weight_decay,
                "epochs": args.epochs,
                "seeds": rounded,
                "examples_per_second": {n: round(r["examples_per_second"]) for n, r in results.items()},
                "flop_share": {n: r["flop_share"] and round(r["flop_share"], 4) for n, r in results.items()},
                "train_flops_per_example": train_flops and round(train_flops),
                "matmul_flops_per_second": round(peak),
                **device_facts(),
            }
        )
    )


if __name__ == "__main__":
    main()
