"""Every rule a setting must satisfy, in one place, checked once before anything is written.

:func:`validate` checks a :class:`~sdd_jax.config.Config`: each field's type (the annotation of
its dataclass) and range (:func:`field_rules`, one rule per dotted key but :data:`FREE_FIELDS`),
then the rules that relate fields. The rule helpers (:func:`at_least`, :func:`finite`,
:func:`one_of`) and :func:`check_fields` serve every settings tree alike (``sdd-jax analyze``'s
:class:`~sdd_jax.analysis.settings.AnalysisConfig` too), so every message reads
``"<key> must be <rule>, got <value>"`` or ``"<key>: expected <type>, got <value>"``.

The named choices come from :mod:`sdd_jax.choices`; pruning criteria and model names from their
registries (:mod:`sdd_jax.criteria`, :mod:`sdd_jax.models.registry`), read at each call so
that registered additions are valid. The builders (models, noise, pruning) trust a validated
config. Checks that need the data (the rewind iteration against the length of a training run,
ignore patterns against the model) are made in :func:`sdd_jax.experiment.build`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sdd_jax import choices, criteria, pruning, trackers
from sdd_jax.config import Config, ConfigError, flat_keys, type_name
from sdd_jax.data.errors import DataError
from sdd_jax.data.noise import asymmetric_flips
from sdd_jax.models import registry as model_registry

Rule = tuple[Callable[[Any], bool], str]  # (test, what the message says the value must be)

# Fields whose type is their whole rule (any value of it can run).
FREE_FIELDS = frozenset(
    {
        "name",
        "description",
        "data.data_dir",
        "data.download",
        "data.class_balanced",
        "data.augment",
        "noise.exact",
        "optim.nesterov",
        "pruning.largest_first",
        "pruning.ignore",
    }
)


def at_least(low: float) -> Rule:
    """A number ``>= low``."""
    return (lambda v: v >= low), f">= {low:g}"


def finite(low: float, high: float | None = None, low_open: bool = False, high_open: bool = True) -> Rule:
    """A finite number from ``low`` (excluded when ``low_open``) up to ``high`` (excluded when
    ``high_open``; no upper bound when ``None``)."""

    def ok(v):
        return (
            math.isfinite(v)
            and (v > low if low_open else v >= low)
            and (high is None or (v < high if high_open else v <= high))
        )

    if high is None:
        text = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        text = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return ok, text


def one_of(options: Iterable) -> Rule:
    """One of ``options``."""
    options = tuple(options)
    return (lambda v: v in options), f"one of {', '.join(map(str, options))}"


NON_EMPTY: Rule = (lambda v: bool(v.strip())), "a non-empty string"


def check_type(value: Any, hint: Any, key: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is of the field type ``hint`` (bool is not an
    int; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        (inner,) = [a for a in args if a is not type(None)]
        return check_type(value, inner, key)
    if origin is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"{key}: expected a tuple of {type_name(args[0])}, got {value!r}")
        for item in value:
            check_type(item, args[0], key)
        return
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[hint](value)
    if not ok:
        raise ConfigError(f"{key}: expected {type_name(hint)}, got {value!r}")


def check_fields(node: Any, rules: Mapping[str, Rule], prefix: str = "") -> None:
    """Check every field of the dataclass tree ``node``: its type, then its rule in ``rules``
    (keyed by dotted path without ``prefix``; ``None`` in an optional field always passes).
    Messages name ``prefix + key``. Raises :class:`ConfigError` at the first bad field."""
    hints = flat_keys(node)
    for key, value in _flat_values(node).items():
        check_type(value, hints[key], prefix + key)
        if key in rules and value is not None:
            ok, text = rules[key]
            if not ok(value):
                raise ConfigError(f"{prefix}{key} must be {text}, got {value!r}")


def _flat_values(node: Any, prefix: str = "") -> dict[str, Any]:
    values = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            values.update(_flat_values(value, f"{prefix}{f.name}."))
        else:
            values[f"{prefix}{f.name}"] = value
    return values


def field_rules() -> dict[str, Rule]:
    """Range rules per dotted key of :class:`~sdd_jax.config.Config` (every key but
    :data:`FREE_FIELDS`), with the criteria and model names registered now."""
    positive_int, count = at_least(1), at_least(0)
    positive_rate = finite(0.0, low_open=True)
    return {
        "data.name": NON_EMPTY,
        "data.source": one_of(choices.SOURCES),
        "data.train_size": positive_int,
        "data.subset_mode": one_of(choices.SUBSET_MODES),
        "data.validation_size": count,
        "data.test_size": positive_int,
        "data.subset_seed": count,
        "noise.kind": one_of(choices.NOISE_KINDS),
        "noise.rate": finite(0.0, 1.0, high_open=False),
        "noise.seed": count,
        "noise.asymmetric_mode": one_of(choices.ASYMMETRIC_MODES),
        "model.name": one_of(model_registry.model_names()),
        "model.widths": ((lambda v: len(v) > 0 and all(w >= 1 for w in v)), "positive integers (at least one)"),
        "model.width_multiplier": positive_rate,
        "model.bias_init": one_of(choices.BIAS_INITS),
        "model.dtype": one_of(choices.DTYPES),
        "optim.lr": positive_rate,
        "optim.momentum": finite(0.0, 1.0),
        "optim.weight_decay": finite(0.0),
        "optim.batch_size": positive_int,
        "optim.epochs": positive_int,
        "optim.milestones": ((lambda v: all(m >= 1 for m in v)), "epochs >= 1"),
        "optim.gamma": positive_rate,
        "optim.warmup_epochs": finite(0.0),
        "pruning.levels": count,
        "pruning.fraction": finite(0.0, 1.0, low_open=True),
        "pruning.criterion": one_of(criteria.names()),
        "pruning.scope": one_of(choices.SCOPES),
        "pruning.saliency_batches": positive_int,
        "pruning.schedule": one_of(choices.SCHEDULES),
        "pruning.rewind_iteration": count,
        "pruning.finetune_lr": positive_rate,
        "pruning.finetune_epochs": count,
        "pruning.redense_epochs": count,
        "pruning.redense_lr": positive_rate,
        "run.seeds": positive_int,
        "run.first_seed": count,
        "run.workdir": NON_EMPTY,
        "run.seeds_per_chunk": count,
        "run.eval_batch_size": positive_int,
        "run.eval_every_epochs": positive_int,
        "run.checkpoint_every_epochs": count,
        "run.verbosity": one_of(choices.VERBOSITY),
        "run.epoch_loop": one_of((*choices.EPOCH_LOOPS, choices.AUTO)),
        "run.seed_execution": one_of((*choices.SEED_EXECUTIONS, choices.AUTO)),
        "run.seed_devices": count,
        "run.data_devices": positive_int,
        "run.compilation_cache": NON_EMPTY,
        "run.distributed": one_of(choices.DISTRIBUTED),
        "run.log_to": (
            (lambda v: set(v) <= set(choices.LOG_TARGETS) and len(set(v)) == len(v)),
            f"a list of {', '.join(choices.LOG_TARGETS)} without repeats (empty: no live metrics)",
        ),
    }


def validate(config: Config) -> None:
    """Reject settings that cannot run, before anything is written.

    Every field is checked for its type and its range: counts and seeds >= 0, sizes, periods and
    epochs >= 1, learning rates, ``gamma`` and ``model.width_multiplier`` finite and > 0,
    ``optim.momentum`` in [0, 1) (Nesterov needs it > 0, as ``torch.optim.SGD``), weight decay
    and warm-up finite and >= 0, rates and fractions in their intervals, names among the known
    choices, ``pruning.ignore`` valid regular expressions, a noise rate only with a noise kind,
    asymmetric noise only on a data set that defines it, a pruning fraction that is an exact
    ratio (:func:`sdd_jax.pruning.fraction_ratio`), and the packages of the trackers ``run.log_to``
    names installed (:func:`sdd_jax.trackers.install_hint`: the ``pip install`` to run).

    Raises :class:`~sdd_jax.config.ConfigError` (a :class:`ValueError`) whose one-line message
    names the setting.
    """
    check_fields(config, field_rules())
    o, p, n = config.optim, config.pruning, config.noise
    if o.nesterov and o.momentum == 0:
        raise ConfigError("optim.nesterov needs optim.momentum > 0 (as torch.optim.SGD)")
    if n.kind == "none" and n.rate > 0:
        raise ConfigError(f"noise.rate={n.rate} given with noise.kind none; pick a kind or set the rate to 0")
    if n.kind == "asymmetric":
        try:
            asymmetric_flips(config.data.name, None, n.asymmetric_mode)
        except DataError as err:
            raise ConfigError(f"noise.kind asymmetric: {err}") from None
    for pattern in p.ignore:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"pruning.ignore: bad regular expression {pattern!r}: {err}") from None
    try:
        pruning.fraction_ratio(p.fraction)
    except ValueError as err:
        raise ConfigError(f"pruning.fraction: {err}") from None
    for target in config.run.log_to:
        missing = trackers.install_hint(target)
        if missing:
            raise ConfigError(missing)
