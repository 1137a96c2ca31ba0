"""The run directory of a study's stack: the verbs the level runner (:func:`sdd_jax.level.run_level`)
and the epoch loop (:func:`sdd_jax.level.train_epochs`) use, over the run directories of the
stack's points, by splitting and stacking along the replica axis.

A stack is a list of :class:`Member`: a point's :class:`~sdd_jax.rundir.RunDir` (its main run, or
for an ``init=reinit`` point the ``reinit`` branch of its lottery partner's run, whose θ0/θk are
the partner's) and its rows of the stack (the point's seeds, contiguous). What a lone run stores
is stored here per point, each point's slice of the stacked arrays, rows and curves, through the
point's own ``RunDir``: θ0 and θk (:class:`StackedWeights`), in-level progress and finished levels.
So a point's directory is the one its lone run writes (``sdd-jax run`` resumes it, ``report``,
``analyze`` and the branch commands read it), and a stack reads back what its points hold.

Resume: :meth:`StackRun.has_progress` is true only when every member holds a progress checkpoint
of the level at the same epoch (the study groups members by where they stand, so they do).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import jax
import numpy as np

from sdd_jax import storage
from sdd_jax.distributed import to_host
from sdd_jax.rundir import RunDir
from sdd_jax.train import LevelWeights, TrainState, Weights


@dataclasses.dataclass(frozen=True)
class Member:
    """One point of a stack: its run directory (or reinit branch) and its ``rows`` of the stack."""

    run: RunDir
    rows: slice
    reinit: bool = False

    @property
    def size(self) -> int:
        return self.rows.stop - self.rows.start


def take(tree, rows: slice):
    """The ``rows`` (replicas) of every leaf of a stacked host ``tree``."""
    return jax.tree.map(lambda leaf: leaf[rows], tree)


def concat(trees):
    """Host trees stacked on their leading axis (one per member, in order)."""
    return jax.tree.map(lambda *leaves: np.concatenate([np.asarray(x) for x in leaves]), *trees)


def split_curves(curves: dict, rows: slice) -> dict:
    """A member's curves: per epoch, its replicas' values (None stays None)."""
    return {k: v if k == "epoch" else [None if e is None else list(e)[rows] for e in v] for k, v in curves.items()}


def merge_curves(parts: list[dict]) -> dict:
    """The stack's curves from its members' (same epochs), replicas in member order."""
    merged = {}
    for key in parts[0]:
        if key == "epoch":
            merged[key] = list(parts[0][key])
            continue
        merged[key] = [None if e[0] is None else [x for part in e for x in part] for e in zip(*(p[key] for p in parts))]
    return merged


def member_shapes(shapes, size: int):
    """Stacked restore targets (``jax.ShapeDtypeStruct``) for ``size`` replicas on this host's first
    device, as a lone run without a mesh reads them (the stack places them on its own devices)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct((size, *s.shape[1:]), s.dtype, sharding=sharding), shapes)


class StackedWeights:
    """θ0 or θk (``name``: ``theta0`` / ``theta_rewind``) of a stack: its members' own, stacked. A
    reinit member's are its lottery partner's (its run is the partner's reinit branch)."""

    def __init__(self, members: list[Member], name: str):
        self.members, self.name = members, name

    def _of(self, member: Member):
        return getattr(member.run, self.name)

    def saved(self) -> bool:
        return all(self._of(m).saved() for m in self.members)

    def load(self) -> Weights:
        return concat([self._of(m).load() for m in self.members])

    def save(self, weights: Weights) -> None:
        """Each member's slice, where it is not saved yet (a stack resumed after a kill between
        two members' saves saves the same numbers only where they are missing)."""
        weights = to_host(weights)
        for m in self.members:
            if not self._of(m).saved():
                self._of(m).save(take(weights, m.rows))


class StackTracker:
    """The live metrics of a stack (:mod:`sdd_jax.tracking`): each member's own tracker (its run
    directory's, or its reinit branch's) receives its slice of the stack's curves, so a point's
    event files are the ones its lone run writes."""

    def __init__(self, members: list[Member]):
        self.members = members

    @contextlib.contextmanager
    def level(self, level: int, plan, curves: dict | None = None):
        """:meth:`sdd_jax.tracking.Tracker.level` of every member, as one context whose ``epoch``
        splits the stack's curves."""
        with contextlib.ExitStack() as logs:
            entered = [
                logs.enter_context(
                    m.run.tracker.level(level, plan, None if curves is None else split_curves(curves, m.rows))
                )
                for m in self.members
            ]

            class _Log:
                @staticmethod
                def epoch(stack_curves: dict) -> None:
                    for log, m in zip(entered, self.members):
                        log.epoch(split_curves(stack_curves, m.rows))

            yield _Log()


class StackRun:
    """The run directory of a stack (see the module docstring). ``path``: the study directory
    (named in messages); ``members`` in stack order, their rows covering the stack."""

    def __init__(self, path: Path, members: list[Member]):
        self.path = storage.as_path(path)
        self.members = list(members)
        self.theta0 = StackedWeights(self.members, "theta0")
        self.theta_rewind = StackedWeights(self.members, "theta_rewind")
        self.tracker = StackTracker(self.members)
        self.last: tuple[int, LevelWeights] | None = None

    def _finishing_order(self) -> list[Member]:
        # A reinit member is written after its lottery partner: never ahead of the masks it uses.
        return sorted(self.members, key=lambda m: m.reinit)

    # -- progress inside a level
    def has_progress(self, level: int) -> bool:
        epochs = {m.run.store.latest_progress(level) for m in self.members}
        return len(epochs) == 1 and None not in epochs

    def save_progress(self, level: int, epoch: int, state: TrainState, mask, curves: dict) -> None:
        state, mask = to_host((state, mask))
        for m in self.members:
            m.run.save_progress(level, epoch, take(state, m.rows), take(mask, m.rows), split_curves(curves, m.rows))

    def restore_progress(self, level: int, state_shapes: TrainState):
        """``(epoch, state, mask, curves)`` stacked from the members' latest progress of ``level``
        (all at the same epoch: see :meth:`has_progress`)."""
        parts = [m.run.restore_progress(level, member_shapes(state_shapes, m.size)) for m in self.members]
        epochs = {p[0] for p in parts}
        if len(epochs) != 1:
            raise RuntimeError(f"level {level}: the stack's members stand at different epochs {sorted(epochs)}")
        states, masks = to_host(([p[1] for p in parts], [p[2] for p in parts]))
        return parts[0][0], concat(states), concat(masks), merge_curves([p[3] for p in parts])

    def clear_progress(self, level: int) -> None:
        for m in self.members:
            m.run.clear_progress(level)

    def settle(self) -> None:
        for m in self.members:
            m.run.settle()

    # -- finished levels
    def finish_level(self, level: int, weights: LevelWeights, rows: list[dict], curves: dict) -> None:
        """Record ``level`` in every member's run directory (its slice of the weights, rows and
        curves; its results files rewritten), lottery members first."""
        weights = to_host(weights)
        self.last = (level, weights)  # the level just finished (host), for the next level's pruning
        for m in self._finishing_order():
            m.run.finish_level(level, take(weights, m.rows), rows[m.rows], split_curves(curves, m.rows))
