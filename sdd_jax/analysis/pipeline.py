"""``sdd-jax analyze``: the paper's second half over a finished run, cached and resumable in
``RUN_DIR/analysis/``.

Steps (each cached per level, so a killed analysis resumes at the level it was in, and a rerun
with everything cached only redraws the figures and the report):

1. calibration and memorisation at every finished level (:mod:`.calibration`);
2. sharpness at every finished level: λmax and the Hutchinson trace of the Hessian restricted to
   the unpruned weights (:mod:`.hessian`);
3. re-dense training at the chosen levels (:mod:`.redense`);
4. linear interpolation sparse → re-dense (:mod:`.interpolate`);
5. 1-D filter-normalised loss curves around both solutions (:mod:`.landscape`);
6. rank correlations of test accuracy with each candidate explanation and phase statistics, with
   bootstrap intervals over seeds (:mod:`.stats`); tables, figures (:mod:`.figures`) and
   ``report.md`` (:mod:`.report`).

The chosen levels default to four picked on the mean curves of ``results.csv`` by the phase rule
(:func:`sdd_jax.analysis.levels.choose_levels`). A chosen level with no pruned weight (the dense
level 0) has nothing to re-dense: its re-dense training, interpolation and re-dense 1-D curve are
left out (the report says so). An unfinished run is analysed over its finished levels, with a
warning naming the missing ones. Every step is vmapped over seeds (the run's seed
execution) and, for interpolation and curves, mapped over the grid of points in chunks of
``analysis.grid_chunk``.

Random draws (the fixed training batches for the Hessian and for BatchNorm statistics, the
Lanczos start vectors and Hutchinson probes, the 1-D directions) come from their own key streams,
``analysis/<name>`` of :mod:`sdd_jax.rng` folded into ``analysis.seed``, never from the run's.
Per-level results are kept by :mod:`.cache`; progress is :class:`sdd_jax.progress.Progress`
counting steps (re-dense epochs, levels, curves).
"""

from __future__ import annotations

import os
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from sdd_jax import imp, rng, storage
from sdd_jax.analysis import calibration as calib
from sdd_jax.analysis import evaluation, figures, hessian, interpolate, landscape, report, tables
from sdd_jax.analysis.cache import StepCache, on_device
from sdd_jax.analysis.levels import (
    AnalysisError,
    choose_levels,  # noqa: F401 (the pipeline's public name before levels.py)
    chosen_levels,
    unfinished,
    unpruned_levels,
)
from sdd_jax.analysis.redense import last_learning_rate, redense_level
from sdd_jax.analysis.settings import AnalysisConfig, as_dict, parse, settings_hash, split_overrides
from sdd_jax.atomic import atomic_write_json
from sdd_jax.checkpoints import RunStore
from sdd_jax.engine import has_convolutions
from sdd_jax.progress import Progress
from sdd_jax.results import ResultsError, read_results_csv
from sdd_jax.runopen import open_run, reopen_settings
from sdd_jax.seed_axis import over_seeds
from sdd_jax.train import Weights

ANALYSIS_DIR = "analysis"


# ----- the analysis ------------------------------------------------------------------------------


