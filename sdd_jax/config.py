"""One frozen dataclass tree for every setting of a run, with dotted overrides and a stable hash.

``Config`` holds ``data``, ``noise``, ``model``, ``optim``, ``pruning`` and ``run``. Presets in
``sdd_jax.presets`` build a ``Config``; the command line applies ``--set key=value`` through
:func:`override`; :func:`sdd_jax.validate.validate` checks every field's type and range and
rejects settings that cannot run before anything is written. The named choices of the fields
are in :mod:`sdd_jax.choices`.
Which fields identify a run's results is decided in :mod:`sdd_jax.rundir`.

Units: iterations are SGD steps counted from the start of training (an epoch is
``ceil(N / batch_size)`` of them), epochs are passes over the training set, fractions lie in
[0, 1], learning rates are per-iteration step sizes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .choices import did_you_mean


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
    train_size: int | None = None  # examples kept from the training split (None: all)
    subset_mode: str = "first"  # first | random
    class_balanced: bool = False
    validation_size: int = 0  # examples held out of the training split (clean labels)
    test_size: int | None = None  # examples kept from the test split (None: all)
    subset_seed: int = 0
    augment: bool = False  # pad-4 random crop + horizontal flip (CIFAR-like data)


@dataclass(frozen=True)
class NoiseConfig:
    """Label noise on the training split. ``kind``: none | random_labels | symmetric |
    asymmetric | pairflip. ``random_labels`` is what the paper's published commands call
    "symmetric" (the new label may equal the true one)."""

    kind: str = "none"
    rate: float = 0.0  # fraction of training examples selected for relabelling
    seed: int = 0  # seed of the ``noise`` stream
    exact: bool = True  # symmetric: corrupt exactly ceil(rate*N) examples
    asymmetric_mode: str = "superclass"  # superclass | reference_blocks (CIFAR-100)


@dataclass(frozen=True)
class ModelConfig:
    """``name``: lenet_300_100 | mlp | resnet10/18/34/50/101/152 | vgg11/13/16/19, or a name of any
    registered family (:mod:`sdd_jax.models.registry`)."""

    name: str = "lenet_300_100"
    widths: tuple[int, ...] = (300, 100)  # hidden widths for ``mlp``
    width_multiplier: float = 1.0  # channel/width scale (fractions give thin nets for tests)
    # "zeros" as the paper; "torch_default" as the official code (PyTorch's uniform bias init).
    bias_init: str = "zeros"
    dtype: str = (
        "float32"  # compute dtype: float32 | bfloat16 (parameters, optimiser state and BN statistics stay float32)
    )


@dataclass(frozen=True)
class OptimConfig:
    """SGD as PyTorch: momentum without dampening, weight decay added to the gradient."""

    lr: float = 0.1  # step size per iteration
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0  # coefficient of the L2 term added to the gradient
    batch_size: int = 128  # examples per iteration
    epochs: int = 200  # epochs of one training run (one pruning level)
    milestones: tuple[int, ...] = ()  # epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # epochs of linear warm-up (fractions allowed)

    def constant_lr(self, lr: float, epochs: int) -> OptimConfig:
        """This optimiser at the fixed learning rate ``lr`` for ``epochs`` epochs (no milestones,
        no warm-up): finetuning and re-dense training, as the reference code's fixed-lr runs."""
        return dataclasses.replace(self, lr=lr, milestones=(), warmup_epochs=0.0, epochs=epochs)


@dataclass(frozen=True)
class PruningConfig:
    """Iterative pruning. ``schedule``: one of :data:`sdd_jax.choices.SCHEDULES` (see :mod:`sdd_jax.imp`)."""

    levels: int = 24  # pruning levels after the dense level 0
    fraction: float = 0.2  # of the remaining prunable weights, per level
    criterion: str = "magnitude"  # magnitude | saliency | random, or any registered (sdd_jax.criteria)
    largest_first: bool = False
    scope: str = "global"  # global | layer
    ignore: tuple[str, ...] = ()  # regexes over parameter paths never pruned
    saliency_batches: int = 1  # batches whose mean gradient gives saliency scores
    schedule: str = "lottery"
    rewind_iteration: int = 0  # iteration whose weights θk later levels restart from (lottery)
    finetune_lr: float = 0.1
    finetune_epochs: int = 0  # epochs per finetuning level (0: optim.epochs)
    redense_epochs: int = 0  # epochs of dense training after a level (re-dense branch)
    redense_lr: float = 0.1


