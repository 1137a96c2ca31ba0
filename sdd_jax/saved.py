"""Reading a run back from its directory alone: θ0, θk, every finished level's weights, mask and
BatchNorm statistics, and their metrics. No data set, no model and no write.

    from sdd_jax.saved import load_run

    run = load_run("runs/quickstart-95ebac173541")
    run.levels()                       # [0, 1, ..., 34]
    theta0 = run.theta0()              # Weights: params, batch_stats; numpy, seeds first
    level = run.level(10)              # LevelWeights: params, batch_stats, mask
    level.params["fc1"]["kernel"].shape  # (seeds, 784, 300)
    run.metrics(10)["curves"]["test_acc"]  # per epoch, one value per seed
    run.branch("redense-e50-lr0.1").levels()

Every array has the seed axis first (``run.seeds`` in order). Works on a copy of a run on another
machine, on a run on Cloud Storage (``load_run("gs://BUCKET/runs/...")``) and on read-only storage: the checkpoints are opened read-only (no clean-up, no lock),
and restored from their own metadata (float32/bfloat16 as saved, on this host's first device,
then copied to numpy).
"""

from __future__ import annotations

from pathlib import Path

from sdd_jax import storage
from sdd_jax.checkpoints import RunStore
from sdd_jax.config import Config, ConfigError, from_dict
from sdd_jax.runid import read_json
from sdd_jax.train import LevelWeights, Weights


class SavedRun:
    """A run (or a branch of one) on disk, read-only. ``config``: the run's :class:`Config`;
    ``seeds``: the seeds of the stacked arrays' leading axis."""

    def __init__(self, path: Path, config: Config, store: RunStore, trees: RunStore | None = None):
        self.path = storage.as_path(path)  # an etils.epath.Path on Cloud Storage
        self.config = config
        self.seeds = config.seed_list
        self._store = store
        self._trees = trees or store

    def levels(self) -> list[int]:
        """The finished levels, ascending."""
        return self._store.finished_levels()

    def theta0(self) -> Weights:
        """θ0, the dense initialisation (params and BatchNorm statistics)."""
        return Weights(**self._trees.read_tree("theta0"))

    def theta_rewind(self) -> Weights:
        """θk, the dense run's weights at the rewind iteration k (``pruning.rewind_iteration``)."""
        return Weights(**self._trees.read_tree("theta_rewind"))

    def level(self, level: int) -> LevelWeights:
        """A finished level's final params, BatchNorm statistics and mask (1 kept, 0 pruned).
        Raises ``FileNotFoundError`` for a level that is not finished."""
        tree, _ = self._store.read_level(level)
        return LevelWeights(**tree)

    def metrics(self, level: int) -> dict:
        """A finished level's stored metrics: ``rows`` (one per seed: the ``results.csv``
        columns plus per-layer densities and distances) and ``curves`` (per epoch, per seed)."""
        return self._store.level_metrics(level)

    def branches(self) -> list[str]:
        """The folders under ``branches/`` (e.g. ``oneshot``, ``redense-e50-lr0.1``)."""
        return sorted(p.name for p in storage.listdir(self.path / "branches") if storage.is_dir(p))

    def branch(self, dirname: str) -> SavedRun:
        """The branch kept in ``branches/<dirname>``: its own levels, the run's θ0 and θk."""
        path = self.path / "branches" / dirname
        if not storage.is_dir(path):
            raise FileNotFoundError(
                f"{path} is not a branch of {self.path} (branches: {', '.join(self.branches()) or 'none'})"
            )
        return SavedRun(path, self.config, RunStore(path, read_only=True), self._trees)


def load_run(run_dir: str | Path) -> SavedRun:
    """The run in ``run_dir``, opened read-only (see the module docstring). Raises
    ``FileNotFoundError`` or ``ValueError`` naming the file when it is not a readable run.
    The one read-only entry; :func:`sdd_jax.runopen.open_run` creates or resumes a run."""
    path = storage.absolute(run_dir)  # orbax opens absolute paths only; a gs:// URL as it is
    if not storage.is_file(path / "config.json"):
        raise FileNotFoundError(f"{path} is not a run directory (no config.json)")
    stored = read_json(path / "config.json")
    try:
        config = from_dict(Config, stored)
    except (ConfigError, TypeError, AttributeError) as err:
        raise ValueError(f"{path / 'config.json'} does not hold a config this version can read: {err}") from None
    return SavedRun(path, config, RunStore(path, read_only=True))
