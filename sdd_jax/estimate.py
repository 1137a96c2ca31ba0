"""``sdd-jax estimate``: how long a preset's full pruning sweep will take here, from a few timed
epochs of level 0.

Builds the preset's experiment (:func:`sdd_jax.experiment.build`: the data on the device, the
model and the engine, with the run's seed execution, epoch loop and mesh; no run directory is
written), trains one warm-up epoch of the dense level (compilation included), then ``epochs``
timed epochs, and times one test-set and one training-set evaluation. The projection:

    sweep = Σ_levels imp.level_epochs × seconds per epoch
            + Σ_levels (test evaluations during the level + the end-of-level test, train and
              validation evaluations) + compilation

A mask does not change the work of a step (pruned weights are multiplied by zero), so level 0's
epoch time stands for every level. Left out: checkpoints, pruning and writing results (seconds
per level), a resumed run's restore, and branches (``oneshot``, ``reinit``, ...).

The command prints the compile time, seconds per epoch and the projected hours; its last line is
one JSON object with every number (:func:`estimate`'s report).

    sdd-jax estimate PRESET [--set key=value ...] [--seeds N] [--epochs 2]
    sdd-jax estimate resnet18_cifar10 --set data.name=synthetic_32x32x3_c10_n512_t256 \\
        --set model.width_multiplier=0.125
"""

from __future__ import annotations

import time

import jax
import jaxlib

from sdd_jax import imp
from sdd_jax.config import Config, override
from sdd_jax.experiment import build, dense_mask, fresh_state, state_from


