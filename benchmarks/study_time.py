"""What a study costs against its points run one by one: ``sdd-jax sweep`` against ``sdd-jax run``
for every point, in one process.

The study (:func:`sdd_jax.study.run`) trains its replica axes as one stacked program per level;
the points are then run alone (:func:`sdd_jax.imp.run_imp`, as ``sdd-jax run`` does), each in a
fresh working directory, so both do all the work: data, compilation, training, checkpoints and
results files (the reports, figures included, are left out of both). A short untimed warm-up run
first pays the process's one-time costs (backend start-up, imports). ``--rounds N`` measures both N
times, alternating which goes first (study, points, points, study, ...: on a machine whose load
drifts, the drift then weighs on both alike). Prints the wall and CPU seconds of each, the ratio of
their sums (study over points: below 1 the study is cheaper) and the load average (1 minute)
before and after each, then one JSON line with every number and the device facts.

    PYTHONPATH=. python benchmarks/study_time.py [PRESET] [--grid KEY=V1,V2 ...] [--seeds N]
        [--set key=value ...] [--rounds N] [--workdir DIR]

The default is a small LeNet grid on this CPU: the quickstart (4,000 embedded MNIST digits) with 3
levels of 20 epochs, 2 noise rates x 2 criteria x 2 seeds (8 replicas). docs/benchmarks.md gives
the GPU commands (32 LeNet replicas, 4 ResNet-18 replicas under ``sequential``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from sdd_jax import imp, study
from sdd_jax.config import override
from sdd_jax.estimate import device_facts

DEFAULT_GRID = ["noise.rate=0.2,0.4", "pruning.criterion=magnitude,random"]
DEFAULT_SET = ["pruning.levels=2", "optim.epochs=20"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", nargs="?", default="quickstart", help="a run or study preset (default quickstart)")
    parser.add_argument("--grid", action="append", default=None, metavar="KEY=V1,V2,...", help="an axis (repeatable)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per point")
    parser.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each, alternating the order")
    parser.add_argument("--workdir", default=None, help="where both write (default: a new temporary folder)")
    args = parser.parse_args(argv)
    args.grid = DEFAULT_GRID if args.grid is None else args.grid
    args.overrides = DEFAULT_SET if args.overrides is None else args.overrides
    return args


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    args = parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="study_time-"))

    def resolved_in(folder: Path):
        return study.resolve_study(
            args.preset, args.grid, overrides=args.overrides, seeds=args.seeds, workdir=str(folder), verbosity=0
        )

    resolved = resolved_in(root / "round-0" / "study")
    if any(p.init == "reinit" for p in resolved.points):
        raise SystemExit("study_time.py times lottery points (sdd-jax run) only: drop init=reinit from the grid")
    first = resolved.points[0].config
    replicas = len(resolved.points) * first.run.seeds
    programs = len(resolved.programs())
    facts = device_facts()
    print(
        f"{resolved.name}: {len(resolved.points)} points x {first.run.seeds} seeds = {replicas} replicas in "
        f"{programs} program(s); {first.model.name}, {first.pruning.levels + 1} levels x {first.optim.epochs} "
        f"epochs, on {facts['device_kind']} ({facts['backend']})",
        flush=True,
    )
    warm = override(first, {"optim.epochs": 1, "pruning.levels": 0, "run.workdir": str(root / "warm-up")})
    imp.run_imp(warm, write_report=False)

    def run_study(folder: Path):
        study.run(resolved_in(folder / "study"), write_report=False)

    def run_points(folder: Path):
        for i, point in enumerate(resolved.points):
            imp.run_imp(override(point.config, {"run.workdir": str(folder / f"point-{i}")}), write_report=False)

    measured = {"study": [], "points": []}
    for r in range(args.rounds):
        order = ("study", "points") if r % 2 == 0 else ("points", "study")
        for what in order:
            load_before = os.getloadavg()[0]
            wall, cpu = timed(lambda: (run_study if what == "study" else run_points)(root / f"round-{r}"))
            load_after = os.getloadavg()[0]
            measured[what].append({"wall": wall, "cpu": cpu, "load_before": load_before, "load_after": load_after})
            label = "study" if what == "study" else "points one by one"
            print(
                f"round {r + 1}, {label}: {wall:.1f} s wall, {cpu:.1f} s CPU "
                f"(load average {load_before:.1f} before, {load_after:.1f} after)",
                flush=True,
            )
    total = {what: {k: sum(m[k] for m in ms) for k in ("wall", "cpu")} for what, ms in measured.items()}
    ratio = total["study"]["wall"] / total["points"]["wall"]
    cpu_ratio = total["study"]["cpu"] / total["points"]["cpu"]
    print(f"study / points: {ratio:.3f} (wall), {cpu_ratio:.3f} (CPU)", flush=True)
    print(
        json.dumps(
            {
                "preset": args.preset,
                "grid": args.grid,
                "overrides": args.overrides,
                "points": len(resolved.points),
                "seeds": first.run.seeds,
                "replicas": replicas,
                "programs": programs,
                "rounds": args.rounds,
                "study": measured["study"],
                "points_one_by_one": measured["points"],
                "study_seconds": total["study"]["wall"],
                "points_seconds": total["points"]["wall"],
                "study_cpu_seconds": total["study"]["cpu"],
                "points_cpu_seconds": total["points"]["cpu"],
                "ratio": ratio,
                "cpu_ratio": cpu_ratio,
                **facts,
            }
        )
    )


if __name__ == "__main__":
    main()
