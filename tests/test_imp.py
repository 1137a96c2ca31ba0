"""Iterative pruning end to end on a tiny MLP and 256 real MNIST digits: exact densities,
nesting, the four retraining schedules, learning distances, resume after a kill, branches."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax import branches, imp, masks, pruning, report
from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig, override


def tiny_config(tmp_path, **overrides) -> Config:
    config = Config(
        name="tiny",
        data=DataConfig(name="mnist_embedded", train_size=256, test_size=256),
        noise=NoiseConfig(kind="random_labels", rate=0.2, seed=0),
        model=ModelConfig(name="mlp", widths=(32,)),
        optim=OptimConfig(lr=0.1, momentum=0.5, weight_decay=1e-4, batch_size=64, epochs=2),
        pruning=PruningConfig(levels=3, fraction=0.2, schedule="lottery", rewind_iteration=0),
        run=RunConfig(seeds=2, workdir=str(tmp_path), verbosity=0, eval_batch_size=128),
    )
    return override(config, overrides)


def stacked_levels(setup):
    abstract = imp.abstract_level(setup)
    return {lvl: setup.store.restore_level(lvl, abstract)[0] for lvl in setup.store.finished_levels()}


@pytest.fixture(scope="module")
def lottery_run(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("lottery"), **{"pruning.rewind_iteration": 3})
    run_dir = imp.run_imp(config)
    setup = imp.make_setup(config)
    return config, run_dir, setup, stacked_levels(setup)


def test_densities_are_exact_and_masks_nested(lottery_run):
    config, run_dir, setup, levels = lottery_run
    total = masks.count(jax.tree.map(lambda l: l[0], levels[0]["mask"]), setup.is_prunable)[1]
    for level, tree in levels.items():
        kept, _ = masks.count(tree["mask"], setup.is_prunable, seed_axis=True)
        expected = pruning.kept_after_levels(total, 0.2, level)
        np.testing.assert_array_equal(np.asarray(kept), [expected, expected])
        if level:
            assert masks.is_nested(tree["mask"], levels[level - 1]["mask"])
    rows = report.read_results_csv(run_dir / "results.csv")
    assert len(rows) == 2 * 4
    for row in rows:
        assert row["density"] == pytest.approx(pruning.kept_after_levels(total, 0.2, row["level"]) / total)
        assert row["sparsity"] == pytest.approx(1 - row["density"])


def test_output_layer_is_not_pruned(lottery_run):
    _, _, _, levels = lottery_run
    out = np.asarray(levels[3]["mask"]["out"]["kernel"])
    assert out.min() == 1.0
    assert np.asarray(levels[3]["mask"]["fc1"]["kernel"]).mean() < 0.6


def test_lottery_restores_the_rewind_weights_on_the_new_mask(lottery_run):
    config, _, setup, levels = lottery_run
    weights = imp.abstract_weights(setup)
    theta0 = setup.store.restore_tree("theta0", weights)
    theta_k = setup.store.restore_tree("theta_rewind", weights)
    assert not np.allclose(theta0["params"]["fc1"]["kernel"], theta_k["params"]["fc1"]["kernel"])
    plan = imp.schedule_plan(setup, 2, "lottery")
    assert plan.start_iteration == 3 and plan.first_epoch == 3 // setup.engine.steps_per_epoch
    mask = levels[2]["mask"]
    state = imp.start_state(setup, plan, 2, "lottery", mask, levels[1], theta_k)
    expected = jax.tree.map(lambda p, m: p * m, theta_k["params"], mask)
    chex.assert_trees_all_equal(jax.device_get(state.params), jax.device_get(expected))
    np.testing.assert_array_equal(np.asarray(state.step), [3, 3])


@pytest.mark.parametrize("schedule", ["finetune", "lr_rewind", "scratch"])
def test_other_schedules_start_from_the_right_weights(lottery_run, schedule):
    config, _, setup, levels = lottery_run
    setup = dataclasses.replace(setup, config=override(config, {"pruning.schedule": schedule,
                                                                "pruning.finetune_lr": 0.01,
                                                                "pruning.finetune_epochs": 1}))
    plan = imp.schedule_plan(setup, 2, schedule)
    mask = levels[2]["mask"]
    state = imp.start_state(setup, plan, 2, schedule, mask, levels[1], None)
    np.testing.assert_array_equal(np.asarray(state.step), [0, 0])
    got = np.asarray(state.params["fc1"]["kernel"])
    if schedule == "scratch":
        dense = np.asarray(imp.fresh_state(setup, setup.engine).params["fc1"]["kernel"])
        assert not np.allclose(got, dense * np.asarray(mask["fc1"]["kernel"]))
        assert np.all(got[np.asarray(mask["fc1"]["kernel"]) == 0] == 0)
    else:
        expected = np.asarray(levels[1]["params"]["fc1"]["kernel"]) * np.asarray(mask["fc1"]["kernel"])
        np.testing.assert_array_equal(got, expected)
    if schedule == "finetune":
        assert plan.epochs == 1
        assert float(plan.engine.schedule(0)) == pytest.approx(0.01)
        assert float(plan.engine.schedule(10_000)) == pytest.approx(0.01)
    else:
        assert plan.engine is setup.engine and plan.epochs == 2


def test_learning_distances_match_numpy(lottery_run):
    config, run_dir, setup, levels = lottery_run
    theta0 = setup.store.restore_tree("theta0", imp.abstract_weights(setup))
    rows = report.read_results_csv(run_dir / "results.csv")
    for row in rows:
        i = config.seed_list.index(row["seed"])
        tree = levels[row["level"]]
        full, unpruned = 0.0, 0.0
        for name in ("fc1",):  # the only prunable layer of mlp(32)
            t0 = np.asarray(theta0["params"][name]["kernel"][i], np.float64)
            t = np.asarray(tree["params"][name]["kernel"][i], np.float64)
            m = np.asarray(tree["mask"][name]["kernel"][i], np.float64)
            full += np.sum((t0 - m * t) ** 2)
            unpruned += np.sum((m * (t - t0)) ** 2)
        assert row["learning_distance"] == pytest.approx(np.sqrt(full), rel=1e-9)
        assert row["learning_distance_unpruned"] == pytest.approx(np.sqrt(unpruned), rel=1e-9)


def test_memorisation_columns_are_consistent(lottery_run):
    config, run_dir, setup, _ = lottery_run
    for row in report.read_results_csv(run_dir / "results.csv"):
        for key in ("train_acc", "train_acc_clean", "train_acc_noisy_subset", "test_acc", "test_acc_best"):
            assert 0.0 <= row[key] <= 1.0
        assert row["test_acc_best"] >= row["test_acc"] - 1e-12


def test_killed_run_resumes_to_identical_results(tmp_path):
    straight = imp.run_imp(tiny_config(tmp_path / "a"))
    config = tiny_config(tmp_path / "b", **{"run.checkpoint_every_epochs": 1})
    with pytest.raises(imp.SimulatedInterrupt):
        imp.run_imp(config, stop_after_level=1)
    resumed = imp.run_imp(config)
    a = report.read_results_csv(straight / "results.csv")
    b = report.read_results_csv(resumed / "results.csv")
    assert a == b
    mtime = (resumed / "results.csv").stat().st_mtime_ns
    imp.run_imp(config)  # finished: nothing recomputed
    assert (resumed / "results.csv").stat().st_mtime_ns == mtime


def test_resume_inside_a_level_from_the_last_saved_epoch(tmp_path):
    config = tiny_config(tmp_path, **{"optim.epochs": 3, "pruning.levels": 1,
                                      "run.checkpoint_every_epochs": 1})
    straight = imp.run_imp(dataclasses.replace(config, run=dataclasses.replace(config.run, workdir=str(tmp_path / "s"))))
    setup = imp.make_setup(config)
    calls = {"n": 0}
    original = setup.engine.train_epoch_sums

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # level 1, second epoch
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    setup.engine.train_epoch_sums = dying
    with pytest.raises(KeyboardInterrupt):
        imp.run_imp(config, setup=setup)
    assert setup.store.latest_progress(1) == 1
    resumed = imp.run_imp(config)
    assert report.read_results_csv(straight / "results.csv") == report.read_results_csv(resumed / "results.csv")


def test_random_pruning_differs_across_seeds_and_repeats_per_seed(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.criterion": "random", "pruning.levels": 1,
                                      "optim.epochs": 1})
    setup = imp.make_setup(config)
    state = imp.fresh_state(setup, setup.engine)
    ones = masks.ones_like(state.params)
    a = imp.next_mask(setup, state.params, state.batch_stats, ones, level=1)
    b = imp.next_mask(setup, state.params, state.batch_stats, ones, level=1)
    chex.assert_trees_all_equal(a, b)
    k = np.asarray(a["fc1"]["kernel"])
    assert not np.array_equal(k[0], k[1])
    assert k[0].sum() == k[1].sum()


def test_oneshot_reaches_the_iterative_density(lottery_run):
    config, run_dir, setup, levels = lottery_run
    path = branches.run_branch(setup, "oneshot", [2, 3])
    rows = report.read_results_csv(path)
    iterative = {r["level"]: r["density"] for r in report.read_results_csv(run_dir / "results.csv")}
    assert {r["level"] for r in rows} == {2, 3}
    for row in rows:
        assert row["branch"] == "oneshot"
        assert row["density"] == iterative[row["level"]]


def test_reinit_and_random_prune_keep_counts(lottery_run):
    config, run_dir, setup, levels = lottery_run
    for name in ("reinit", "random_prune"):
        rows = report.read_results_csv(branches.run_branch(setup, name, [2]))
        store = branches.checkpoints.RunStore(setup.run_dir / "branches" / name)
        tree, _ = store.restore_level(2, imp.abstract_level(setup))
        kept = masks.layer_counts(tree["mask"], setup.is_prunable, seed_axis=True)
        ref = masks.layer_counts(levels[2]["mask"], setup.is_prunable, seed_axis=True)
        for layer in ref:
            np.testing.assert_array_equal(np.asarray(kept[layer][0]), np.asarray(ref[layer][0]))
        same = np.array_equal(np.asarray(tree["mask"]["fc1"]["kernel"]), np.asarray(levels[2]["mask"]["fc1"]["kernel"]))
        assert same == (name == "reinit")
        assert all(r["branch"] == name for r in rows)
    # reinit measures its learning distance from its own new initialisation.
    reinit = {r["seed"]: r for r in report.read_results_csv(setup.run_dir / "branches" / "reinit" / "results.csv")}
    main = {r["seed"]: r for r in report.read_results_csv(run_dir / "results.csv") if r["level"] == 2}
    for seed, row in reinit.items():
        assert row["learning_distance"] < 3 * main[seed]["learning_distance"]


def test_redense_reopens_pruned_weights_at_zero_then_trains_them(lottery_run):
    config, run_dir, setup, levels = lottery_run
    setup = dataclasses.replace(setup, config=override(setup.config, {"pruning.redense_epochs": 1,
                                                                      "pruning.redense_lr": 0.05}))
    plan = branches._plan(setup, "redense", 2)
    theta0 = setup.store.restore_tree("theta0", imp.abstract_weights(setup))
    mask, state, reference = branches._branch_start(setup, "redense", 2, plan, "lottery", theta0, None)
    chex.assert_trees_all_equal(reference, theta0["params"])
    pruned = np.asarray(levels[2]["mask"]["fc1"]["kernel"]) == 0
    start = np.asarray(state.params["fc1"]["kernel"])
    assert np.all(start[pruned] == 0) and np.asarray(mask["fc1"]["kernel"]).min() == 1
    branches.run_branch(setup, "redense", [2])
    store = branches.checkpoints.RunStore(branches.branch_dir(setup, "redense"))
    assert branches.branch_dir(setup, "redense").name == "redense-e1-lr0.05"
    tree, metrics = store.restore_level(2, imp.abstract_level(setup))
    trained = np.asarray(tree["params"]["fc1"]["kernel"])
    assert np.count_nonzero(trained[pruned]) > 0.9 * pruned.sum()
    assert len(metrics["curves"]["train_acc"]) == 1


def test_branch_overrides_reach_the_engine_and_result_fields_are_refused(lottery_run):
    config, run_dir, _, _ = lottery_run
    setup = branches.open_run(run_dir, ["run.seeds_per_chunk=1", "pruning.redense_epochs=3"])
    assert setup.engine.seeds_per_chunk == 1 and setup.config.pruning.redense_epochs == 3
    for bad in ("run.seeds=1", "optim.lr=0.5", "run.eval_every_epochs=2"):
        with pytest.raises(branches.BranchError, match="may only override"):
            branches.open_run(run_dir, [bad])


def test_capture_epoch_curve_covers_the_whole_epoch(tmp_path):
    """With the rewind point inside epoch 1, its training curve still averages all examples:
    equal to a run whose rewind point is at 0 (same data order, same updates)."""
    a = tiny_config(tmp_path / "a", **{"pruning.levels": 0, "pruning.rewind_iteration": 2})
    b = tiny_config(tmp_path / "b", **{"pruning.levels": 0, "pruning.rewind_iteration": 0})
    curves = []
    for config in (a, b):
        setup = imp.make_setup(config)
        imp.run_imp(config, setup=setup)
        curves.append(setup.store.level_metrics(0)["curves"])
    np.testing.assert_allclose(curves[0]["train_loss"], curves[1]["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(curves[0]["train_acc"], curves[1]["train_acc"], rtol=1e-6)


def test_a_diverging_last_update_is_an_error_not_a_result(tmp_path):
    config = tiny_config(tmp_path, **{"optim.lr": 1e4, "pruning.levels": 0, "optim.epochs": 3})
    with pytest.raises(FloatingPointError, match="non-finite"):
        imp.run_imp(config)
    assert not (imp.make_setup(config).run_dir / "results.csv").exists()


def test_oneshot_refuses_a_target_without_weights(lottery_run):
    _, _, setup, _ = lottery_run
    with pytest.raises(branches.BranchError, match="keep no prunable weight"):
        branches.run_branch(setup, "oneshot", [200])


def test_a_training_set_smaller_than_a_batch_trains(tmp_path):
    config = tiny_config(tmp_path, **{"data.train_size": 50, "pruning.levels": 0, "optim.epochs": 1})
    rows = report.read_results_csv(imp.run_imp(config) / "results.csv")
    assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)


def test_switching_to_other_data_in_the_same_run_dir_is_refused(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.levels": 0, "optim.epochs": 1})
    imp.make_setup(config)
    dataset = imp.load_dataset(config.data, config.noise)
    shuffled = dataclasses.replace(dataset, x_train=dataset.x_train[::-1].copy())
    with pytest.raises(ValueError, match="different data"):
        imp.make_setup(config, shuffled)


def test_validation_split_is_reported(tmp_path):
    config = tiny_config(tmp_path, **{"data.validation_size": 64, "pruning.levels": 0, "optim.epochs": 1})
    rows = report.read_results_csv(imp.run_imp(config) / "results.csv")
    assert all(0.0 <= r["val_acc"] <= 1.0 for r in rows)


def test_bad_settings_fail_before_anything_is_written(tmp_path):
    for key, value in (("pruning.schedule", "bogus"), ("pruning.fraction", "1.5"),
                       ("pruning.rewind_iteration", "100000"), ("pruning.criterion", "taylor"),
                       ("pruning.scope", "block"), ("pruning.ignore", "conv9")):
        with pytest.raises(ValueError, match=key.split(".")[1]):
            imp.make_setup(tiny_config(tmp_path, **{key: value}))
    assert not any(tmp_path.iterdir())


def test_results_csv_is_rebuilt_after_a_kill_before_it_was_written(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.levels": 1, "optim.epochs": 1})
    run_dir = imp.run_imp(config)
    rows = report.read_results_csv(run_dir / "results.csv")
    report.write_results_csv([r for r in rows if r["level"] == 0], run_dir / "results.csv")
    imp.run_imp(config)
    assert report.read_results_csv(run_dir / "results.csv") == rows


def test_continuing_with_other_execution_settings_warns(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.levels": 0, "optim.epochs": 1})
    imp.run_imp(config)
    with pytest.warns(UserWarning, match="seeds_per_chunk"):
        imp.make_setup(override(config, {"run.seeds_per_chunk": 1}))
