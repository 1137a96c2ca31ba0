"""Study presets: named grids of configurations compared in one figure (``sdd-jax sweep NAME``).

A study preset is a run preset (:func:`sdd_jax.presets.get`, variants allowed) plus the axes of
its grid: each axis is a dotted config key (``noise.rate``, ``pruning.criterion``, ...) or
``init`` (``lottery`` against ``reinit``: the lottery ticket against a random re-initialisation on
the same masks), with its values. The grid is the product of the axes, times the seeds.
``by`` and ``panel`` say how ``sdd-jax compare`` draws it: one colour per value of ``by``, one
panel per value of ``panel``.

The paper's comparison figures are registered here by name (``fig4``, ...), with the model, data
and axes of the figure; ``quickstart-noise`` is the CPU-sized one (the quickstart at three noise
rates).
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
    ``figure``: the paper's figure it reproduces (empty for the project's own studies).
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
