"""``sdd_jax.figure``: the figure's numbers, its drawing, and its PNG and SVG files."""

import os

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
    np.testing.assert_allclose(main["train_hi"], [100 * e["train_acc_max"] for e in imp_agg])
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
