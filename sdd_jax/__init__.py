"""Sparse double descent in JAX/Flax; the presets are ``sdd_jax.presets`` (``experiments/`` in
the repository, see ``sdd_jax/source_checkout.py`` for a checkout run without installing)."""

from sdd_jax import source_checkout
from sdd_jax.version import package_version

source_checkout.install()

__version__ = package_version()
