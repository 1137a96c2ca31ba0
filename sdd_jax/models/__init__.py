"""Model zoo: build a flax module from a :class:`ModelConfig` and tell which weights are prunable.

Every model is called as ``model.apply(variables, x, train=...)`` on NHWC float32 inputs (MLPs
flatten any input shape) and returns logits; BN models also carry a ``batch_stats`` collection
(pass ``mutable=["batch_stats"]`` when ``train=True``). ``width_multiplier`` scales hidden widths
(MLPs) or channel counts (ResNets, VGGs). ``model.dtype`` is the compute dtype (``float32``, the
paper's, or ``bfloat16``): inputs are cast to it at the entry, parameters and BatchNorm statistics
are float32 whatever it is, and the logits are returned in float32.

Prunability is a name test on the parameter path (see :func:`prunable_predicate`): conv and dense
kernels, never biases or BatchNorm parameters, and never the output layer of LeNet/MLP and VGG
(OpenLTH excludes it there; its ResNets prune the classifier too).

Each family (names, builder, prunable rule, convolutional or not) is an entry of
:mod:`sdd_jax.models.registry`; a new one is a module calling :func:`register_family`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from sdd_jax import masks
from sdd_jax.config import ModelConfig
from sdd_jax.models import mlp as _mlp
from sdd_jax.models import resnet as _resnet
from sdd_jax.models import vgg as _vgg
from sdd_jax.models.init import BIAS_INITS, DTYPES, BatchNorm, compute_dtype
from sdd_jax.models.mlp import MLP, mlp
from sdd_jax.models.registry import (
    FAMILIES,
    Family,
    family_of,
    family_of_module,
    model_names,
    register_family,
    scaled,
)
from sdd_jax.models.resnet import ResNet, resnet
from sdd_jax.models.vgg import VGG, vgg

__all__ = [
    "BIAS_INITS",
    "DTYPES",
    "FAMILIES",
    "MLP",
    "MODEL_NAMES",
    "VGG",
    "BatchNorm",
    "Family",
    "ResNet",
    "build_model",
    "family_of",
    "family_of_module",
    "is_convolutional",
    "mlp",
    "model_names",
    "prunable_predicate",
    "register_family",
    "resnet",
    "scaled",
    "vgg",
]
# Importing a family module registers it: the built-in families, in this order.
BUILT_IN_FAMILIES = (_mlp.FAMILY, _resnet.FAMILY, _vgg.FAMILY)


def __getattr__(name: str):
    if name == "MODEL_NAMES":  # every registered name, read when asked (a registered family counts)
        return model_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(model_cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The flax module named by ``model_cfg.name`` with ``num_classes`` outputs, built by its
    registered family from a validated config (:mod:`sdd_jax.validate` checks the options).

    Raises :class:`ValueError` for a name no family builds (listing the valid ones), an unknown
    ``model.dtype`` and a ``num_classes`` that is not a positive integer.
    """
    family = family_of(model_cfg.name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return family.build(model_cfg, num_classes, compute_dtype(model_cfg.dtype))


def is_convolutional(model_cfg: ModelConfig) -> bool:
    """Whether the family of ``model_cfg.name`` is convolutional (the engine's ``auto`` choices)."""
    return family_of(model_cfg.name).convolutional


def prunable_predicate(model_cfg: ModelConfig) -> Callable[[tuple[str, ...]], bool]:
    """A test on a parameter path, e.g. ``("layer1_0", "conv1", "kernel")`` -> True: the
    prunable-layer rule of the family of ``model_cfg.name``.

    The path indexes the unbatched ``params`` tree (a leading ``"params"`` key and
    ``jax.tree_util`` key objects are accepted too). True only for a ``kernel`` of a conv/dense
    module: ``fc1..fcK`` (LeNet/MLP), ``conv1..convN`` (VGG), ``conv_stem``, block
    ``conv1..3``/``shortcut_conv`` and ``fc`` (ResNet).
    """
    rule = family_of(model_cfg.name).is_prunable

    def is_prunable(path: tuple) -> bool:
        keys = masks.leaf_path(path)
        if keys and keys[0] == "params":
            keys = keys[1:]
        return rule(tuple(keys))

    return is_prunable
