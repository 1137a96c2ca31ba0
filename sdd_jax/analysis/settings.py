"""The settings of ``sdd-jax analyze``: ``--set analysis.KEY=VALUE`` (the keys of
:class:`AnalysisConfig`), parsed with the config module's own override rules (an unknown key
lists the valid ones, a wrong type names the expected one) and checked with the rule helpers of
:mod:`sdd_jax.validate` (the same messages as the run's settings)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from sdd_jax.choices import EIGEN_METHODS, MOMENTUM_MODES
from sdd_jax.config import ConfigError, override, to_dict
from sdd_jax.validate import at_least, check_fields, finite, one_of


@dataclass(frozen=True)
class AnalysisConfig:
    """What ``sdd-jax analyze`` computes, and how finely.

    Re-dense training (paper Fig. 6): ``redense_epochs`` (0: as many as the level's sparse
    training), ``redense_lr`` (0: the last learning rate of the sparse schedule; the paper's
    variant is 0.0001), ``redense_momentum`` (``keep``: the sparse stage's momentum buffer carries
    over, as the reference code, whose optimiser lives on; ``reset``: a fresh buffer, as the
    ``redense`` branch), ``replay_sparse`` (retrain the level's sparse stage to evaluate every
    epoch and to hand its optimiser state on; false: read the stored level and its curves).
    Interpolation (Fig. 7): ``interp_points`` α values from 0 to 1 (101: steps of 0.01);
    ``bn_batches`` training batches (of ``optim.batch_size``) recompute BatchNorm statistics at
    every α. 1-D curves (Fig. 8): ``curve_points`` α values from ``-curve_range`` to
    ``curve_range``. Sharpness: ``hessian_batches`` training batches (of ``optim.batch_size``),
    ``lanczos_steps`` Lanczos (or power) iterations, ``hutchinson_probes`` Rademacher probes.
    ``grid_chunk`` interpolation/curve points evaluated at once per seed (0: 8 for MLPs, 1 for
    conv nets). ``ece_bins`` calibration bins; ``bootstrap`` resamples and ``confidence`` of the
    intervals over seeds; ``seed`` of every random draw of the analysis (directions, probes,
    batches).
    """

    redense_epochs: int = 0
    redense_lr: float = 0.0
    redense_momentum: str = "keep"
    replay_sparse: bool = True
    interp_points: int = 101
    bn_batches: int = 8
    curve_points: int = 51
    curve_range: float = 1.0
    hessian_batches: int = 4
    lanczos_steps: int = 20
    hutchinson_probes: int = 10
    eigen_method: str = "lanczos"
    grid_chunk: int = 0
    ece_bins: int = 15
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class _Tree:
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)


# Range rules per key (``replay_sparse`` and ``seed``: any value of their type).
RULES = {
    "redense_epochs": at_least(0),
    "redense_lr": at_least(0),
    "redense_momentum": one_of(MOMENTUM_MODES),
    "interp_points": at_least(2),
    "bn_batches": at_least(1),
    "curve_points": at_least(2),
    "curve_range": finite(0.0, low_open=True),
    "hessian_batches": at_least(1),
    "lanczos_steps": at_least(1),
    "hutchinson_probes": at_least(1),
    "eigen_method": one_of(EIGEN_METHODS),
    "grid_chunk": at_least(0),
    "ece_bins": at_least(1),
    "bootstrap": at_least(10),
    "confidence": finite(0.0, 1.0, low_open=True),
}


def parse(assignments: list[str]) -> AnalysisConfig:
    """An :class:`AnalysisConfig` from ``analysis.KEY=VALUE`` strings, validated
    (:class:`~sdd_jax.config.ConfigError` naming the setting)."""
    cfg = override(_Tree(), list(assignments)).analysis
    check_fields(cfg, RULES, prefix="analysis.")
    return cfg


def settings_hash(cfg: AnalysisConfig, keys: tuple[str, ...], **extra) -> str:
    """An 8-hex-digit hash of the named settings (plus ``extra`` resolved values): the cache key of
    one analysis step."""
    values = {k: v for k, v in to_dict(cfg).items() if k in keys}
    payload = json.dumps({**values, **extra}, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:8]


def as_dict(cfg: AnalysisConfig) -> dict:
    return dataclasses.asdict(cfg)


def split_overrides(overrides: list[str], run_settings: list[str]) -> tuple[list[str], list[str]]:
    """(``analysis.*`` assignments, the others: the run's execution settings for
    :func:`sdd_jax.runopen.open_run`). Raises :class:`~sdd_jax.config.ConfigError` (one line) for
    an assignment of any other key: the analysis cannot change the run it analyses."""
    ours = [o for o in overrides if o.split("=", 1)[0].strip().startswith("analysis.")]
    theirs = [o for o in overrides if o not in ours]
    for item in theirs:
        if item.split("=", 1)[0].strip() not in run_settings:
            raise ConfigError(
                f"sdd-jax analyze takes analysis.* settings (sdd_jax/analysis/settings.py) and the run's "
                f"execution settings {', '.join(run_settings)} only (got {item!r})"
            )
    return ours, theirs
