"""The optional experiment trackers of ``run.log_to``: Weights & Biases (``pip install
'sdd-jax[wandb]'``) and MLflow (``pip install 'sdd-jax[mlflow]'``, the ``mlflow-skinny`` client).

Each run directory (and each branch) is one tracker run, named after the directory
(``quickstart-1a2b3c4d5e6f``, a branch ``quickstart-1a2b3c4d5e6f/oneshot``), with the resolved
config as its parameters (W&B: the nested config; MLflow: dotted keys, ``optim.lr``) and the
scalars of :mod:`sdd_jax.tracking` under the keys ``<seed_s|mean>/<tag>``
(``seed_0/level_03/test_acc``, ``mean/levels/test_acc``). MLflow takes the epoch or the level as
each point's step; W&B, whose step is one counter per run, gets the epoch as ``level_XX/epoch`` and
the level as ``level`` beside the values, declared as their x-axes (``define_metric``).

Where they log is their own settings, read from the environment: ``MLFLOW_TRACKING_URI`` and
``MLFLOW_EXPERIMENT_NAME`` (default ``sdd-jax``); ``WANDB_PROJECT`` (default ``sdd-jax``),
``WANDB_MODE`` (``offline`` logs without a network), ``WANDB_DIR`` (default: the run directory).

A resumed run goes on in the same tracker run: its id and the last epoch of each level and the
levels already sent are kept in ``trackers.json`` of the run (or branch) directory, and nothing is
sent twice (recomputed epochs have the numbers of the lost ones: same seed, same numbers). A
tracker starts at its first scalar, so that a command that only reads a run opens none.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdd_jax import storage
from sdd_jax.atomic import atomic_write_json

STATE_FILE = "trackers.json"
DEFAULT_PROJECT = "sdd-jax"  # the W&B project and the MLflow experiment, unless the environment names one

# run.log_to choice -> (the module it needs, the command that installs it)
PACKAGES = {
    "tensorboard": ("tensorboardX", "pip install tensorboardX"),
    "wandb": ("wandb", "pip install 'sdd-jax[wandb]'"),
    "mlflow": ("mlflow", "pip install 'sdd-jax[mlflow]'"),
}


def install_hint(name: str) -> str | None:
    """The message for a ``run.log_to`` choice whose package is not installed, else None."""
    module, command = PACKAGES[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, a module without a spec
        found = False
    return None if found else f"run.log_to={name} needs the {module} package, which is not installed: {command}"


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The nested config as dotted keys with string values (MLflow's parameters)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, tuple, type(None))) else str(value)
    return out


class _State:
    """``trackers.json``: per tracker, its run id and what it holds (``epochs``: per level the last
    epoch sent; ``levels``: the levels sent)."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict | None = None

    def entry(self, name: str) -> dict:
        if self.data is None:
            try:
                self.data = json.loads(storage.read_text(self.path))
            except (OSError, ValueError):  # none yet, or unreadable: the trackers start new runs
                self.data = {}
        entry = self.data.setdefault(name, {})
        entry.setdefault("epochs", {})
        entry.setdefault("levels", [])
        return entry

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


