"""One frozen dataclass tree for every setting of a run, with dotted overrides and a stable hash.

``Config`` holds ``data``, ``noise``, ``model``, ``optim``, ``pruning`` and ``run``. Presets in
``experiments/`` build a ``Config``; the command line applies ``--set key=value`` through
:func:`override`. :func:`result_hash` hashes only the fields that change results (everything but
``run`` fields listed in ``NON_RESULT_FIELDS``), so paths, chunk sizes and verbosity never
change a run's identity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

# Bumped whenever the on-disk result format or the meaning of a stored number changes.
RESULT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DataConfig:
    """Which data set and which part of it.

    ``name``: ``mnist_embedded`` (the real-MNIST subset shipped in the package), ``mnist``,
    ``cifar10``, ``cifar100``, ``tiny_imagenet``, ``mnist1d``, ``npz``, ``synthetic`` or any tfds
    image-classification set. ``source``: ``auto`` picks the natural reader for ``name``;
    ``tfds``, ``idx``, ``cifar_python``, ``tiny_imagenet_folder``, ``npz`` force one.
    """

    name: str = "mnist_embedded"
    source: str = "auto"
    data_dir: str | None = None
    download: bool = False
    train_size: int | None = None  # keep N training examples (None: all)
    subset_mode: str = "first"  # first | random
    class_balanced: bool = False
    validation_size: int = 0
    test_size: int | None = None
    subset_seed: int = 0
    augment: bool = False  # pad-4 random crop + horizontal flip (CIFAR-like data)


@dataclass(frozen=True)
class NoiseConfig:
    """Label noise on the training split. ``kind``: none | random_labels | symmetric |
    asymmetric | pairflip. ``random_labels`` is what the paper's published commands call
    "symmetric" (the new label may equal the true one)."""

    kind: str = "none"
    rate: float = 0.0
    seed: int = 0
    exact: bool = True  # symmetric: corrupt exactly ceil(rate*N) examples
    asymmetric_mode: str = "superclass"  # superclass | reference_blocks (CIFAR-100)


@dataclass(frozen=True)
class ModelConfig:
    """``name``: lenet_300_100 | mlp | resnet18/34/50/101/152 | vgg11/13/16/19."""

    name: str = "lenet_300_100"
    widths: tuple[int, ...] = (300, 100)  # hidden widths for ``mlp``
    width_multiplier: float = 1.0  # channel/width scale (fractions give thin nets for tests)
    # "zeros" as the paper; "torch_default" as the official code (PyTorch's uniform bias init).
    bias_init: str = "zeros"


@dataclass(frozen=True)
class OptimConfig:
    """SGD as PyTorch: momentum without dampening, weight decay added to the gradient."""

    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200
    milestones: tuple[int, ...] = ()  # epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0


@dataclass(frozen=True)
class PruningConfig:
    """Iterative pruning. ``schedule``: lottery | finetune | lr_rewind | scratch."""

    levels: int = 24
    fraction: float = 0.2  # of the remaining prunable weights, per level
    criterion: str = "magnitude"  # magnitude | saliency | random
    largest_first: bool = False
    scope: str = "global"  # global | layer
    ignore: tuple[str, ...] = ()  # regexes over parameter paths never pruned
    saliency_batches: int = 1
    schedule: str = "lottery"
    rewind_iteration: int = 0
    finetune_lr: float = 0.1
    finetune_epochs: int = 0  # 0: same as optim.epochs
    oneshot_levels: tuple[int, ...] = ()  # k values for the one-shot branch (density 0.8^k)
    redense_epochs: int = 0
    redense_lr: float = 0.1


@dataclass(frozen=True)
class RunConfig:
    """Seeds and execution. Only ``seeds`` and ``first_seed`` change results."""

    seeds: int = 1
    first_seed: int = 0
    workdir: str = "runs"
    seeds_per_chunk: int = 0  # 0: all seeds at once
    eval_batch_size: int = 1000
    eval_every_epochs: int = 1  # test-set evaluation period (test_acc_best is over these epochs)
    checkpoint_every_epochs: int = 0  # 0: only at the end of each level
    verbosity: int = 1  # 0 quiet, 1 progress, 2 verbose
    epoch_loop: str = "auto"  # scan | steps | auto (steps for conv nets on CPU; see train.Engine)
    compilation_cache: str | None = None


@dataclass(frozen=True)
class Config:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.run.first_seed, self.run.first_seed + self.run.seeds))


NON_RESULT_FIELDS = frozenset(
    {
        "name",
        "description",
        "run.workdir",
        "run.seeds_per_chunk",
        "run.eval_batch_size",
        "run.checkpoint_every_epochs",
        "run.verbosity",
        "run.epoch_loop",
        "run.compilation_cache",
        "data.data_dir",
        "data.download",
        "data.source",
        # More levels extend a run: the levels already computed do not change.
        "pruning.levels",
    }
)


class ConfigError(ValueError):
    """A bad override key or value."""


def to_dict(config: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type, values: dict) -> Any:
    """Rebuild a dataclass tree from :func:`to_dict` output (unknown keys are an error)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value)
        else:
            kwargs[name] = _coerce(value, hint, name)
    return cls(**kwargs)


def flat_keys(config: Config) -> dict[str, Any]:
    """Every dotted key of the tree with its type hint."""
    out = {}

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
            else:
                out[f"{prefix}{f.name}"] = hint

    walk(type(config), "")
    return out


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (a string from the command line, or a JSON value) to ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
    if origin is tuple:
        item_type = args[0] if args else str
        if isinstance(value, str):
            text = value.strip().strip("()[]")
            items = [v.strip() for v in text.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}: expected a comma-separated list of {_type_name(item_type)}, got {value!r}")
        return tuple(_coerce(v, item_type, key) for v in items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected bool (true/false), got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected int, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected int, got {value!r}") from None
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")


def override(config: Config, assignments: list[str] | dict[str, Any]) -> Config:
    """Apply ``key=value`` assignments (dotted keys) and return a new config."""
    if isinstance(assignments, dict):
        items = list(assignments.items())
    else:
        items = []
        for text in assignments:
            if "=" not in text:
                raise ConfigError(f"--set expects key=value, got {text!r}")
            key, value = text.split("=", 1)
            items.append((key.strip(), value.strip()))
    valid = flat_keys(config)
    for key, value in items:
        if key not in valid:
            listing = "\n  ".join(f"{k} ({_type_name(t)})" for k, t in valid.items())
            raise ConfigError(f"unknown config key {key!r}. Valid keys:\n  {listing}")
        coerced = _coerce(value, valid[key], key)
        config = _replace_path(config, key.split("."), coerced)
    return config


def _replace_path(node: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(node, **{path[0]: value})
    child = getattr(node, path[0])
    return dataclasses.replace(node, **{path[0]: _replace_path(child, path[1:], value)})


def result_fields(config: Config) -> dict[str, Any]:
    """The settings that change results, flattened, plus the result-format version."""
    flat = {}

    def walk_leaf(key, v):
        if key not in NON_RESULT_FIELDS:
            flat[key] = v

    def rec(prefix, d):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                rec(key + ".", v)
            else:
                walk_leaf(key, v)

    rec("", to_dict(config))
    flat["result_format_version"] = RESULT_FORMAT_VERSION
    return flat


def result_hash(config: Config) -> str:
    """A 12-hex-digit hash of :func:`result_fields` (stable across processes and machines)."""
    payload = json.dumps(result_fields(config), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def load_json(path: str) -> Config:
    with open(path) as handle:
        return from_dict(Config, json.load(handle))
