"""``sdd_jax.jsonable``: one converter from arrays and pytrees to plain JSON values."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax.jsonable import NotJSONError, to_native


def test_arrays_and_scalars_become_plain_values_that_round_trip_through_json():
    value = {
        "a": np.float32(0.25),
        "b": jnp.arange(3),
        "c": (np.array([[1.5, np.nan]]), None, True),
        "d": {"e": np.int64(7), "f": "text"},
    }
    native = to_native(value)
    assert native["a"] == 0.25 and type(native["a"]) is float
    assert native["b"] == [0, 1, 2] and all(type(v) is int for v in native["b"])
    assert native["c"][0][0][0] == 1.5 and np.isnan(native["c"][0][0][1]) and native["c"][1:] == [None, True]
    assert native["d"] == {"e": 7, "f": "text"} and type(native["d"]["e"]) is int
    assert json.dumps(native)  # every value is a JSON value


def test_what_has_no_json_form_is_named_with_its_place():
    with pytest.raises(NotJSONError, match=r"cache\.rows\[1\]: cannot store object"):
        to_native({"rows": [1, object()]}, "cache")
    with pytest.raises(KeyError, match="keys must be str, got 3"):
        to_native({"curves": {3: [1.0]}}, error=KeyError)
