"""``sdd_jax.table``: the fixed-width summary table."""

import pytest
from report_rows import paper_like_rows

from sdd_jax.phases import phases
from sdd_jax.results import aggregate
from sdd_jax.table import summary_table


def test_summary_table_lists_every_level_with_its_numbers_and_phase():
    rows = paper_like_rows(seeds=2)
    agg = aggregate(rows)
    labels = phases(agg)
    table = summary_table(rows)
    lines = table.strip().splitlines()
    assert lines[0] == "branch: imp"
    assert "test acc %" in lines[1] and "phase" in lines[1]
    body = lines[3:]
    assert len(body) == len(agg)
    widths = {len(line.rstrip()) for line in body}
    assert max(widths) - min(widths) <= len("collapsed") - len("sweet")  # fixed-width columns
    for line, entry, label in zip(body, agg, labels):
        cells = line.split()
        assert int(cells[0]) == entry["level"] and int(cells[1]) == entry["n_seeds"]
        assert float(cells[2]) == pytest.approx(100 * entry["sparsity_mean"], abs=0.005)
        assert cells[5] == "±"
        assert float(cells[4]) == pytest.approx(100 * entry["test_acc_mean"], abs=0.005)
        assert float(cells[6]) == pytest.approx(100 * entry["test_acc_std"], abs=0.005)
        assert float(cells[7]) == pytest.approx(100 * entry["train_acc_mean"], abs=0.005)
        assert cells[-1] == label


def test_summary_table_one_section_per_branch():
    rows = paper_like_rows(seeds=1) + paper_like_rows(seeds=1, branch="oneshot", rng_seed=4)
    table = summary_table(rows)
    assert "branch: imp" in table and "branch: oneshot" in table
    assert table.count("level") == 2
