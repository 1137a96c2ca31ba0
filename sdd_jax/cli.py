"""``sdd-jax`` / ``python -m sdd_jax``: run presets, branch from finished runs, report.

sdd-jax presets
sdd-jax show PRESET [--set key=value ...]
sdd-jax run PRESET [--set key=value ...] [--seeds N] [--workdir DIR|gs://BUCKET/DIR] [-q | -v] [--force-unlock]
sdd-jax sweep PRESET --grid KEY=V1,V2,... [--grid ...] [--set key=value ...] [--seeds N] [--workdir DIR] [-q | -v]
sdd-jax oneshot RUN_DIR --levels 4,8,12 [--force-unlock]      (also: reinit, random-prune, redense)
sdd-jax report RUN_DIR|STUDY_DIR
sdd-jax compare STUDY_DIR|RUN_DIR... --by KEY [--panel KEY] [--distance] [--branches] [--out DIR]
sdd-jax analyze RUN_DIR [--levels 0,17,27,34] [--set analysis.key=value ...] [-q]
sdd-jax estimate PRESET [--set key=value ...] [--seeds N] [--epochs 2]
sdd-jax export RUN_DIR --level K [--seed S] [--format npz|bcoo] [--out PATH]

PRESET is a preset name (sdd-jax presets) or a Python file defining config() (my_preset.py).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

from sdd_jax.config import ConfigError, override, to_dict
from sdd_jax.help_text import BRANCH_HELP, EXPORT_HELP, PRESET_HELP


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdd-jax", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
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

    show = sub.add_parser(
        "show", help="print the resolved config of a preset (or a preset file) as JSON, its description generated"
    )
    show.add_argument("preset", help=PRESET_HELP)
    add_overrides(show)

    run = sub.add_parser("run", help="an iterative-pruning run (resumes if interrupted)")
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
        branch.add_argument("run_dir", help="a run directory (runs/<preset>-<hash>) whose levels are finished")
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

    rep = sub.add_parser("report", help="rebuild the table and figures from results.csv (a study: its comparison)")
    rep.add_argument("run_dir")

    cmp = sub.add_parser(
        "compare", help="configurations side by side: one figure and table of study or run directories"
    )
    cmp.add_argument("paths", nargs="+", metavar="STUDY_DIR|RUN_DIR")
    cmp.add_argument("--by", help="colour by: a dotted config key (noise.rate), an identity column or init")
    cmp.add_argument("--panel", help="one panel per value of this key")
    cmp.add_argument("--distance", action="store_true", help="the learning distance in a second row of panels")
    cmp.add_argument("--branches", action="store_true", help="each branch of a run directory as a series too")
    cmp.add_argument("--out", help="where the files go (default: a single study's directory, else ./comparison)")

    analyze = sub.add_parser(
        "analyze",
        help="re-dense training, interpolation, loss curves, sharpness, "
        "calibration and correlations over a finished run",
    )
    analyze.add_argument("run_dir")
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
    export.add_argument("run_dir", help="a run directory (runs/<preset>-<hash>)")
    export.add_argument("--level", type=int, required=True, help="a finished pruning level k")
    export.add_argument("--seed", type=int, help="which seed's network (default: the run's first seed)")
    export.add_argument("--format", choices=("npz", "bcoo"), default="npz", help="sparse layout (default npz)")
    export.add_argument("--out", help="output file (default RUN_DIR/exports/level<k>-seed<s>[.bcoo].npz)")
    return parser


def resolve(preset: str, overrides: list[str], seeds: int | None = None, workdir: str | None = None):
    """The config of ``preset`` (a name of :mod:`sdd_jax.presets`, or a Python file defining
    ``config()``: :mod:`sdd_jax.preset_file`) with command-line overrides applied."""
    from sdd_jax import presets
    from sdd_jax.preset_file import is_preset_file, load_preset_file

    config = load_preset_file(preset) if is_preset_file(preset) else presets.get(preset)
    extra = list(overrides)
    if seeds is not None:
        extra.append(f"run.seeds={seeds}")
    if workdir is not None:
        extra.append(f"run.workdir={workdir}")
    return override(config, extra)


FORCE_UNLOCK_HELP = (
    "first remove the lock that a killed process (kill -9, a lost VM) left on a gs:// run directory "
    "(the lock object only)"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a preempted VM's shutdown): the command stops as on Ctrl-C, its in-flight
    checkpoint finished and its run directory's lock released."""


