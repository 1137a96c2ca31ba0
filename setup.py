"""The package list of the distribution (the rest of the metadata is in ``pyproject.toml``).

* every package under ``sdd_jax/``, found by ``find_packages`` so that a new subpackage cannot be
  left out of a wheel;
* the presets: they live in the repository's top-level ``experiments/`` folder (one file per
  paper setting) and install as ``sdd_jax.presets``, so that nothing named ``experiments`` lands
  in site-packages (where it would shadow, or be shadowed by, a user's own ``experiments``).

A source checkout run without installing (``PYTHONPATH=.``) finds the presets through
``sdd_jax/source_checkout.py`` instead.
"""

from setuptools import find_packages, setup

PRESETS = ["sdd_jax.presets", *(f"sdd_jax.presets.{name}" for name in find_packages("experiments"))]

setup(
    packages=[*find_packages(include=["sdd_jax", "sdd_jax.*"]), *PRESETS],
    package_dir={"sdd_jax.presets": "experiments"},
)
