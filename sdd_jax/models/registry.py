"""The registry of model families: each a small frozen :class:`Family` entry, keyed by its name.

An entry holds the model names it builds, the builder ``(model_cfg, num_classes, dtype) ->
nn.Module`` (``dtype`` the compute dtype of ``model.dtype``), the prunable-layer rule (a test on
the parameter path, see :func:`sdd_jax.models.prunable_predicate`) and whether the family is
convolutional (the engine's ``auto`` epoch loop and seed execution depend on it). Every family
module registers itself when imported (:mod:`sdd_jax.models` imports the built-in ones);
:func:`sdd_jax.models.build_model`, :func:`~sdd_jax.models.prunable_predicate`,
:mod:`sdd_jax.validate` and the engine read the entries. A new family is one module calling
:func:`register_family` (``docs/extending.md`` shows a WideResNet). As open_lth's
``registry.py``: a dict of entries, no class hierarchy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
from jax.typing import DTypeLike

Builder = Callable[[Any, int, DTypeLike], nn.Module]


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    ``names``: the ``model.name`` values it builds. ``build(model_cfg, num_classes, dtype)``: the
    flax module for a validated ``ModelConfig``. ``is_prunable(keys)``: whether the parameter at
    ``keys`` (a tuple of strings indexing one seed's ``params`` tree, e.g. ``("fc1", "kernel")``)
    is pruned. ``convolutional``: whether the models are convolution nets. ``modules``: the flax
    module classes ``build`` returns, so that a built model can be traced back to its family
    (:func:`family_of_module`).
    """

    name: str
    names: tuple[str, ...]
    build: Builder
    is_prunable: Callable[[tuple[str, ...]], bool]
    convolutional: bool
    modules: tuple[type, ...] = ()


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add ``family`` to the registry and return it; :class:`ValueError` if its name or one of its
    model names is taken."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family expects a Family, got {type(family).__name__}")
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    taken = sorted(set(family.names) & set(model_names()))
    if taken or not family.names:
        raise ValueError(f"model family {family.name!r} needs new model names, got {family.names!r}")
    FAMILIES[family.name] = family
    return family


def model_names() -> tuple[str, ...]:
    """Every registered model name, family by family in registration order."""
    return tuple(name for family in FAMILIES.values() for name in family.names)


def family_of(model_name: str) -> Family:
    """The family that builds ``model_name``; :class:`ValueError` listing the valid names."""
    for family in FAMILIES.values():
        if model_name in family.names:
            return family
    raise ValueError(f"unknown model {model_name!r}; valid: {', '.join(model_names())}")


def family_of_module(module: nn.Module) -> Family | None:
    """The family whose builder returns modules of ``module``'s class (``None`` if none does)."""
    for family in FAMILIES.values():
        if isinstance(module, family.modules):
            return family
    return None


def scaled(channels: int, multiplier: float) -> int:
    """``channels × multiplier``, rounded, at least 1 (fractional multipliers make thin test nets)."""
    return max(1, int(round(channels * multiplier)))
