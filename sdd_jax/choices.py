"""Every named choice of a setting, defined once: a leaf module that imports nothing of the package.

:mod:`sdd_jax.validate` checks a config against these tuples, and the modules that implement a
choice import its tuple from here (and re-export it under its old name). Pruning criteria and
model names are not fixed tuples: they are the keys of the registries
(:mod:`sdd_jax.criteria`, :mod:`sdd_jax.models.registry`), so that a new criterion or model
family is one module that registers itself.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

AUTO = "auto"  # "let the library pick": run.epoch_loop, run.seed_execution, run.distributed, data.source

# data (sdd_jax.data.sources, sdd_jax.data.subset)
SOURCES = (AUTO, "tfds", "idx", "cifar_python", "tiny_imagenet_folder", "npz")
SUBSET_MODES = ("first", "random")

# label noise (sdd_jax.data.noise); asymmetric modes apply to CIFAR-100
NOISE_KINDS = ("none", "random_labels", "symmetric", "asymmetric", "pairflip")
ASYMMETRIC_MODES = ("superclass", "reference_blocks")

# models (sdd_jax.models.init): bias initialisers and compute dtypes (names of jax.numpy dtypes)
BIAS_INITS = ("zeros", "torch_default")
DTYPES = ("float32", "bfloat16")

# pruning (sdd_jax.pruning, sdd_jax.imp)
SCOPES = ("global", "layer")
SCHEDULES = ("lottery", "finetune", "lr_rewind", "scratch")

# execution (sdd_jax.engine, sdd_jax.distributed, sdd_jax.progress)
EPOCH_LOOPS = ("scan", "steps")
SEED_EXECUTIONS = ("vmap", "sequential")
DISTRIBUTED = (AUTO, "on", "off")
VERBOSITY = (0, 1, 2)  # quiet, progress, verbose
# live metrics (sdd_jax.tracking, sdd_jax.trackers): run.log_to names any of these (none: no live log)
LOG_TARGETS = ("tensorboard", "wandb", "mlflow")

# analysis (sdd_jax.analysis.settings)
EIGEN_METHODS = ("lanczos", "power")
MOMENTUM_MODES = ("keep", "reset")


def did_you_mean(word: str, names: Iterable[str], n: int = 1) -> str:
    """``" (did you mean 'a' or 'b'?)"``: up to ``n`` of ``names`` close to ``word`` (difflib ratio >= 0.75), else ``""``.

    Used by every "unknown name" message (``--set`` keys, presets, variants).
    """
    close = difflib.get_close_matches(word, list(names), n=n, cutoff=0.75)
    return f" (did you mean {' or '.join(repr(name) for name in close)}?)" if close else ""
