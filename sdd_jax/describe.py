"""What a run is, in words and in its folder name, generated from its resolved config.

* :func:`describe` — one line for people: ``"LeNet-300-100 · MNIST 4,000 · 20% random labels ·
  lottery k=0 · 60 epochs · 2 seeds"``. It is written as ``config.json``'s ``description``,
  printed by ``sdd-jax show`` and used as the figures' title, so that a variant
  (``lenet_mnist-noise40``) or a ``--set`` override never carries the base preset's words.
* :func:`slug` — the short, deterministic part of a run folder's name that says how a config
  departs from a reference config (its named preset): one token per differing axis, in the
  order of :data:`SLUG_AXES`. The tokens of the noise, schedule and dtype axes are the preset
  variants' names (``noise40``, ``asym20``, ``pairflip40``, ``finetune``, ``bf16``, ...), so
  ``lenet_mnist --set noise.rate=0.4`` and the variant ``lenet_mnist-noise40`` get the same
  folder. :func:`sdd_jax.runid.run_path` builds the name; the hash beside it still decides a
  run's identity.

Host only: the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sdd_jax.config import Config

# ----- describe --------------------------------------------------------------------------------

_DATA_NAMES = {
    "mnist_embedded": "MNIST",
    "mnist": "MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "tiny_imagenet": "Tiny-ImageNet",
    "mnist1d": "MNIST-1D",
    "fashion_mnist": "Fashion-MNIST",
}

_NOISE_WORDS = {
    "random_labels": "random labels",
    "symmetric": "symmetric noise",
    "asymmetric": "asymmetric noise",
    "pairflip": "pair-flip noise",
}


def percent(fraction: float) -> str:
    """``0.4 -> "40"``, ``0.125 -> "12.5"`` (a fraction as a percentage, shortest form)."""
    return format(round(100.0 * float(fraction), 6), "g")


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``plural(1, "seed") -> "1 seed"``, ``plural(2, "seed") -> "2 seeds"`` (thousands separated)."""
    return f"{count:,} {noun if count == 1 else (nouns or noun + 's')}"


def spans(levels) -> str:
    """``[3, 4, 5, 9] -> "3-5, 9"`` (sorted integers as runs of consecutive values)."""
    runs: list[list[int]] = []
    for level in sorted(levels):
        if runs and level == runs[-1][1] + 1:
            runs[-1][1] = level
        else:
            runs.append([level, level])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def model_words(config: Config) -> str:
    """``LeNet-300-100``, ``MLP 512-256``, ``ResNet-18``, ``VGG-16-BN`` (``× 0.25 width`` when
    thinned); a registered family's own name as it is."""
    m = config.model
    name = m.name
    if name == "lenet_300_100":
        text = "LeNet-300-100"
    elif name == "mlp":
        text = "MLP " + ("-".join(str(w) for w in m.widths) or "linear")
    elif re.fullmatch(r"resnet\d+", name):
        text = f"ResNet-{name[6:]}"
    elif re.fullmatch(r"vgg\d+", name):
        text = f"VGG-{name[3:]}-BN"
    else:
        text = name
    if m.width_multiplier != 1.0:
        text += f" ×{m.width_multiplier:g} width"
    return text


def data_words(config: Config) -> str:
    """``MNIST 4,000`` (the kept training examples; the name alone when all are kept)."""
    d = config.data
    text = _DATA_NAMES.get(d.name, d.name)
    if d.train_size is not None:
        text += f" {d.train_size:,}"
    if d.validation_size:
        text += f" (+{d.validation_size:,} validation)"
    return text


def noise_words(config: Config) -> str:
    """``20% random labels``, ``40% asymmetric noise``, ``clean labels``."""
    n = config.noise
    if n.kind == "none" or n.rate == 0:
        return "clean labels"
    return f"{percent(n.rate)}% {_NOISE_WORDS.get(n.kind, n.kind)}"


def schedule_words(config: Config) -> str:
    """``lottery k=0`` (rewind iteration k), ``finetune lr 0.1``, ``LR rewinding``, ``from scratch``."""
    p = config.pruning
    if p.schedule == "lottery":
        return f"lottery k={p.rewind_iteration}"
    if p.schedule == "finetune":
        return f"finetune lr {p.finetune_lr:g}"
    if p.schedule == "lr_rewind":
        return "LR rewinding"
    if p.schedule == "scratch":
        return "from scratch"
    return p.schedule