class _External:
    """What both trackers share: skipping what the tracker already holds, and starting its run at
    the first scalar."""

    external = True
    name = ""

    def __init__(self, state: _State, folder: Path, title: str, config: dict):
        self.state, self.folder, self.title, self.config = state, folder, title, config
        self.started = False

    def level_started(self, level: int) -> None:
        pass

    def level_ended(self, level: int) -> None:
        pass

    def epochs(self, level: int, points: Sequence[tuple[int, Mapping]]) -> None:
        entry = self._entry(points)
        new = [(epoch, scalars) for epoch, scalars in points if epoch > entry["epochs"].get(str(level), 0)]
        if new:
            self._log_epochs(level, new)
            entry["epochs"][str(level)] = new[-1][0]
            self.state.save()

    def levels(self, series: Sequence[tuple[int, Mapping]]) -> None:
        entry = self._entry(series)
        new = [(level, scalars) for level, scalars in series if level not in entry["levels"]]
        if new:
            self._log_levels(new)
            entry["levels"] = sorted({*entry["levels"], *(level for level, _ in new)})
            self.state.save()

    def _entry(self, points) -> dict:
        """The tracker's entry of ``trackers.json``, its run started first when there is something
        to send (a new run starts with an empty entry)."""
        entry = self.state.entry(self.name)
        if points and not self.started:
            self._start(entry)
            self.started = True
            self.state.save()
            # After the tracker's own exit handlers (they run last-registered first): finished
            # before the tracker tears its service down.
            atexit.register(self.close)
        return entry

    def close(self) -> None:
        if self.started:
            self.started = False
            atexit.unregister(self.close)
            self._finish()

    @staticmethod
    def _keyed(scalars: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        return {f"{run}/{tag}": value for run, tags in scalars.items() for tag, value in tags.items()}


class Wandb(_External):
    """A W&B run (``wandb.init(..., resume="allow")``) per run directory."""

    name = "wandb"

    def _start(self, entry: dict) -> None:
        wandb = importlib.import_module("wandb")
        settings = {"project": os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, "name": self.title}
        if not os.environ.get("WANDB_DIR") and not storage.is_remote(self.folder):  # else W&B's ./wandb
            settings["dir"] = str(self.folder)
        if entry.get("id"):
            settings["id"] = entry["id"]
        self.run = wandb.init(**settings, config=self.config, resume="allow", reinit="create_new")
        entry["id"] = self.run.id
        self.defined: set[str] = set()

    def _define(self, keys, step_metric: str) -> None:
        for key in keys:
            if key not in self.defined:
                self.run.define_metric(key, step_metric=step_metric)
                self.defined.add(key)

    def _log_epochs(self, level, points) -> None:
        step = f"level_{level:02d}/epoch"
        for epoch, scalars in points:
            values = self._keyed(scalars)
            self._define(values, step)
            self.run.log({step: epoch, **values})

    def _log_levels(self, series) -> None:
        for level, scalars in series:
            values = self._keyed(scalars)
            self._define(values, "level")
            self.run.log({"level": level, **values})

    def _finish(self) -> None:
        self.run.finish()


class Mlflow(_External):
    """An MLflow run (through ``MlflowClient``) per run directory; each point's step is its epoch
    or level."""

    name = "mlflow"

    def _start(self, entry: dict) -> None:
        self.entities = importlib.import_module("mlflow.entities")
        tracking = importlib.import_module("mlflow.tracking")
        exceptions = importlib.import_module("mlflow.exceptions")
        self.client = tracking.MlflowClient()
        run_id = entry.get("run_id")
        if run_id:
            try:
                self.client.get_run(run_id)
            except exceptions.MlflowException:  # another tracking server, or the run was deleted
                run_id = None
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            run_id = self.client.create_run(
                experiment_id, run_name=self.title, tags={"sdd_jax.run_dir": str(self.folder)}
            ).info.run_id
            params = [self.entities.Param(k, v) for k, v in flat_params(self.config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
                self.client.log_batch(run_id, params=params[i : i + 100])
            entry.update(run_id=run_id, epochs={}, levels=[])
        self.run_id = run_id

    def _log(self, points) -> None:
        now = int(time.time() * 1000)
        metrics = [
            self.entities.Metric(key, value, now, step)
            for step, scalars in points
            for key, value in self._keyed(scalars).items()
        ]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def _log_epochs(self, level, points) -> None:
        self._log(points)

    def _log_levels(self, series) -> None:
        self._log(series)

    def _finish(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS = {"wandb": Wandb, "mlflow": Mlflow}


def external_sinks(log_to: Sequence[str], folder: Path, title: str, config: dict) -> list:
    """The external trackers of ``log_to`` for the run (or branch) directory ``folder``."""
    folder = storage.as_path(folder)
    state = _State(folder / STATE_FILE)
    return [TRACKERS[name](state, folder, title, config) for name in log_to if name in TRACKERS]
