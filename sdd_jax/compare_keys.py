"""The keys ``sdd-jax compare`` tells series (:class:`sdd_jax.compare_series.Series`) apart by.

A key is

* a dotted config key (``noise.rate``), read from the series' ``config.json``;
* an identity column of :mod:`sdd_jax.identity` (``noise_rate``, ``criterion``, ``init``, ...);
* ``branch``, the label of the rows.

An identity column and its config key are one *setting* (:func:`setting`: ``criterion`` and
``pruning.criterion`` are ``pruning.criterion``), and every list of settings here names each
once. :func:`check_keys` refuses ``by``/``panel`` keys that do not tell every series apart
(:class:`KeysError`); :func:`suggestion` finds keys that do (with ``--where KEY=VALUE`` filters
for the settings beyond two), and :func:`differing` lists the settings series differ in, so that
a comparison can say what else differs besides the keys it draws.

Host only: the standard library.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterable, Sequence
from typing import Any

from sdd_jax.choices import did_you_mean
from sdd_jax.compare_series import Series
from sdd_jax.config import Config, flat_keys
from sdd_jax.identity import IDENTITY_COLUMNS, identity_columns
from sdd_jax.runid import result_fields

# The setting each identity column holds: its config key (the preset's name: "preset"; init is
# the init axis of a study).
TWINS = {
    "preset": "preset",
    "model": "model.name",
    "dataset": "data.name",
    "noise_kind": "noise.kind",
    "noise_rate": "noise.rate",
    "criterion": "pruning.criterion",
    "schedule": "pruning.schedule",
    "init": "init",
}
# The config keys (and the init axis) whose value an identity column already holds.
COVERED = ("name", *(v for v in TWINS.values() if v != "preset"))


class KeysError(ValueError):
    """``by``/``panel`` do not tell every series apart (one line; :attr:`series`, :attr:`by` and
    :attr:`panel` say which, for :func:`suggestion`)."""

    def __init__(self, message: str, series: Sequence[Series], by: str, panel: str | None):
        super().__init__(message)
        self.series, self.by, self.panel = list(series), by, panel


@functools.cache
def _config_keys() -> tuple[str, ...]:
    return tuple(flat_keys(Config()))


def key_names() -> tuple[str, ...]:
    """Every key a series can be told apart by."""
    return ("branch", *IDENTITY_COLUMNS, *_config_keys())


def setting(key: str) -> str:
    """The setting ``key`` names, one name per setting: ``criterion`` -> ``pruning.criterion``,
    ``name`` -> ``preset``; any other key is its own."""
    return "preset" if key == "name" else TWINS.get(key, key)


def key_value(series: Series, key: str) -> Any:
    """The value of ``key`` for ``series``; ``ValueError`` (one line) for an unknown key."""
    if key == "branch":
        return series.branch
    if key in IDENTITY_COLUMNS:
        return identity_columns(series.config, series.branch)[key]
    if key in _config_keys():
        return functools.reduce(getattr, key.split("."), series.config)
    raise ValueError(
        f"unknown key {key!r}{did_you_mean(key, key_names())}: use a dotted config key (noise.rate), "
        f"an identity column ({', '.join(IDENTITY_COLUMNS)}) or branch"
    )


def text(value: Any) -> str:
    """A value as the command line writes it: ``0.2``, ``lottery``, ``(300,100)``."""
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(text(v) for v in value) + ")"
    return format(value, "g") if isinstance(value, float) else str(value)


def ordered_values(values: Sequence[Any]) -> list[Any]:
    """Distinct values, ascending when all are numbers, else in order of first appearance."""
    distinct = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        return sorted(distinct)
    return distinct


def label(series: Series) -> str:
    """A series in words: a study point by its coordinates, else its run directory (and branch)."""
    return " ".join(f"{k}={text(v)}" for k, v in series.coords.items()) if series.coords else series.name


def varies(series: Sequence[Series], key: str) -> bool:
    """Whether ``key`` takes more than one value over ``series``."""
    return len({repr(key_value(s, key)) for s in series}) > 1


def differing(series: Sequence[Series]) -> list[str]:
    """The settings whose values differ between ``series``, each named once (:func:`setting`):
    the study axes first (in their order), then the identity columns, ``branch`` (unless ``init``
    already tells the branches apart) and every other result setting of the configs
    (:func:`sdd_jax.runid.result_fields`, ``run.seeds`` included)."""
    fields = dict.fromkeys(k for s in series for k in result_fields(s.config) if k in _config_keys())
    keys = [*dict.fromkeys(k for s in series for k in s.coords), *IDENTITY_COLUMNS, "branch", *fields]
    out = list(dict.fromkeys(setting(k) for k in keys if k in key_names() and varies(series, k)))
    if "branch" in out and "init" in out:
        pairs = {(key_value(s, "init"), s.branch) for s in series}
        if len(pairs) == len({init for init, _ in pairs}):  # the branch follows from init
            out.remove("branch")
    return out


def covered(*keys: str | None) -> set[str]:
    """The settings ``keys`` tell apart (``branch`` tells ``init`` apart too)."""
    out = {setting(k) for k in keys if k}
    return out | ({"init"} if "branch" in out else set())


def check_keys(series: Sequence[Series], by: str, panel: str | None) -> None:
    """Refuse a key that is unknown (``ValueError``) or the same for every series, and two series
    that ``by`` and ``panel`` do not tell apart (:class:`KeysError`; one line each)."""
    for option, key in (("--by", by), ("--panel", panel)):
        if key is None:
            continue
        if key not in key_names():
            raise ValueError(
                f"{option} {key!r} is not a key{did_you_mean(key, key_names())}: use a dotted config key "
                f"(noise.rate), an identity column ({', '.join(IDENTITY_COLUMNS)}) or branch"
            )
        if not varies(series, key):
            differ = differing(series)
            hint = f"; these differ: {', '.join(differ)}" if differ else ""
            raise KeysError(
                f"{option} {key} is {text(key_value(series[0], key))} for every series "
                f"({len(series)}): it tells nothing apart{hint}",
                series,
                by,
                panel,
            )
    seen: dict[tuple, Series] = {}
    for s in series:
        where = (repr(key_value(s, by)), repr(key_value(s, panel)) if panel else None)
        if where in seen:
            differ = [k for k in differing([seen[where], s]) if k not in covered(by, panel)]
            hint = f" (they differ in {', '.join(differ)})" if differ else ""
            raise KeysError(
                f"{label(seen[where])} and {label(s)} have the same --by and --panel values{hint}", series, by, panel
            )
        seen[where] = s


# ----- --where -----------------------------------------------------------------------------------


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    if isinstance(value, (tuple, list)):
        parts = [p.strip() for p in wanted.strip().strip("()[]").split(",") if p.strip()]
        return parts == [text(v) for v in value]
    return text(value) == wanted.strip()


def parse_where(items: Iterable[str]) -> list[tuple[str, str]]:
    """``--where KEY=VALUE`` items as ``(key, value)``; ``ValueError`` (one line) for a malformed
    item or an unknown key."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"--where expects KEY=VALUE, got {item!r}")
        if key not in key_names():
            raise ValueError(f"--where {key!r} is not a key{did_you_mean(key, key_names())}")
        out.append((key, value.strip()))
    return out


