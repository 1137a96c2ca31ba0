"""What a results row belongs to: the identity columns every results file of a run or a study
carries, so that ``pandas.concat`` of any runs compares them without joins.

Every row of ``results.csv``, ``curves.csv``, ``layers.csv``, ``results_all.csv`` and
``curves_all.csv`` starts with ``branch`` and then :data:`IDENTITY_COLUMNS`:

* ``preset``      ``config.name`` (the preset and its variants, e.g. ``lenet_mnist-noise40``);
* ``model``       ``model.name``;
* ``dataset``     ``data.name``;
* ``noise_kind``  ``noise.kind``; ``noise_rate``: ``noise.rate`` (the fraction selected);
* ``criterion``   ``pruning.criterion``;
* ``schedule``    ``pruning.schedule``;
* ``init``        :data:`INITS`: ``reinit`` for rows trained from a new random draw on the run's
  masks (the ``reinit`` branch: the paper's "random re-initialisation" against the lottery
  ticket), ``lottery`` for every other row (the run's own initialisation, θ0 or θk, or weights
  trained from it).

Host only: the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

IDENTITY_COLUMNS: tuple[str, ...] = (
    "preset",
    "model",
    "dataset",
    "noise_kind",
    "noise_rate",
    "criterion",
    "schedule",
    "init",
)

INITS = ("lottery", "reinit")
REINIT_BRANCH = "reinit"


def init_of(branch: str) -> str:
    """The ``init`` column of a row of ``branch``: ``reinit`` for the reinit branch, else ``lottery``."""
    return "reinit" if branch == REINIT_BRANCH else "lottery"


def identity_columns(config: Any, branch: str) -> dict[str, Any]:
    """The identity columns (:data:`IDENTITY_COLUMNS`, in order) of the rows of ``branch`` of the
    run of ``config`` (a :class:`sdd_jax.config.Config`)."""
    return {
        "preset": config.name,
        "model": config.model.name,
        "dataset": config.data.name,
        "noise_kind": config.noise.kind,
        "noise_rate": float(config.noise.rate),
        "criterion": config.pruning.criterion,
        "schedule": config.pruning.schedule,
        "init": init_of(branch),
    }


def with_identity(rows: Iterable[Mapping[str, Any]], config: Any, main_branch: str = "imp") -> list[dict[str, Any]]:
    """``rows`` (result, curve or layer rows of the run of ``config``) with ``branch`` first and
    then every identity column, those a row lacks or leaves empty filled from ``config`` for the
    row's ``branch`` (``main_branch`` when it has none): the rows of a run written before the
    identity columns existed, made comparable. Values a row has are kept."""
    out = []
    for row in rows:
        branch = row.get("branch") or main_branch
        identity = identity_columns(config, branch)
        filled = {c: identity[c] if row.get(c) is None else row[c] for c in IDENTITY_COLUMNS}
        out.append({"branch": branch, **filled, **{k: v for k, v in row.items() if k not in filled and k != "branch"}})
    return out
