"""Which levels ``sdd-jax analyze`` studies: the paper's four roles picked on the mean curve of a
run's ``results.csv`` (:func:`choose_levels`), or the levels asked for (:func:`chosen_levels`)."""

from __future__ import annotations

import numpy as np

from sdd_jax.describe import plural, spans
from sdd_jax.phases import phases
from sdd_jax.results import aggregate, main_branch

ROLES = ("dense", "critical", "sweet", "collapsed")
# The name a role takes when the phase rule labels its level otherwise (a short run whose best
# level is still in the light phase is no sweet spot): the level's own description.
OFF_PHASE = {"critical": "dip", "sweet": "best"}


class AnalysisError(ValueError):
    """An analysis asked of a run that cannot provide it."""


def choose_levels(rows: list[dict]) -> dict[str, int]:
    """The paper's four levels from the main curve of ``rows``: ``dense`` (level 0), ``critical``
    (the worst mean test accuracy between the dense level and the best one: the bottom of the
    dip), ``sweet`` (the best mean test accuracy over the sparse levels) and ``collapsed`` (the
    first level the phase rule of :func:`sdd_jax.phases.phases` labels collapsed). Roles that do
    not exist in the run (no dip, no collapse yet) are left out; a level is listed once. A role
    named after a phase keeps that name only where the phase rule labels its level so; otherwise
    it is named by :data:`OFF_PHASE` (``dip``: the worst level before the best; ``best``: the
    best sparse level), so that the report's roles and its phase column agree."""
    _, main_rows, _ = main_branch(rows)
    agg = aggregate(main_rows)
    labels = phases(agg)
    levels = [e["level"] for e in agg]
    test = np.array([e["test_acc_mean"] for e in agg])
    out = {"dense": levels[0]}
    if len(levels) > 1:
        best = 1 + int(np.argmax(test[1:]))
        if best > 1:
            worst = 1 + int(np.argmin(test[1:best]))
            if test[worst] < test[0]:
                out["critical"] = levels[worst]
        out["sweet"] = levels[best]
        collapsed = [lv for lv, ph in zip(levels, labels) if ph == "collapsed"]
        if collapsed:
            out["collapsed"] = collapsed[0]
    phase_of = dict(zip(levels, labels))
    seen, unique = set(), {}
    for role, level in out.items():
        if level not in seen:
            named = role if role not in OFF_PHASE or phase_of[level] == role else OFF_PHASE[role]
            unique[named] = level
            seen.add(level)
    return unique


def chosen_levels(rows: list[dict], finished: list[int], levels: list[int] | None, run_name: str) -> dict[str, int]:
    """The studied levels by role: ``levels`` (each named by its role in :func:`choose_levels`
    when it has one, else ``level N``), or :func:`choose_levels`' when None. Raises
    :class:`AnalysisError` for a level that is not among the ``finished`` levels of ``run_name``."""
    if not levels:
        return choose_levels(rows)
    missing = [lv for lv in levels if lv not in finished]
    if missing:
        raise AnalysisError(f"--levels {missing} are not finished levels of {run_name} (finished: {finished})")
    names = {lv: role for role, lv in choose_levels(rows).items()}
    return {names.get(lv, f"level {lv}"): lv for lv in dict.fromkeys(levels)}


def unfinished(run_name: str, levels: int, finished: list[int]) -> str | None:
    """The warning for a run of ``levels`` pruning levels (0..levels) of which only ``finished``
    are trained (one line: how many are missing, which, and which are analysed), or None."""
    missing = [lv for lv in range(levels + 1) if lv not in finished]
    if not missing:
        return None
    return (
        f"{run_name} is unfinished: {plural(len(missing), 'level')} of {levels + 1} not trained yet "
        f"({spans(missing)}; rerun the run command to continue): analysing levels {spans(finished)}"
    )


def unpruned_levels(rows: list[dict], chosen: dict[str, int]) -> frozenset[int]:
    """The ``chosen`` levels with no pruned weight (density 1 in every row of ``rows``): the dense
    level has nothing to re-dense or interpolate."""
    return frozenset(lv for lv in chosen.values() if all(r["density"] == 1.0 for r in rows if int(r["level"]) == lv))
