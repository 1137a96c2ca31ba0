"""The seed axis of the engine (:mod:`sdd_jax.engine`), a replica axis: how a per-seed function is
mapped over it (:func:`over_seeds`: ``vmap`` or one seed after another with ``lax.map``) and how it
is split over devices (:func:`seed_mesh`, ``shard_map`` over the mesh's ``seeds`` axis).
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from sdd_jax.choices import SEED_EXECUTIONS

__all__ = ["map_seeds_sequentially", "over_seeds", "seed_mesh"]


def map_seeds_sequentially(fn, in_axes):
    """``fn`` applied to one seed after another (``lax.map``) over the leading axis of the
    arguments whose ``in_axes`` entry is 0; the others are shared."""

    def mapped(*args):
        seeded = tuple(a for a, axis in zip(args, in_axes) if axis == 0)

        def one(per_seed):
            it = iter(per_seed)
            return fn(*[next(it) if axis == 0 else a for a, axis in zip(args, in_axes)])

        return jax.lax.map(one, seeded)

    return mapped


def over_seeds(fn, in_axes, execution: str = "vmap", mesh: Mesh | None = None):
    """``fn`` mapped over the leading seed axis of the arguments whose ``in_axes`` entry is 0
    (``execution``: ``vmap`` or ``sequential``), split over ``mesh``'s ``seeds`` axis if given."""
    if execution not in SEED_EXECUTIONS:
        raise ValueError(f"run.seed_execution must be 'vmap', 'sequential' or 'auto', got {execution!r}")
    local = jax.vmap(fn, in_axes=in_axes) if execution == "vmap" else map_seeds_sequentially(fn, in_axes)
    if mesh is None:
        return local
    in_specs = tuple(P("seeds") if axis == 0 else P() for axis in in_axes)
    return jax.shard_map(
        local, mesh=mesh, in_specs=in_specs, out_specs=P("seeds"), axis_names={"seeds"}, check_vma=False
    )


def seed_mesh(n_seeds: int, seed_devices: int = 0, data_devices: int = 1, devices=None) -> Mesh | None:
    """A ``(seeds, data)`` mesh over ``devices`` (default: all), or ``None`` for one device.

    ``seed_devices`` = 0 takes as many devices as divide ``n_seeds`` (a warning names the idle
    ones and the seed counts that would use them all); a given count must divide ``n_seeds``.
    ``data_devices`` splits each seed's batch (the batch size must be divisible by it).
    Raises :class:`ValueError` naming the setting when the devices do not suffice.
    """
    devices = list(jax.devices() if devices is None else devices)
    if data_devices < 1 or seed_devices < 0:
        raise ValueError(
            f"run.data_devices must be >= 1 and run.seed_devices >= 0, got {data_devices} and {seed_devices}"
        )
    available = len(devices) // data_devices
    if available < 1:
        raise ValueError(f"run.data_devices={data_devices} exceeds the {len(devices)} devices")
    if seed_devices == 0:
        seed_devices = max(d for d in range(1, min(available, n_seeds) + 1) if n_seeds % d == 0)
        if seed_devices < min(available, n_seeds):
            warnings.warn(
                f"{n_seeds} seeds use {seed_devices} of {available} seed devices (the seed "
                f"count must be a multiple of the devices used); run {available} or a "
                f"multiple of it to use them all",
                stacklevel=2,
            )
    elif seed_devices > available or n_seeds % seed_devices:
        raise ValueError(
            f"run.seed_devices={seed_devices} must divide run.seeds={n_seeds} and "
            f"fit the {available} devices left by run.data_devices={data_devices}"
        )
    if seed_devices * data_devices == 1:
        return None
    grid = np.array(devices[: seed_devices * data_devices]).reshape(seed_devices, data_devices)
    return Mesh(grid, ("seeds", "data"))
