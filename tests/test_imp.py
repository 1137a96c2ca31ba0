"""Iterative pruning end to end on a tiny MLP and 256 real MNIST digits: exact densities,
nesting, the four retraining schedules, learning distances, resume after a kill, branches."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdd_jax import branches, experiment, imp, masks, pruning, results, rng, runopen
from sdd_jax import metrics as metrics_lib
from sdd_jax.checkpoints import RunStore
from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig, override
from sdd_jax.data import load_dataset
from sdd_jax.engine import Engine
from sdd_jax.identity import IDENTITY_COLUMNS
from sdd_jax.rundir import RunDir
from sdd_jax.train import LevelWeights


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


def stacked_levels(run):
    return {lvl: run.level(lvl) for lvl in run.finished_levels()}


@pytest.fixture(scope="module")
def lottery_run(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("lottery"), **{"pruning.rewind_iteration": 3})
    run_dir = imp.run_imp(config)
    exp, run = runopen.open_run(config)
    return config, run_dir, (exp, run), stacked_levels(run)


def test_densities_are_exact_and_masks_nested(lottery_run):
    config, run_dir, (exp, run), levels = lottery_run
    total = masks.count(jax.tree.map(lambda leaf: leaf[0], levels[0].mask), exp.is_prunable)[1]
    for level, tree in levels.items():
        kept, _ = masks.count(tree.mask, exp.is_prunable, seed_axis=True)
        expected = pruning.kept_after_levels(total, 0.2, level)
        np.testing.assert_array_equal(np.asarray(kept), [expected, expected])
        if level:  # nested: every weight kept now was kept at the level before
            for new, old in zip(jax.tree.leaves(tree.mask), jax.tree.leaves(levels[level - 1].mask)):
                assert np.all((np.asarray(new) == 0) | (np.asarray(old) != 0))
    rows = results.read_results_csv(run_dir / "results.csv")
    assert len(rows) == 2 * 4
    for row in rows:
        assert row["density"] == pytest.approx(pruning.kept_after_levels(total, 0.2, row["level"]) / total)
        assert row["sparsity"] == pytest.approx(1 - row["density"])


def test_output_layer_is_not_pruned(lottery_run):
    _, _, _, levels = lottery_run
    out = np.asarray(levels[3].mask["out"]["kernel"])
    assert out.min() == 1.0
    assert np.asarray(levels[3].mask["fc1"]["kernel"]).mean() < 0.6


def test_lottery_restores_the_rewind_weights_on_the_new_mask(lottery_run):
    config, _, (exp, run), levels = lottery_run
    theta0, theta_k = run.theta0.load(), run.theta_rewind.load()
    assert not np.allclose(theta0.params["fc1"]["kernel"], theta_k.params["fc1"]["kernel"])
    plan = imp.schedule_plan(exp, 2, "lottery")
    assert plan.start_iteration == 3 and plan.first_epoch == 3 // exp.engine.steps_per_epoch
    mask = levels[2].mask
    state = imp.start_state(exp, run, plan, imp.schedule_start("lottery", 2), mask, levels[1].weights)
    expected = jax.tree.map(lambda p, m: p * m, theta_k.params, mask)
    chex.assert_trees_all_equal(jax.device_get(state.params), jax.device_get(expected))
    np.testing.assert_array_equal(np.asarray(state.step), [3, 3])


@pytest.mark.parametrize("schedule", ["finetune", "lr_rewind", "scratch"])
def test_other_schedules_start_from_the_right_weights(lottery_run, schedule):
    config, _, (exp, run), levels = lottery_run
    exp = dataclasses.replace(
        exp,
        config=override(
            config, {"pruning.schedule": schedule, "pruning.finetune_lr": 0.01, "pruning.finetune_epochs": 1}
        ),
    )
    plan = imp.schedule_plan(exp, 2, schedule)
    mask = levels[2].mask
    state = imp.start_state(exp, run, plan, imp.schedule_start(schedule, 2), mask, levels[1].weights)
    np.testing.assert_array_equal(np.asarray(state.step), [0, 0])
    got = np.asarray(state.params["fc1"]["kernel"])
    if schedule == "scratch":
        dense = np.asarray(experiment.fresh_state(exp, exp.engine).params["fc1"]["kernel"])
        assert not np.allclose(got, dense * np.asarray(mask["fc1"]["kernel"]))
        assert np.all(got[np.asarray(mask["fc1"]["kernel"]) == 0] == 0)
    else:
        expected = np.asarray(levels[1].params["fc1"]["kernel"]) * np.asarray(mask["fc1"]["kernel"])
        np.testing.assert_array_equal(got, expected)
    if schedule == "finetune":
        assert plan.epochs == 1
        assert float(plan.engine.spec.schedule(0)) == pytest.approx(0.01)
        assert float(plan.engine.spec.schedule(10_000)) == pytest.approx(0.01)
    else:
        assert plan.engine is exp.engine and plan.epochs == 2


def test_learning_distances_match_numpy(lottery_run):
    config, run_dir, (exp, run), levels = lottery_run
    theta0 = run.theta0.load()
    rows = results.read_results_csv(run_dir / "results.csv")
    for row in rows:
        i = config.seed_list.index(row["seed"])
        tree = levels[row["level"]]
        full, unpruned = 0.0, 0.0
        for name in ("fc1",):  # the only prunable layer of mlp(32)
            t0 = np.asarray(theta0.params[name]["kernel"][i], np.float64)
            t = np.asarray(tree.params[name]["kernel"][i], np.float64)
            m = np.asarray(tree.mask[name]["kernel"][i], np.float64)
            full += np.sum((t0 - m * t) ** 2)
            unpruned += np.sum((m * (t - t0)) ** 2)
        assert row["learning_distance"] == pytest.approx(np.sqrt(full), rel=1e-9)
        assert row["learning_distance_unpruned"] == pytest.approx(np.sqrt(unpruned), rel=1e-9)


def _numpy_mlp_predictions(params, mask, images, mean, std):
    """Predicted labels of the masked MLP (ReLU hidden layers ``fc1``, ``fc2``, ..., then ``out``)
    on raw images, computed in NumPy from the weights alone: an oracle independent of flax."""
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    x = ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).reshape(len(x), -1)
    hidden = sorted((k for k in params if k.startswith("fc")), key=lambda k: int(k[2:]))
    for name in hidden + ["out"]:
        kernel = np.asarray(params[name]["kernel"]) * np.asarray(mask[name]["kernel"])
        bias = np.asarray(params[name]["bias"]) * np.asarray(mask[name]["bias"])
        x = x @ kernel + bias
        if name != "out":
            x = np.maximum(x, 0.0)
    return x.argmax(-1)


def test_memorisation_columns_are_consistent(lottery_run):
    """Each row's train_acc (noisy labels), train_acc_clean (true labels) and
    train_acc_noisy_subset (noisy labels, relabelled examples only) equal the same numbers
    recomputed in NumPy from the level's stored weights (read back with sdd_jax.saved) and the
    data set's two label vectors."""
    _, run_dir, (exp, _), _ = lottery_run
    from sdd_jax.saved import load_run

    ds = exp.dataset
    y_noisy, y_clean = np.asarray(ds.y_train), np.asarray(ds.y_train_clean)
    relabelled = y_noisy != y_clean
    assert 0 < relabelled.sum() < len(y_noisy)  # both subsets are there to tell apart
    saved = load_run(run_dir)
    rows = {(r["level"], r["seed"]): r for r in results.read_results_csv(run_dir / "results.csv")}
    assert sorted(rows) == [(lv, s) for lv in saved.levels() for s in saved.seeds]
    columns = ("train_acc", "train_acc_clean", "train_acc_noisy_subset")
    distinct = set()
    for level in saved.levels():
        weights = saved.level(level)
        for i, seed in enumerate(saved.seeds):
            one = jax.tree.map(lambda leaf, i=i: leaf[i], (weights.params, weights.mask))
            pred = _numpy_mlp_predictions(*one, ds.x_train, ds.mean, ds.std)
            expected = {
                "train_acc": np.mean(pred == y_noisy),
                "train_acc_clean": np.mean(pred == y_clean),
                "train_acc_noisy_subset": np.mean(pred[relabelled] == y_noisy[relabelled]),
            }
            row = rows[(level, seed)]
            chex.assert_trees_all_close({c: row[c] for c in columns}, expected, rtol=0, atol=1e-12)
            distinct.add(len({expected[c] for c in columns}))
    assert 3 in distinct  # some row tells all three columns apart (a swap would show)
    for row in rows.values():
        assert row["test_acc_best"] >= row["test_acc"] - 1e-12