@contextlib.contextmanager
def _sigterm_stops():
    """While a command runs, the first SIGTERM raises :class:`Terminated` in the main thread (the
    later ones are ignored while it stops); the previous handler afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.formatwarning = _warning_line
    with _sigterm_stops():
        return _main(args)


def _main(args) -> int:
    try:
        return _dispatch(args)
    except BrokenPipeError:  # e.g. `sdd-jax show ... | head`
        sys.stderr.close()
        return 0
    except OSError as err:
        print(f"sdd-jax: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except (ConfigError, KeyError, ValueError, FloatingPointError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sdd-jax: error: {message}", file=sys.stderr)
        return 2
    except Terminated:
        print("sdd-jax: stopped by SIGTERM; rerun the same command to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("sdd-jax: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get("SDD_JAX_TRACEBACK"):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(
            f"sdd-jax: error: unexpected {type(err).__name__}: {first} (set SDD_JAX_TRACEBACK=1 to see where)",
            file=sys.stderr,
        )
        return 1


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"sdd-jax: warning: {message}\n"


def os_error_line(err: OSError) -> str:
    """One line for a failed file operation: the path, the reason and, for a full disk, what a
    rerun does."""
    if err.strerror is None:  # raised by this package with its own message
        return str(err)
    where = err.filename if err.filename is not None else "a file"
    line = f"cannot write or read {where}: {err.strerror}"
    if err.errno == errno.ENOSPC:
        line += (
            "; free some space and rerun the same command: finished levels and the last "
            "checkpoint are kept, and the results are the same as an uninterrupted run"
        )
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        line += "; choose a writable --workdir (run.workdir) or fix the permissions"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        line += "; a file stands where a folder is needed"
    return line


def _dispatch(args) -> int:
    if args.command == "presets":
        from sdd_jax import presets
        from sdd_jax.presets import studies

        rows, study_rows = presets.listing(), studies.study_listing()
        width = max(len(name) for name, _ in rows + study_rows)
        for name, description in rows:
            print(f"{name:<{width}}  {description}")
        print("\nstudy presets (sdd-jax sweep NAME; sdd-jax compare draws them):")
        for name, description in study_rows:
            print(f"{name:<{width}}  {description}")
        return 0
    if args.command == "show":
        config = resolve(args.preset, args.overrides, args.seeds, args.workdir)
        from sdd_jax.describe import describe
        from sdd_jax.runid import result_hash, run_dir_name
        from sdd_jax.validate import validate

        validate(config)
        shown = {**to_dict(config), "description": describe(config)}
        shown.update(result_hash=result_hash(config), run_dir=run_dir_name(config))
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0
    if args.command == "run":
        return _run(args)
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "report":
        return _report(_path(args.run_dir))
    if args.command == "compare":
        from sdd_jax.compare import compare

        return _print_comparison(compare(args.paths, args.by, args.panel, args.distance, args.out, args.branches))
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "estimate":
        return _estimate(args)
    if args.command == "export":
        return _export(args)
    return _branch(args)


def _export(args) -> int:
    from sdd_jax import export

    report = export.export_level(_path(args.run_dir), args.level, args.seed, args.format, args.out)
    for line in export.summary_lines(report):
        print(line)
    return 0


def _estimate(args) -> int:
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be positive, got {args.epochs}")
    from sdd_jax import estimate

    config = resolve(args.preset, args.overrides, args.seeds)
    report, lines = estimate.estimate(config, args.epochs, args.preset, args.overrides)
    for line in lines:
        print(line)
    print(json.dumps(report))
    return 0


def _analyze(args) -> int:
    from sdd_jax.analysis.pipeline import analyze

    levels = None
    if args.levels is not None:
        try:
            levels = [int(v) for v in args.levels.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--levels expects comma-separated integers, got {args.levels!r}") from None
        if not levels:
            raise ConfigError("--levels is empty")
    result = analyze(_path(args.run_dir), levels, args.overrides, quiet=args.quiet)
    if not args.quiet:
        from sdd_jax.analysis.report import correlation_markdown

        print(correlation_markdown(result["data"]["correlations"], seeds=len(result["data"]["seeds"])))
        print(f"analysed in {result['seconds']:.0f} s: {result['report']}")
    return 0


def _setup_compilation_cache(path: str | None) -> None:
    import jax

    path = path or os.environ.get("SDD_JAX_COMPILATION_CACHE")
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _run(args) -> int:
    config = resolve(args.preset, args.overrides, args.seeds, args.workdir)
    if args.quiet:
        config = override(config, ["run.verbosity=0"])
    elif args.verbose:
        config = override(config, ["run.verbosity=2"])
    _setup_compilation_cache(config.run.compilation_cache)
    from sdd_jax import imp
    from sdd_jax.runopen import open_run

    if args.force_unlock:
        from sdd_jax.runid import run_path
        from sdd_jax.validate import validate

        validate(config)  # a config refused before its lock is touched
        _force_unlock(run_path(config.run.workdir, config))
    started = time.time()
    exp, run = open_run(config)
    already = set(run.finished_levels()) >= set(range(config.pruning.levels + 1))
    if config.run.verbosity:
        from sdd_jax.describe import describe

        ds = exp.dataset
        print(
            f"{config.name}: {describe(config)}\n{len(ds.y_train):,} training examples "
            f"({ds.metadata.get('realised_noise_rate', 0):.1%} labels changed), "
            f"{config.pruning.levels} pruning levels\n"
            f"run directory: {run.path}",
            file=sys.stderr,
        )
    run_dir = imp.run_imp(config, prepared=(exp, run), write_report=False)  # _finish reports
    return _finish(
        run_dir, quiet=not config.run.verbosity, seconds=None if already else time.time() - started, already=already
    )


def _sweep(args) -> int:
    from sdd_jax import study

    verbosity = 0 if args.quiet else (2 if args.verbose else None)
    resolved = study.resolve_study(
        args.preset, args.grid, overrides=args.overrides, seeds=args.seeds, workdir=args.workdir, verbosity=verbosity
    )
    _setup_compilation_cache(resolved.base.run.compilation_cache)
    started = time.time()
    study.run(resolved, announce=True, write_report=False)
    comparison = study.report_study(resolved)
    if resolved.base.run.verbosity:
        if comparison is not None:
            _print_comparison(comparison)
            print()
        print("\n".join(study.summary_lines(resolved)))
        print(f"done in {time.time() - started:.0f} s")
    return 0


def _path(text: str):
    """A path argument: a ``pathlib.Path``, or an ``etils.epath.Path`` for a ``gs://`` URL."""
    from sdd_jax import storage

    return storage.as_path(text)