def keep_where(series: Sequence[Series], where: Sequence[tuple[str, str]]) -> list[Series]:
    """The series whose value of each ``where`` key is its value (numbers compared as numbers);
    ``ValueError`` naming the values there are when none is left."""
    kept = list(series)
    for key, wanted in where:
        left = [s for s in kept if _matches(key_value(s, key), wanted)]
        if not left:
            values = ", ".join(text(v) for v in ordered_values([key_value(s, key) for s in kept]))
            raise ValueError(f"--where {key}={wanted} matches no series ({key} is {values})")
        kept = left
    return kept


# ----- what to draw instead ----------------------------------------------------------------------


def suggestion(series: Sequence[Series], by: str | None, panel: str | None) -> tuple | None:
    """``(by, panel, where)`` that tell every series apart: ``by`` and ``panel`` kept where they
    vary (in their spelling), else the first settings that do (:func:`differing`), and ``where``
    fixing every other differing setting at the first series' value. ``None`` when no keys can
    (two series alike in every setting)."""
    varying = differing(series)
    if not varying:
        return None
    first = setting(by) if by and setting(by) in varying else varying[0]
    rest = [k for k in varying if k != first and k not in covered(first)]
    second = setting(panel) if panel and setting(panel) in rest else (rest[0] if rest else None)
    new_by = by if by and setting(by) == first else first
    new_panel = panel if panel and second and setting(panel) == second else second
    where = [(k, text(key_value(series[0], k))) for k in rest if k != second]
    try:
        check_keys(keep_where(series, where), new_by, new_panel)
    except ValueError:
        return None
    return new_by, new_panel, where


def command(paths: Sequence[Any], by: str, panel: str | None, where: Sequence[tuple[str, str]] = ()) -> str:
    """``sdd-jax compare PATHS --by BY [--panel PANEL] [--where KEY=VALUE ...]``, shell-quoted."""
    words = ["sdd-jax", "compare", *map(str, paths), "--by", by, *(["--panel", panel] if panel else [])]
    words += [w for key, value in where for w in ("--where", f"{key}={value}")]
    return " ".join(shlex.quote(w) for w in words)


def remedy(err: KeysError, paths: Sequence[Any], where: Sequence[tuple[str, str]] = ()) -> str:
    """What to run instead (``"; draw it with `sdd-jax compare PATHS ...`"``, keeping the
    ``where`` filters given), or ``""`` when no keys tell the series apart."""
    found = suggestion(err.series, err.by, err.panel)
    if found is None:
        return ""
    by, panel, more = found
    what = "parts of it" if more else "it"
    return f"; draw {what} with `{command(paths, by, panel, [*where, *more])}`"


def default_panel(axes: Sequence[tuple[str, int]], by: str) -> str | None:
    """The panel of a study whose ``axes`` are ``(key, number of values)``: the first axis with
    several values that is not ``by``'s setting, or None."""
    return next((k for k, n in axes if n > 1 and setting(k) not in covered(by)), None)
