"""One program of a study: its points stacked on the engine's replica axis.

A :class:`Program` holds the points of a study that differ only in replica axes
(:data:`sdd_jax.study_grid.REPLICA_KEYS`). It reads the data once (:func:`sdd_jax.data.read_clean`,
shared between programs with the same data settings) and noises the clean labels per point
(:func:`sdd_jax.data.add_noise`: each point's labels, ``dataset.json`` and data fingerprint are its
lone run's); the images, the model and the optimiser are shared.

A :class:`Stack` is an :class:`~sdd_jax.experiment.Experiment` whose seed axis carries replicas: a
replica is a point and a seed (a point's seeds are contiguous), and its init, data-order and mask
keys are those of its seed (:mod:`sdd_jax.rng`), exactly as when the point runs alone. What
differs per replica is stacked beside the train state:

* the training labels, an ``(R, N)`` int array mapped with ``in_axes`` 0 (:mod:`sdd_jax.engine`);
* the masks: each replica's scores by its own criterion and scope
  (:func:`sdd_jax.pruning.replica_pruner`; the saliency gradients only when some replica's
  criterion needs them, each replica on its own labels);
* the start weights: a lottery replica starts as its schedule says (θ0, θk, the previous level's
  weights or a scratch draw), an ``init=reinit`` replica at level k from the fresh draw of the
  ``reinit`` branch (``imp.fresh(SALT["reinit"], k)``) on its lottery partner's level-k mask, its
  learning distance measured from that draw, as ``sdd-jax reinit`` does.

The ``config`` of a stack is its program's (the first point's): its replica-axis fields are not
the replicas' (``Stack.replicas`` holds those).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from sdd_jax import criteria, imp, pruning, rng
from sdd_jax.branches import SALT
from sdd_jax.config import Config, override
from sdd_jax.data import CleanSplits, Dataset, add_noise
from sdd_jax.distributed import to_host
from sdd_jax.experiment import Experiment, build, make_engine, state_from
from sdd_jax.level import LevelPlan
from sdd_jax.rundir import RunDir, open_run_dir
from sdd_jax.seed_axis import seed_mesh
from sdd_jax.study_grid import Point
from sdd_jax.study_rundir import Member, StackRun, concat, member_shapes, take
from sdd_jax.train import DeviceData, LevelWeights, TrainState, Weights


@dataclasses.dataclass(frozen=True)
class Replica:
    """One replica of a stack: ``point`` (an index into its program's points) and ``seed``, with
    the replica-axis choices that differ between replicas."""

    point: int
    seed: int
    init: str
    criterion: str
    scope: str


@dataclasses.dataclass
class Stack(Experiment):
    """An :class:`~sdd_jax.experiment.Experiment` over a stack of replicas (see the module
    docstring): ``seeds`` lists each replica's seed, ``dataset.y_train`` and ``train.y`` hold one
    label array per replica."""

    replicas: tuple[Replica, ...] = ()

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.replicas]


def pick(flags: np.ndarray, when_true, when_false):
    """Per replica (leading axis), the rows of ``when_true`` where ``flags`` holds, else of
    ``when_false`` (host trees; either may be None when no row needs it)."""
    if when_true is None or not flags.any():
        return when_false
    if when_false is None or flags.all():
        return when_true
    return jax.tree.map(
        lambda a, b: np.where(flags.reshape(-1, *[1] * (np.ndim(a) - 1)), a, b), to_host(when_true), to_host(when_false)
    )


class Program:
    """The points of one program (see the module docstring), built before anything is written:
    the data read and checked, the experiment of the first point built (model, prunable leaves,
    device-resident images and test split; :func:`sdd_jax.experiment.build` checks the rest).
    ``clean`` reads a data setting's clean splits (a shared cache)."""

    def __init__(self, points: list[Point], partners: list[int | None], clean):
        self.points = points
        self.partners = partners  # per point: its lottery partner's index (reinit points), else None
        self.config: Config = points[0].config
        split: CleanSplits = clean(self.config.data)
        self.datasets: list[Dataset] = [add_noise(split, p.config.noise) for p in points]
        # The replicas are split over devices per stack (engine()); this one holds the shared data.
        self.exp = build(override(self.config, {"run.seed_devices": 1}), self.datasets[0])
        self.criteria = tuple(dict.fromkeys(p.config.pruning.criterion for p in points))
        self.scopes = tuple(dict.fromkeys(p.config.pruning.scope for p in points))
        self.runs: list[RunDir] = []
        self._meshes: dict[int, object] = {}
        self._engines: dict = {}
        self._stacks: dict[tuple[int, ...], tuple[Stack, StackRun]] = {}
        self._last: dict[int, tuple[int, LevelWeights]] = {}  # point -> its last finished level (host)

    @property
    def n_seeds(self) -> int:
        return self.config.run.seeds

    def source(self, i: int) -> int:
        """The point whose masks (and previous level) point ``i`` prunes from: its partner for a
        reinit point, else itself."""
        return i if self.partners[i] is None else self.partners[i]

    # ----- devices and stacks -------------------------------------------------------------------
    def engine(self, n: int):
        """The engine for ``n`` replicas (their mesh: ``run.seed_devices``, ``run.data_devices``),
        and its dict of other-optimiser engines; built once per mesh."""
        run = self.config.run
        if n not in self._meshes:
            try:
                self._meshes[n] = seed_mesh(n, run.seed_devices, run.data_devices)
            except ValueError as err:
                raise ValueError(f"a stack of {n} replicas (points x seeds): {err}") from None
        mesh = self._meshes[n]
        key = None if mesh is None else tuple(mesh.shape.items())
        if key not in self._engines:
            if mesh is not None and run.seeds_per_chunk and run.seeds_per_chunk % mesh.shape["seeds"]:
                raise ValueError(
                    f"run.seeds_per_chunk={run.seeds_per_chunk} (replicas per call in a study) must be a multiple "
                    f"of the {mesh.shape['seeds']} seed devices"
                )
            engine = make_engine(self.config, self.exp.model, self.exp.dataset, self.config.optim, mesh)
            self._engines[key] = (engine, {})
        return self._engines[key]

    def stack(self, indices: tuple[int, ...], study_path) -> tuple[Stack, StackRun]:
        """The stack of the points ``indices`` (each with all its seeds, in this order) and its
        run directory; built once per set of points."""
        if indices not in self._stacks:
            n = self.n_seeds
            replicas = tuple(
                Replica(i, seed, self.points[i].init, p.pruning.criterion, p.pruning.scope)
                for i in indices
                for p in [self.points[i].config]
                for seed in p.seed_list
            )
            engine, engines = self.engine(len(replicas))
            labels = np.stack([self.datasets[r.point].y_train for r in replicas])
            dataset = dataclasses.replace(
                self.exp.dataset,
                y_train=labels,
                is_noisy=np.stack([self.datasets[r.point].is_noisy for r in replicas]),
                metadata={},
            )
            stack = Stack(
                config=self.config,
                dataset=dataset,
                model=self.exp.model,
                is_prunable=self.exp.is_prunable,
                engine=engine,
                train=engine.replicate(DeviceData(self.exp.train.x, jnp.asarray(labels, jnp.int32))),
                test=engine.replicate(self.exp.test),
                val=None if self.exp.val is None else engine.replicate(self.exp.val),
                engines=engines,
                replicas=replicas,
            )
            members = [
                Member(self.runs[i], slice(j * n, (j + 1) * n), self.points[i].init == "reinit")
                for j, i in enumerate(indices)
            ]
            self._stacks[indices] = (stack, StackRun(study_path, members))
        return self._stacks[indices]

    def release(self) -> None:
        """Drop what this program holds on the devices and in memory once it is trained (its
        stacks, engines, experiment and the weights kept for the next level)."""
        self._stacks.clear()
        self._engines.clear()
        self._last.clear()
        self.exp = None

    # ----- run directories ----------------------------------------------------------------------
    def open(self) -> None:
        """Create or resume every point's run directory (a reinit point: its partner's ``reinit``
        branch), as its lone run would: same config, dataset metadata and fingerprint; the
        execution settings (``execution.json``) are those of the program's whole stack."""
        engine, _ = self.engine(len(self.points) * self.n_seeds)
        execution = {
            "eval_batch_size": self.config.run.eval_batch_size,
            "seeds_per_chunk": self.config.run.seeds_per_chunk,
            "epoch_loop": engine.epoch_loop,
            "seed_execution": engine.seed_execution,
            "backend": jax.default_backend(),
            "mesh": None if engine.mesh is None else dict(engine.mesh.shape),
        }
        shapes = member_shapes(self.exp.level_shapes, self.n_seeds)
        self.runs = [None] * len(self.points)
        for i, point in enumerate(self.points):
            if self.partners[i] is None:
                self.runs[i] = open_run_dir(point.config, self.datasets[i], execution, shapes, point.config.seed_list)
        for i, partner in enumerate(self.partners):
            if partner is not None:
                self.runs[i] = self.runs[partner].branch("reinit", "reinit")

    def todo(self, i: int) -> list[int]:
        """The levels point ``i`` still trains (a reinit point: 1..L); leftover progress of its
        finished levels is cleared, and gaps among them are recomputed with a warning (as
        :func:`sdd_jax.imp.run_imp`)."""
        run, levels = self.runs[i], self.config.pruning.levels
        done = run.finished_levels()
        for level in done:
            run.clear_progress(level)
        first = 1 if self.partners[i] is not None else 0
        todo = [k for k in range(first, levels + 1) if k not in done]
        gaps = [k for k in todo if done and k < max(done)]
        if gaps:
            warnings.warn(
                f"{run.path}: level(s) {gaps} missing among the finished levels {done}: recomputing them", stacklevel=2
            )
        return todo

    # ----- a level's masks and starts -----------------------------------------------------------
    @functools.cached_property
    def pruner(self):
        p = self.config.pruning
        return pruning.replica_pruner(
            self.exp.is_prunable,
            fraction=p.fraction,
            criteria=self.criteria,
            scopes=self.scopes,
            largest_first=p.largest_first,
        )

    def previous(self, indices: tuple[int, ...], level: int) -> LevelWeights:
        """Level ``level``'s final weights of each point's source (host, stacked like the stack):
        the last level trained here, else read from its run directory."""
        parts = []
        for i in indices:
            source = self.source(i)
            if self._last.get(source, (None,))[0] != level:
                self._last[source] = (level, to_host(self.runs[source].level(level)))
            parts.append(self._last[source][1])
        return concat(parts)

    def remember(self, run: StackRun, indices: tuple[int, ...]) -> None:
        """Keep the lottery points' final weights of the level ``run`` just finished."""
        level, weights = run.last
        for member, i in zip(run.members, indices):
            if not member.reinit:
                self._last[i] = (level, take(weights, member.rows))

    def next_mask(self, stack: Stack, previous: LevelWeights, level: int, indices: tuple[int, ...]):
        """Every replica's mask of ``level``, pruned from ``previous`` by its own criterion and
        scope with its seed's ``mask`` key (the saliency gradients, when a replica needs them, from
        the ``mask`` stream of ``run.first_seed`` as :func:`sdd_jax.experiment.criterion_grads`).
        A reinit replica takes its partner's mask: the stored one when the partner has finished
        the level, else the one just computed for the partner in this stack (the same numbers as
        its own, which is pruned from the partner's weights)."""
        p = self.config.pruning
        grads = None
        if any(criteria.CRITERIA[r.criterion].needs_grads for r in stack.replicas):
            key = rng.stream_key(self.config.run.first_seed, "mask", level, 1)
            grads = stack.engine.mean_gradient(
                previous.params, previous.batch_stats, previous.mask, stack.train, key, p.saliency_batches
            )
        mask = self.pruner(
            *stack.engine.place((previous.params, previous.mask)),
            jnp.asarray([self.criteria.index(r.criterion) for r in stack.replicas], jnp.int32),
            jnp.asarray([self.scopes.index(r.scope) for r in stack.replicas], jnp.int32),
            rng.seed_keys(stack.seeds, "mask", level),
            grads,
        )
        if all(self.partners[i] is None for i in indices):
            return mask
        host, n = to_host(mask), self.n_seeds
        parts = []
        for j, i in enumerate(indices):
            partner = self.partners[i]
            if partner is not None and level in self.runs[partner].finished_levels():
                parts.append(to_host(self.runs[partner].level(level).mask))
            elif partner is not None and partner in indices:
                parts.append(take(host, slice(indices.index(partner) * n, (indices.index(partner) + 1) * n)))
            else:
                parts.append(take(host, slice(j * n, (j + 1) * n)))
        return stack.engine.place(concat(parts))

    def starts(self, stack: Stack, run: StackRun, plan: LevelPlan, level: int, mask, previous: LevelWeights | None):
        """``(start, reference, rewind_reference)``: a callable giving the level's start state (as
        :func:`sdd_jax.imp.start_state`, per replica: lottery replicas by the schedule, reinit
        replicas from the fresh ``reinit`` draw) and the stacked weights the learning distances
        are measured from, from θ0 and from θk (None: θ0, θk for every replica, as a lone run; a
        reinit replica: its fresh draw for both, as the ``reinit`` branch)."""
        reinit = np.array([r.init == "reinit" for r in stack.replicas])
        fresh = None
        if reinit.any():
            fresh = to_host(imp.start_weights(stack, run, plan, imp.fresh(SALT["reinit"], level)))
        lottery = imp.schedule_start(self.config.pruning.schedule, level)

        def start() -> TrainState:
            own = None
            if not reinit.all():
                own = imp.start_weights(stack, run, plan, lottery, None if previous is None else previous.weights)
            weights: Weights = pick(reinit, fresh, own)
            return state_from(stack, plan.engine, weights, mask, plan.start_iteration)

        reference = None if fresh is None else pick(reinit, fresh, run.theta0.load())
        rewind_reference = None if fresh is None else pick(reinit, fresh, run.theta_rewind.load())
        return start, reference, rewind_reference
