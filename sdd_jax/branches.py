"""Branches from a finished iterative-pruning run: the paper's ablations.

* ``oneshot``      from the dense level-0 model, prune to the density of iterative level k in one
  step (kept count ``kept_after_levels``, so it equals level k's count exactly), then retrain by
  the run's schedule (the paper's Tiny-ImageNet protocol);
* ``reinit``       level k's mask, a new random initialisation (``init`` stream, branch salt),
  retrained from iteration k (the "winning ticket vs random initialisation" ablation);
* ``random_prune`` random masks with the same per-layer counts as level k's, retrained by the
  run's schedule (lottery: from the rewind weights; finetune/lr_rewind: from level k's trained
  weights; scratch: from a fresh initialisation);
* ``redense``      after level k's sparse training, reopen every pruned weight at 0 and train all
  weights for ``pruning.redense_epochs`` at the fixed ``pruning.redense_lr`` (reference: 0.001
  CIFAR, 0.1 MNIST), keeping per-epoch train/test metrics.

Each branch writes to ``<run_dir>/branches/<name>/`` (re-dense: ``redense-e<epochs>-lr<lr>``),
with its own checkpoints and ``results.csv``, and resumes like the main run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sdd_jax import checkpoints, imp, masks, pruning, report
from sdd_jax import rng as rng_streams
from sdd_jax.config import NON_RESULT_FIELDS, load_json, override
from sdd_jax.progress import Progress

BRANCHES = ("oneshot", "reinit", "random_prune", "redense")
# Folded into the init / mask streams so branch draws never coincide with the main run's.
_SALT = {"reinit": 101, "random_prune": 102}


class BranchError(ValueError):
    """A branch asked of a run that cannot provide it."""


BRANCH_SETTINGS = ("pruning.redense_epochs", "pruning.redense_lr")


def open_run(run_dir: str | Path, overrides: list[str] = ()) -> imp.Setup:
    """The setup of a finished (or partly finished) run, from its ``config.json``.

    ``overrides`` (``key=value``) may change only the branch settings
    ``pruning.redense_epochs``/``redense_lr`` and the ``run.*`` settings that do not change
    results (chunking, verbosity, ...): the run's identity stays.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise BranchError(f"{run_dir} is not a run directory (no config.json)")
    config = load_json(str(run_dir / "config.json"))
    run_items, branch_items = [], []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in BRANCH_SETTINGS:
            branch_items.append(item)
        elif key.startswith("run.") and key in NON_RESULT_FIELDS and key != "run.workdir":
            run_items.append(item)
        else:
            allowed = [*BRANCH_SETTINGS, *sorted(k for k in NON_RESULT_FIELDS if k.startswith("run.") and k != "run.workdir")]
            raise BranchError(f"a branch may only override {', '.join(allowed)} (got {item!r})")
    config = override(config, [*run_items, f"run.workdir={run_dir.parent}"])
    setup = imp.make_setup(config)
    if setup.run_dir.resolve() != run_dir.resolve():
        raise BranchError(f"{run_dir} does not match its config.json (expected {setup.run_dir.name})")
    if branch_items:
        setup = dataclasses.replace(setup, config=override(config, branch_items))
    return setup


def branch_dir(setup: imp.Setup, name: str) -> Path:
    """Where branch ``name`` keeps its results: re-dense runs are named by their settings, so
    runs with other epochs or learning rates never mix."""
    if name == "redense":
        p = setup.config.pruning
        return setup.run_dir / "branches" / f"redense-e{p.redense_epochs}-lr{p.redense_lr:g}"
    return setup.run_dir / "branches" / name


def _require_levels(setup: imp.Setup, levels) -> list[int]:
    done = setup.store.finished_levels()
    missing = [k for k in levels if k not in done]
    if missing:
        raise BranchError(f"levels {missing} of {setup.run_dir.name} are not finished "
                          f"(finished: {done}); run the main experiment first")
    return list(levels)


