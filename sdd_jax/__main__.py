import sys

from sdd_jax.cli import main

sys.exit(main())