def timed(fn):
    """(result, seconds) of ``fn()``, waiting for the device."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def device_facts() -> dict:
    """What a timing was measured on: the devices, the backend and the JAX versions."""
    return {
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
    }


def evaluations_per_level(first_epoch: int, epochs: int, every: int) -> int:
    """Test-set evaluations while training epochs ``first_epoch .. epochs - 1`` (as
    ``sdd_jax.level.train_epochs``: every ``every`` epochs and after the last)."""
    every = max(every, 1)
    return sum(1 for e in range(first_epoch, epochs) if e + 1 == epochs or (e + 1) % every == 0)


def build_for_timing(config: Config):
    """(experiment, note): ``experiment.build(config)``; a rewind iteration beyond the training
    run (a preset's k on a tiny data set) is set to 0 instead, and the note says so."""
    try:
        return build(config), None
    except ValueError as err:
        if "pruning.rewind_iteration" not in str(err):
            raise
    note = (
        f"note: pruning.rewind_iteration={config.pruning.rewind_iteration} is beyond this data's "
        f"training run; timed and projected with 0"
    )
    return build(override(config, {"pruning.rewind_iteration": 0})), note


def estimate(config: Config, epochs: int, preset: str, overrides: list[str]) -> tuple[dict, list[str]]:
    """(report, lines) for ``config`` (the resolved ``preset`` with ``overrides``): ``epochs``
    (≥ 1) timed epochs after a warm-up one.

    ``report`` holds every number (seconds; ``projected_hours`` in hours) and the device, JAX and
    engine settings; ``lines`` are the note (when the rewind iteration was set to 0) and the
    three summary lines the command prints before the report's JSON line.
    """
    start = time.perf_counter()
    exp, note = build_for_timing(config)
    build_seconds = time.perf_counter() - start
    engine = exp.engine
    mask = dense_mask(exp)
    state = state_from(exp, engine, fresh_state(exp, engine).weights, mask, 0)

    def epoch(state, e):
        state, loss, _ = engine.train_epoch(state, mask, exp.train, e)
        return state, loss

    (state, _), first_epoch = timed(lambda: epoch(state, 0))  # compile + warm up
    start = time.perf_counter()
    for e in range(1, epochs + 1):
        state, loss = epoch(state, e)
    jax.block_until_ready(loss)
    per_epoch = (time.perf_counter() - start) / epochs

    def evaluate(data):
        return engine.evaluate(state.params, state.batch_stats, mask, data)[:2]

    _, first_test = timed(lambda: evaluate(exp.test))
    _, test_eval = timed(lambda: evaluate(exp.test))
    _, first_train = timed(lambda: evaluate(exp.train))
    _, train_eval = timed(lambda: evaluate(exp.train))
    val_eval = timed(lambda: evaluate(exp.val))[1] if exp.val is not None else 0.0
    compile_seconds = (
        max(first_epoch - per_epoch, 0.0) + max(first_test - test_eval, 0.0) + max(first_train - train_eval, 0.0)
    )

    cfg = exp.config
    levels = range(cfg.pruning.levels + 1)
    level_epochs = [imp.level_epochs(exp, level) for level in levels]
    plans = [imp.schedule_plan(exp, level, cfg.pruning.schedule) for level in levels]
    evals = [evaluations_per_level(p.first_epoch, p.epochs, cfg.run.eval_every_epochs) for p in plans]
    train_seconds = sum(level_epochs) * per_epoch
    eval_seconds = sum(evals) * test_eval + len(level_epochs) * (test_eval + train_eval + val_eval)
    total = train_seconds + eval_seconds + compile_seconds
    mesh = engine.mesh
    report = {
        "preset": preset,
        "overrides": overrides,
        "seeds": cfg.run.seeds,
        "model": cfg.model.name,
        "width_multiplier": cfg.model.width_multiplier,
        "dtype": cfg.model.dtype,
        "data": cfg.data.name,
        "train_size": exp.train.size,
        "test_size": exp.test.size,
        "batch_size": cfg.optim.batch_size,
        "steps_per_epoch": engine.steps_per_epoch,
        "seed_execution": engine.seed_execution,
        "epoch_loop": engine.epoch_loop,
        "seeds_per_chunk": cfg.run.seeds_per_chunk,
        "mesh": None if mesh is None else dict(mesh.shape),
        "rewind_iteration": cfg.pruning.rewind_iteration,
        "note": note,
        "timed_epochs": epochs,
        "build_seconds": round(build_seconds, 3),
        "first_epoch_seconds": round(first_epoch, 3),
        "compile_seconds": round(compile_seconds, 3),
        "seconds_per_epoch": round(per_epoch, 4),
        "test_eval_seconds": round(test_eval, 4),
        "train_eval_seconds": round(train_eval, 4),
        "val_eval_seconds": round(val_eval, 4),
        "levels": len(level_epochs),
        "epochs_total": sum(level_epochs),
        "test_evals_total": sum(evals),
        "projected_train_seconds": round(train_seconds, 1),
        "projected_eval_seconds": round(eval_seconds, 1),
        "projected_seconds": round(total, 1),
        "projected_hours": round(total / 3600, 3),
        **device_facts(),
    }
    lines = [] if note is None else [note]
    lines.append(
        f"{preset}: {cfg.model.name} ×{cfg.model.width_multiplier:g} {cfg.model.dtype}, "
        f"{exp.train.size:,} training examples, {cfg.run.seeds} seed(s) ({engine.seed_execution}, "
        f"{engine.epoch_loop} loop) on {report['device_kind']} ({report['backend']})"
    )
    lines.append(
        f"compile ≈ {compile_seconds:.1f} s (first epoch {first_epoch:.1f} s), "
        f"{per_epoch:.3f} s/epoch, test eval {test_eval:.3f} s, train eval {train_eval:.3f} s"
    )
    lines.append(
        f"sweep: {len(level_epochs)} levels, {sum(level_epochs)} epochs, {sum(evals)} test evaluations "
        f"during training -> {train_seconds / 3600:.2f} h training + {eval_seconds / 3600:.2f} h "
        f"evaluation = {total / 3600:.2f} h ({total:.0f} s)"
    )
    return report, lines
