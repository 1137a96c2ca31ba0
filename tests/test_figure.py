"""``sdd_jax.figure``: the figure's numbers, its drawing, and its PNG and SVG files."""

import os

import matplotlib.colors
import numpy as np
import pytest
from report_rows import paper_like_rows

from sdd_jax.figure import figure_data, make_figure, save_figure
from sdd_jax.phases import PHASES, phases
from sdd_jax.results import aggregate


def test_save_figure_writes_png_and_svg(tmp_path):
    fig = make_figure(figure_data(paper_like_rows(seeds=2)), title="test")
    paths = save_figure(fig, tmp_path / "fig")
    assert paths == [str(tmp_path / "fig.png"), str(tmp_path / "fig.svg")]
    png = (tmp_path / "fig.png").read_bytes()
    svg = (tmp_path / "fig.svg").read_text()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "<svg" in svg and "sweet phase" in svg and "remaining weights" in svg
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_figure_draws_figure_data():
    rows = paper_like_rows(seeds=3) + paper_like_rows(seeds=2, branch="oneshot", rng_seed=4)
    data = figure_data(rows)
    main = data["main"]
    imp_agg = aggregate([r for r in rows if r["branch"] == "imp"])
    np.testing.assert_allclose(main["test_mean"], [100 * e["test_acc_mean"] for e in imp_agg])
    np.testing.assert_allclose(main["train_hi"], [100 * (e["train_acc_mean"] + e["train_acc_std"]) for e in imp_agg])
    np.testing.assert_allclose(main["x"], [100 * 0.8 ** e["level"] for e in imp_agg])
    assert main["phases"] == phases(imp_agg)
    assert main["dense_test"] == pytest.approx(100 * imp_agg[0]["test_acc_mean"])
    assert list(data["others"]) == ["oneshot"]
    # spans tile the levels in phase order
    assert [s[0] for s in main["spans"]] == list(PHASES)
    assert all(s[1] > s[2] for s in main["spans"])
    assert all(a[2] == b[1] for a, b in zip(main["spans"], main["spans"][1:]))

    fig = make_figure(data)
    ax = fig.axes[0]
    lines = {line.get_gid(): line for a in fig.axes for line in a.get_lines() if line.get_gid()}
    np.testing.assert_array_equal(lines["test"].get_ydata(), main["test_mean"])
    np.testing.assert_array_equal(lines["train"].get_ydata(), main["train_mean"])
    ld = main["learning_distance"]
    np.testing.assert_allclose(lines["learning_distance"].get_ydata(), ld / np.max(ld))
    assert "learning_distance_unpruned" not in lines  # NaN in these rows: not drawn
    np.testing.assert_array_equal(lines["test_oneshot"].get_ydata(), data["others"]["oneshot"]["test_mean"])
    assert lines["dense_test"].get_ydata()[0] == pytest.approx(main["dense_test"])
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > 100 > right  # reversed: sparsity grows to the right
    ticks = list(ax.get_xticks())
    assert ticks[:2] == [100, 50] and set(ticks) <= {100, 50, 20, 10, 5, 1, 0.5}
    assert all(right <= t <= left for t in ticks)


def test_both_learning_distances_are_drawn_over_their_maxima_with_their_peaks_named():
    rows = paper_like_rows(seeds=2)
    for r in rows:  # the unpruned distance peaks at level 3, the paper's at the last level
        r["learning_distance_unpruned"] = 1.0 + (3 - abs(r["level"] - 3)) * 0.5
    data = figure_data(rows)
    main = data["main"]
    np.testing.assert_allclose(
        main["learning_distance_unpruned"], [1.0 + (3 - abs(lv - 3)) * 0.5 for lv in main["level"]]
    )
    fig = make_figure(data)
    lines = {line.get_gid(): line for a in fig.axes for line in a.get_lines() if line.get_gid()}
    for key in ("learning_distance", "learning_distance_unpruned"):
        y = lines[key].get_ydata()
        np.testing.assert_allclose(y, main[key] / np.max(main[key]))
        assert main["level"][int(np.argmax(y))] == main["level"][int(np.argmax(main[key]))]
    labels = [t.get_text() for a in fig.axes if a.get_legend() for t in a.get_legend().get_texts()]
    assert any("unpruned" in t and "at level 3" in t for t in labels)
    assert any("paper" in t and f"at level {main['level'][-1]}" in t for t in labels)


