"""The command line's arguments: one ``argparse`` parser with a subcommand per ``sdd-jax`` command
(what each does: :mod:`sdd_jax.cli_commands`; the entry point and its errors: :mod:`sdd_jax.cli`)."""

from __future__ import annotations

import argparse
import sys
import textwrap

from sdd_jax.help_text import (
    BRANCH_HELP,
    EXPORT_HELP,
    FORCE_UNLOCK_HELP,
    PRESET_HELP,
    REPORT_DIR_HELP,
    REPORT_HELP,
    RUN_DIR_HELP,
    RUN_HELP,
)
from sdd_jax.version import package_version

DESCRIPTION = "sdd-jax (or python -m sdd_jax): run presets and studies, branch from finished runs, compare, report."


class _Version(argparse.Action):
    """``--version``: the package's version, looked up only when asked (argparse's own version
    action takes the text when the parser is built, on every command)."""

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(f"{parser.prog} {package_version()}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``sdd-jax`` command (each with its own ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="sdd-jax", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version of sdd-jax and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the presets, one line each")

    def add_overrides(p, workdir: bool = True):
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value by its dotted key (repeatable)",
        )
        p.add_argument("--seeds", type=int, help="number of seeds trained together (run.seeds)")
        if workdir:
            p.add_argument(
                "--workdir", help="where run directories are created (run.workdir): a folder or gs://BUCKET/PATH"
            )

    def add_drawing(p, what: str = ""):
        """--by, --panel and --distance (of ``what``: a comparison's drawing)."""
        of = f" ({what})" if what else ""
        p.add_argument("--by", help=f"colour by: a dotted config key (noise.rate), an identity column or init{of}")
        p.add_argument("--panel", help="one panel per value of this key")
        p.add_argument("--distance", action="store_true", help="the learning distance in a second row of panels")

    show = sub.add_parser(
        "show", help="print the resolved config of a preset (or a preset file) as JSON, its description generated"
    )
    show.add_argument("preset", help=PRESET_HELP)
    add_overrides(show)

    run = sub.add_parser(
        "run", help="an iterative-pruning run (resumes if interrupted)", description=textwrap.fill(RUN_HELP, 88)
    )
    run.add_argument("preset", help=PRESET_HELP)
    add_overrides(run)
    loud = run.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
    loud.add_argument("-v", "--verbose", action="store_true", help="a line per finished level")
    run.add_argument("--force-unlock", action="store_true", help=FORCE_UNLOCK_HELP)

    sweep = sub.add_parser(
        "sweep", help="a study: a grid of configurations, its replica axes stacked in one program (resumes)"
    )
    sweep.add_argument("preset", help="a run preset, or a study preset (its grid, seeds and overrides)")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="an axis of the grid (repeatable; replaces a study preset's axis of the same key)",
    )
    add_overrides(sweep)
    add_drawing(sweep, "the study's comparison (kept in study.json)")
    quiet = sweep.add_mutually_exclusive_group()
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    quiet.add_argument("-v", "--verbose", action="store_true", help="a line per finished level")

    for name, (text, what, levels_help) in BRANCH_HELP.items():
        branch = sub.add_parser(
            name,
            help=text,
            description="\n\n".join(
                textwrap.fill(p, 88)
                for p in (what, "The branch is written to RUN_DIR/branches/ and drawn beside the main curve.")
            ),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        branch.add_argument(
            "run_dir",
            help=RUN_DIR_HELP
            + ("; its level 0 finished" if name == "oneshot" else "; the levels given to --levels finished"),
        )
        branch.add_argument("--levels", required=True, help=levels_help)
        branch.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=(
                "pruning.redense_epochs=N (required, N > 0), pruning.redense_lr=LR and run.* execution settings"
                if name == "redense"
                else "run.* execution settings only (seeds_per_chunk, verbosity, ...)"
            ),
        )
        branch.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
        branch.add_argument("--force-unlock", action="store_true", help=FORCE_UNLOCK_HELP)

    rep = sub.add_parser(
        "report",
        help="rebuild the table and figures from results.csv (a study: its comparison)",
        description=textwrap.fill(REPORT_HELP, 88),
    )
    rep.add_argument("run_dir", help=REPORT_DIR_HELP)
    add_drawing(rep, "a study directory's comparison (default: the study's own)")

    cmp = sub.add_parser(
        "compare", help="configurations side by side: one figure and table of study or run directories"
    )
    cmp.add_argument("paths", nargs="+", metavar="STUDY_DIR|RUN_DIR")
    add_drawing(cmp)
    cmp.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep only the configurations with this value (repeatable; e.g. --where pruning.criterion=magnitude)",
    )
    cmp.add_argument("--branches", action="store_true", help="each branch of a run directory as a series too")
    cmp.add_argument("--out", help="where the files go (default: a single study's directory, else ./comparison)")

    analyze = sub.add_parser(
        "analyze",
        help="re-dense training, interpolation, loss curves, sharpness, "
        "calibration and correlations over a finished run",
    )
    analyze.add_argument("run_dir", help=RUN_DIR_HELP + "; a finished run (an unfinished one: its finished levels)")
    analyze.add_argument(
        "--levels",
        help="comma-separated levels (default: dense, critical, sweet and collapsed, picked by the phase rule)",
    )
    analyze.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="analysis.* settings (see sdd_jax/analysis/settings.py) and run.* only",
    )
    analyze.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")

    estimate = sub.add_parser(
        "estimate",
        help="how long a preset's sweep takes here, from a few timed epochs of its dense level (nothing is written)",
    )
    estimate.add_argument("preset", help=PRESET_HELP)
    add_overrides(estimate, workdir=False)  # nothing is written
    estimate.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up epoch")

    export = sub.add_parser(
        "export",
        help="write a level's pruned network as a sparse model and check its logits",
        description=EXPORT_HELP,
    )
    export.add_argument("run_dir", help=RUN_DIR_HELP)
    export.add_argument("--level", type=int, required=True, help="a finished pruning level k")
    export.add_argument("--seed", type=int, help="which seed's network (default: the run's first seed)")
    export.add_argument("--format", choices=("npz", "bcoo"), default="npz", help="sparse layout (default npz)")
    export.add_argument(
        "--out",
        help="output file, or an existing folder to write the default file name in "
        "(default RUN_DIR/exports/level<k>-seed<s>[.bcoo].npz)",
    )
    for choice in sub._choices_actions:  # a command without a longer description says its one-line help
        command = sub.choices[choice.dest]
        if not command.description:
            command.description = choice.help[0].upper() + choice.help[1:] + "."
    return parser
