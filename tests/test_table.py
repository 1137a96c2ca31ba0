"""``sdd_jax.table``: the fixed-width summary table."""

import numpy as np
import pytest
from report_rows import paper_like_rows

from sdd_jax.phases import phases
from sdd_jax.results import aggregate
from sdd_jax.table import STD_NOTE, summary_table


def test_summary_table_lists_every_level_with_its_numbers_and_phase():
    rows = paper_like_rows(seeds=2)
    agg = aggregate(rows)
    labels = phases(agg)
    table = summary_table(rows)
    lines = table.strip().splitlines()
    assert lines[0] == "branch: imp"
    assert "test acc % ± sd" in lines[1] and "phase" in lines[1]
    assert lines[-2:] == ["", STD_NOTE] and "sample standard deviation" in STD_NOTE and "ddof=1" in STD_NOTE
    body = lines[3:-2]
    assert len(body) == len(agg)
    widths = {len(line.rstrip()) for line in body}
    assert max(widths) - min(widths) <= len("collapsed") - len("sweet")  # fixed-width columns
    for line, entry, label in zip(body, agg, labels):
        cells = line.split()
        assert int(cells[0]) == entry["level"] and int(cells[1]) == entry["n_seeds"]
        assert float(cells[2]) == pytest.approx(100 * entry["sparsity_mean"], abs=0.005)
        assert cells[5] == "±"
        assert float(cells[4]) == pytest.approx(100 * entry["test_acc_mean"], abs=0.005)
        # The sample standard deviation (ddof=1) of the two seeds, not the population one.
        seeds = [r["test_acc"] for r in rows if r["level"] == entry["level"]]
        assert float(cells[6]) == pytest.approx(100 * np.std(seeds, ddof=1), abs=0.005)
        assert float(cells[7]) == pytest.approx(100 * entry["train_acc_mean"], abs=0.005)
        assert cells[-1] == label


def test_summary_table_one_section_per_branch():
    rows = paper_like_rows(seeds=1) + paper_like_rows(seeds=1, branch="oneshot", rng_seed=4)
    table = summary_table(rows)
    assert "branch: imp" in table and "branch: oneshot" in table
    assert table.count("level") == 2


def test_one_seed_prints_the_mean_alone():
    rows = paper_like_rows(seeds=1)
    lines = summary_table(rows).strip().splitlines()
    body = lines[3:-2]
    assert body and not any("±" in line for line in body)
    agg = aggregate(rows)
    assert float(body[0].split()[4]) == pytest.approx(100 * agg[0]["test_acc_mean"], abs=0.005)
