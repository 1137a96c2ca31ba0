"""Named, runnable recipes for every setting of the paper, plus variants and a quickstart.

Each base preset lives in its own module and reads like a row of the paper's Appendix B table.
Variants are derived here by name suffix:

* ``-noise20`` / ``-noise40`` / ``-noise80``: random-label noise rate (the paper's "symmetric");
* ``-asym20`` / ``-asym40``: asymmetric (class-dependent) noise, defined for MNIST and CIFAR only
  (:func:`sdd_jax.data.noise.asymmetric_flips`), so not listed for Tiny-ImageNet;
  ``-pairflip20`` / ``-pairflip40``;
* ``-finetune`` / ``-lr_rewind`` / ``-scratch``: the retraining schedule (default ``lottery``);
* ``-bf16``: bfloat16 compute (``model.dtype``; parameters, optimiser state and BatchNorm
  statistics stay float32), listed for the CIFAR and Tiny-ImageNet settings.

``get("resnet18_cifar10-noise40-finetune")`` combines them (``resnet18_cifar10-noise40-bf16`` too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from sdd_jax.choices import did_you_mean
from sdd_jax.config import Config
from sdd_jax.describe import describe

from . import lenet_mnist, quickstart, resnet18_cifar, resnet101_tinyimagenet, smoke, studies, vgg16_cifar

BASE: dict[str, Callable[[], Config]] = {
    "quickstart": quickstart.config,
    "smoke": smoke.config,
    "lenet_mnist": lenet_mnist.config,
    "resnet18_cifar10": lambda: resnet18_cifar.config("cifar10"),
    "resnet18_cifar100": lambda: resnet18_cifar.config("cifar100"),
    "vgg16_cifar10": lambda: vgg16_cifar.config("cifar10"),
    "vgg16_cifar100": lambda: vgg16_cifar.config("cifar100"),
    "resnet101_tinyimagenet": resnet101_tinyimagenet.config,
}

NOISE_VARIANTS = {
    **{f"noise{r}": ("random_labels", r / 100) for r in (20, 40, 80)},
    **{f"asym{r}": ("asymmetric", r / 100) for r in (20, 40)},
    **{f"pairflip{r}": ("pairflip", r / 100) for r in (20, 40)},
}
SCHEDULE_VARIANTS = ("finetune", "lr_rewind", "scratch")
DTYPE_VARIANTS = {"bf16": "bfloat16"}
VARIANTS = (*NOISE_VARIANTS, *SCHEDULE_VARIANTS, *DTYPE_VARIANTS)
PAPER_BASES = tuple(name for name in BASE if name not in ("quickstart", "smoke"))
# The bases whose ``-bf16`` variant :func:`listing` shows (:func:`get` accepts it on any base).
BF16_BASES = ("resnet18_cifar10", "resnet18_cifar100", "vgg16_cifar10", "vgg16_cifar100", "resnet101_tinyimagenet")
# The bases whose ``-asym`` variants :func:`listing` shows: asymmetric noise maps classes of MNIST,
# CIFAR-10 and CIFAR-100 only (``validate.validate`` rejects it elsewhere).
ASYMMETRIC_BASES = ("lenet_mnist", "resnet18_cifar10", "resnet18_cifar100", "vgg16_cifar10", "vgg16_cifar100")


# The setting each family of variants sets (a preset name takes at most one of each).
_FAMILIES = {"noise": NOISE_VARIANTS, "retraining schedule": SCHEDULE_VARIANTS, "dtype": DTYPE_VARIANTS}


class UnknownPreset(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def _apply_variant(config: Config, variant: str) -> Config:
    if variant in NOISE_VARIANTS:
        kind, rate = NOISE_VARIANTS[variant]
        noise = dataclasses.replace(config.noise, kind=kind, rate=rate)
        return dataclasses.replace(config, noise=noise)
    if variant in SCHEDULE_VARIANTS:
        return dataclasses.replace(config, pruning=dataclasses.replace(config.pruning, schedule=variant))
    if variant in DTYPE_VARIANTS:
        return dataclasses.replace(config, model=dataclasses.replace(config.model, dtype=DTYPE_VARIANTS[variant]))
    raise UnknownPreset(
        f"unknown preset variant {variant!r}{did_you_mean(variant, VARIANTS)}; variants: {', '.join(VARIANTS)}"
    )


def get(name: str) -> Config:
    """The config of preset ``name`` (a base name plus optional ``-variant`` suffixes); a
    variant's ``description`` is generated from its config (:func:`sdd_jax.describe.describe`).
    Raises :class:`UnknownPreset` for an unknown name, two variants of one setting
    (``-noise40-noise20``), and for a study preset's name with the command that runs it."""
    if studies.is_study(name):
        raise UnknownPreset(f"{name!r} is a study preset: run it with `sdd-jax sweep {name}`")
    base, *variants = name.split("-")
    if base not in BASE:
        raise UnknownPreset(
            f"unknown preset {name!r}{did_you_mean(base, BASE)}; presets: {', '.join(BASE)} (variants: {', '.join(VARIANTS)})"
        )
    config = BASE[base]()
    families = {}  # one variant per setting: -noise40-noise20 says two things of the noise
    for variant in variants:
        family = next((f for f, group in _FAMILIES.items() if variant in group), variant)
        if family in families:
            raise UnknownPreset(
                f"preset {name!r} sets the {family} twice (-{families[family]}, -{variant}): keep one of them"
            )
        families[family] = variant
        config = _apply_variant(config, variant)
    if variants:  # the base preset's words no longer hold
        config = dataclasses.replace(config, description=describe(config))
    return dataclasses.replace(config, name=name)


def listing() -> list[tuple[str, str]]:
    """(name, one-line description) of every base preset (its own words), of the paper variants
    that can run (asymmetric noise only on MNIST and CIFAR) and of the bfloat16 variants of the
    CIFAR and Tiny-ImageNet settings (described from their configs)."""
    rows = [(name, BASE[name]().description) for name in BASE]
    for base in PAPER_BASES:
        noise = [v for v in NOISE_VARIANTS if base in ASYMMETRIC_BASES or NOISE_VARIANTS[v][0] != "asymmetric"]
        variants = [*noise, *SCHEDULE_VARIANTS, *(DTYPE_VARIANTS if base in BF16_BASES else ())]
        for variant in variants:
            config = get(f"{base}-{variant}")
            rows.append((config.name, config.description))
    return rows
