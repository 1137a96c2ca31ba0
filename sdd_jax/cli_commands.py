"""What each ``sdd-jax`` command does (:data:`COMMANDS`: command name -> function of the parsed
arguments, returning the exit status). The package's heavy modules are imported inside the
commands, so that ``sdd-jax --help`` and a refused command stay fast (the command line's lazy
loading)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from sdd_jax.config import ConfigError, override, to_dict
from sdd_jax.describe import describe, plural, spans


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
        ds = exp.dataset
        print(
            f"{config.name}: {describe(config)}\n{plural(len(ds.y_train), 'training example')} "
            f"({ds.metadata.get('realised_noise_rate', 0):.1%} labels changed), "
            f"{plural(config.pruning.levels, 'pruning level')}\n"
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
        args.preset,
        args.grid,
        overrides=args.overrides,
        seeds=args.seeds,
        workdir=args.workdir,
        verbosity=verbosity,
        by=args.by,
        panel=args.panel,
        distance=args.distance or None,
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


def _planned_levels(run_dir: Path) -> int | None:
    """The number of levels the run asks for (``pruning.levels`` + 1, from its ``config.json``),
    or None when there is no readable one."""
    from sdd_jax import storage

    try:
        return int(json.loads(storage.read_text(run_dir / "config.json"))["pruning"]["levels"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _levels_status(run_dir: Path, done: list[int]) -> str:
    """How many of the run's levels (``pruning.levels`` in its ``config.json``) ``results.csv``
    holds: ``complete (N of N levels)`` or ``unfinished: n of N levels done (missing ...)``."""
    total = _planned_levels(run_dir)
    if total is None:  # no readable config: count what is there
        return f"{plural(len(set(done)), 'level')} in results.csv"
    missing = sorted(set(range(total)) - set(done))
    if not missing:
        return f"complete ({total} of {total} levels)"
    return (
        f"unfinished: {total - len(missing)} of {total} levels done (missing {spans(missing)}; "
        f"rerun the run command to continue)"
    )


def _print_comparison(result: dict) -> int:
    print(f"{result['title']}\n\n{result['table']}")
    paths = result["paths"]
    print(f"figure: {', '.join(paths['figures'])}\ntable: {paths['table']}, {paths['csv']}")
    print(f"rows of every series: {paths['results_all']}, {paths['curves_all']}")
    return 0


def _report(args) -> int:
    from sdd_jax import storage

    run_dir = _path(args.run_dir)
    if storage.is_file(run_dir / "study.json"):
        from sdd_jax.compare import report_study

        return _print_comparison(report_study(run_dir, args.distance or None, args.by, args.panel))
    if args.by or args.panel or args.distance:
        raise ConfigError(f"--by, --panel and --distance draw a study's comparison: {run_dir} is not a study directory")
    if not storage.is_file(run_dir / "results.csv"):
        total = _planned_levels(run_dir)
        if total is not None:  # a run whose first level has not finished yet
            raise ValueError(f"{run_dir}: no level finished yet (0 of {total}); rerun the run command to continue")
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
    exp, run = open_run(_path(args.run_dir), overrides, command=f"sdd-jax {args.command}")
    # Before the branch's training compiles (JAX opens the cache at the first compilation that
    # finds a cache directory set).
    _setup_compilation_cache(exp.config.run.compilation_cache)
    path = branches.run_branch(exp, run, name, levels)
    if not args.quiet:
        from sdd_jax import results, table

        print(table.summary_table(results.read_results_csv(path)))
        print(f"\n{name}: {path}")
    return 0


def _presets(args) -> int:
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


def _show(args) -> int:
    config = resolve(args.preset, args.overrides, args.seeds, args.workdir)
    from sdd_jax.runid import result_hash, run_dir_name
    from sdd_jax.validate import validate

    validate(config)
    shown = {**to_dict(config), "description": describe(config)}
    shown.update(result_hash=result_hash(config), run_dir=run_dir_name(config))
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


def _compare(args) -> int:
    from sdd_jax.compare import compare

    return _print_comparison(
        compare(args.paths, args.by, args.panel, args.distance, args.out, args.branches, args.where)
    )


COMMANDS = {
    "presets": _presets,
    "show": _show,
    "run": _run,
    "sweep": _sweep,
    "report": _report,
    "compare": _compare,
    "analyze": _analyze,
    "estimate": _estimate,
    "export": _export,
    **{name: _branch for name in ("oneshot", "reinit", "random-prune", "redense")},
}
