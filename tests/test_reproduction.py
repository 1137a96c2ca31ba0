"""The quickstart's setting reproduces sparse double descent (slow: about a minute of one core).

The quickstart's data, noise, model and training, with one seed and pruned four times as fast:
59% of the remaining weights per level (0.41 = 0.8**4, four of the quickstart's levels at a time)
for 9 levels, down to 0.03% of the weights (the quickstart's 34 levels reach 0.05%). That is an
eighth of the quickstart's training; the full quickstart's numbers are in
``docs/quickstart_summary.txt``.

Run with ``pytest -m slow``; CI runs it too. It runs as a user runs it: ``python -m sdd_jax run
quickstart`` in its own process, compiled by XLA as the product is (the suite's own processes
compile with less optimisation, see ``conftest.py``; this test is the suite's longest training).
The thresholds are loose margins around the
phenomenon, not recorded numbers: test accuracy must dip below the dense value while the sparse
networks still fit the noisy training labels, rise above the dense value once they no longer
can, and fall back at the sparsest levels.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import PRODUCT_XLA_FLAGS

from sdd_jax import phases, results


@pytest.mark.slow
def test_the_quickstart_setting_shows_all_three_phases(tmp_path):
    settings = {"pruning.fraction": 0.59, "pruning.levels": 9}
    command = [sys.executable, "-m", "sdd_jax", "run", "quickstart", "--seeds", "1", "--workdir", str(tmp_path), "-q"]
    command += [w for key, value in settings.items() for w in ("--set", f"{key}={value}")]
    env = {**os.environ, "XLA_FLAGS": PRODUCT_XLA_FLAGS}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = tmp_path.glob("quickstart-*")
    agg = results.aggregate(results.read_results_csv(run_dir / "results.csv"))
    test = np.array([a["test_acc_mean"] for a in agg])
    train = np.array([a["train_acc_mean"] for a in agg])
    memorised = np.array([a["train_acc_noisy_subset_mean"] for a in agg])
    dense_test = test[0]
    assert train[0] > 0.98 and memorised[0] > 0.95  # the dense net memorises the noise

    # Phase 1: while the sparse nets still memorise, test accuracy falls below the dense value.
    memorising = np.flatnonzero(train > 0.97)
    dip = memorising[np.argmin(test[memorising])]
    assert test[dip] < dense_test - 0.03, (dense_test, test[dip])

    # Phase 2: past the dip, memorisation breaks down and test accuracy beats the dense value.
    peak = dip + int(np.argmax(test[dip:]))
    assert test[peak] > dense_test + 0.005, (dense_test, test[peak])
    assert memorised[peak] < 0.5 and train[peak] < 0.9

    # Phase 3: the sparsest levels fall back (collapse or flatten).
    assert peak < len(test) - 1 and test[-1] < test[peak] - 0.01

    labels = phases.phases(agg)
    assert labels[0] == "light" and "critical" in labels and labels[-1] in ("sweet", "collapsed")
