from sdd_jax.cli import entry

entry()
