"""How long a preset's full pruning sweep will take here: ``sdd-jax estimate`` (the logic is in
``sdd_jax/estimate.py``); this script is kept for the commands written with it.

    python benchmarks/sweep_time.py PRESET [--set key=value ...] [--seeds N] [--epochs 2]
"""

import sys

from sdd_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["estimate", *sys.argv[1:]]))
