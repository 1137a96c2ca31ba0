import json
import logging
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sdd_jax import checkpoints as ck

SEEDS = 3


def _tree(offset: float = 0.0):
    """A nested flax-like variables tree with a leading seed axis, an sgd-momentum state,
    a boolean mask, integer scalars and typed PRNG keys."""
    keys = jax.random.split(jax.random.key(7), 4)
    params = {
        "Dense_0": {
            "kernel": jax.random.normal(keys[0], (SEEDS, 5, 4)) + offset,
            "bias": jax.random.normal(keys[1], (SEEDS, 4)).astype(jnp.bfloat16),
        },
        "BatchNorm_0": {"scale": jnp.ones((SEEDS, 4))},
    }
    batch_stats = {"BatchNorm_0": {"mean": jax.random.normal(keys[2], (SEEDS, 4)), "var": jnp.ones((SEEDS, 4))}}
    optimizer = optax.sgd(0.1, momentum=0.9)
    opt_state = jax.vmap(optimizer.init)(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    _, opt_state = jax.vmap(optimizer.update)(grads, opt_state, params)
    return {
        "variables": {"params": params, "batch_stats": batch_stats},
        "opt_state": opt_state,
        "mask": {"Dense_0": {"kernel": jax.random.bernoulli(keys[3], 0.8, (SEEDS, 5, 4))}},
        "step": jnp.arange(SEEDS, dtype=jnp.int32),
        "counts": np.arange(SEEDS, dtype=np.int64),
        "epoch": 11,
        "rng": jax.random.split(jax.random.key(3), SEEDS),
    }


def _zeros_like(tree):
    def zero(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.split(jax.random.key(0), x.shape[0])
        if isinstance(x, (jax.Array, np.ndarray)):
            return jnp.zeros_like(x) if isinstance(x, jax.Array) else np.zeros_like(x)
        return type(x)(0)

    return jax.tree.map(zero, tree)


def _assert_identical(actual, expected):
    """Same tree structure (namedtuple types included), leaf types, dtypes, shapes and bits."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert isinstance(a, jax.Array) == isinstance(e, jax.Array), (type(a), type(e))
        assert type(a) is type(e) or isinstance(e, jax.Array), (type(a), type(e))
        if isinstance(e, (jax.Array, np.ndarray)):
            assert a.dtype == e.dtype and a.shape == e.shape
            if jax.dtypes.issubdtype(e.dtype, jax.dtypes.prng_key):
                a, e = jax.random.key_data(a), jax.random.key_data(e)
            assert np.asarray(a).tobytes() == np.asarray(e).tobytes()
        else:
            assert a == e


@pytest.fixture
def store(tmp_path):
    with ck.RunStore(tmp_path) as s:
        yield s


def test_tree_round_trip_concrete_and_abstract_targets(store):
    tree = _tree()
    store.save_tree("theta0", tree)
    assert store.has_tree("theta0") and not store.has_tree("theta_rewind")
    restored = store.restore_tree("theta0", _zeros_like(tree))
    _assert_identical(restored, tree)
    chex.assert_trees_all_equal(
        jax.tree.map(np.asarray, restored["variables"]), jax.tree.map(np.asarray, tree["variables"])
    )
    assert isinstance(restored["opt_state"][0], optax.TraceState)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "dtype") else x, tree)
    _assert_identical(store.restore_tree("theta0", abstract), tree)


def test_tree_saved_once_and_names_checked(store):
    store.save_tree("theta_rewind", {"w": jnp.ones(3)})
    with pytest.raises(ck.CheckpointExistsError, match="already saved"):
        store.save_tree("theta_rewind", {"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="tree name"):
        store.save_tree("../escape", {"w": jnp.ones(3)})
    with pytest.raises(ck.CheckpointNotFoundError, match="never saved"):
        store.restore_tree("theta0", {"w": jnp.ones(3)})


def test_restore_target_mismatch_is_a_clear_error(store):
    store.save_tree("theta0", {"w": jnp.ones((SEEDS, 4)), "b": jnp.zeros(SEEDS)})
    with pytest.raises(ck.TreeMismatchError, match=r"w: saved float32\[3, 4\], target float32\[2, 4\]"):
        store.restore_tree("theta0", {"w": jnp.ones((2, 4)), "b": jnp.zeros(SEEDS)})
    with pytest.raises(ck.TreeMismatchError, match=r"w: saved float32\[3, 4\], target bfloat16"):
        store.restore_tree("theta0", {"w": jnp.ones((SEEDS, 4), jnp.bfloat16), "b": jnp.zeros(SEEDS)})
    with pytest.raises(ck.TreeMismatchError, match="missing in target: b"):
        store.restore_tree("theta0", {"w": jnp.ones((SEEDS, 4))})


def test_mismatch_names_nested_leaves_by_their_path(store):
    store.save_tree("theta0", {"fc1": {"kernel": jnp.ones((SEEDS, 4, 2)), "bias": jnp.zeros((SEEDS, 2))}})
    with pytest.raises(ck.TreeMismatchError, match=r"fc1/kernel: saved float32\[3, 4, 2\], target float32\[3, 4, 3\]"):
        store.restore_tree("theta0", {"fc1": {"kernel": jnp.ones((SEEDS, 4, 3)), "bias": jnp.zeros((SEEDS, 2))}})
    with pytest.raises(ck.TreeMismatchError, match="missing in target: fc1/bias"):
        store.restore_tree("theta0", {"fc1": {"kernel": jnp.ones((SEEDS, 4, 2))}})


def test_python_scalars_restore_into_abstract_scalars(store):
    store.save_tree("theta0", {"epoch": 11, "lr": 0.5, "w": jnp.ones(2)})
    target = jax.eval_shape(lambda: {"epoch": 0, "lr": 0.1, "w": jnp.zeros(2)})
    restored = store.restore_tree("theta0", target)
    assert int(restored["epoch"]) == 11 and float(restored["lr"]) == 0.5
    assert restored["epoch"].dtype == jnp.int32 and restored["lr"].dtype == jnp.float32
    assert store.restore_tree("theta0", {"epoch": 0, "lr": 0.0, "w": jnp.zeros(2)})["epoch"] == 11
    with pytest.raises(ck.TreeMismatchError, match=r"epoch: saved int64\[\], target float32\[\]"):
        store.restore_tree("theta0", {"epoch": jnp.zeros(()), "lr": 0.1, "w": jnp.zeros(2)})
    with pytest.raises(ck.CheckpointError, match="unsupported type str"):
        store.save_tree("theta_rewind", {"a": "text"})


def test_level_state_and_metrics_round_trip(store):
    tree = _tree()
    metrics = {
        "test_accuracy": np.float32(0.8125).item(),
        "per_seed": np.array([0.5, 0.25, 0.125], np.float32),
        "density": jnp.float32(0.64),
        "epochs": 3,
        "nested": {"curve": [1.5, 2.5], "note": "lottery", "ok": True, "missing": None},
        "diverged": float("nan"),
    }
    store.save_level(2, tree, metrics)
    restored, got = store.restore_level(2, tree)
    _assert_identical(restored, tree)
    expected = json.loads(json.dumps(ck._json_native(metrics)))
    assert math.isnan(got.pop("diverged")) and math.isnan(expected.pop("diverged"))
    assert got == expected
    assert got["per_seed"] == [0.5, 0.25, 0.125] and got["density"] == pytest.approx(0.64)
    only = store.level_metrics(2)
    assert math.isnan(only.pop("diverged")) and only == expected


def test_metrics_must_be_json(store):
    with pytest.raises(ck.CheckpointError, match="keys must be str"):
        store.save_level(0, {"w": jnp.ones(2)}, {1: 0.5})
    with pytest.raises(ck.CheckpointError, match="metrics.bad"):
        store.save_level(0, {"w": jnp.ones(2)}, {"bad": object()})
    assert store.finished_levels() == []


def test_finished_levels_sorted_and_written_once(store):
    for level in (2, 0, 10, 1):
        store.save_level(level, {"w": jnp.full((SEEDS,), level)}, {"level": level})
    assert store.finished_levels() == [0, 1, 2, 10]
    assert [store.level_metrics(lv)["level"] for lv in store.finished_levels()] == [0, 1, 2, 10]
    with pytest.raises(ck.CheckpointExistsError, match="level 2: already saved"):
        store.save_level(2, {"w": jnp.zeros((SEEDS,))}, {})
    with pytest.raises(ValueError, match="non-negative int"):
        store.save_level(-1, {"w": jnp.zeros((SEEDS,))}, {})
    with pytest.raises(ck.CheckpointNotFoundError):
        store.restore_level(3, {"w": jnp.zeros((SEEDS,))})


def test_progress_keeps_only_latest_epoch(store, tmp_path):
    target = {"w": jnp.zeros((SEEDS, 2)), "epoch": 0}
    assert store.latest_progress(1) is None
    for epoch in (1, 2, 5):
        store.save_progress(
            1, epoch, {"w": jnp.full((SEEDS, 2), float(epoch)), "epoch": epoch}, {"curve": list(range(epoch))}
        )
        assert store.latest_progress(1) == epoch
    on_disk = sorted(p.name for p in (tmp_path / "progress" / "level_001").iterdir())
    assert on_disk == ["5"]
    epoch, tree, metrics = store.restore_progress(1, target)
    assert epoch == 5 and tree["epoch"] == 5
    assert metrics == {"curve": [0, 1, 2, 3, 4]}
    chex.assert_trees_all_equal(tree["w"], jnp.full((SEEDS, 2), 5.0))
    with pytest.raises(ck.CheckpointExistsError, match="already at epoch 5"):
        store.save_progress(1, 3, target)
    assert store.latest_progress(0) is None  # levels are independent


def test_clear_progress(store, tmp_path):
    store.save_progress(4, 7, {"w": jnp.ones(3)})
    store.save_progress(5, 2, {"w": jnp.ones(3)})
    store.clear_progress(4)
    assert store.latest_progress(4) is None
    assert not (tmp_path / "progress" / "level_004").exists()
    assert sorted(p.name for p in (tmp_path / "progress").iterdir()) == ["level_005"]
    with pytest.raises(ck.CheckpointNotFoundError):
        store.restore_progress(4, {"w": jnp.ones(3)})
    store.clear_progress(4)  # nothing to clear is fine
    store.save_progress(4, 0, {"w": jnp.zeros(3)})  # a cleared level starts again
    assert store.latest_progress(4) == 0 and store.latest_progress(5) == 2


def test_unfinished_step_dirs_are_not_finished(tmp_path):
    with ck.RunStore(tmp_path) as store:
        store.save_level(0, {"w": jnp.ones(2)}, {"a": 1})
        store.save_progress(3, 4, {"w": jnp.ones(2)})
    levels = tmp_path / "levels"
    tmp_step = levels / "1.orbax-checkpoint-tmp-1700000000"
    (tmp_step / "state").mkdir(parents=True)
    (tmp_step / "state" / "junk").write_text("half written")
    no_commit = levels / "2"  # final name but never committed
    (no_commit / "state").mkdir(parents=True)
    progress_tmp = tmp_path / "progress" / "level_003" / "9.orbax-checkpoint-tmp-1700000000"
    progress_tmp.mkdir()

    with ck.RunStore(tmp_path) as store:
        assert store.finished_levels() == [0]
        assert store.latest_progress(3) == 4
        with pytest.raises(ck.CheckpointNotFoundError):
            store.restore_level(1, {"w": jnp.ones(2)})
        with pytest.raises(ck.CheckpointExistsError, match="unfinished directory"):
            store.save_level(2, {"w": jnp.ones(2)}, {})
        store.save_level(1, {"w": jnp.full(2, 3.0)}, {"a": 2})
        assert store.finished_levels() == [0, 1]
        assert not tmp_step.exists()  # leftovers of a killed writer are cleaned up
        tree, metrics = store.restore_level(1, {"w": jnp.ones(2)})
        chex.assert_trees_all_equal(tree["w"], jnp.full(2, 3.0))
        assert metrics == {"a": 2}
        epoch, _, _ = store.restore_progress(3, {"w": jnp.ones(2)})
        assert epoch == 4


def test_save_interrupted_before_rename_leaves_previous_state(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    with ck.RunStore(tmp_path) as store:
        store.save_progress(0, 1, {"w": jnp.ones(2)})

    real_rename = atomicity.async_path.rename

    async def killed_rename(src, dst):
        if os.path.basename(str(dst)) == "2":  # the step directory's final rename
            raise OSError("simulated kill")
        return await real_rename(src, dst)

    monkeypatch.setattr(atomicity.async_path, "rename", killed_rename)
    store = ck.RunStore(tmp_path)
    store.save_progress(0, 2, {"w": jnp.full(2, 2.0)})  # returns before the files are final
    with pytest.raises(ck.CheckpointError, match="level 0 epoch 2: cannot write .*simulated kill"):
        store.wait()
    monkeypatch.setattr(atomicity.async_path, "rename", real_rename)
    store.close()

    leftovers = sorted(p.name for p in (tmp_path / "progress" / "level_000").iterdir())
    assert len(leftovers) == 2 and leftovers[0] == "1"
    assert leftovers[1].startswith("2.orbax-checkpoint-tmp")  # complete but never renamed
    with ck.RunStore(tmp_path) as fresh:
        assert fresh.latest_progress(0) == 1
        epoch, tree, _ = fresh.restore_progress(0, {"w": jnp.zeros(2)})
        assert epoch == 1
        chex.assert_trees_all_equal(tree["w"], jnp.ones(2))
        fresh.save_progress(0, 2, {"w": jnp.full(2, 2.0)})
        assert fresh.latest_progress(0) == 2
        assert [p.name for p in (tmp_path / "progress" / "level_000").iterdir()] == ["2"]


def test_second_store_sees_first_store_saves(tmp_path):
    tree = _tree()
    first = ck.RunStore(tmp_path)
    second = ck.RunStore(tmp_path)  # opened, and its orbax managers created, before any write
    with pytest.raises(ck.CheckpointNotFoundError):
        second.restore_level(0, tree)
    with pytest.raises(ck.CheckpointNotFoundError):
        second.restore_tree("theta0", tree)
    with pytest.raises(ck.CheckpointNotFoundError):
        second.restore_progress(1, tree)
    first.save_tree("theta0", tree)
    first.save_level(0, tree, {"acc": 0.5})
    first.save_progress(1, 3, tree)
    first.close()
    for store in (second, ck.RunStore(tmp_path)):
        assert store.has_tree("theta0")
        assert store.finished_levels() == [0]
        assert store.latest_progress(1) == 3
        _assert_identical(store.restore_tree("theta0", tree), tree)
        restored, metrics = store.restore_level(0, tree)
        _assert_identical(restored, tree)
        assert metrics == {"acc": 0.5}
        epoch, progress, _ = store.restore_progress(1, tree)
        assert epoch == 3
        _assert_identical(progress, tree)
        store.close()


def test_orbax_info_logs_are_dropped_warnings_kept(store, caplog):
    caplog.set_level(logging.INFO)
    store.save_level(0, {"w": jnp.ones(2)}, {})
    store.restore_level(0, {"w": jnp.ones(2)})
    assert not [r for r in caplog.records if "orbax" in r.pathname and r.levelno < logging.WARNING]
    logging.getLogger("absl").warning("kept")
    assert any(r.getMessage() == "kept" for r in caplog.records)


def test_store_needs_existing_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.RunStore(tmp_path / "nope")