def run_branch(setup: imp.Setup, name: str, levels: list[int]) -> Path:
    """Run branch ``name`` for each level (one-shot: each k) and write its ``results.csv``."""
    if name not in BRANCHES:
        raise BranchError(f"unknown branch {name!r}; choose one of {BRANCHES}")
    if not levels:
        raise BranchError("no levels given")
    cfg = setup.config
    if name != "oneshot":
        _require_levels(setup, levels)
    else:
        _require_levels(setup, [0])
    if any(k < 0 for k in levels):
        raise BranchError(f"levels must be >= 0, got {levels}")
    if name == "oneshot":
        shapes = imp.abstract_state(setup).params
        total = sum(int(np.prod(s.shape[1:])) for path, s in
                    zip(masks.paths(shapes), jax.tree.leaves(shapes)) if setup.is_prunable(path))
        empty = [k for k in levels if pruning.kept_after_levels(total, cfg.pruning.fraction, k) == 0]
        if empty:
            raise BranchError(f"one-shot k={empty} would keep no prunable weight (of {total})")
    if name == "redense" and cfg.pruning.redense_epochs <= 0:
        raise BranchError("redense needs pruning.redense_epochs > 0")
    directory = branch_dir(setup, name)
    directory.mkdir(parents=True, exist_ok=True)
    store = checkpoints.RunStore(directory)
    weights = imp.abstract_weights(setup)
    theta0 = setup.store.restore_tree("theta0", weights)
    rewind = setup.store.restore_tree("theta_rewind", weights)
    schedule = cfg.pruning.schedule
    plans = {k: _plan(setup, name, k) for k in levels}
    progress = Progress(total_epochs=sum(p.epochs - p.first_epoch for k, p in plans.items()
                                         if k not in store.finished_levels()),
                        verbosity=cfg.run.verbosity, desc=f"{cfg.name}:{name}")
    try:
        for k in levels:
            if k in store.finished_levels():
                continue
            plan = plans[k]
            mask, state, reference = _branch_start(setup, name, k, plan, schedule, theta0, rewind)
            progress.start_level(k, float(np.mean(imp._densities(setup, mask))))
            state, mask, curves = imp.train_level(setup, store, plan, k, mask, lambda s=state: s,
                                                  level=k, progress=progress)
            # The learning distance is measured from the network's own dense initialisation:
            # the new random one for reinit, the run's θ0 otherwise.
            rows = imp.level_metrics(setup, plan.engine, state, mask, curves, reference,
                                     rewind["params"])
            store.save_level(k, {"params": state.params, "batch_stats": state.batch_stats,
                                 "mask": mask}, {"rows": rows, "curves": curves})
            store.clear_progress(k)
            progress.level_done(k, rows)
            report.write_results_csv(imp.collect_rows(store, branch=name), directory / "results.csv")
    finally:
        progress.close()
    path = directory / "results.csv"
    report.write_results_csv(imp.collect_rows(store, branch=name), path)
    return path


def _plan(setup: imp.Setup, name: str, k: int) -> imp.LevelPlan:
    cfg = setup.config
    if name == "redense":
        optim = dataclasses.replace(cfg.optim, lr=cfg.pruning.redense_lr, milestones=(),
                                    warmup_epochs=0.0, epochs=cfg.pruning.redense_epochs)
        return imp.LevelPlan(setup.engine_for(optim), 0, 0, optim.epochs)
    if name == "reinit":
        return imp.schedule_plan(setup, 1, "lottery")
    return imp.schedule_plan(setup, 1, cfg.pruning.schedule)


def _branch_start(setup: imp.Setup, name: str, k: int, plan: imp.LevelPlan, schedule: str,
                  theta0, rewind):
    """The mask and the starting state of branch ``name`` at level (or one-shot k) ``k``."""
    abstract = imp.abstract_level(setup)
    if name == "oneshot":
        dense, _ = setup.store.restore_level(0, abstract)
        mask = oneshot_mask(setup, dense, k)
        state = imp.start_state(setup, plan, max(k, 1), schedule, mask, dense, rewind)
        return mask, state, theta0["params"]
    level_tree, _ = setup.store.restore_level(k, abstract)
    mask = level_tree["mask"]
    if name == "reinit":
        fresh = imp.fresh_state(setup, plan.engine, salt=(_SALT["reinit"], k))
        state = imp.state_from(plan.engine, setup, fresh.params, fresh.batch_stats, mask,
                               plan.start_iteration)
        return mask, state, jax.device_get(fresh.params)
    if name == "random_prune":
        keys = jnp.stack([rng_streams.stream_key(s, "mask", _SALT["random_prune"], k)
                          for s in setup.seeds])
        random_masks = jax.jit(jax.vmap(lambda m, key: pruning.random_mask_like(m, setup.is_prunable, key)))
        mask = random_masks(mask, keys)
        previous = {**level_tree, "mask": mask}
        state = imp.start_state(setup, plan, max(k, 1), schedule, mask, previous, rewind)
        return mask, state, theta0["params"]
    # redense: every weight trainable again, the pruned ones starting at exactly zero.
    dense_mask = masks.ones_like(level_tree["params"])
    state = imp.state_from(plan.engine, setup, level_tree["params"], level_tree["batch_stats"],
                           dense_mask, 0)
    return dense_mask, state, theta0["params"]


def oneshot_mask(setup: imp.Setup, dense, k: int):
    """Per seed, prune the dense level-0 weights once to the kept count of iterative level k."""
    p = setup.config.pruning
    one = jax.tree.map(lambda leaf: leaf[0], dense["params"])
    targets = pruning.oneshot_targets(one, setup.is_prunable, levels=k, fraction=p.fraction,
                                      scope=p.scope)
    keys = jnp.stack([rng_streams.stream_key(s, "mask", 0, k) for s in setup.seeds])
    grads = None
    if p.criterion == "saliency":
        key = rng_streams.stream_key(setup.config.run.first_seed, "mask", 0, k, 1)
        grads = setup.engine.mean_gradient(dense["params"], dense["batch_stats"], dense["mask"],
                                           setup.train, key, p.saliency_batches)

    def prune_one(params, mask, key, g):
        return pruning.prune_to_count(params, mask, setup.is_prunable, kept=targets,
                                      criterion=p.criterion, scope=p.scope, key=key, grads=g,
                                      largest_first=p.largest_first)

    in_axes = (0, 0, 0, 0 if grads is not None else None)
    return jax.jit(jax.vmap(prune_one, in_axes=in_axes))(dense["params"], dense["mask"], keys, grads)
