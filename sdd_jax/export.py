"""A pruned level as a sparse model: ``sdd-jax export RUN_DIR --level K``.

During a sweep the masks are dense: a pruned weight is a stored zero multiplied in, so a pruned
network takes the memory and the time of the dense one. This module writes one seed's network of
a finished level with its prunable kernels stored sparse, reads it back, and runs it with sparse
products (``jax.experimental.sparse``):

* ``npz``  one ``.npz`` (no pickle): per prunable leaf ``<path>/values`` (float32, the kept
  weights) and ``<path>/flat_indices`` (positions in the kernel's C order: int32, int64 for a
  kernel of 2³¹ weights or more; 8 bytes per kept weight, so the file is smaller than the dense
  one below 50% density), with
  ``<path>/shape``: readable from numpy or any framework; the non-prunable leaves dense under
  ``params/<path>``, the BatchNorm statistics under ``batch_stats/<path>``, and ``__meta__``
  (JSON: run, level, seed, model config, format);
* ``bcoo`` the same file with each prunable leaf in :class:`jax.experimental.sparse.BCOO`'s own
  layout, ``<path>/data`` and ``<path>/indices`` (``(nse, ndim)`` int32: 4 + 4·ndim bytes per
  kept weight).

:func:`load` reads either into a :class:`SparseModel` whose prunable kernels are ``BCOO`` leaves.
:func:`sparse_apply` computes its logits: every dense layer holding a ``BCOO`` kernel multiplies
by it sparse, every convolution as a sparse product of its input patches
(``lax.conv_general_dilated_patches``) with the kernel reshaped to ``(kh·kw·cin, cout)``; the
rest of the model (biases, BatchNorm, activations, pooling) runs as in training (``flax``'s
``intercept_methods`` routes the layers). :func:`export_level` checks the written file against
the dense masked network on the first test examples and reports the largest logit difference.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import sparse

from sdd_jax import masks, storage
from sdd_jax.atomic import atomic_write_bytes
from sdd_jax.checkpoint_errors import level_remedy
from sdd_jax.config import Config, ModelConfig, from_dict, to_dict
from sdd_jax.data import load_dataset
from sdd_jax.data.device import normalize
from sdd_jax.models import build_model, prunable_predicate
from sdd_jax.saved import load_run

FORMATS = ("npz", "bcoo")
META = "__meta__"
EXPORT_DIR = "exports"


class ExportError(ValueError):
    """A level, seed, format or file that cannot be exported or read back (one line)."""


@dataclasses.dataclass
class SparseModel:
    """One network: ``params`` (the prunable kernels as ``BCOO``, every other leaf a dense numpy
    array), ``batch_stats`` (dense; ``{}`` without BatchNorm) and ``meta`` (``run``, ``level``,
    ``seed``, ``format``, ``model``: the :class:`ModelConfig` as a dict, ``num_classes``)."""

    params: dict
    batch_stats: dict
    meta: dict

    @property
    def model_config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.meta["model"])

    def nonzeros(self) -> int:
        """Stored weights of the sparse leaves (the kept prunable weights)."""
        return sum(int(leaf.nse) for leaf in _sparse_leaves(self.params))


def _sparse_leaves(tree) -> list[sparse.BCOO]:
    return [
        x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, sparse.BCOO)) if isinstance(x, sparse.BCOO)
    ]


def _flat(tree: dict, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": x}} -> {"<prefix>/a/b": x}`` (BCOO leaves kept whole)."""
    out = {}
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, sparse.BCOO))[0]:
        out["/".join((prefix, *masks.leaf_path(keypath)))] = leaf
    return out


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        *parents, last = key.split("/")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = value
    return out


def sparsify(params: dict, mask: dict, is_prunable) -> dict:
    """``params`` (one seed, unstacked) with every prunable leaf a ``BCOO`` of exactly its kept
    positions (``mask == 1``: a kept weight that happens to be 0 is stored too, so the stored
    count equals the mask's); the other leaves as dense numpy arrays."""

    def one(keypath, value, keep):
        value, keep = np.asarray(value, np.float32), np.asarray(keep)
        if not is_prunable(masks.leaf_path(keypath)):
            return value
        indices = np.argwhere(keep != 0).astype(np.int32)
        return sparse.BCOO((jnp.asarray(value[keep != 0]), jnp.asarray(indices)), shape=value.shape)

    return jax.tree_util.tree_map_with_path(one, params, mask)


