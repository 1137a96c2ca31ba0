"""The grid of a study: its axes, its points, its identity and ``study.json``. Nothing here trains
or writes but :func:`write_study_json`; the runner is :mod:`sdd_jax.study`.

A study is a run preset (or a study preset of :mod:`sdd_jax.presets.studies`: its base, overrides,
grid and seeds) and axes ``KEY=V1,V2,...``; its points are the product of the axes, each trained
with the same seeds. An axis is

* a **replica axis** (:data:`REPLICA_KEYS`: the noise rate, kind and draw, the pruning criterion
  and scope, and ``init`` = ``lottery | reinit``): its values only change the training labels, the
  masks or the start weights, so the points that differ only there train as one compiled program,
  stacked on the engine's replica axis (a replica is a point and a seed);
* a **program axis** (any other setting that changes results: model, data, schedule, epochs,
  learning rate, dtype, ...): the points that differ there are separate programs, run one after
  another.

Every point is the run of its own config (:class:`Point`), in the very directory ``sdd-jax run``
would write for it with ``run.workdir=<study>/points``; an ``init=reinit`` point is the ``reinit``
branch of its lottery partner's run (the point with the same other coordinates).

The study directory is ``<workdir>/<name>-study-<hash>``: ``<name>`` is the study preset's (or the
run preset's), and the hash covers the base config's result fields minus the axis keys, plus the
axis keys (:func:`study_hash`): adding a value to an axis keeps the directory, a new axis is a new
study. :func:`resolve_study` checks everything (keys, values, every point's config) and raises
:class:`~sdd_jax.config.ConfigError` with one line naming the bad setting before anything exists.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdd_jax import presets, storage
from sdd_jax.atomic import atomic_write_json
from sdd_jax.checkpoints import valid_name
from sdd_jax.choices import did_you_mean
from sdd_jax.compare_keys import KeysError, check_keys, default_panel, key_names, remedy, text
from sdd_jax.compare_series import Series
from sdd_jax.config import Config, ConfigError, flat_keys, override
from sdd_jax.identity import INITS, REINIT_BRANCH
from sdd_jax.presets import studies
from sdd_jax.results import MAIN_BRANCH
from sdd_jax.runid import NON_RESULT_FIELDS, result_fields, run_path
from sdd_jax.validate import validate

INIT_AXIS = studies.INIT_AXIS
# The axes whose points share one compiled program (stacked replicas); every other key is a program axis.
REPLICA_KEYS = ("noise.rate", "noise.kind", "noise.seed", "pruning.criterion", "pruning.scope", INIT_AXIS)
# Result settings that are not axes: every point trains the same seeds (--seeds).
NOT_AXES = ("run.seeds", "run.first_seed")
STUDY_FILE = "study.json"
POINTS_DIR = "points"
STUDY_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Axis:
    """One axis of the grid: a dotted config key (or ``init``) and its values (coerced to the
    field's type, in the given order)."""

    key: str
    values: tuple[Any, ...]

    @property
    def kind(self) -> str:
        """``replica`` (one compiled program, stacked) or ``program`` (separate programs)."""
        return "replica" if self.key in REPLICA_KEYS else "program"


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of the grid: its coordinates (every axis key and value, in axis order), the config
    of its run (``run.workdir`` = the study's ``points/`` folder) and its ``init``."""

    coords: tuple[tuple[str, Any], ...]
    config: Config
    init: str = "lottery"

    @property
    def branch(self) -> str:
        """The label of its rows in its run directory: ``imp``, or ``reinit`` (the reinit branch)."""
        return REINIT_BRANCH if self.init == "reinit" else MAIN_BRANCH

    @property
    def program(self) -> tuple[tuple[str, Any], ...]:
        """Its program-axis coordinates (the points with the same ones train as one program)."""
        return tuple((k, v) for k, v in self.coords if k not in REPLICA_KEYS)

    @property
    def run_dir(self) -> Path:
        """The run directory its lone run writes (for a reinit point: its partner's)."""
        return run_path(self.config.run.workdir, self.config)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={text(v)}" for k, v in self.coords) or self.config.name


@dataclasses.dataclass(frozen=True)
class Study:
    """A resolved study: ``base`` (the preset with its overrides), its ``axes``, the study
    directory ``path`` and the ``points`` (grid order: the last axis varies fastest)."""

    name: str
    preset: str
    description: str
    figure: str
    by: str
    panel: str | None
    distance: bool
    base: Config
    axes: tuple[Axis, ...]
    path: Path
    points: tuple[Point, ...]

    @property
    def seeds(self) -> list[int]:
        return self.base.seed_list

    def programs(self) -> list[list[Point]]:
        """The points grouped by their program-axis coordinates, in grid order."""
        groups: dict[tuple, list[Point]] = {}
        for point in self.points:
            groups.setdefault(point.program, []).append(point)
        return list(groups.values())

    def partner(self, point: Point) -> Point:
        """The lottery point with the same other coordinates (itself for a lottery point)."""
        if point.init != "reinit":
            return point
        coords = tuple((k, "lottery" if k == INIT_AXIS else v) for k, v in point.coords)
        return next(p for p in self.points if p.coords == coords)

    def record(self, done: Mapping[Point, bool]) -> dict:
        """The content of ``study.json`` (see docs: the study directory), ``done`` per point."""
        return {
            "format": STUDY_FORMAT,
            "name": self.name,
            "preset": self.preset,
            "figure": self.figure,
            "description": self.description,
            "by": self.by,
            "panel": self.panel,
            "distance": self.distance,
            "axes": [{"key": a.key, "values": list(a.values), "kind": a.kind} for a in self.axes],
            "seeds": self.seeds,
            "points": [
                {
                    "coords": dict(p.coords),
                    "run_dir": storage.relative(p.run_dir, self.path),
                    "branch": p.branch,
                    "done": bool(done.get(p, False)),
                }
                for p in self.points
            ],
        }


def write_study_json(study: Study, done: Mapping[Point, bool]) -> Path:
    """Write ``<study>/study.json`` atomically; returns its path."""
    path = study.path / STUDY_FILE
    atomic_write_json(path, study.record(done), indent=2)
    return path


# ----- parsing ------------------------------------------------------------------------------------


def split_values(text: str) -> list[str]:
    """``"0.2,0.4"`` -> ``["0.2", "0.4"]``; commas inside parentheses or brackets stay (a tuple
    value: ``model.widths=(300,100),(32)``)."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return [v for v in values if v]


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``--grid KEY=V1,V2,...`` items as ``(key, raw values)``, in order. :class:`ConfigError` for a
    malformed item, an empty axis or a key given twice."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        values = split_values(text)
        if not values:
            raise ConfigError(f"--grid {key}: the axis has no values (give KEY=V1,V2,...)")
        if any(k == key for k, _ in axes):
            raise ConfigError(f"--grid {key} is given twice: give one axis per key")
        axes.append((key, values))
    return axes


def _check_key(key: str, valid: Mapping[str, Any]) -> None:
    if key == INIT_AXIS:
        return
    if key not in valid:
        raise ConfigError(f"--grid: unknown key {key!r}{did_you_mean(key, [*valid, INIT_AXIS], n=3)}")
    if key in NOT_AXES:
        raise ConfigError(f"--grid {key}: every point trains the same seeds; give them with --seeds")
    if key in NON_RESULT_FIELDS:
        raise ConfigError(f"--grid {key}: this setting does not change results, so it cannot be an axis (use --set)")


def _coerce_values(base: Config, key: str, raw: Sequence[Any]) -> tuple[Any, ...]:
    if key == INIT_AXIS:
        values = tuple(str(v).strip() for v in raw)
        bad = [v for v in values if v not in INITS]
        if bad:
            raise ConfigError(f"--grid init: {bad[0]!r} is not an init; choose from {', '.join(INITS)}")
    else:
        values = []
        for value in raw:
            try:
                config = override(base, {key: value})
            except ConfigError as err:
                raise ConfigError(f"--grid {err}") from None
            values.append(functools.reduce(getattr, key.split("."), config))
        values = tuple(values)
    if not values:
        raise ConfigError(f"--grid {key}: the axis has no values")
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise ConfigError(f"--grid {key}: the value {text(repeated[0])} is given twice")
    return values


def _set_keys(overrides: Sequence[str]) -> list[str]:
    return [item.split("=", 1)[0].strip() for item in overrides if "=" in item]


def study_hash(base: Config, axis_keys: Sequence[str]) -> str:
    """12 hex digits of SHA-256 over the base config's result fields minus ``axis_keys``, plus the
    axis keys (sorted): adding a value to an axis keeps it, another axis changes it."""
    fields = {k: v for k, v in result_fields(base).items() if k not in axis_keys}
    payload = json.dumps({"fields": fields, "axes": sorted(axis_keys)}, sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def resolve_study(
    preset: str,
    grid: Sequence[str] = (),
    *,
    overrides: Sequence[str] = (),
    seeds: int | None = None,
    workdir: str | None = None,
    verbosity: int | None = None,
    by: str | None = None,
    panel: str | None = None,
    distance: bool | None = None,
) -> Study:
    """The study of ``preset`` (a run preset, variants allowed, or a study preset) with the
    command line's ``--grid`` items (``grid``: an axis of the preset's grid with the same key is
    replaced, another key adds an axis), ``--set`` ``overrides``, ``seeds`` per point, ``workdir``
    (default ``run.workdir``) and ``verbosity``. Writes nothing.

    ``by``, ``panel`` and ``distance`` say how its comparison is drawn (``sdd-jax compare``'s
    options, kept in ``study.json``): ``by`` defaults to the study preset's, else the first axis
    with several values; ``panel`` to the study preset's, else the first other axis with several
    values (:func:`sdd_jax.compare_keys.default_panel`); ``distance`` to the study preset's.
    Whether they tell every point apart is :func:`drawing_problem`'s question.

    Raises :class:`~sdd_jax.config.ConfigError` (one line) for an unknown preset or key (with the
    closest names), a value of the wrong type, an empty axis, an axis or a value given twice, a
    key given both by ``--grid`` and ``--set``, a setting that cannot be an axis, an ``init`` value
    other than lottery/reinit or ``reinit`` without ``lottery``, an unknown ``by`` or ``panel``
    key, and any point whose config :func:`sdd_jax.validate.validate` rejects (named by its
    coordinates).
    """
    for option, key in (("--by", by), ("--panel", panel)):
        if key is not None and key not in key_names():
            raise ConfigError(f"{option} {key!r} is not a key{did_you_mean(key, key_names())}")
    spec = studies.get_study(preset) if studies.is_study(preset) else None
    base_name = spec.base if spec else preset
    try:
        base = presets.get(base_name)
    except KeyError as err:
        extra = "" if spec else f"; study presets: {', '.join(studies.STUDIES)}"
        raise ConfigError(f"{err.args[0] if err.args else err}{extra}") from None
    cli_axes = parse_grid(grid)
    axes: list[tuple[str, Sequence[Any]]] = [(k, list(v)) for k, v in (spec.grid if spec else ())]
    for key, values in cli_axes:
        replaced = [i for i, (k, _) in enumerate(axes) if k == key]
        if replaced:
            axes[replaced[0]] = (key, values)
        else:
            axes.append((key, values))
    if not axes:
        raise ConfigError(f"{preset} has no grid: give at least one --grid KEY=V1,V2,...")
    valid = flat_keys(base)
    for key, _ in axes:
        _check_key(key, valid)
    keys = [k for k, _ in axes]
    both = [k for k in _set_keys(overrides) if k in keys]
    if both:
        raise ConfigError(f"{both[0]} is given both by --grid and by --set: give it once")
    extra = [*(spec.overrides if spec else ()), *overrides]
    seeds = seeds if seeds is not None else (spec.seeds if spec else None)
    if seeds is not None:
        extra.append(f"run.seeds={seeds}")
    if workdir is not None:
        extra.append(f"run.workdir={workdir}")
    if verbosity is not None:
        extra.append(f"run.verbosity={verbosity}")
    base = override(base, extra)
    resolved = tuple(Axis(key, _coerce_values(base, key, values)) for key, values in axes)
    _check_init(base, resolved)
    name = spec.name if spec else base_name
    path = storage.absolute(base.run.workdir) / f"{name}-study-{study_hash(base, keys)}"
    if not valid_name(path.name):
        raise ConfigError(f"study name {name!r} cannot name a folder: use letters, digits and _ . , + = -")
    points = tuple(_point(base, resolved, values, path) for values in itertools.product(*(a.values for a in resolved)))
    sizes = [(a.key, len(a.values)) for a in resolved]
    if by is None:
        by = spec.colour_axis if spec else next((k for k, n in sizes if n > 1), keys[0])
    if panel is None:
        panel = spec.panel if spec and spec.panel else default_panel(sizes, by)
    return Study(
        name=name,
        preset=base_name,
        description=spec.description if spec else f"{base_name} over {', '.join(keys)}",
        figure=spec.figure if spec else "",
        by=by,
        panel=panel,
        distance=distance if distance is not None else (spec.distance if spec else False),
        base=base,
        axes=resolved,
        path=path,
        points=points,
    )


def drawing_problem(study: Study) -> str | None:
    """Why the study's comparison (by its ``by`` and ``panel``) cannot tell every point apart,
    with a ``sdd-jax compare`` command that draws it (or parts of it, with ``--where``), in one
    line; ``None`` when it can. Read from the points' configs: nothing needs to be trained."""
    series = [Series(p.run_dir, p.run_dir, p.branch, p.config, (), dict(p.coords)) for p in study.points]
    try:
        check_keys(series, study.by, study.panel)
    except KeysError as err:
        keys = f"--by {study.by}" + (f" --panel {study.panel}" if study.panel else "")
        return f"the comparison by {keys} cannot be drawn: {err}{remedy(err, [study.path])}"
    return None


def _check_init(base: Config, axes: Sequence[Axis]) -> None:
    inits = next((a.values for a in axes if a.key == INIT_AXIS), ("lottery",))
    if "reinit" not in inits:
        return
    if "lottery" not in inits:
        raise ConfigError("--grid init: reinit needs lottery in the axis too (a reinit point uses its lottery masks)")
    for axis in axes:
        if axis.key in ("pruning.schedule", "pruning.rewind_iteration"):
            raise ConfigError(f"--grid init=reinit cannot go with a {axis.key} axis: run those as separate studies")
    p = base.pruning
    if p.schedule == "finetune" or (p.schedule != "lottery" and p.rewind_iteration):
        raise ConfigError(
            f"--grid init=reinit: a reinit point retrains as a lottery level beside its partner, which "
            f"pruning.schedule={p.schedule} does not (use lottery, or lr_rewind/scratch with pruning.rewind_iteration=0)"
        )


def _point(base: Config, axes: Sequence[Axis], values: Sequence[Any], path: Path) -> Point:
    coords = tuple((a.key, v) for a, v in zip(axes, values))
    settings = {k: v for k, v in coords if k != INIT_AXIS}
    config = override(base, {**settings, "run.workdir": str(path / POINTS_DIR)})
    point = Point(coords=coords, config=config, init=dict(coords).get(INIT_AXIS, "lottery"))
    try:
        validate(config)
    except ConfigError as err:
        raise ConfigError(f"study point {point.label}: {err}") from None
    return point