def _by_level(rows, key):
    """{level: per-seed values in %} straight from the rows (the numpy oracle's input)."""
    out = {}
    for r in rows:
        out.setdefault(r["level"], []).append(100 * r[key])
    return {lv: np.array(v) for lv, v in sorted(out.items())}


def test_band_is_mean_plus_minus_one_sample_sd_and_the_legend_says_so():
    rows = paper_like_rows(seeds=3) + paper_like_rows(seeds=2, branch="oneshot", rng_seed=4)
    data = figure_data([r for r in rows if r["seed"] < 3])
    main = data["main"]
    for key, column in (("test", "test_acc"), ("train", "train_acc")):
        per_level = _by_level([r for r in rows if r["branch"] == "imp"], column)
        mean = np.array([v.mean() for v in per_level.values()])
        sd = np.array([v.std(ddof=1) for v in per_level.values()])  # the table's ± sd
        np.testing.assert_allclose(main[f"{key}_lo"], mean - sd, rtol=1e-12)
        np.testing.assert_allclose(main[f"{key}_hi"], mean + sd, rtol=1e-12)
    branch = _by_level([r for r in rows if r["branch"] == "oneshot"], "test_acc")
    np.testing.assert_allclose(data["others"]["oneshot"]["test_sd"], [v.std(ddof=1) for v in branch.values()])

    fig = make_figure(data)
    ax = fig.axes[0]
    band = next(c for c in ax.collections if c.get_gid() == "test_band")
    ys = band.get_paths()[0].vertices[:, 1]
    for lo, hi in zip(main["test_lo"], main["test_hi"]):  # the polygon runs along both edges
        assert np.isclose(ys, lo).any() and np.isclose(ys, hi).any()
    bars = [c for c in ax.collections if c.get_gid() == "test_oneshot_sd"]
    assert len(bars) == 1  # the branch points carry their seed spread
    segments = bars[0].get_segments()
    other = data["others"]["oneshot"]
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments], 2 * other["test_sd"])
    labels = [t.get_text() for a in fig.axes if a.get_legend() for t in a.get_legend().get_texts()]
    assert any("± 1 sd over 3 seeds (ddof=1)" in t for t in labels)
    assert "train (noisy labels)" in labels
    assert "mean of 3 seeds" in ax.get_ylabel()


def test_a_short_run_has_a_tick_at_every_level():
    rows = [r for r in paper_like_rows(seeds=2) if r["level"] <= 3]
    fig = make_figure(figure_data(rows))
    ax = fig.axes[0]
    ticks = sorted(ax.get_xticks(), reverse=True)
    np.testing.assert_allclose(ticks, [100 * 0.8**lv for lv in range(4)])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["100%", "80%", "64%", "51.2%"]


def test_every_curve_has_its_own_colour():
    rows = paper_like_rows(seeds=2)
    for r in rows:
        r["learning_distance_unpruned"] = 1.0 + r["level"]
    for name, seed in (("oneshot", 4), ("reinit", 5), ("random_prune", 6)):
        rows += paper_like_rows(seeds=2, branch=name, rng_seed=seed)
    fig = make_figure(figure_data(rows))
    lines = {line.get_gid(): line for a in fig.axes for line in a.get_lines() if line.get_gid()}
    drawn = ["test", "train", "learning_distance", "learning_distance_unpruned", "test_oneshot", "test_reinit"]
    drawn.append("test_random_prune")
    colours = [matplotlib.colors.to_hex(lines[gid].get_color()) for gid in drawn]
    assert len(set(colours)) == len(colours), dict(zip(drawn, colours))
