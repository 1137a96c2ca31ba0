"""``sdd_jax.rng``: every stream, the analysis's included, is CRC32 of its name folded into the seed."""

import zlib

import jax
import numpy as np
import pytest

from sdd_jax import rng


@pytest.mark.parametrize("draw", rng.ANALYSIS_DRAWS)
def test_analysis_streams_are_crc32_of_their_name_folded_into_the_seed(draw):
    """The analysis caches were drawn with these keys: they must not move."""
    expected = jax.random.fold_in(jax.random.key(5), zlib.crc32(f"analysis/{draw}".encode()) & 0x7FFFFFFF)
    expected = jax.random.fold_in(jax.random.fold_in(expected, 1), 3)
    got = rng.stream_key(5, f"analysis/{draw}", 1, 3)
    np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(expected))


def test_streams_are_distinct_and_unknown_ones_refused():
    ids = [rng.stream_id(s) for s in rng.STREAMS]
    assert len(set(ids)) == len(ids)
    with pytest.raises(ValueError, match="unknown random stream"):
        rng.stream_key(0, "analysis/other")
