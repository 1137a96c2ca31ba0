"""Sparse double descent in JAX/Flax; the presets are ``sdd_jax.presets`` (``experiments/`` in
the repository, see ``sdd_jax/source_checkout.py`` for a checkout run without installing)."""

from sdd_jax import source_checkout, version

source_checkout.install()


def __getattr__(name: str) -> str:
    """``__version__`` (:func:`sdd_jax.version.package_version`), looked up when asked: reading the
    distribution's metadata is not work for every start of the command line."""
    if name == "__version__":
        return version.package_version()
    raise AttributeError(f"module 'sdd_jax' has no attribute {name!r}")
