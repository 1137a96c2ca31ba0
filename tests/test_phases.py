"""``sdd_jax.phases``: the four phases of sparse double descent on mean curves."""

import numpy as np
import pytest
from report_rows import segment_curves

from sdd_jax.phases import PHASES, phase_boundaries, phase_labels, phases


def agg_from_curves(train, test):
    return [
        {"level": i, "train_acc_mean": float(a), "test_acc_mean": float(b)} for i, (a, b) in enumerate(zip(train, test))
    ]


@pytest.mark.parametrize("lengths", [(4, 3, 3, 2), (1, 1, 1, 1), (6, 5, 2, 4), (3, 6, 4, 1)])
def test_phases_on_synthetic_curves(lengths):
    train, test, expected = segment_curves(*lengths, np.random.default_rng(sum(lengths)))
    assert phases(agg_from_curves(train, test)) == expected


def test_phases_follow_entry_order_and_keys():
    train, test, expected = segment_curves(3, 3, 2, 2, np.random.default_rng(0))
    agg = agg_from_curves(train, test)
    perm = np.random.default_rng(1).permutation(len(agg))
    assert phases([agg[i] for i in perm]) == [expected[i] for i in perm]
    renamed = [{"level": e["level"], "a_mean": e["train_acc_mean"], "b_mean": e["test_acc_mean"]} for e in agg]
    assert phases(renamed, train_key="a", test_key="b") == expected


def test_phases_are_monotone_on_random_curves():
    rng = np.random.default_rng(42)
    order = {p: i for i, p in enumerate(PHASES)}
    seen = set()
    for _ in range(300):
        n = int(rng.integers(1, 20))
        train = np.clip(1.0 - np.cumsum(rng.uniform(0, 0.06, n)) + rng.normal(0, 0.01, n), 0, 1)
        test = rng.uniform(0.1, 1.0, n)
        labels = phase_labels(train, test)
        ranks = [order[p] for p in labels]
        assert labels[0] == "light"
        assert ranks == sorted(ranks)
        seen.update(labels)
        light_end, sweet_start, collapse_start = phase_boundaries(train, test)
        assert 1 <= light_end <= sweet_start <= collapse_start <= n
        # the rule, checked level by level
        assert np.all(train[1:light_end] >= train[0] - 0.02)
        if light_end < n:
            assert train[light_end] < train[0] - 0.02
        if sweet_start < collapse_start:
            assert test[sweet_start] >= test[1:].max() - 0.01
            assert np.all(test[light_end:sweet_start] < test[1:].max() - 0.01)
        if collapse_start < n:
            assert collapse_start >= light_end
            peak = sweet_start + int(np.argmax(test[sweet_start:])) if sweet_start < collapse_start else None
            if peak is None:
                assert test[collapse_start] < test[0] - 0.01
            else:
                assert collapse_start > peak
                assert test[collapse_start] < test[0] - 0.01 or train[collapse_start] < train[peak] - 0.10
    assert seen == set(PHASES)


def test_phases_edge_cases():
    # single level: the dense model
    assert phases([{"level": 0, "train_acc_mean": 1.0, "test_acc_mean": 0.9}]) == ["light"]
    # never leaves the memorising plateau: all light
    assert phase_labels([1.0] * 5, [0.9, 0.85, 0.8, 0.82, 0.84]) == ["light"] * 5
    # no dip: test climbs from the dense value as soon as train falls
    labels = phase_labels([1.0, 0.95, 0.9, 0.85, 0.84, 0.4], [0.86, 0.88, 0.92, 0.96, 0.955, 0.5])
    assert labels == ["light", "critical", "critical", "sweet", "sweet", "collapsed"]
    # no collapse: the run stops in the sweet spot
    train, test, expected = segment_curves(3, 2, 3, 0, np.random.default_rng(0))
    labels = phase_labels(train, test)
    assert labels == expected and "collapsed" not in labels
    # clean labels: train and test stay flat, then both crash; no critical phase
    labels = phase_labels([1.0, 1.0, 0.999, 1.0, 0.7, 0.3], [0.98, 0.981, 0.979, 0.98, 0.7, 0.2])
    assert labels == ["light"] * 4 + ["collapsed"] * 2
    # train crashes while test is still above the dense value
    labels = phase_labels([1.0, 1.0, 0.85, 0.82, 0.81, 0.6], [0.80, 0.78, 0.9, 0.95, 0.94, 0.85])
    assert labels == ["light", "light", "critical", "sweet", "sweet", "collapsed"]


def test_phase_tolerances_move_the_boundaries():
    train = [1.0, 0.99, 0.97, 0.9, 0.85, 0.2]
    test = [0.85, 0.82, 0.84, 0.93, 0.95, 0.3]
    assert phase_labels(train, test) == ["light", "light", "critical", "critical", "sweet", "collapsed"]
    assert phase_labels(train, test, tol_train=0.005)[:3] == ["light", "critical", "critical"]
    assert phase_labels(train, test, tol_sweet=0.03)[3] == "sweet"


def test_phases_reject_bad_input():
    with pytest.raises(ValueError, match="single branch"):
        phases([{"level": 0, "train_acc_mean": 1, "test_acc_mean": 1}] * 2)
    with pytest.raises(ValueError, match="test_acc_mean"):
        phases([{"level": 0, "train_acc_mean": 1.0}])
    with pytest.raises(ValueError, match="finite"):
        phase_labels([1.0, float("nan")], [0.9, 0.8])
    with pytest.raises(ValueError, match="no levels"):
        phases([])


def test_a_decline_without_recovery_has_no_sweet_phase():
    """Test accuracy that only falls after memorisation ends (its best sparse level more than
    tol_collapse below the dense one) has no sweet spot: critical levels, if any, then collapsed."""
    train, test = [1.0, 0.9, 0.8], [0.3475, 0.3340, 0.3285]
    assert phase_labels(train, test) == ["light", "collapsed", "collapsed"]
    # The same curve recovering to the dense accuracy (within tol_collapse) has one.
    assert phase_labels(train, [0.3475, 0.3200, 0.3450]) == ["light", "critical", "sweet"]