def to_arrays(model: SparseModel, fmt: str) -> dict[str, np.ndarray]:
    """The ``.npz`` members of ``model`` in format ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    arrays: dict[str, np.ndarray] = {}
    sparse_keys = []
    for key, leaf in _flat(model.params, "params").items():
        if not isinstance(leaf, sparse.BCOO):
            arrays[key] = np.asarray(leaf)
            continue
        sparse_keys.append(key)
        indices = np.asarray(leaf.indices)
        arrays[f"{key}/shape"] = np.asarray(leaf.shape, np.int64)
        if fmt == "npz":
            arrays[f"{key}/values"] = np.asarray(leaf.data, np.float32)
            flat = np.ravel_multi_index(tuple(indices.T), leaf.shape)
            arrays[f"{key}/flat_indices"] = flat.astype(np.int32 if np.prod(leaf.shape) < 2**31 else np.int64)
        else:
            arrays[f"{key}/data"] = np.asarray(leaf.data, np.float32)
            arrays[f"{key}/indices"] = indices.astype(np.int32)
    for key, leaf in _flat(model.batch_stats, "batch_stats").items():
        arrays[key] = np.asarray(leaf)
    meta = {**model.meta, "format": fmt, "sparse_leaves": sparse_keys}
    arrays[META] = np.array(json.dumps(meta, sort_keys=True))
    return arrays


def from_arrays(arrays: dict[str, np.ndarray]) -> SparseModel:
    """The :class:`SparseModel` held by the members of an exported ``.npz`` (either format)."""
    meta = json.loads(str(arrays[META]))
    sparse_keys = meta.get("sparse_leaves", [])
    parts = {f"{key}/{part}" for key in sparse_keys for part in ("shape", "values", "flat_indices", "data", "indices")}
    params = {
        key[len("params/") :]: np.asarray(v)
        for key, v in arrays.items()
        if key.startswith("params/") and key not in parts
    }
    batch_stats = {
        key[len("batch_stats/") :]: np.asarray(v) for key, v in arrays.items() if key.startswith("batch_stats/")
    }
    for key in sparse_keys:
        shape = tuple(int(s) for s in arrays[f"{key}/shape"])
        if f"{key}/flat_indices" in arrays:
            indices = np.stack(np.unravel_index(arrays[f"{key}/flat_indices"], shape), axis=-1).astype(np.int32)
            data = arrays[f"{key}/values"]
        else:
            indices, data = arrays[f"{key}/indices"], arrays[f"{key}/data"]
        params[key[len("params/") :]] = sparse.BCOO((jnp.asarray(data), jnp.asarray(indices)), shape=shape)
    return SparseModel(_nest(params), _nest(batch_stats), meta)


def to_bytes(model: SparseModel, fmt: str = "npz") -> bytes:
    """``model`` as the bytes of an uncompressed ``.npz`` in format ``fmt``."""
    buffer = io.BytesIO()
    np.savez(buffer, **to_arrays(model, fmt))
    return buffer.getvalue()


def save(model: SparseModel, path: str | os.PathLike, fmt: str = "npz") -> int:
    """Write ``model`` to ``path`` (an uncompressed ``.npz``, atomically); returns its size in bytes."""
    data = to_bytes(model, fmt)
    atomic_write_bytes(path, data)
    return len(data)


def load(path: str | os.PathLike | io.BytesIO) -> SparseModel:
    """The model exported to ``path`` (a file, local or ``gs://``, or its bytes in a ``BytesIO``);
    :class:`ExportError` naming the file when it is not one."""
    remote = isinstance(path, (str, os.PathLike)) and storage.is_remote(path)
    source = io.BytesIO(storage.read_bytes(path)) if remote else path  # one download
    try:
        with np.load(source, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        if META not in arrays:
            raise KeyError(META)
        return from_arrays(arrays)
    except (OSError, ValueError, KeyError) as err:
        raise ExportError(f"{path} is not a model written by `sdd-jax export` ({type(err).__name__}: {err})") from None


# ----- computing with the sparse kernels ---------------------------------------------------------


def _pairs(value, n: int) -> tuple:
    if value is None:
        return (1,) * n
    if isinstance(value, int):
        return (value,) * n
    return tuple(value)


def _sparse_conv(module: nn.Conv, x: jax.Array, kernel: sparse.BCOO) -> jax.Array:
    """``module``'s convolution of NHWC ``x`` by the sparse HWIO ``kernel``: input patches
    (feature order: input channel, then the window) times the kernel as ``(cin·kh·kw, cout)``."""
    if module.feature_group_count != 1 or any(d != 1 for d in _pairs(module.kernel_dilation, 2)):
        raise ExportError(f"{module.name}: a sparse convolution needs feature_group_count 1 and no dilation")
    if any(d != 1 for d in _pairs(module.input_dilation, 2)):
        raise ExportError(f"{module.name}: a sparse convolution needs no input dilation")
    padding = module.padding
    if isinstance(padding, int):
        padding = ((padding, padding),) * 2
    elif isinstance(padding, str) and padding not in ("SAME", "VALID"):
        raise ExportError(f"{module.name}: padding {padding!r} has no sparse convolution")
    kh, kw, cin, cout = kernel.shape
    patches = lax.conv_general_dilated_patches(
        x, (kh, kw), _pairs(module.strides, 2), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    matrix = sparse.bcoo_reshape(
        sparse.bcoo_transpose(kernel, permutation=(2, 0, 1, 3)), new_sizes=(cin * kh * kw, cout)
    )
    return (patches.reshape(-1, patches.shape[-1]) @ matrix).reshape(*patches.shape[:-1], cout)


def sparse_apply(module: nn.Module, model: SparseModel, x: jax.Array, used: list | None = None) -> jax.Array:
    """Logits of ``module`` (the flax model the run trained, evaluation mode) with ``model``'s
    weights on normalised inputs ``x``: each ``nn.Dense`` and ``nn.Conv`` holding a ``BCOO`` kernel
    computes with it sparse, in the layer's compute dtype; the names of those layers are appended
    to ``used`` when given. Raises :class:`ExportError` for a sparse kernel in a layer of
    another kind, or a convolution this cannot compute sparse."""

    def interceptor(next_fun, args, kwargs, context):
        layer = context.module
        if context.method_name != "__call__" or not isinstance(layer, (nn.Dense, nn.Conv)):
            return next_fun(*args, **kwargs)
        kernel = layer.variables.get("params", {}).get("kernel")
        if not isinstance(kernel, sparse.BCOO):
            return next_fun(*args, **kwargs)
        dtype = layer.dtype or jnp.float32
        inputs = jnp.asarray(args[0]).astype(dtype)
        kernel = kernel.astype(dtype)
        y = inputs @ kernel if isinstance(layer, nn.Dense) else _sparse_conv(layer, inputs, kernel)
        if layer.use_bias:
            y = y + jnp.asarray(layer.variables["params"]["bias"]).astype(dtype)
        if used is not None:
            used.append(layer.name)
        return y

    variables = {"params": model.params}
    if model.batch_stats:
        variables["batch_stats"] = model.batch_stats
    with nn.intercept_methods(interceptor):
        return module.apply(variables, x, train=False)


# ----- a run's level -----------------------------------------------------------------------------


def default_path(run_dir: Path, level: int, seed: int, fmt: str) -> Path:
    """``RUN_DIR/exports/level<k>-seed<s>.npz`` (``.bcoo.npz`` for the BCOO layout)."""
    return run_dir / EXPORT_DIR / f"level{level}-seed{seed}{'.bcoo' if fmt == 'bcoo' else ''}.npz"


def level_model(run_dir: str | os.PathLike, level: int, seed: int | None = None) -> tuple[SparseModel, Config, dict]:
    """Seed ``seed``'s network of finished ``level`` of the run in ``run_dir`` (read with
    :func:`sdd_jax.saved.load_run`) as a :class:`SparseModel`, with the run's config and the
    dense masked weights (``params`` masked, ``batch_stats``, ``mask``: numpy, one seed)."""
    run = load_run(run_dir)
    config = run.config
    seed = config.run.first_seed if seed is None else seed
    if seed not in run.seeds:
        raise ExportError(f"seed {seed} is not a seed of {run.path.name} (seeds: {', '.join(map(str, run.seeds))})")
    finished = run.levels()
    if level not in finished:
        raise ExportError(
            f"level {level} is not a finished level of {run.path.name} (finished: {finished[0]}-{finished[-1]})"
            if finished
            else f"{run.path.name} has no finished level yet: run it first"
        )
    with level_remedy("rerun the run's command (sdd-jax run with its preset and settings)"):
        weights = run.level(level)
    i = run.seeds.index(seed)
    pick = lambda tree: jax.tree.map(lambda a: np.asarray(a[i]), tree)  # noqa: E731
    params, mask, batch_stats = pick(weights.params), pick(weights.mask), pick(weights.batch_stats)
    is_prunable = masks.exclude(prunable_predicate(config.model), config.pruning.ignore)
    dense = {"params": jax.tree.map(lambda p, m: p * m, params, mask), "batch_stats": batch_stats, "mask": mask}
    meta = {"run": run.path.name, "level": level, "seed": seed, "model": to_dict(config.model)}
    model = SparseModel(sparsify(dense["params"], mask, is_prunable), batch_stats, meta)
    kept = sum(int(np.sum(m != 0)) for p, m in _flat_pairs(mask) if is_prunable(p))
    meta["prunable_weights"] = sum(int(m.size) for p, m in _flat_pairs(mask) if is_prunable(p))
    meta["kept_weights"] = kept
    return model, config, dense


def _flat_pairs(tree) -> list[tuple[tuple[str, ...], np.ndarray]]:
    return [(masks.leaf_path(k), np.asarray(v)) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def export_level(
    run_dir: str | os.PathLike,
    level: int,
    seed: int | None = None,
    fmt: str = "npz",
    out: str | os.PathLike | None = None,
    check_examples: int = 256,
) -> dict[str, Any]:
    """Write seed ``seed`` (default: the run's first) of finished ``level`` as a sparse model in
    format ``fmt`` to ``out`` (default :func:`default_path`; an existing folder: the file of that
    name in it), after reading its bytes back and
    comparing their sparse logits with the dense masked network's on the first ``check_examples``
    test examples.

    Returns ``path``, ``format``, ``bytes`` (the file), ``dense_bytes`` (the dense float32
    parameters and statistics), ``nonzeros`` (stored prunable weights, equal to the mask's kept
    count), ``prunable`` (the prunable weights of the dense network), ``sparse_layers`` (layers
    computed sparse), ``examples``, ``max_abs_logit_diff`` and ``same_predictions`` (the share of
    equal argmax). Raises :class:`ExportError` (or a ``ValueError`` / ``FileNotFoundError`` from
    reading the run or its data) in one line, before anything is written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if check_examples < 1:
        raise ExportError(f"check_examples must be at least 1, got {check_examples}")
    model, config, dense = level_model(run_dir, level, seed)
    data = load_dataset(config.data, config.noise)
    module = build_model(config.model, data.num_classes)
    model.meta["num_classes"] = data.num_classes
    x = normalize(data.x_test[:check_examples], data.mean, data.std)
    path = default_path(storage.absolute(run_dir), level, model.meta["seed"], fmt)
    if out is not None:  # an existing folder receives the file under its default name
        path = storage.as_path(out) / path.name if storage.is_dir(out) else storage.as_path(out)
    variables = {"params": dense["params"], **({"batch_stats": dense["batch_stats"]} if dense["batch_stats"] else {})}
    reference = np.asarray(module.apply(variables, x, train=False), np.float32)
    data = to_bytes(model, fmt)
    reloaded = load(io.BytesIO(data))  # what the file will hold, checked before it is written
    used: list[str] = []
    run_sparse = jax.jit(
        lambda params, stats, inputs: sparse_apply(module, SparseModel(params, stats, {}), inputs, used)
    )
    logits = np.asarray(run_sparse(reloaded.params, reloaded.batch_stats, x), np.float32)
    if len(used) != len(_sparse_leaves(reloaded.params)):
        raise ExportError(f"{path}: only {len(used)} of the sparse kernels were used by the model: not exported")
    storage.mkdir(path.parent)
    atomic_write_bytes(path, data)
    dense_bytes = sum(np.asarray(v).nbytes for v in jax.tree.leaves((dense["params"], dense["batch_stats"])))
    return {
        "path": str(path),
        "format": fmt,
        "level": level,
        "seed": model.meta["seed"],
        "bytes": len(data),
        "dense_bytes": int(dense_bytes),
        "nonzeros": reloaded.nonzeros(),
        "kept_weights": model.meta["kept_weights"],
        "prunable": model.meta["prunable_weights"],
        "sparse_layers": used,
        "examples": int(x.shape[0]),
        "max_abs_logit_diff": float(np.max(np.abs(logits - reference))),
        "same_predictions": float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1))),
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The lines ``sdd-jax export`` prints for :func:`export_level`'s report."""
    stored, total = report["nonzeros"], max(report["prunable"], 1)
    return [
        f"level {report['level']}, seed {report['seed']}: {report['path']} ({report['format']})",
        f"size: {report['bytes']:,} bytes ({report['bytes'] / report['dense_bytes']:.2f}x the dense "
        f"{report['dense_bytes']:,}); prunable weights stored: {stored:,} of {total:,} ({100 * stored / total:.3g}%)",
        f"check on {report['examples']} test examples: the sparse logits differ from the dense masked network's by "
        f"at most {report['max_abs_logit_diff']:.3g}; same predictions: {100 * report['same_predictions']:.1f}%",
        f"computed sparse: {', '.join(report['sparse_layers'])}",
    ]