def pruning_words(config: Config) -> str:
    """What departs from global magnitude pruning of 20% per level (empty when nothing does):
    ``saliency pruning, per layer, 30% per level``."""
    p = config.pruning
    parts = []
    if p.criterion != "magnitude":
        parts.append(f"{p.criterion} pruning")
    if p.largest_first:
        parts.append("largest first")
    if p.scope != "global":
        parts.append("per layer")
    if round(p.fraction, 9) != 0.2:
        parts.append(f"{percent(p.fraction)}% per level")
    return ", ".join(parts)


def describe_parts(config: Config) -> list[str]:
    """The parts of :func:`describe`'s line, in order (a comparison's title keeps the parts its
    configurations share)."""
    parts = [model_words(config), data_words(config), noise_words(config), schedule_words(config)]
    extra = pruning_words(config)
    if extra:
        parts.append(extra)
    if config.model.dtype != "float32":
        parts.append(f"{config.model.dtype} compute")
    parts.append(plural(config.optim.epochs, "epoch"))
    parts.append(plural(config.run.seeds, "seed"))
    return parts


def describe(config: Config) -> str:
    """One line saying what the run of ``config`` is: model · data · noise · schedule [· pruning]
    [· dtype] · epochs · seeds, e.g. ``"LeNet-300-100 · MNIST 4,000 · 20% random labels · lottery
    k=0 · 60 epochs · 2 seeds"``. Every part is read from the config itself (never from a preset's
    hand-written text), so it is right for every variant and ``--set`` override."""
    return " · ".join(describe_parts(config))


# ----- slug ------------------------------------------------------------------------------------

_NOISE_PREFIX = {"random_labels": "noise", "symmetric": "sym", "asymmetric": "asym", "pairflip": "pairflip"}


def _noise_token(c: Config) -> str:
    n = c.noise
    if n.kind == "none" or n.rate == 0:
        return "clean"
    return f"{_NOISE_PREFIX.get(n.kind, n.kind)}{percent(n.rate)}"


# (what is compared, its token): one axis each, in folder-name order. The noise, schedule and
# dtype tokens are the preset variants' names.
SLUG_AXES: tuple[tuple[Callable[[Config], object], Callable[[Config], str]], ...] = (
    (lambda c: c.data.name, lambda c: c.data.name),
    (lambda c: c.data.train_size, lambda c: f"n{c.data.train_size if c.data.train_size is not None else 'all'}"),
    (lambda c: c.model.name, lambda c: c.model.name),
    (lambda c: c.model.width_multiplier, lambda c: f"w{c.model.width_multiplier:g}"),
    (lambda c: (c.noise.kind if c.noise.rate else "none", c.noise.rate if c.noise.kind != "none" else 0), _noise_token),
    (lambda c: c.pruning.schedule, lambda c: c.pruning.schedule),
    (lambda c: c.pruning.rewind_iteration, lambda c: f"k{c.pruning.rewind_iteration}"),
    (lambda c: c.pruning.criterion, lambda c: c.pruning.criterion),
    (lambda c: c.pruning.largest_first, lambda c: "largestfirst" if c.pruning.largest_first else "smallestfirst"),
    (lambda c: c.pruning.scope, lambda c: "layerwise" if c.pruning.scope == "layer" else c.pruning.scope),
    (lambda c: round(c.pruning.fraction, 9), lambda c: f"prune{percent(c.pruning.fraction)}"),
    (lambda c: c.model.dtype, lambda c: {"bfloat16": "bf16", "float32": "fp32"}.get(c.model.dtype, c.model.dtype)),
    (lambda c: c.optim.epochs, lambda c: f"e{c.optim.epochs}"),
    (lambda c: c.run.seeds, lambda c: f"seeds{c.run.seeds}"),
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.,+=]")


def slug_tokens(config: Config, reference: Config) -> list[str]:
    """One token per axis of :data:`SLUG_AXES` on which ``config`` differs from ``reference``, in
    that order (characters a folder name may not hold replaced by ``_``)."""
    return [_UNSAFE.sub("_", token(config)) for value, token in SLUG_AXES if value(config) != value(reference)]


def slug(config: Config, reference: Config) -> str:
    """:func:`slug_tokens` joined by ``-`` (empty when ``config`` departs from ``reference`` on no
    axis), e.g. ``"noise40-finetune"``."""
    return "-".join(slug_tokens(config, reference))
