"""Opening a run: the one entry that validates a config, builds its experiment and creates or
resumes its run directory, for ``sdd-jax run`` (:func:`sdd_jax.imp.run_imp`), the branch commands
(:mod:`sdd_jax.branches`) and ``sdd-jax analyze`` (:mod:`sdd_jax.analysis.pipeline`).

A run is opened from a :class:`~sdd_jax.config.Config` (created, or resumed when its directory
holds the same experiment) or from the directory of an existing run (resumed from its
``config.json``). Reading a run back without data, model or writes is
:func:`sdd_jax.saved.load_run`.
"""

from __future__ import annotations

import dataclasses
import os

from sdd_jax import rundir, storage
from sdd_jax.config import Config, override
from sdd_jax.data import Dataset
from sdd_jax.experiment import Experiment, build
from sdd_jax.runid import NON_RESULT_FIELDS, load_config

# Settings of a branch's own training that a stored run may be reopened with: they are not the
# run's (its directory keeps its identity), only the branch's.
BRANCH_SETTINGS = ("pruning.redense_epochs", "pruning.redense_lr")


class RunOpenError(ValueError):
    """A run directory that cannot be reopened as asked."""


def reopen_settings() -> list[str]:
    """The settings a stored run may be reopened with: :data:`BRANCH_SETTINGS` and the ``run.*``
    settings that do not change results (chunking, verbosity, ...)."""
    return [*BRANCH_SETTINGS, *sorted(k for k in NON_RESULT_FIELDS if k.startswith("run.") and k != "run.workdir")]


def open_run(
    source: Config | str | os.PathLike,
    overrides: list[str] = (),
    *,
    dataset: Dataset | None = None,
    command: str = "a branch",
) -> tuple[Experiment, rundir.RunDir]:
    """The experiment and the run directory of ``source``, created or resumed.

    ``source`` is a :class:`Config` (its run directory under ``run.workdir``, on ``dataset`` when
    given, else the data the config describes; ``overrides`` must be empty), or the path of an
    existing run directory, reopened from its ``config.json`` with ``overrides`` (``key=value``)
    of :func:`reopen_settings` only: the ``run.*`` ones apply to the run, the
    :data:`BRANCH_SETTINGS` to the returned experiment's config alone (the run keeps its identity).
    ``command`` names the caller in the message refusing another override (``sdd-jax reinit``).

    Raises ``ValueError`` naming the setting (an invalid config), :class:`RunOpenError` (not a run
    directory, an override it may not take, a directory that does not match its config) or
    :class:`sdd_jax.rundir.RunDirConflictError` (a directory holding another experiment or data),
    before anything is written.
    """
    if isinstance(source, Config):
        if overrides:
            raise RunOpenError("open_run: overrides apply to a stored run; apply them to the config")
        storage.check_bucket(source.run.workdir)  # a gs:// workdir: its bucket, before any work
        exp = build(source, dataset)
        return exp, rundir.open_run_dir(source, exp.dataset, exp.execution(), exp.level_shapes, exp.seeds)
    run_dir = storage.as_path(source)  # a gs:// URL as it is
    if not storage.is_file(run_dir / "config.json"):
        raise RunOpenError(
            f"{run_dir} is not a run directory (no config.json): pass the folder `sdd-jax run` printed "
            "(<workdir>/<preset>-<hash>)"
        )
    config = load_config(run_dir / "config.json")
    allowed = reopen_settings()
    for item in overrides:
        if item.split("=", 1)[0].strip() not in allowed:
            raise RunOpenError(f"{command} may only override {', '.join(allowed)} (got {item!r})")
    branch_items = [i for i in overrides if i.split("=", 1)[0].strip() in BRANCH_SETTINGS]
    run_items = [i for i in overrides if i not in branch_items]
    config = override(config, [*run_items, f"run.workdir={run_dir.parent}"])
    if storage.resolve(rundir.run_path(config.run.workdir, config)) != storage.resolve(run_dir):
        expected = rundir.run_path(config.run.workdir, config).name
        raise RunOpenError(
            f"{run_dir} does not match its config.json (expected {expected}): a renamed run directory "
            f"is found again once named {expected}"
        )
    exp, run = open_run(config, dataset=dataset)
    if branch_items:
        exp = dataclasses.replace(exp, config=override(exp.config, branch_items))
    return exp, run
