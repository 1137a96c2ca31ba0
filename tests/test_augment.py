"""On-device normalisation and pad-4 random crop + horizontal flip."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax.data.device import normalize, random_crop_flip


def random_images(n, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(1, 256, size=(n, h, w, c), dtype=np.uint8)


def test_normalize_uint8_and_float():
    images = random_images(4)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = jax.jit(normalize, static_argnums=(1, 2))(images, mean, std)
    chex.assert_type(out, jnp.float32)
    chex.assert_shape(out, images.shape)
    expected = (images.astype(np.float64) / 255 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)

    signals = np.random.default_rng(1).normal(size=(5, 40)).astype(np.float32)
    out = normalize(signals, (0.5,), (2.0,))
    np.testing.assert_allclose(np.asarray(out), (signals - 0.5) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(normalize(signals, (0.0,), (1.0,))), signals)


def test_normalize_mnist_constants():
    images = np.full((1, 2, 2, 1), 255, np.uint8)
    out = normalize(images, (0.1307,), (0.3081,))
    np.testing.assert_allclose(np.asarray(out), (1 - 0.1307) / 0.3081, rtol=1e-6)


def test_crop_flip_shapes_and_dtype():
    images = random_images(6, 32, 32, 3)
    out = jax.jit(random_crop_flip)(jax.random.key(0), images)
    chex.assert_shape(out, images.shape)
    chex.assert_type(out, jnp.uint8)


def _matches(out, image, pad):
    """The (dy, dx, flipped) placements of ``image`` that produce ``out``."""
    h, w, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    found = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + h, dx : dx + w]
            if np.array_equal(out, crop):
                found.append((dy, dx, False))
            if np.array_equal(out, crop[:, ::-1]):
                found.append((dy, dx, True))
    return found


def test_each_output_is_a_padded_crop_possibly_flipped():
    images = random_images(64, 10, 12, 2, seed=3)
    out = np.asarray(random_crop_flip(jax.random.key(1), images, pad=4))
    placements = [_matches(o, im, 4) for o, im in zip(out, images)]
    assert all(len(p) == 1 for p in placements)  # random content: one placement explains each
    offsets = {p[0][:2] for p in placements}
    flips = [p[0][2] for p in placements]
    assert len(offsets) > 20  # offsets vary per example
    assert 0.2 < np.mean(flips) < 0.8
    # the zero padding shows up as zero pixels in shifted crops
    shifted = [i for i, p in enumerate(placements) if p[0][:2] != (4, 4)]
    assert all((out[i] == 0).any() for i in shifted)


def test_flip_only_with_zero_pad():
    images = random_images(200, 4, 6, 1, seed=4)
    out = np.asarray(random_crop_flip(jax.random.key(2), images, pad=0))
    same = np.all(out == images, axis=(1, 2, 3))
    mirrored = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ mirrored)
    assert 0.35 < mirrored.mean() < 0.65


def test_per_example_independence_and_determinism():
    image = random_images(1, 16, 16, 3, seed=5)
    batch = np.repeat(image, 32, axis=0)
    key = jax.random.key(3)
    a = np.asarray(random_crop_flip(key, batch))
    b = np.asarray(random_crop_flip(key, batch))
    c = np.asarray(random_crop_flip(jax.random.key(4), batch))
    np.testing.assert_array_equal(a, b)
    assert len({x.tobytes() for x in a}) > 10  # identical inputs, different augmentations
    assert not np.array_equal(a, c)


def test_vmap_over_seed_keys():
    images = random_images(8, 8, 8, 3)
    keys = jax.random.split(jax.random.key(5), 3)
    out = jax.vmap(random_crop_flip, in_axes=(0, None))(keys, images)
    chex.assert_shape(out, (3, *images.shape))
    np.testing.assert_array_equal(np.asarray(out[1]), np.asarray(random_crop_flip(keys[1], images)))
    assert not np.array_equal(np.asarray(out[0]), np.asarray(out[1]))


def test_bad_input():
    with pytest.raises(ValueError, match="NHWC"):
        random_crop_flip(jax.random.key(0), np.zeros((4, 4, 3), np.uint8))
