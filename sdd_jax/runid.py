"""A run's identity: the settings that name its directory and must match what it holds, and the
fingerprint of the data it was computed on.

Every setting but :data:`NON_RESULT_FIELDS` is a result field; the result fields (and
:data:`RESULT_FORMAT_VERSION`) are hashed into the directory name (:func:`run_dir_name`:
``<preset>[-<slug>]-<result_hash>``, the slug saying how the config departs from its named preset)
and stored in ``result_fields.json``, and the data's SHA-256 in ``dataset.json`` (checked by
:func:`sdd_jax.rundir.open_run_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sdd_jax import presets, storage
from sdd_jax.checkpoints import valid_name
from sdd_jax.config import Config, config_from_json, to_dict
from sdd_jax.describe import slug_tokens

# Bumped whenever the on-disk result format or the meaning of a stored number changes.
RESULT_FORMAT_VERSION = 1

NON_RESULT_FIELDS = frozenset(
    {
        "name",
        "description",
        "run.workdir",
        "run.seeds_per_chunk",
        "run.eval_batch_size",
        "run.checkpoint_every_epochs",
        "run.verbosity",
        "run.epoch_loop",
        "run.seed_execution",
        "run.seed_devices",
        "run.data_devices",
        "run.compilation_cache",
        "run.distributed",
        "run.log_to",
        "data.data_dir",
        "data.download",
        "data.source",
        # More levels extend a run: the levels already computed do not change.
        "pruning.levels",
    }
)


def read_json(path: Path, remedy: str = "") -> Any:
    """The JSON value in the file ``path`` (local or ``gs://``, :mod:`sdd_jax.storage`);
    :class:`ValueError` naming the file when it is not valid UTF-8 JSON (``remedy`` appended)."""
    try:
        return json.loads(storage.read_text(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}){': ' + remedy if remedy else ''}") from None


def load_config(path: Path) -> Config:
    """The config stored in ``path`` (a run's ``config.json``, local or ``gs://``): as
    :func:`sdd_jax.config.load_json`, :class:`~sdd_jax.config.ConfigError` naming the file when it
    is not valid JSON or not a config this version reads."""
    return config_from_json(storage.read_bytes(path), path)


def result_fields(config: Config) -> dict[str, Any]:
    """The settings that change results, flattened to dotted keys, plus the result-format
    version."""
    flat = {}

    def walk(prefix, d):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(key + ".", v)
            elif key not in NON_RESULT_FIELDS:
                flat[key] = v

    walk("", to_dict(config))
    flat["result_format_version"] = RESULT_FORMAT_VERSION
    return flat


def result_hash(config: Config) -> str:
    """A 12-hex-digit hash of :func:`result_fields` (stable across processes and machines)."""
    payload = json.dumps(result_fields(config), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def run_stem(config: Config) -> str:
    """The folder name of ``config``'s runs without the hash: what ``config.name`` names, plus
    how the config departs from it.

    When the first ``-``-separated part of ``config.name`` is a preset of :mod:`sdd_jax.presets`
    (the base), the stem is that base, the name's other parts that are not preset variants, then
    :func:`sdd_jax.describe.slug_tokens` of the config against the base preset: every variant
    and every ``--set`` of a slugged axis is said once, in one order, whichever way it was asked
    (``lenet_mnist-noise40`` and ``lenet_mnist --set noise.rate=0.4`` both give
    ``lenet_mnist-noise40``; ``resnet18_cifar10-finetune-noise40`` gives
    ``resnet18_cifar10-noise40-finetune``). Any other name (a preset file of one's own, a config
    built in Python) is the stem as it is.
    """
    base, *rest = config.name.split("-")
    if base not in presets.BASE:
        return config.name
    kept = [part for part in rest if part not in presets.VARIANTS]
    tokens = [t for t in slug_tokens(config, presets.BASE[base]()) if t not in kept]
    return "-".join([base, *kept, *tokens])


def run_dir_name(config: Config) -> str:
    """``<run_stem(config)>-<result_hash(config)>``: the name of a new run directory."""
    return f"{run_stem(config)}-{result_hash(config)}"


def run_path(workdir: str | os.PathLike, config: Config) -> Path:
    """The run directory of ``config`` under ``workdir`` (absolute; a ``gs://`` URL gives an
    ``etils.epath.Path``, :func:`sdd_jax.storage.absolute`): ``<workdir>/<run_dir_name>``,
    or, when that does not exist but a directory named the earlier way does, that one: runs made
    before the slug keep being found and resumed (the hash, the run's identity, is the same).
    The earlier names are ``<config.name>-<hash>`` (``lenet_mnist-finetune-noise40-<hash>``) and
    ``<base preset>-<hash>`` (``lenet_mnist-<hash>``, from ``lenet_mnist --set noise.rate=0.4``).
    """
    if not valid_name(config.name):
        raise ValueError(
            f"config.name {config.name!r} cannot name a run directory: use letters, digits and "
            "_ . , + = - (not starting with '.')"
        )
    root = storage.absolute(workdir)  # a gs:// URL as it is
    path = root / run_dir_name(config)
    if not storage.exists(path):
        digest = result_hash(config)
        for stem in dict.fromkeys((config.name, config.name.split("-")[0])):
            legacy = root / f"{stem}-{digest}"
            if legacy != path and storage.is_dir(legacy):
                return legacy
    return path


def data_fingerprint(dataset) -> str:
    """SHA-256 of the arrays a run trains and tests on (images, noisy and clean labels)."""
    digest = hashlib.sha256()
    for array in (dataset.x_train, dataset.y_train, dataset.y_train_clean, dataset.x_test, dataset.y_test):
        a = np.ascontiguousarray(array)
        digest.update(str((a.shape, a.dtype.str)).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()
