"""A run's identity: the settings that name its directory and must match what it holds, and the
fingerprint of the data it was computed on.

Every setting but :data:`NON_RESULT_FIELDS` is a result field; the result fields (and
:data:`RESULT_FORMAT_VERSION`) are hashed into the directory name
``<workdir>/<config.name>-<result_hash>`` and stored in ``result_fields.json``, and the data's
SHA-256 in ``dataset.json`` (checked by :func:`sdd_jax.rundir.open_run_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sdd_jax.checkpoints import valid_name
from sdd_jax.config import Config, to_dict

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
    """The JSON value in ``path``; :class:`ValueError` naming the file when it is not valid
    UTF-8 JSON (``remedy`` appended)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}){': ' + remedy if remedy else ''}") from None


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


def run_path(workdir: str | os.PathLike, config: Config) -> Path:
    """``<workdir>/<config.name>-<result_hash(config)>`` (absolute)."""
    if not valid_name(config.name):
        raise ValueError(
            f"config.name {config.name!r} cannot name a run directory: use letters, digits and "
            "_ . , + = - (not starting with '.')"
        )
    return Path(workdir).expanduser().absolute() / f"{config.name}-{result_hash(config)}"


def data_fingerprint(dataset) -> str:
    """SHA-256 of the arrays a run trains and tests on (images, noisy and clean labels)."""
    digest = hashlib.sha256()
    for array in (dataset.x_train, dataset.y_train, dataset.y_train_clean, dataset.x_test, dataset.y_test):
        a = np.ascontiguousarray(array)
        digest.update(str((a.shape, a.dtype.str)).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()