@dataclass(frozen=True)
class RunConfig:
    """Seeds and execution. Only ``seeds`` and ``first_seed`` change results."""

    seeds: int = 1  # training seeds run together
    first_seed: int = 0  # seeds are first_seed .. first_seed + seeds - 1
    workdir: str = "runs"
    seeds_per_chunk: int = 0  # seeds (in a study: replicas) on the device at a time (0: all at once)
    eval_batch_size: int = 1000  # examples per evaluation batch
    eval_every_epochs: int = 1  # test-set evaluation period in epochs (test_acc_best is over these)
    checkpoint_every_epochs: int = 0  # in-level checkpoint period in epochs (0: level ends only)
    verbosity: int = 1  # 0 quiet, 1 progress, 2 verbose
    epoch_loop: str = "auto"  # scan | steps | auto (steps for conv nets on CPU; see engine.Engine)
    seed_execution: str = "auto"  # vmap | sequential | auto (sequential for conv nets on GPUs)
    seed_devices: int = 0  # devices the seeds are split over (0: as many as divide run.seeds)
    data_devices: int = 1  # devices each seed's batch is split over (the mesh's data axis)
    compilation_cache: str | None = None
    distributed: str = "auto"  # auto | on | off: jax.distributed.initialize (auto: multi-host TPU slice)
    log_to: tuple[str, ...] = ("tensorboard",)  # live metrics: tensorboard, wandb, mlflow (empty: none)


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


class ConfigError(ValueError):
    """A bad override key or value, or a setting :func:`sdd_jax.validate.validate` rejects (one
    line naming it)."""


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


def type_name(hint) -> str:
    """A field type as the messages name it (``int``, ``tuple[int, ...]``, ``str | None``)."""
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
        raise ConfigError(f"{key}: expected {type_name(hint)}, got {value!r}")
    if origin is tuple:
        item_type = args[0] if args else str
        if isinstance(value, str):
            text = value.strip()
            if text[:1] in ("(", "["):  # an enclosed list: the brackets must close it
                if len(text) < 2 or text[-1] != {"(": ")", "[": "]"}[text[0]]:
                    raise ConfigError(f"{key}: {value!r} opens a bracket it does not close: write a,b or (a,b)")
                text = text[1:-1]
            items = [v.strip() for v in text.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}: expected a comma-separated list of {type_name(item_type)}, got {value!r}")
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
            hint = did_you_mean(key, valid, n=3)
            if hint:
                raise ConfigError(f"unknown config key {key!r}{hint}")
            listing = "\n  ".join(f"{k} ({type_name(t)})" for k, t in valid.items())
            raise ConfigError(f"unknown config key {key!r}. Valid keys:\n  {listing}")
        coerced = _coerce(value, valid[key], key)
        config = _replace_path(config, key.split("."), coerced)
    return config


def _replace_path(node: Any, path: list[str], value: Any) -> Any:
    if len(path) == 1:
        return dataclasses.replace(node, **{path[0]: value})
    child = getattr(node, path[0])
    return dataclasses.replace(node, **{path[0]: _replace_path(child, path[1:], value)})


def load_json(path: str) -> Config:
    """The config stored in the local file ``path`` (a run's ``config.json``; one on Cloud Storage:
    :func:`sdd_jax.runid.load_config`); :class:`ConfigError` naming the file when it is not valid
    JSON or not a config this version reads."""
    with open(path, "rb") as handle:
        return config_from_json(handle.read(), path)


def config_from_json(data: bytes, path: Any) -> Config:
    """The config of the UTF-8 JSON ``data`` read from the file ``path`` (named in the
    :class:`ConfigError` raised when it is not valid JSON or not a config this version reads)."""
    try:
        return from_dict(Config, json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"{path} is not valid JSON ({err}): the run's config is lost; rerun "
            "`sdd-jax run` with the run's preset and settings to write it again"
        ) from None
    except (ConfigError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path} does not hold a config this version can read: {err}") from None
