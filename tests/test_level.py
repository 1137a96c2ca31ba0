"""The level runner keeps the accelerator busy: the test evaluation runs inside the epoch's compiled
call, progress checkpoints are written in the background, and neither changes a number. Validation
curves are kept per evaluated epoch, with an epoch chosen by validation accuracy."""

import chex
import jax
import numpy as np
import pytest
from test_imp import tiny_config

from sdd_jax import experiment, imp, level, results
from sdd_jax.checkpoints import RunStore
from sdd_jax.config import override
from sdd_jax.progress import Progress
from sdd_jax.runopen import open_run


def test_the_fused_epoch_and_evaluation_equal_the_two_calls(tmp_path):
    exp = experiment.build(tiny_config(tmp_path))
    engine = exp.engine
    assert engine.epoch_loop == "scan"
    mask = experiment.dense_mask(exp)

    def start():
        return experiment.state_from(exp, engine, experiment.fresh_state(exp, engine).weights, mask, 0)

    state_a, sums_a, evaluation = engine.train_epoch_then_evaluate(start(), mask, exp.train, 0, evaluate_on=exp.test)
    state_b, *sums_b = engine.train_epoch_sums(start(), mask, exp.train, 0)
    loss, accuracy, _ = engine.evaluate(state_b.params, state_b.batch_stats, mask, exp.test)
    chex.assert_trees_all_equal(state_a.params, state_b.params)
    chex.assert_trees_all_equal(tuple(sums_a), tuple(sums_b))
    chex.assert_trees_all_close(evaluation, (loss, accuracy), rtol=1e-6)
    assert evaluation[1].shape == (2,)


def test_a_level_makes_no_evaluation_call_of_its_own_for_the_test_set(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, **{"pruning.levels": 0, "optim.epochs": 3})
    exp, run = open_run(config)
    calls = []
    original = exp.engine.evaluate

    def counted(params, batch_stats, mask, data):
        calls.append(data.size)
        return original(params, batch_stats, mask, data)

    monkeypatch.setattr(exp.engine, "evaluate", counted)
    imp.run_imp(config, prepared=(exp, run))
    assert calls == [exp.train.size]  # only the final measurement on the training set
    curves = run.level_metrics(0)["curves"]
    assert all(v is not None for v in curves["test_acc"]) and len(curves["test_acc"]) == 3


def test_progress_checkpoints_are_written_in_the_background_and_complete(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, **{"pruning.levels": 1, "optim.epochs": 3, "run.checkpoint_every_epochs": 1})
    straight = imp.run_imp(tiny_config(tmp_path / "straight", **{"pruning.levels": 1, "optim.epochs": 3}))
    blocking = []
    original = RunStore._save

    def recorded(self, manager, directory, step, items, what, block=True):
        blocking.append((what, block))
        return original(self, manager, directory, step, items, what, block)

    monkeypatch.setattr(RunStore, "_save", recorded)
    run_dir = imp.run_imp(config)
    progress = [block for what, block in blocking if "epoch" in what]
    assert progress and not any(progress)  # every progress save returned before its files were final
    assert all(block for what, block in blocking if "epoch" not in what)  # levels, θ0, θk: synchronous
    assert not (run_dir / "progress" / "level_001").exists()  # waited for, then removed
    assert results.read_results_csv(run_dir / "results.csv") == results.read_results_csv(straight / "results.csv")


def test_validation_curves_and_the_epoch_chosen_by_validation(tmp_path):
    config = tiny_config(
        tmp_path, **{"pruning.levels": 0, "optim.epochs": 4, "data.validation_size": 64, "run.eval_every_epochs": 2}
    )
    exp, run = open_run(config)
    imp.run_imp(config, prepared=(exp, run))
    curves = run.level_metrics(0)["curves"]
    assert [v is None for v in curves["val_acc"]] == [True, False, True, False]
    assert [v is None for v in curves["test_acc"]] == [True, False, True, False]
    rows = results.read_results_csv(run.path / "results.csv")
    for i, row in enumerate(rows):
        val = [v[i] for v in curves["val_acc"] if v is not None]
        test = [t[i] for t in curves["test_acc"] if t is not None]
        best = int(np.argmax(val))
        assert row["val_acc_best"] == pytest.approx(val[best])
        assert row["test_acc_at_best_val"] == pytest.approx(test[best])
        assert row["val_acc"] == pytest.approx(val[-1])
        # The last validation numbers are the curve's, not a second evaluation's.
        assert row["val_loss"] == pytest.approx(curves["val_loss"][-1][i])
    params = run.level(0).params
    loss, acc, _ = exp.engine.evaluate(params, run.level(0).batch_stats, run.level(0).mask, exp.val)
    np.testing.assert_allclose(np.asarray(jax.device_get(acc)), curves["val_acc"][-1], rtol=1e-6)


def test_the_epoch_loop_without_a_run_directory_replays_a_level_and_writes_nothing(tmp_path):
    """The analysis's re-dense replay goes through this loop: same weights as the stored level,
    the callback sees each trained epoch's state, nothing is checkpointed or recorded."""
    config = tiny_config(tmp_path, **{"pruning.levels": 1, "optim.epochs": 3, "run.checkpoint_every_epochs": 1})
    exp, run = open_run(config)
    imp.run_imp(config, prepared=(exp, run))
    before = {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.is_file()}
    plan = imp.schedule_plan(exp, 1, "lottery")
    stored = run.level(1)
    state = imp.start_state(exp, run, plan, imp.schedule_start("lottery", 1), stored.mask)
    seen = []
    state, curves = level.train_epochs(
        exp,
        None,
        plan,
        state,
        stored.mask,
        level=1,
        progress=Progress(0, verbosity=0),
        evaluate=False,
        after_epoch=lambda epoch, trained: seen.append((epoch, np.asarray(trained.step).tolist())),
    )
    chex.assert_trees_all_equal(jax.device_get(state.params), jax.device_get(stored.params))
    spe = exp.engine.steps_per_epoch
    assert seen == [(e, [(e + 1) * spe] * 2) for e in range(plan.first_epoch, plan.epochs)]
    assert curves["epoch"] == [1, 2, 3] and all(v is None for v in curves["test_acc"])
    assert {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.is_file()} == before


def test_run_imp_refuses_a_prepared_run_of_another_config(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.levels": 0, "optim.epochs": 1})
    prepared = open_run(config)
    with pytest.raises(ValueError, match="not the experiment of"):
        imp.run_imp(override(config, {"noise.rate": 0.4}), prepared=prepared)
    assert not prepared[1].finished_levels()