def _force_unlock(run_dir) -> None:
    from sdd_jax.runlock import force_unlock

    print(f"sdd-jax: {force_unlock(run_dir)}", file=sys.stderr)


def _finish(
    run_dir: Path, quiet: bool, seconds: float | None = None, already: bool = False, report_only: bool = False
) -> int:
    from sdd_jax import report

    result = report.report(run_dir)
    if not quiet:
        print(result["table"])
        files = ", ".join(str(p) for p in result.get("figures", []))
        timing = f" in {seconds:.0f} s" if seconds is not None else ""
        if report_only:
            status = _levels_status(run_dir, [e["level"] for e in result["aggregate"]])
        else:
            status = "already complete (nothing recomputed)" if already else f"finished{timing}"
        print(f"\n{status}: {run_dir / 'results.csv'}\nfigure: {files}")
    return 0


def _spans(levels: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    spans: list[list[int]] = []
    for level in sorted(levels):
        if spans and level == spans[-1][1] + 1:
            spans[-1][1] = level
        else:
            spans.append([level, level])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _levels_status(run_dir: Path, done: list[int]) -> str:
    """How many of the run's levels (``pruning.levels`` in its ``config.json``) ``results.csv``
    holds: ``complete (N of N levels)`` or ``unfinished: n of N levels done (missing ...)``."""
    try:
        from sdd_jax import storage

        total = int(json.loads(storage.read_text(run_dir / "config.json"))["pruning"]["levels"]) + 1
    except (OSError, ValueError, KeyError, TypeError):  # no readable config: count what is there
        return f"{len(set(done))} levels in results.csv"
    missing = sorted(set(range(total)) - set(done))
    if not missing:
        return f"complete ({total} of {total} levels)"
    return (
        f"unfinished: {total - len(missing)} of {total} levels done (missing {_spans(missing)}; "
        f"rerun the run command to continue)"
    )


def _print_comparison(result: dict) -> int:
    print(f"{result['title']}\n\n{result['table']}")
    paths = result["paths"]
    print(f"figure: {', '.join(paths['figures'])}\ntable: {paths['table']}, {paths['csv']}")
    print(f"rows of every series: {paths['results_all']}, {paths['curves_all']}")
    return 0


def _report(run_dir: Path) -> int:
    from sdd_jax import storage

    if storage.is_file(run_dir / "study.json"):
        from sdd_jax.compare import report_study

        return _print_comparison(report_study(run_dir))
    if not storage.is_file(run_dir / "results.csv"):
        raise FileNotFoundError(f"{run_dir / 'results.csv'} not found: is {run_dir} a run directory?")
    return _finish(run_dir, quiet=False, report_only=True)


def _branch(args) -> int:
    from sdd_jax import branches
    from sdd_jax.runopen import open_run

    try:
        levels = [int(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--levels expects comma-separated integers, got {args.levels!r}") from None
    name = args.command.replace("-", "_")
    overrides = args.overrides + (["run.verbosity=0"] if args.quiet else [])
    if args.force_unlock:
        _force_unlock(_path(args.run_dir))
    exp, run = open_run(_path(args.run_dir), overrides)
    # Before the branch's training compiles (JAX opens the cache at the first compilation that
    # finds a cache directory set).
    _setup_compilation_cache(exp.config.run.compilation_cache)
    path = branches.run_branch(exp, run, name, levels)
    if not args.quiet:
        from sdd_jax import results, table

        print(table.summary_table(results.read_results_csv(path)))
        print(f"\n{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
