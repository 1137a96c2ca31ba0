"""``sdd_jax.analysis.calibration`` and ``.stats``: ECE, NLL and Brier on hand-made predictions,
bootstrap intervals over seeds that cover the known value, rank correlations on synthetic curves,
and the choice of the four levels."""

import warnings

import numpy as np
import pytest
from report_rows import paper_like_rows
from scipy import stats as sps

from sdd_jax.analysis import calibration, stats
from sdd_jax.analysis.pipeline import choose_levels
from sdd_jax.analysis.report import correlation_markdown, phase_markdown
from sdd_jax.phases import phases
from sdd_jax.results import aggregate


def test_ece_nll_and_brier_on_hand_made_predictions():
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # confidence 0.9, correct
            [0.9, 0.05, 0.05],  # confidence 0.9, wrong (label 1)
            [0.2, 0.62, 0.18],  # confidence 0.62, correct
            [0.18, 0.2, 0.62],
        ]
    )  # confidence 0.62, correct
    labels = np.array([0, 1, 1, 2])
    out = calibration.calibration(np.log(probs), labels, bins=15)
    # bin (0.867, 0.933]: accuracy 1/2 at confidence 0.9; bin (0.6, 0.667]: accuracy 1 at 0.62
    assert out["ece"] == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.62))
    assert out["acc"] == 0.75
    assert out["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.05, 0.62, 0.62])))
    brier = [0.1**2 + 2 * 0.05**2, 0.9**2 + 0.95**2 + 0.05**2, 0.2**2 + 0.38**2 + 0.18**2, 0.18**2 + 0.2**2 + 0.38**2]
    assert out["brier"] == pytest.approx(np.mean(brier))
    rel = out["reliability"]
    assert rel["count"][13] == 2 and rel["count"][9] == 2 and rel["count"].sum() == 4
    assert rel["accuracy"][13] == 0.5 and rel["confidence"][9] == pytest.approx(0.62)


def test_perfectly_calibrated_predictions_have_zero_ece_and_bins_are_right_closed():
    assert calibration.expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0
    rel = calibration.reliability(np.array([1.0, 1 / 15 + 1e-9, 1 / 15]), np.array([1, 1, 0]), 15)
    assert rel["count"][14] == 1 and rel["count"][1] == 1 and rel["count"][0] == 1


def test_memorisation_against_noisy_and_true_labels():
    y_clean = np.array([0, 1, 2, 3, 4, 5])
    y_noisy = np.array([0, 1, 9, 9, 9, 5])  # examples 2, 3, 4 relabelled
    pred = np.array([0, 1, 9, 3, 7, 5])
    m = calibration.memorisation(pred, y_noisy, y_clean)
    assert m["noisy_subset_acc_noisy"] == pytest.approx(1 / 3)
    assert m["noisy_subset_acc_true"] == pytest.approx(1 / 3)


def test_bootstrap_intervals_cover_the_known_mean():
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for trial in range(40):
        values = 0.8 + 0.05 * rng.normal(size=(30, 1))  # 30 seeds, known mean 0.8
        value, lo, hi = stats.bootstrap_over_seeds((values,), lambda v: v[0], n_resamples=400, seed=trial)
        assert lo <= value <= hi
        covered += lo <= 0.8 <= hi
        widths.append(hi - lo)
    assert covered >= 34  # nominal 95% of 40; the percentile bootstrap undercovers a little
    # about 2 x 1.96 x 0.05 / sqrt(30) wide
    assert np.mean(widths) == pytest.approx(2 * 1.96 * 0.05 / np.sqrt(30), rel=0.2)


def test_one_seed_gives_an_undefined_interval_not_a_certain_one():
    per_seed = np.array([[0.80, 0.70, 0.75, 0.90]])
    out = stats.bootstrap_interval((per_seed,), lambda t: t[0] - t[1])
    assert out.value == pytest.approx(0.10)
    assert np.isnan(out.low) and np.isnan(out.high) and out.dropped == 0
    rows = stats.phase_statistics(per_seed, np.arange(4), 0, 1, 3, n_resamples=50)
    assert all(
        r["value"] == pytest.approx(per_seed[0][{"dense": 0, "worst": 1, "best": 3}[r["quantity"]]])
        for r in rows
        if r["level"] is not None
    )
    assert all(np.isnan(r["ci_low"]) and np.isnan(r["ci_high"]) for r in rows)
    assert "[n/a, n/a]" in phase_markdown(rows)


def degenerate_two_seeds():
    """Two seeds; the candidate of seed 1 is constant over the levels (memorisation saturated at 1):
    a resample made only of seed 1 has an undefined rank correlation."""
    levels = np.arange(6)
    test = np.array([[0.80, 0.78, 0.75, 0.79, 0.83, 0.60], [0.70, 0.88, 0.76, 0.74, 0.82, 0.62]])
    cand = np.array([[0.90, 0.95, 0.99, 1.0, 0.97, 0.70], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    return levels, test, cand


def test_a_degenerate_resample_is_dropped_and_counted_not_spread_over_the_interval():
    levels, test, cand = degenerate_two_seeds()
    stat = stats.rank_correlation
    out = stats.bootstrap_interval((test, cand), stat, n_resamples=400, seed=3)
    # The resamples of two seeds are {0, 1} (the full mean), {0, 0} (seed 0 alone) and {1, 1} (undefined).
    both, alone = stat(test.mean(0), cand.mean(0)), stat(test[0], cand[0])
    assert np.isnan(stat(test[1], cand[1])) and out.value == both
    assert 0.15 * 400 < out.dropped < 0.35 * 400  # P({1, 1}) = 1/4
    assert both != alone and min(both, alone) <= out.low < out.high <= max(both, alone)
    rows = stats.correlation_table(test, {"memorised": cand}, levels, n_resamples=400, seed=3)
    spearman = next(r for r in rows if r["method"] == "spearman")
    assert (spearman["ci_low"], spearman["ci_high"], spearman["ci_dropped"]) == (out.low, out.high, out.dropped)
    assert f"{out.dropped} of 400 resamples undefined" in correlation_markdown(rows, 400)


def test_intervals_without_degenerate_resamples_are_scipys_percentile_intervals():
    rng = np.random.default_rng(4)
    per_seed = 0.8 + 0.05 * rng.normal(size=(5, 3))

    def stat(t):
        return t[0] - t[2]

    out = stats.bootstrap_interval((per_seed,), stat, n_resamples=300, confidence=0.9, seed=11)

    def on(index):
        return stat(np.nanmean(per_seed[np.asarray(index, int)], axis=0))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sps.bootstrap(
            (np.arange(5),),
            on,
            n_resamples=300,
            vectorized=False,
            confidence_level=0.9,
            method="percentile",
            rng=np.random.default_rng(11),
        ).confidence_interval
    assert (out.low, out.high, out.dropped) == (ref.low, ref.high, 0)
    assert stats.bootstrap_over_seeds((per_seed,), stat, n_resamples=300, confidence=0.9, seed=11) == out[:3]
    assert "undefined" not in phase_markdown(stats.phase_statistics(per_seed, np.arange(3), 0, 1, 2, n_resamples=50))


def test_rank_correlations_on_synthetic_curves():
    levels = np.arange(12)
    test = np.sin(levels / 3.0)
    assert stats.rank_correlation(test, 2 * test + 1, "spearman") == pytest.approx(1.0)
    assert stats.rank_correlation(test, -test, "kendall") == pytest.approx(-1.0)
    assert np.isnan(stats.rank_correlation(test, np.ones(12)))
    rng = np.random.default_rng(1)
    seeds_test = test + 0.01 * rng.normal(size=(5, 12))
    candidates = {"explains": -seeds_test + 0.01 * rng.normal(size=(5, 12)), "unrelated": rng.normal(size=(5, 12))}
    rows = stats.correlation_table(seeds_test, candidates, levels, n_resamples=200)
    got = {(r["candidate"], r["method"]): r for r in rows}
    assert got["explains", "spearman"]["value"] < -0.95 and got["explains", "spearman"]["ci_high"] < -0.9
    assert got["explains", "kendall"]["value"] < -0.85
    unrelated = got["unrelated", "spearman"]
    # seed noise moves an unrelated curve's correlation a lot: a wide interval
    assert (
        unrelated["ci_high"] - unrelated["ci_low"]
        > 0.3
        > abs(got["explains", "spearman"]["ci_high"] - got["explains", "spearman"]["ci_low"])
    )
    assert all(r["levels"] == 12 for r in rows)


def test_phase_statistics_measure_the_dip_and_the_recovery():
    rng = np.random.default_rng(2)
    curve = np.array([0.84, 0.80, 0.77, 0.82, 0.86, 0.83])
    per_seed = curve + 0.002 * rng.normal(size=(8, 6))
    rows = {r["quantity"]: r for r in stats.phase_statistics(per_seed, np.arange(6), 0, 2, 4, n_resamples=300)}
    assert rows["dip"]["value"] == pytest.approx(0.07, abs=0.005)
    assert rows["recovery"]["ci_low"] < 0.09 < rows["recovery"]["ci_high"] + 0.003
    assert rows["worst"]["level"] == 2 and rows["best"]["level"] == 4


def test_the_four_levels_follow_the_phase_rule():
    rows = paper_like_rows(seeds=2)
    agg = aggregate(rows)
    labels = phases(agg)
    chosen = choose_levels(rows)
    test = {e["level"]: e["test_acc_mean"] for e in agg}
    phase_of = dict(zip([e["level"] for e in agg], labels))
    assert chosen["dense"] == 0
    assert chosen["sweet"] == max((lv for lv in test if lv > 0), key=test.get)
    # The bottom of the dip is the last light level here: named "dip", not "critical", so that
    # the role agrees with the phase column.
    assert phase_of[chosen["dip"]] == "light"
    assert test[chosen["dip"]] == min(test[lv] for lv in test if 0 < lv < chosen["sweet"])
    assert phase_of[chosen["sweet"]] == "sweet" and phase_of[chosen["collapsed"]] == "collapsed"
    assert list(chosen) == ["dense", "dip", "sweet", "collapsed"]


def test_a_role_named_after_a_phase_is_only_given_to_a_level_of_that_phase():
    # Three levels still memorising: the best sparse level is in the light phase, not a sweet spot.
    rows = [r for r in paper_like_rows(seeds=2) if r["level"] <= 3]
    agg = aggregate(rows)
    phase_of = dict(zip([e["level"] for e in agg], phases(agg)))
    chosen = choose_levels(rows)
    assert set(phase_of.values()) == {"light"}
    assert "sweet" not in chosen and "critical" not in chosen
    best = max((e for e in agg if e["level"] > 0), key=lambda e: e["test_acc_mean"])["level"]
    assert chosen["best"] == best
    for role, level in chosen.items():
        assert role not in ("light", "critical", "sweet", "collapsed") or phase_of[level] == role