def interrupt_after_level(monkeypatch, last: int) -> dict:
    """Make the next run die (as a kill would) right after level ``last`` is recorded."""
    seen = {"finished": []}
    original = RunDir.finish_level

    def finish_then_die(self, level, *args, **kwargs):
        original(self, level, *args, **kwargs)
        seen["finished"].append(level)
        if level == last:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "finish_level", finish_then_die)
    return seen


def test_killed_run_resumes_to_identical_results(tmp_path, monkeypatch):
    straight = imp.run_imp(tiny_config(tmp_path / "a"))
    config = tiny_config(tmp_path / "b", **{"run.checkpoint_every_epochs": 1})
    killed_after = interrupt_after_level(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        imp.run_imp(config)
    assert killed_after["finished"] == [0, 1]
    monkeypatch.undo()
    resumed = imp.run_imp(config)
    a = results.read_results_csv(straight / "results.csv")
    b = results.read_results_csv(resumed / "results.csv")
    assert a == b
    mtime = (resumed / "results.csv").stat().st_mtime_ns
    imp.run_imp(config)  # finished: nothing recomputed
    assert (resumed / "results.csv").stat().st_mtime_ns == mtime


def test_resume_inside_a_level_from_the_last_saved_epoch(tmp_path):
    config = tiny_config(tmp_path, **{"optim.epochs": 3, "pruning.levels": 1, "run.checkpoint_every_epochs": 1})
    straight = imp.run_imp(
        dataclasses.replace(config, run=dataclasses.replace(config.run, workdir=str(tmp_path / "s")))
    )
    exp, run = runopen.open_run(config)
    calls = {"n": 0}
    original = exp.engine.train_epoch_then_evaluate

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # level 1, second epoch
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    exp.engine.train_epoch_then_evaluate = dying
    with pytest.raises(KeyboardInterrupt):
        imp.run_imp(config, prepared=(exp, run))
    assert run.store.latest_progress(1) == 1
    resumed = imp.run_imp(config)
    assert results.read_results_csv(straight / "results.csv") == results.read_results_csv(resumed / "results.csv")


def test_random_pruning_differs_across_seeds_and_repeats_per_seed(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.criterion": "random", "pruning.levels": 1, "optim.epochs": 1})
    exp = experiment.build(config)
    state = experiment.fresh_state(exp, exp.engine)
    dense = LevelWeights(state.params, state.batch_stats, masks.ones_like(state.params))
    a = experiment.next_mask(exp, dense, level=1)
    b = experiment.next_mask(exp, dense, level=1)
    chex.assert_trees_all_equal(a, b)
    k = np.asarray(a["fc1"]["kernel"])
    assert not np.array_equal(k[0], k[1])
    assert k[0].sum() == k[1].sum()


def test_oneshot_reaches_the_iterative_density(lottery_run):
    config, run_dir, (exp, run), levels = lottery_run
    path = branches.run_branch(exp, run, "oneshot", [2, 3])
    rows = results.read_results_csv(path)
    iterative = {r["level"]: r["density"] for r in results.read_results_csv(run_dir / "results.csv")}
    assert {r["level"] for r in rows} == {2, 3}
    for row in rows:
        assert row["branch"] == "oneshot"
        assert row["density"] == iterative[row["level"]]


def test_reinit_and_random_prune_keep_counts(lottery_run):
    config, run_dir, (exp, run), levels = lottery_run
    for name in ("reinit", "random_prune"):
        rows = results.read_results_csv(branches.run_branch(exp, run, name, [2]))
        tree = run.branch(name, name).level(2)
        kept = masks.layer_counts(tree.mask, exp.is_prunable, seed_axis=True)
        ref = masks.layer_counts(levels[2].mask, exp.is_prunable, seed_axis=True)
        for layer in ref:
            np.testing.assert_array_equal(np.asarray(kept[layer][0]), np.asarray(ref[layer][0]))
        same = np.array_equal(np.asarray(tree.mask["fc1"]["kernel"]), np.asarray(levels[2].mask["fc1"]["kernel"]))
        assert same == (name == "reinit")
        assert all(r["branch"] == name for r in rows)
    # reinit measures its learning distance from its own new initialisation.
    reinit = {r["seed"]: r for r in results.read_results_csv(run.path / "branches" / "reinit" / "results.csv")}
    main = {r["seed"]: r for r in results.read_results_csv(run_dir / "results.csv") if r["level"] == 2}
    for seed, row in reinit.items():
        assert row["learning_distance"] < 3 * main[seed]["learning_distance"]


def test_redense_reopens_pruned_weights_at_zero_then_trains_them(lottery_run):
    config, run_dir, (exp, run), levels = lottery_run
    exp = dataclasses.replace(
        exp, config=override(exp.config, {"pruning.redense_epochs": 1, "pruning.redense_lr": 0.05})
    )
    plan = branches.plan(exp, "redense")
    mask, state, reference = branches.branch_start(exp, run, "redense", 2, plan)
    assert reference is None  # measured from θ0, like the level it continues
    pruned = np.asarray(levels[2].mask["fc1"]["kernel"]) == 0
    start = np.asarray(state.params["fc1"]["kernel"])
    assert np.all(start[pruned] == 0) and np.asarray(mask["fc1"]["kernel"]).min() == 1
    path = branches.run_branch(exp, run, "redense", [2])
    assert branches.branch_dirname(exp, "redense") == "redense-e1-lr0.05" == path.parent.name
    store = RunStore(path.parent)
    tree, metrics = store.restore_level(
        2,
        {"params": exp.level_shapes.params, "batch_stats": exp.level_shapes.batch_stats, "mask": exp.level_shapes.mask},
    )
    theta0 = run.theta0.load().params
    for row in metrics["rows"]:  # the distance is from θ0
        i = exp.seeds.index(row["seed"])
        one = jax.tree.map(lambda leaf: np.asarray(leaf[i]), (theta0, tree["params"], tree["mask"]))
        assert row["learning_distance"] == metrics_lib.learning_distances(*one, exp.is_prunable)["learning_distance"]
    trained = np.asarray(tree["params"]["fc1"]["kernel"])
    assert np.count_nonzero(trained[pruned]) > 0.9 * pruned.sum()
    assert len(metrics["curves"]["train_acc"]) == 1


def test_branch_overrides_reach_the_engine_and_result_fields_are_refused(lottery_run):
    config, run_dir, _, _ = lottery_run
    exp, _ = runopen.open_run(run_dir, ["run.seeds_per_chunk=1", "pruning.redense_epochs=3"])
    assert exp.engine.seeds_per_chunk == 1 and exp.config.pruning.redense_epochs == 3
    for bad in ("run.seeds=1", "optim.lr=0.5", "run.eval_every_epochs=2"):
        with pytest.raises(runopen.RunOpenError, match="may only override"):
            runopen.open_run(run_dir, [bad])
    with pytest.raises(runopen.RunOpenError, match=r"^sdd-jax reinit may only override pruning.redense_epochs, "):
        runopen.open_run(run_dir, ["optim.lr=0.5"], command="sdd-jax reinit")


def test_capture_epoch_curve_covers_the_whole_epoch(tmp_path):
    """With the rewind point inside epoch 1, its training curve still averages all examples:
    equal to a run whose rewind point is at 0 (same data order, same updates)."""
    a = tiny_config(tmp_path / "a", **{"pruning.levels": 0, "pruning.rewind_iteration": 2})
    b = tiny_config(tmp_path / "b", **{"pruning.levels": 0, "pruning.rewind_iteration": 0})
    curves = []
    for config in (a, b):
        exp, run = runopen.open_run(config)
        imp.run_imp(config, prepared=(exp, run))
        curves.append(run.store.level_metrics(0)["curves"])
    np.testing.assert_allclose(curves[0]["train_loss"], curves[1]["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(curves[0]["train_acc"], curves[1]["train_acc"], rtol=1e-6)


def test_a_diverging_last_update_is_an_error_not_a_result(tmp_path):
    config = tiny_config(tmp_path, **{"optim.lr": 1e4, "pruning.levels": 0, "optim.epochs": 3})
    with pytest.raises(FloatingPointError, match="non-finite"):
        imp.run_imp(config)
    assert not (runopen.open_run(config)[1].path / "results.csv").exists()


def test_oneshot_refuses_a_target_without_weights(lottery_run):
    _, _, (exp, run), _ = lottery_run
    with pytest.raises(branches.BranchError, match="keep no prunable weight"):
        branches.run_branch(exp, run, "oneshot", [200])


def test_a_training_set_smaller_than_a_batch_trains(tmp_path):
    config = tiny_config(tmp_path, **{"data.train_size": 50, "pruning.levels": 0, "optim.epochs": 1})
    rows = results.read_results_csv(imp.run_imp(config) / "results.csv")
    assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)


def test_switching_to_other_data_in_the_same_run_dir_is_refused(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.levels": 0, "optim.epochs": 1})
    runopen.open_run(config)
    dataset = load_dataset(config.data, config.noise)
    shuffled = dataclasses.replace(dataset, x_train=dataset.x_train[::-1].copy())
    with pytest.raises(ValueError, match="different data"):
        runopen.open_run(config, dataset=shuffled)


def test_validation_split_is_reported(tmp_path):
    config = tiny_config(tmp_path, **{"data.validation_size": 64, "pruning.levels": 0, "optim.epochs": 1})
    rows = results.read_results_csv(imp.run_imp(config) / "results.csv")
    assert all(0.0 <= r["val_acc"] <= 1.0 for r in rows)


def test_bad_settings_fail_before_anything_is_written(tmp_path):
    for key, value in (
        ("pruning.schedule", "bogus"),
        ("pruning.fraction", "1.5"),
        ("pruning.rewind_iteration", "100000"),
        ("pruning.criterion", "taylor"),
        ("pruning.scope", "block"),
        ("pruning.ignore", "conv9"),
        ("pruning.ignore", "fc"),  # matches every prunable kernel: nothing left to prune
    ):
        with pytest.raises(ValueError, match=key.split(".")[1]):
            runopen.open_run(tiny_config(tmp_path, **{key: value}))
    assert not any(tmp_path.iterdir())


def test_results_csv_is_rebuilt_after_a_kill_before_it_was_written(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.levels": 1, "optim.epochs": 1})
    run_dir = imp.run_imp(config)
    rows = results.read_results_csv(run_dir / "results.csv")
    results.write_results_csv([r for r in rows if r["level"] == 0], run_dir / "results.csv")
    imp.run_imp(config)
    assert results.read_results_csv(run_dir / "results.csv") == rows


def test_continuing_with_other_execution_settings_warns(tmp_path):
    config = tiny_config(tmp_path, **{"pruning.levels": 0, "optim.epochs": 1})
    imp.run_imp(config)
    with pytest.warns(UserWarning, match="seeds_per_chunk"):
        runopen.open_run(override(config, {"run.seeds_per_chunk": 1}))


def test_theta_rewind_equals_an_independent_run_stopped_at_the_rewind_iteration(lottery_run):
    config, _, (exp, run), _ = lottery_run
    k = config.pruning.rewind_iteration
    assert 0 < k < exp.engine.steps_per_epoch  # inside the first epoch
    engine = Engine(
        exp.model,
        config.optim,
        len(exp.dataset.y_train),
        mean=exp.dataset.mean,
        std=exp.dataset.std,
        eval_batch_size=config.run.eval_batch_size,
    )
    state = engine.init(rng.seed_keys(config.seed_list, "init"), config.seed_list, exp.sample_input())
    chex.assert_trees_all_equal(jax.device_get(state.params), jax.device_get(run.theta0.load().params))
    ones = jax.tree.map(jnp.ones_like, state.params)
    stopped = engine.train_epoch(state, ones, exp.train, 0, stop_iteration=k)[0]
    assert np.asarray(stopped.step).tolist() == [k, k]
    chex.assert_trees_all_equal(jax.device_get(stopped.params), jax.device_get(run.theta_rewind.load().params))
    one_more = engine.train_epoch(stopped, ones, exp.train, 0, start_iteration=k, stop_iteration=k + 1)[0]
    assert not np.array_equal(
        np.asarray(one_more.params["fc1"]["kernel"]), np.asarray(run.theta_rewind.load().params["fc1"]["kernel"])
    )


def _distances(reference, params, mask, is_prunable):
    """(full, unpruned) learning distances in plain numpy over the prunable leaves."""
    full = unpruned = 0.0
    for path, r, p, m in zip(
        masks.paths(params), jax.tree.leaves(reference), jax.tree.leaves(params), jax.tree.leaves(mask)
    ):
        if is_prunable(path):
            r, p, m = (np.asarray(a, np.float64) for a in (r, p, m))
            full += np.sum((r - m * p) ** 2)
            unpruned += np.sum((m * (p - r)) ** 2)
    return np.sqrt(full), np.sqrt(unpruned)


def test_reinit_distance_is_measured_from_its_own_initial_weights(lottery_run):
    """Both pairs of distances, from θ0 and from θk, are the reinit network's from its own draw
    (it starts from it at the rewind iteration): the run's θk (k = 3 here) is no reference of it."""
    config, _, (exp, run), _ = lottery_run
    path = branches.run_branch(exp, run, "reinit", [2])
    tree = run.branch("reinit", "reinit").level(2)
    layers = results.read_csv(path.parent / "layers.csv")
    assert layers and all(
        r["learning_distance_rewind"] == r["learning_distance"]
        and r["learning_distance_rewind_unpruned"] == r["learning_distance_unpruned"]
        for r in layers
    )
    for row in results.read_results_csv(path):
        i = config.seed_list.index(row["seed"])
        key = rng.stream_key(row["seed"], "init", branches.SALT["reinit"], 2)
        # Computed eagerly here (jitted and vmapped in the branch): equal up to float32 rounding.
        own_init = exp.model.init({"params": key}, exp.sample_input(), train=False)["params"]
        params, mask = (jax.tree.map(lambda leaf: leaf[i], t) for t in (tree.params, tree.mask))
        full, unpruned = _distances(own_init, params, mask, exp.is_prunable)
        assert row["learning_distance"] == pytest.approx(full, rel=1e-6)
        assert row["learning_distance_unpruned"] == pytest.approx(unpruned, rel=1e-6)
        assert row["learning_distance_rewind"] == pytest.approx(full, rel=1e-6)
        assert row["learning_distance_rewind_unpruned"] == pytest.approx(unpruned, rel=1e-6)
        from_theta0 = _distances(
            jax.tree.map(lambda leaf: leaf[i], run.theta0.load().params), params, mask, exp.is_prunable
        )[0]
        assert abs(from_theta0 - full) > 1e-3 * full


def test_a_finished_run_trains_nothing(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, **{"pruning.levels": 1, "optim.epochs": 1})
    imp.run_imp(config)

    def no_training(*args, **kwargs):
        raise AssertionError("the engine was called")

    for name in ("train_epoch_sums", "train_epoch_then_evaluate", "evaluate", "init"):
        monkeypatch.setattr(Engine, name, no_training)
    imp.run_imp(config)  # finished: the engine is never called
    with pytest.raises(AssertionError, match="engine was called"):  # more levels do train
        imp.run_imp(override(config, {"pruning.levels": 2}))


def test_every_results_column_holds_its_own_quantity(lottery_run):
    config, run_dir, (exp, run), levels = lottery_run
    ds = exp.dataset
    changed = ds.y_train != ds.y_train_clean
    theta0, theta_k = run.theta0.load().params, run.theta_rewind.load().params
    rows = results.read_results_csv(run_dir / "results.csv")
    assert len(rows) == len(levels) * len(config.seed_list)
    for row in rows:
        level, i = row["level"], config.seed_list.index(row["seed"])
        tree = levels[level]
        test_loss, test_acc, _ = exp.engine.evaluate(tree.params, tree.batch_stats, tree.mask, exp.test)
        train_loss, _, pred = exp.engine.evaluate(tree.params, tree.batch_stats, tree.mask, exp.train)
        pred = np.asarray(pred)[i]
        params, mask = (jax.tree.map(lambda leaf: leaf[i], t) for t in (tree.params, tree.mask))
        kept, total = masks.count(mask, exp.is_prunable)
        curve = run.store.level_metrics(level)["curves"]["test_acc"]
        full0, unpruned0 = _distances(jax.tree.map(lambda leaf: leaf[i], theta0), params, mask, exp.is_prunable)
        fullk, unprunedk = _distances(jax.tree.map(lambda leaf: leaf[i], theta_k), params, mask, exp.is_prunable)
        expected = {
            "density": int(kept) / total,
            "sparsity": 1 - int(kept) / total,
            "kept_weights": int(kept),
            "train_acc": np.mean(pred == ds.y_train),
            "train_acc_clean": np.mean(pred == ds.y_train_clean),
            "train_acc_noisy_subset": np.mean(pred[changed] == ds.y_train[changed]),
            "train_loss": float(np.asarray(train_loss)[i]),
            "test_acc": float(np.asarray(test_acc)[i]),
            "test_acc_best": max(c[i] for c in curve if c is not None),
            "test_loss": float(np.asarray(test_loss)[i]),
            "learning_distance": full0,
            "learning_distance_unpruned": unpruned0,
            "learning_distance_rewind": fullk,
            "learning_distance_rewind_unpruned": unprunedk,
        }
        for column, value in expected.items():
            assert row[column] == pytest.approx(value, rel=1e-6, abs=1e-9), (column, level, row["seed"])


def test_saliency_pruning_keeps_exact_counts_and_differs_from_magnitude(tmp_path):
    config = tiny_config(
        tmp_path,
        **{"pruning.criterion": "saliency", "pruning.levels": 1, "optim.epochs": 1, "pruning.saliency_batches": 2},
    )
    imp.run_imp(config)
    exp, run = runopen.open_run(config)
    dense, level1 = run.level(0), run.level(1)
    total = masks.count(jax.tree.map(lambda leaf: leaf[0], dense.mask), exp.is_prunable)[1]
    kept, _ = masks.count(level1.mask, exp.is_prunable, seed_axis=True)
    np.testing.assert_array_equal(np.asarray(kept), [pruning.kept_after_levels(total, 0.2, 1)] * 2)
    chex.assert_trees_all_equal(experiment.next_mask(exp, dense, 1), level1.mask)  # reproducible
    by_magnitude = pruning.seed_pruner(exp.is_prunable, fraction=0.2)(dense.params, dense.mask)
    assert not np.array_equal(np.asarray(by_magnitude["fc1"]["kernel"]), np.asarray(level1.mask["fc1"]["kernel"]))


def copy_run(run_dir, workdir):
    """A copy of a run directory under ``workdir`` (same name: the config finds it there)."""
    import shutil

    copy = workdir / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("branches"))
    return copy


@pytest.mark.parametrize("removed", ["level folder", "commit marker"])
def test_a_missing_middle_level_is_recomputed_and_matches_the_uninterrupted_run(lottery_run, tmp_path, removed):
    config, run_dir, _, levels = lottery_run
    copy = copy_run(run_dir, tmp_path)
    if removed == "level folder":
        import shutil

        shutil.rmtree(copy / "levels" / "2")
    else:
        (copy / "levels" / "2" / "commit_success.txt").unlink()
    config = override(config, {"run.workdir": str(tmp_path)})
    with pytest.warns(UserWarning, match=r"level\(s\) \[2\] missing"):
        assert imp.run_imp(config, write_report=False) == copy
    for name in ("results.csv", "curves.csv", "layers.csv"):
        assert (copy / name).read_bytes() == (run_dir / name).read_bytes(), name
    _, run = runopen.open_run(config)
    assert run.finished_levels() == [0, 1, 2, 3]
    chex.assert_trees_all_equal(jax.device_get(run.level(2)), jax.device_get(levels[2]))
    assert not [p.name for p in (copy / "levels").iterdir() if p.name.startswith(".")]


def test_run_imp_writes_the_summary_figure_and_tidy_files_like_the_command(lottery_run):
    from sdd_jax.table import summary_table

    config, run_dir, _, _ = lottery_run
    main = results.read_results_csv(run_dir / "results.csv")
    assert (run_dir / "summary.txt").read_text() == summary_table(main)
    assert (run_dir / "figure.png").read_bytes().startswith(b"\x89PNG")
    assert "<svg" in (run_dir / "figure.svg").read_text()
    # results_all.csv: branch and the identity columns first, then the main run's own columns and values
    combined = results.read_results_csv(run_dir / "results_all.csv")
    lead = ",".join(["branch", *IDENTITY_COLUMNS, "seed", "level", "density"])
    assert (run_dir / "results_all.csv").read_text().startswith(lead + ",")
    assert [{k: r[k] for k in main[0]} for r in combined if r["branch"] == "imp"] == main


def test_curves_and_layers_csv_hold_every_epoch_and_layer(lottery_run):
    import pandas as pd

    config, run_dir, (exp, run), levels = lottery_run
    curves = pd.read_csv(run_dir / "curves.csv")
    assert list(curves.columns[:12]) == ["branch", *IDENTITY_COLUMNS, "seed", "level", "epoch"]
    assert len(curves) == len(config.seed_list) * len(levels) * config.optim.epochs
    for level in levels:
        stored = run.store.level_metrics(level)["curves"]
        for i, seed in enumerate(config.seed_list):
            mine = curves[(curves.level == level) & (curves.seed == seed)].sort_values("epoch")
            assert mine.epoch.tolist() == stored["epoch"]
            for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
                expected = [np.nan if v is None else v[i] for v in stored[name]]
                np.testing.assert_array_equal(mine[name].to_numpy(), expected)
    # per-layer distances from θ0 and θk, recomputed here from the stored weights
    layers = pd.read_csv(run_dir / "layers.csv")
    assert set(layers.layer) == {"fc1/kernel"}  # the only prunable layer of mlp(32)
    theta0, theta_k = run.theta0.load().params, run.theta_rewind.load().params
    for row in layers.itertuples():
        i = config.seed_list.index(row.seed)
        tree = levels[row.level]
        params, mask = (jax.tree.map(lambda leaf: leaf[i], t) for t in (tree.params, tree.mask))
        full0, unpruned0 = _distances(jax.tree.map(lambda leaf: leaf[i], theta0), params, mask, exp.is_prunable)
        fullk, unprunedk = _distances(jax.tree.map(lambda leaf: leaf[i], theta_k), params, mask, exp.is_prunable)
        assert row.learning_distance == pytest.approx(full0, rel=1e-6)
        assert row.learning_distance_unpruned == pytest.approx(unpruned0, rel=1e-6)
        assert row.learning_distance_rewind == pytest.approx(fullk, rel=1e-6)
        assert row.learning_distance_rewind_unpruned == pytest.approx(unprunedk, rel=1e-6)
        assert row.density == pytest.approx(float(np.mean(np.asarray(mask["fc1"]["kernel"]))))


def test_two_redense_variants_keep_their_labels_and_sit_at_their_starting_density(lottery_run):
    import pandas as pd

    from sdd_jax.figure import figure_data
    from sdd_jax.report import report

    config, run_dir, (exp, run), _ = lottery_run
    paths = {}
    for lr in (0.05, 0.01):
        variant = dataclasses.replace(
            exp, config=override(exp.config, {"pruning.redense_epochs": 1, "pruning.redense_lr": lr})
        )
        paths[lr] = branches.run_branch(variant, run, "redense", [1, 2])
    main = {(r["level"], r["seed"]): r for r in results.read_results_csv(run_dir / "results.csv")}
    for lr, path in paths.items():
        label = f"redense-e1-lr{lr:g}"
        for row in results.read_results_csv(path):
            start = main[(row["level"], row["seed"])]
            assert row["branch"] == label and (row["redense_epochs"], row["redense_lr"]) == (1, lr)
            assert (row["density"], row["sparsity"], row["kept_weights"]) == (
                start["density"],
                start["sparsity"],
                start["kept_weights"],
            )
            assert row["redense_density"] == 1.0 > row["density"]
    out = report(run_dir)  # neither variant blocks the main run's report
    assert "branch: redense-e1-lr0.05" in out["table"] and "branch: redense-e1-lr0.01" in out["table"]
    data = figure_data(results.run_rows(run_dir))
    for lr in paths:
        np.testing.assert_allclose(data["others"][f"redense-e1-lr{lr:g}"]["x"], data["main"]["x"][1:3])
    combined = pd.read_csv(run_dir / "results_all.csv")
    assert combined.columns[0] == "branch"
    counts = combined.groupby("branch").size().to_dict()
    assert counts["imp"] == 4 * 2 and counts["redense-e1-lr0.05"] == counts["redense-e1-lr0.01"] == 2 * 2
    curves = pd.read_csv(run_dir / "curves_all.csv")
    assert curves[curves.branch == "redense-e1-lr0.01"].shape[0] == 2 * 2 * 1  # levels x seeds x epochs


def test_start_choices_are_named_and_checked():
    assert [imp.schedule_start(s, 0) for s in ("lottery", "scratch")] == [imp.THETA0, imp.THETA0]
    assert [imp.schedule_start(s, 2) for s in ("lottery", "finetune", "lr_rewind", "scratch")] == [
        imp.REWIND,
        imp.PREVIOUS,
        imp.PREVIOUS,
        imp.fresh(2),
    ]
    # A branch retraining by the schedule starts as a pruned level; one-shot k = 0 as level 1.
    assert branches.retrain_start("scratch", 0) == imp.fresh(1) == imp.schedule_start("scratch", 1)
    assert branches.retrain_start("lottery", 0) == imp.REWIND
    for bad in (lambda: imp.Start("fresh"), lambda: imp.Start("theta0", (1,)), lambda: imp.Start("best")):
        with pytest.raises(ValueError):
            bad()