class Analysis:
    """The analysis of one run: its experiment, settings, chosen levels and jitted functions."""

    def __init__(
        self,
        exp,
        run,
        cfg: AnalysisConfig,
        levels: dict[str, int],
        verbosity: int,
        unpruned: frozenset[int] = frozenset(),
    ):
        self.exp, self.run, self.cfg, self.levels = exp, run, cfg, levels
        self.unpruned = unpruned  # chosen levels with no pruned weight: no re-dense, no interpolation
        self.root = run.path / ANALYSIS_DIR
        self.verbosity = verbosity
        engine = exp.engine
        self.engine = engine
        self.spec = engine.spec
        self.seeds = exp.seeds
        ds = exp.dataset
        self.y_clean = jnp.asarray(ds.y_train_clean, jnp.int32)
        self.chunk = cfg.grid_chunk or (1 if has_convolutions(exp.model) else 8)
        sparse_epochs = {lv: self._plan(lv).num_epochs for lv in levels.values()}
        self.redense_epochs = {lv: cfg.redense_epochs or n for lv, n in sparse_epochs.items()}
        self.sparse_epochs = sparse_epochs
        self.redense_lr = cfg.redense_lr or last_learning_rate(exp)
        keys = ("redense_momentum", "replay_sparse", "redense_epochs")
        self.redense_hash = settings_hash(cfg, keys, lr=self.redense_lr)
        base = {"redense": self.redense_hash}
        self.caches = {
            "calibration": self._cache("calibration", ("ece_bins",)),
            "sharpness": self._cache(
                "sharpness", ("hessian_batches", "lanczos_steps", "hutchinson_probes", "eigen_method", "seed")
            ),
            "interpolation": self._cache("interpolation", ("interp_points", "bn_batches", "seed"), **base),
            "landscape": self._cache("landscape", ("curve_points", "curve_range", "seed"), **base),
            "redense": self._cache("redense", keys, lr=self.redense_lr),
        }

    def _cache(self, step: str, keys: tuple[str, ...], **extra) -> StepCache:
        digest = settings_hash(self.cfg, keys, **extra)
        settings = {k: v for k, v in as_dict(self.cfg).items() if k in keys} | extra
        return StepCache(self.root, step, digest, settings)

    def _plan(self, level: int):
        return imp.schedule_plan(self.exp, level, self.exp.config.pruning.schedule)

    def _mapped(self, fn, in_axes):
        return jax.jit(over_seeds(fn, in_axes, self.engine.seed_execution, self.engine.mesh))

    def _fixed_batches(self, name: str, batches: int):
        """``batches`` training batches of ``optim.batch_size`` (fewer examples: all of them),
        drawn once without replacement: images (batches, batch, ...) and noisy labels."""
        n = self.exp.train.size
        per = min(self.spec.batch_size, n // batches) or 1
        count = per * min(batches, n)
        idx = jax.random.permutation(rng.stream_key(self.cfg.seed, f"analysis/{name}"), n)[:count].reshape(-1, per)
        return jnp.take(self.exp.train.x, idx, axis=0), jnp.take(self.exp.train.y, idx, axis=0)

    # -- units of work (for the progress bar)
    def work(self, finished: list[int]) -> dict[str, int]:
        chosen = [lv for lv in self.levels.values() if lv not in self.unpruned]
        return {
            "calibration": sum(not self.caches["calibration"].has(lv) for lv in finished),
            "sharpness": sum(not self.caches["sharpness"].has(lv) for lv in finished),
            "redense": sum(
                self.sparse_epochs[lv] + self.redense_epochs[lv] for lv in chosen if not self.caches["redense"].has(lv)
            ),
            "interpolation": sum(not self.caches["interpolation"].has(lv) for lv in chosen),
            "landscape": 2 * sum(not self.caches["landscape"].has(lv) for lv in chosen)
            + sum(not self.caches["landscape"].has(lv) for lv in self.unpruned),
        }

    # -- 1. calibration and memorisation
    def calibration(self, level: int, weights, bar: Progress) -> dict:
        cache = self.caches["calibration"]
        if cache.has(level):
            return cache.get(level)
        bar.task(f"calibration, level {level}")
        if not hasattr(self, "_logits_fn"):
            self._logits_fn = self._mapped(partial(evaluation.logits, self.spec), (0, 0, 0, None))
        logits = np.asarray(self._logits_fn(weights.params, weights.batch_stats, weights.mask, self.exp.test.x))
        _, _, pred = self.engine.evaluate(weights.params, weights.batch_stats, weights.mask, self.exp.train)
        pred = np.asarray(pred)
        out = calib.per_seed(logits, pred, self.exp.dataset, self.cfg.ece_bins)
        bar.step()
        return cache.put(level, out)

    # -- 2. sharpness
    def sharpness(self, level: int, weights, bar: Progress) -> dict:
        cache = self.caches["sharpness"]
        if cache.has(level):
            return cache.get(level)
        bar.task(f"sharpness, level {level}")
        cfg = self.cfg
        if not hasattr(self, "_sharp_fn"):
            fn = partial(
                hessian.sharpness,
                self.spec,
                steps=cfg.lanczos_steps,
                probes=cfg.hutchinson_probes,
                method=cfg.eigen_method,
            )
            self._sharp_fn = self._mapped(fn, (0, 0, 0, None, None, 0))
            self._hessian_batches = self._fixed_batches("hessian_batches", cfg.hessian_batches)
        keys = jnp.stack([rng.stream_key(cfg.seed, "analysis/hessian", s, level) for s in self.seeds])
        lam, samples = self._sharp_fn(weights.params, weights.batch_stats, weights.mask, *self._hessian_batches, keys)
        samples = np.asarray(samples, np.float64)
        bar.step()
        return cache.put(
            level,
            {
                "lambda_max": np.asarray(lam, np.float64),
                "trace": samples.mean(1),
                "trace_se": samples.std(1, ddof=1) / np.sqrt(samples.shape[1])
                if samples.shape[1] > 1
                else np.full(len(self.seeds), np.nan),
            },
        )

    # -- 3. re-dense training
    def _redense_store(self) -> RunStore:
        path = self.caches["redense"].path
        storage.mkdir(path)
        if not storage.is_file(path / "settings.json"):
            atomic_write_json(path / "settings.json", self.caches["redense"].settings)
        return RunStore(path)

    def redense(self, level: int, bar: Progress) -> tuple[dict, Weights]:
        cache = self.caches["redense"]
        store = self._redense_store()
        shapes = self.exp.state_shapes
        target = {"params": shapes.params, "batch_stats": shapes.batch_stats}
        if cache.has(level) and level in store.finished_levels():
            tree, _ = store.restore_level(level, target)
            return cache.get(level), on_device(Weights(tree["params"], tree["batch_stats"]))
        bar.task(f"re-dense, level {level}")
        curves, _, redensed, info = redense_level(
            self.exp,
            self.run,
            level,
            epochs=self.redense_epochs[level],
            lr=self.redense_lr,
            momentum=self.cfg.redense_momentum,
            replay=self.cfg.replay_sparse,
            progress=bar,
        )
        if level not in store.finished_levels():
            store.save_level(level, {"params": redensed.params, "batch_stats": redensed.batch_stats}, {"info": info})
        return cache.put(level, {"curves": curves, "info": info}), on_device(redensed)

    # -- 4. interpolation
    def interpolation(self, level: int, sparse, redensed: Weights, bar: Progress) -> dict:
        cache = self.caches["interpolation"]
        if cache.has(level):
            return cache.get(level)
        bar.task(f"interpolation, level {level}")
        cfg = self.cfg
        if not hasattr(self, "_interp_fn"):
            fn = partial(interpolate.curve, self.spec, chunk=self.chunk)
            self._interp_fn = self._mapped(fn, (0, 0, 0, None, None, None, None, None, None))
            self._bn_batches = self._fixed_batches("bn_batches", cfg.bn_batches)[0]
        alphas = jnp.linspace(0.0, 1.0, cfg.interp_points)
        dense = jax.tree.map(jnp.ones_like, sparse.mask)
        out = self._interp_fn(
            sparse.weights,
            redensed,
            dense,
            alphas,
            self.exp.train.x,
            (self.exp.train.y, self.y_clean),
            self.exp.test.x,
            self.exp.test.y,
            self._bn_batches,
        )
        tl, ta, sl, sa = (np.asarray(o, np.float64) for o in out)
        bar.step()
        return cache.put(
            level,
            {
                "alpha": np.asarray(alphas),
                "train_loss": tl[..., 0],
                "train_acc": ta[..., 0],
                "train_loss_clean": tl[..., 1],
                "train_acc_clean": ta[..., 1],
                "test_loss": sl,
                "test_acc": sa,
                "batch_norm_batches": cfg.bn_batches if jax.tree.leaves(sparse.batch_stats) else 0,
            },
        )

    # -- 5. 1-D curves
    def landscape(self, level: int, sparse, redensed: Weights | None, bar: Progress) -> dict:
        """The 1-D curves around the level's solution and its re-dense one (``redensed=None``:
        the level's alone)."""
        cache = self.caches["landscape"]
        if cache.has(level):
            return {k: v for k, v in cache.get(level).items() if redensed is not None or k != "redense"}
        cfg = self.cfg
        if not hasattr(self, "_curve_fn"):
            fn = partial(landscape.curve, self.spec, chunk=self.chunk)
            self._curve_fn = self._mapped(fn, (0, 0, 0, None, None, None, None, None))
            self._direction_fn = jax.jit(jax.vmap(landscape.random_direction))
        alphas = jnp.linspace(-cfg.curve_range, cfg.curve_range, cfg.curve_points)
        keys = jnp.stack([rng.stream_key(cfg.seed, "analysis/direction", s) for s in self.seeds])
        dense = jax.tree.map(jnp.ones_like, sparse.mask)
        result = {"alpha": np.asarray(alphas)}
        solutions = [("sparse", sparse.weights, sparse.mask)] + (
            [("redense", redensed, dense)] if redensed is not None else []
        )
        for name, weights, mask in solutions:
            bar.task(f"1-D curve ({name}), level {level}")
            direction = self._direction_fn(keys, weights.params, mask)
            out = self._curve_fn(
                weights,
                mask,
                direction,
                alphas,
                self.exp.train.x,
                (self.exp.train.y, self.y_clean),
                self.exp.test.x,
                self.exp.test.y,
            )
            tl, ta, sl, sa = (np.asarray(o, np.float64) for o in out)
            result[name] = {
                "train_loss": tl[..., 0],
                "train_acc": ta[..., 0],
                "train_loss_clean": tl[..., 1],
                "test_loss": sl,
                "test_acc": sa,
            }
            bar.step()
        return cache.put(level, result)


def analyze(
    run_dir: str | os.PathLike, levels: list[int] | None = None, overrides: list[str] = (), quiet: bool = False
) -> dict:
    """Analyse the finished run in ``run_dir`` (see the module docstring); returns the paths
    written (``report``, ``tables``, ``figures``) and the ``seconds`` taken.

    ``levels`` replaces the four chosen by :func:`~sdd_jax.analysis.levels.choose_levels`; ``overrides`` are
    ``analysis.KEY=VALUE`` settings (:class:`~sdd_jax.analysis.settings.AnalysisConfig`) and the
    ``run.*`` settings a branch accepts. Raises :class:`AnalysisError` (or a ``ValueError``,
    ``FileNotFoundError``) naming the file or setting before anything is written.
    """
    started = time.time()
    run_dir = storage.as_path(run_dir)  # an etils.epath.Path on Cloud Storage
    ours, theirs = split_overrides(list(overrides), [k for k in reopen_settings() if k.startswith("run.")])
    cfg = parse(ours)
    results_csv = run_dir / "results.csv"
    if not storage.is_file(results_csv):
        raise FileNotFoundError(f"{results_csv} not found: is {run_dir} a finished run directory?")
    rows = [r for r in read_results_csv(results_csv) if r.get("branch", "imp") == "imp"]
    if not rows:
        raise ResultsError(f"{results_csv} has no rows of the main run")
    in_csv = sorted({int(r["level"]) for r in rows})
    run_name = storage.resolve(run_dir).name
    chosen = chosen_levels(rows, in_csv, levels, run_name)  # refused before the run is opened
    exp, run = open_run(run_dir, theirs + (["run.verbosity=0"] if quiet else []))
    finished = run.finished_levels()
    if in_csv != finished:
        raise AnalysisError(
            f"{results_csv} lists levels {in_csv} but {run_dir / 'levels'} holds {finished}: "
            f"rerun `sdd-jax run` (or `sdd-jax report`) to bring them in line"
        )
    problem = unfinished(run_name, exp.config.pruning.levels, finished)
    if problem:
        warnings.warn(problem, stacklevel=2)
    an = Analysis(exp, run, cfg, chosen, 0 if quiet else exp.config.run.verbosity, unpruned_levels(rows, chosen))
    storage.mkdir(an.root)
    atomic_write_json(
        an.root / "settings.json",
        {"analysis": as_dict(cfg), "levels": chosen, "redense_lr": an.redense_lr, "redense_epochs": an.redense_epochs},
    )
    work = an.work(finished)
    total = sum(work.values())
    bar = Progress(total, an.verbosity if total else 0, f"{exp.config.name}:analyze", unit="step")
    try:
        per_level = {}
        for level in finished:
            weights = None
            if not (an.caches["calibration"].has(level) and an.caches["sharpness"].has(level)):
                weights = on_device(run.level(level))
            per_level[level] = {
                "calibration": an.calibration(level, weights, bar),
                "sharpness": an.sharpness(level, weights, bar),
            }
        chosen_data = {}
        for role, level in chosen.items():
            pruned = level not in an.unpruned  # the dense level has nothing to re-dense: its own 1-D curve only
            redense_data, redensed = an.redense(level, bar) if pruned else (None, None)
            steps = ("interpolation", "landscape") if pruned else ("landscape",)
            sparse = None if all(an.caches[s].has(level) for s in steps) else on_device(run.level(level))
            chosen_data[role] = {
                "level": level,
                "redense": redense_data,
                "interpolation": an.interpolation(level, sparse, redensed, bar) if pruned else None,
                "landscape": an.landscape(level, sparse, redensed, bar),
                "curves": run.store.level_metrics(level)["curves"],
            }
    finally:
        bar.close()
    data = tables.collect(rows, per_level, chosen_data, cfg, run, exp)
    written = tables.write(an.root, data)
    figure_paths = figures.draw_all(an.root / "figures", data)
    seconds = time.time() - started
    report_path = report.write(an.root, data, written, figure_paths, cfg, seconds)
    figures.prune_stale(an.root / "figures", figure_paths)
    return {"report": report_path, "tables": written, "figures": figure_paths, "seconds": seconds, "data": data}
