"""The settings of ``sdd-jax analyze``: ``--set analysis.KEY=VALUE`` (the keys of
:class:`AnalysisConfig`), parsed with the config module's own override rules (an unknown key
lists the valid ones, a wrong type names the expected one)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from sdd_jax.config import ConfigError, override, to_dict

EIGEN_METHODS = ("lanczos", "power")
MOMENTUM_MODES = ("keep", "reset")


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


def parse(assignments: list[str]) -> AnalysisConfig:
    """An :class:`AnalysisConfig` from ``analysis.KEY=VALUE`` strings, validated
    (:class:`~sdd_jax.config.ConfigError` naming the setting)."""
    cfg = override(_Tree(), list(assignments)).analysis
    checks = [
        ("redense_epochs", cfg.redense_epochs >= 0, ">= 0"),
        ("redense_lr", cfg.redense_lr >= 0, ">= 0"),
        ("redense_momentum", cfg.redense_momentum in MOMENTUM_MODES, f"one of {MOMENTUM_MODES}"),
        ("interp_points", cfg.interp_points >= 2, ">= 2"),
        ("bn_batches", cfg.bn_batches >= 1, ">= 1"),
        ("curve_points", cfg.curve_points >= 2, ">= 2"),
        ("curve_range", cfg.curve_range > 0, "> 0"),
        ("hessian_batches", cfg.hessian_batches >= 1, ">= 1"),
        ("lanczos_steps", cfg.lanczos_steps >= 1, ">= 1"),
        ("hutchinson_probes", cfg.hutchinson_probes >= 1, ">= 1"),
        ("eigen_method", cfg.eigen_method in EIGEN_METHODS, f"one of {EIGEN_METHODS}"),
        ("grid_chunk", cfg.grid_chunk >= 0, ">= 0"),
        ("ece_bins", cfg.ece_bins >= 1, ">= 1"),
        ("bootstrap", cfg.bootstrap >= 10, ">= 10"),
        ("confidence", 0 < cfg.confidence < 1, "in (0, 1)"),
    ]
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"analysis.{key} must be {what}, got {getattr(cfg, key)!r}")
    return cfg


def settings_hash(cfg: AnalysisConfig, keys: tuple[str, ...], **extra) -> str:
    """An 8-hex-digit hash of the named settings (plus ``extra`` resolved values): the cache key of
    one analysis step."""
    values = {k: v for k, v in to_dict(cfg).items() if k in keys}
    payload = json.dumps({**values, **extra}, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:8]


def as_dict(cfg: AnalysisConfig) -> dict:
    return dataclasses.asdict(cfg)
