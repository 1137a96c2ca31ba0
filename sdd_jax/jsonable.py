"""Plain JSON values from the pytrees and numbers a run or an analysis stores: one converter for
the level metrics of :mod:`sdd_jax.checkpoints` and the step cache of :mod:`sdd_jax.analysis`."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


class NotJSONError(ValueError):
    """A value that has no JSON form (a non-string key, an object that is not a number, string,
    list, dict or array)."""


def to_native(obj: Any, where: str = "value", error: type[Exception] = NotJSONError) -> Any:
    """``obj`` as plain JSON values: dicts (string keys) and lists of ``None``, ``bool``, ``int``,
    ``float`` and ``str``; numpy and JAX scalars and arrays become numbers and (nested) lists,
    tuples become lists. Raises ``error`` naming the place (``where``, then ``.key`` and ``[i]``)
    of the first value that has no JSON form."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise error(f"{where}: keys must be str, got {k!r}")
            out[k] = to_native(v, f"{where}.{k}", error)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_native(v, f"{where}[{i}]", error) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        return to_native(np.asarray(obj).tolist(), where, error)
    raise error(f"{where}: cannot store {type(obj).__name__} as JSON")
