"""Study presets: named grids of configurations compared in one figure (``sdd-jax sweep NAME``).

A study preset is a run preset (:func:`sdd_jax.presets.get`, variants allowed) plus the axes of
its grid: each axis is a dotted config key (``noise.rate``, ``pruning.criterion``, ...) or
``init`` (``lottery`` against ``reinit``: the lottery ticket against a random re-initialisation on
the same masks), with its values. The grid is the product of the axes, times the seeds.
``by`` and ``panel`` say how ``sdd-jax compare`` draws it: one colour per value of ``by``, one
panel per value of ``panel``.

The paper's comparison figures are registered here by name (``fig2``, ``fig4``, ...), with the
model, data, noise and axes of the figure (He et al., ICML 2022; the captions of Figs. 2-4, 10,
13-29, 31, 33-34 and 44-46, 48) and its panel layout: a figure whose panels are the values of its
axis (magnitude / gradient / random pruning; ε = 20 / 40 / 80%) has that axis as both ``by`` and
``panel``; ``sdd-jax compare STUDY --by KEY`` overlays them in one panel instead. The paper's
"symmetric" noise is ``random_labels`` (the ``-noise`` variants), its gradient-based pruning is
``saliency`` (|∂L/∂w ⊙ w|), and the seeds are the base preset's (the paper's: five on MNIST, three
elsewhere). Left out: Fig. 11 (it plots the best-epoch test accuracy, not the last), Figs. 47 and
49 (their captions give no noise rate). ``quickstart-noise`` is the CPU-sized study (the quickstart
at three noise rates).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sdd_jax.choices import did_you_mean

INIT_AXIS = "init"  # the one axis that is not a config key: lottery | reinit


@dataclasses.dataclass(frozen=True)
class StudyPreset:
    """One named study.

    ``base``: a run preset name; ``overrides``: ``key=value`` settings applied to it before the
    grid; ``grid``: the ordered axes ``(key, values)`` (a dotted config key or ``init``);
    ``seeds``: seeds per point (``None``: the base preset's ``run.seeds``); ``by``/``panel``: the
    axes ``sdd-jax compare`` colours and panels by (``by`` defaults to the first axis);
    ``figure``: the paper's figure it reproduces (empty for the project's own studies);
    ``distance``: the comparison draws the learning distance too (the paper's Figs. 44-49).
    """

    name: str
    description: str
    base: str
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    overrides: tuple[str, ...] = ()
    seeds: int | None = None
    by: str = ""
    panel: str | None = None
    figure: str = ""
    distance: bool = False

    @property
    def colour_axis(self) -> str:
        return self.by or self.grid[0][0]


STUDIES: dict[str, StudyPreset] = {}


def register(study: StudyPreset) -> StudyPreset:
    """Add ``study`` to :data:`STUDIES` (:class:`ValueError` if its name is taken)."""
    if study.name in STUDIES:
        raise ValueError(f"study preset {study.name!r} is already registered")
    STUDIES[study.name] = study
    return study


register(
    StudyPreset(
        name="quickstart-noise",
        description="the quickstart at 20/40/80% random labels, 2 seeds: the noise moves the critical phase (CPU, minutes)",
        base="quickstart",
        grid=(("noise.rate", (0.2, 0.4, 0.8)),),
        seeds=2,
        by="noise.rate",
    )
)


# ----- the paper's comparison figures ------------------------------------------------------------

CRITERIA = ("magnitude", "saliency", "random")  # the paper's magnitude, gradient-based and random pruning
SCHEDULES = ("finetune", "lr_rewind", "scratch")  # the paper's finetuning, lr rewinding, scratch retraining
RATES = (0.2, 0.4, 0.8)  # ε
INITS = ("lottery", "reinit")
_FIGURES: list[tuple[int, StudyPreset]] = []


def _paper(
    figure: int,
    base: str,
    description: str,
    key: str,
    values: tuple,
    *,
    by: str = "",
    panel: str | None = "",
    grid: tuple = (),
    overrides: tuple[str, ...] = (),
    distance: bool = False,
) -> StudyPreset:
    """The study of the paper's Fig. ``figure`` (registered in figure order below): ``base`` with
    the axis ``key`` over ``values`` (and the further axes ``grid``), coloured by ``by`` (default
    ``key``), one panel per value of ``panel`` (default ``key``, as the paper's panels; ``None``:
    one panel)."""
    study = StudyPreset(
        name=f"fig{figure}",
        description=description,
        base=base,
        grid=((key, values), *grid),
        overrides=overrides,
        by=by or key,
        panel=key if panel == "" else panel,
        figure=f"Fig. {figure}",
        distance=distance,
    )
    _FIGURES.append((figure, study))
    return study


for _fig, _base, _what in (
    (2, "resnet18_cifar100-noise40", "ResNet-18 / CIFAR-100, 40% random labels"),
    (13, "lenet_mnist", "LeNet-300-100 / MNIST, 20% random labels"),
    (14, "lenet_mnist-noise40", "LeNet-300-100 / MNIST, 40% random labels"),
    (16, "resnet18_cifar10", "ResNet-18 / CIFAR-10, 20% random labels"),
    (17, "resnet18_cifar10-noise40", "ResNet-18 / CIFAR-10, 40% random labels"),
    (18, "resnet18_cifar10-noise80", "ResNet-18 / CIFAR-10, 80% random labels"),
    (20, "vgg16_cifar10", "VGG-16 / CIFAR-10, 20% random labels"),
    (21, "resnet18_cifar10-asym20", "ResNet-18 / CIFAR-10, 20% asymmetric noise"),
    (22, "resnet18_cifar10-pairflip20", "ResNet-18 / CIFAR-10, 20% pairflip noise"),
    (23, "resnet18_cifar100-noise20", "ResNet-18 / CIFAR-100, 20% random labels"),
    (24, "resnet18_cifar100-noise40", "ResNet-18 / CIFAR-100, 40% random labels (as Fig. 2)"),
    (25, "resnet18_cifar100-noise80", "ResNet-18 / CIFAR-100, 80% random labels"),
    (27, "vgg16_cifar100-noise40", "VGG-16 / CIFAR-100, 40% random labels"),
    (28, "resnet18_cifar100-asym40", "ResNet-18 / CIFAR-100, 40% asymmetric (super-class) noise"),
    (29, "resnet18_cifar100-pairflip40", "ResNet-18 / CIFAR-100, 40% pairflip noise"),
):
    _paper(_fig, _base, f"{_what}: magnitude, gradient (saliency) and random pruning", "pruning.criterion", CRITERIA)

for _fig, _base, _what in (
    (3, "resnet18_cifar100-noise40", "ResNet-18 / CIFAR-100, 40% random labels"),
    (15, "lenet_mnist", "LeNet-300-100 / MNIST, 20% random labels"),
    (19, "resnet18_cifar10", "ResNet-18 / CIFAR-10, 20% random labels"),
    (26, "resnet18_cifar100-noise40", "ResNet-18 / CIFAR-100, 40% random labels (as Fig. 3)"),
):
    _paper(
        _fig,
        _base,
        f"{_what}: finetuning, learning-rate rewinding and scratch retraining",
        "pruning.schedule",
        SCHEDULES,
    )

_paper(
    4,
    "resnet18_cifar10",
    "ResNet-18 / CIFAR-10 at 20/40/80% random labels: more noise moves the critical phase",
    "noise.rate",
    RATES,
)
_paper(
    10,
    "resnet18_cifar10",
    "ResNet-18 / CIFAR-10, 20% random labels: lottery ticket vs random re-initialisation",
    "init",
    INITS,
    panel=None,
)
for _fig, _base, _data in ((33, "resnet18_cifar10", "CIFAR-10"), (34, "resnet18_cifar100", "CIFAR-100")):
    _paper(
        _fig,
        _base,
        f"ResNet-18 / {_data}: lottery ticket vs random re-initialisation at 20/40/80% random labels",
        "init",
        INITS,
        panel="noise.rate",
        grid=(("noise.rate", RATES),),
    )
_paper(
    31,
    "resnet18_cifar10",
    "ResNet-18 / CIFAR-10 and CIFAR-100 without label noise (the paper's curves) beside 20% random labels "
    "(Fig. 1); both points run the resnet18_cifar10 preset, its data.name set per panel",
    "noise.rate",
    (0.0, 0.2),
    panel="data.name",
    grid=(("data.name", ("cifar10", "cifar100")),),
)
for _fig, _base, _what in (
    (44, "lenet_mnist", "LeNet-300-100 / MNIST"),
    (46, "resnet18_cifar10", "ResNet-18 / CIFAR-10"),
    (48, "resnet18_cifar100", "ResNet-18 / CIFAR-100"),
):
    _paper(
        _fig,
        _base,
        f"{_what}: learning distance and test accuracy at 20/40/80% random labels",
        "noise.rate",
        RATES,
        distance=True,
    )
_paper(
    45,
    "lenet_mnist",
    "LeNet-300-100 / MNIST, 20% random labels: learning distance under learning-rate rewinding and scratch retraining",
    "pruning.schedule",
    ("lr_rewind", "scratch"),
    distance=True,
)


for _, _study in sorted(_FIGURES, key=lambda item: item[0]):
    register(_study)


class UnknownStudy(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def get_study(name: str) -> StudyPreset:
    """The study preset ``name``; :class:`UnknownStudy` (with the closest name) otherwise."""
    if name not in STUDIES:
        raise UnknownStudy(f"unknown study preset {name!r}{did_you_mean(name, STUDIES)}; studies: {', '.join(STUDIES)}")
    return STUDIES[name]


def is_study(name: str) -> bool:
    return name in STUDIES


def study_listing() -> list[tuple[str, str]]:
    """(name, one-line description) of every study preset."""
    return [(s.name, f"{s.figure + ': ' if s.figure else ''}{s.description}") for s in STUDIES.values()]
