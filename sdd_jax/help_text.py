"""The command line's longer help texts (``sdd-jax <command> --help``), kept apart from the parser
(:mod:`sdd_jax.cli`) so that each command can say what it does. Host only: plain strings."""

from __future__ import annotations

PRESET_HELP = "a preset name (sdd-jax presets, variants included) or a Python file defining config()"

RUN_DIR_HELP = "a run directory: the folder `sdd-jax run` printed, <workdir>/<preset>[-<slug>]-<hash>"

RUN_HELP = (
    "Train the preset's dense network (level 0), then prune pruning.fraction of the remaining weights by "
    "pruning.criterion (global magnitude by default) and retrain by pruning.schedule, pruning.levels times, all seeds together. Everything goes "
    "to the run directory <workdir>/<preset>[-<slug>]-<hash>: results.csv, curves.csv, layers.csv, the "
    "summary table, the figure and the checkpoints. Rerunning the same command resumes a killed run where "
    "it stopped; a finished run is not recomputed; more levels (--set pruning.levels=N) extend it."
)

REPORT_HELP = (
    "Rebuild a run directory's summary table, figure and combined files (results_all.csv, curves_all.csv) "
    "from its results files alone, its branches drawn beside the main curve, and say how many of its levels "
    "are done. Given a study directory (sdd-jax sweep), write the study's comparison instead."
)

REPORT_DIR_HELP = (
    "a run directory (<workdir>/<preset>[-<slug>]-<hash>, as `sdd-jax run` printed it) or a study "
    "directory (<workdir>/<name>-study-<hash>)"
)

# Per branch command: (one-line help, what it does, what --levels means for it).
BRANCH_HELP = {
    "oneshot": (
        "one-shot pruning from the dense model to the density of level k",
        "Prune the dense level-0 network once, by the run's criterion, to exactly the kept count of "
        "iterative level k (0.8^k of the prunable weights for 20% per level), then retrain it by the "
        "run's schedule. Needs level 0 of the run only (the paper's Tiny-ImageNet protocol: a dense run, "
        "then oneshot --levels 1,...,16).",
        "comma-separated k values: the one-shot densities are those of iterative levels k (they need not be finished)",
    ),
    "reinit": (
        "level k's masks with a new random initialisation",
        "Keep the masks of the run's level k but draw new initial weights (the init stream with a "
        "branch salt), and retrain from the rewind iteration as lottery retraining does: the winning "
        "ticket against a random re-initialisation (the paper's Fig. 10).",
        "comma-separated finished levels of the run whose masks are re-initialised",
    ),
    "random-prune": (
        "random masks with level k's per-layer counts",
        "Draw a random mask with the same number of kept weights in every layer as the run's level k, "
        "and retrain it by the run's schedule (lottery: from the rewind weights): does the learned mask "
        "matter, or only the per-layer density?",
        "comma-separated finished levels of the run whose per-layer counts are copied",
    ),
    "redense": (
        "reopen all pruned weights after level k and train them",
        "Start from the trained weights of the run's level k, release every pruned weight at 0 and "
        "train the whole network for pruning.redense_epochs epochs at the fixed pruning.redense_lr "
        "(the paper's Fig. 6). Requires --set pruning.redense_epochs=N (N > 0); each epochs/lr setting "
        "is its own branch (redense-e<epochs>-lr<lr>).",
        "comma-separated finished levels of the run to re-dense",
    ),
}

EXPORT_HELP = (
    "Write one seed's network of a finished level with its prunable kernels stored sparse (npz: values "
    "and flat indices per prunable leaf; bcoo: jax.experimental.sparse.BCOO's layout), the other leaves "
    "and the BatchNorm statistics dense; print its size, and check on test examples that its sparse "
    "logits equal the dense masked network's. During a sweep the masks are dense (no speed-up, no "
    "memory saving): this is how a pruned network is used on its own."
)

FORCE_UNLOCK_HELP = (
    "first remove the lock that a killed process (kill -9, a lost VM) left on a gs:// run directory "
    "(the lock object only)"
)
