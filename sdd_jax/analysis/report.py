"""``RUN_DIR/analysis/report.md``: the analysis in one page, the correlation and phase tables in
markdown, linking every figure and table, with a warning where the run has too few levels or seeds
for a statistic (:func:`caveats`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from sdd_jax import storage
from sdd_jax.analysis.stats import CORRELATIONS
from sdd_jax.atomic import atomic_write_text
from sdd_jax.describe import plural

# Below this many levels a rank correlation across levels takes few distinct values (3 levels:
# Spearman's rho is one of -1, -0.5, 0.5, 1) and its interval says little.
MIN_CORRELATION_LEVELS = 5
# Below this many seeds a bootstrap over seeds has few distinct resamples (C(2n-1, n): 3 for two
# seeds, 10 for three); with one seed it is undefined.
MIN_BOOTSTRAP_SEEDS = 4


def caveats(rows: list[dict], seeds: int) -> list[str]:
    """Warnings for the statistics of the correlation rows ``rows`` (one ``levels`` count per
    scope) over ``seeds`` seeds: a scope with fewer than :data:`MIN_CORRELATION_LEVELS` levels,
    one seed (no bootstrap interval) or fewer than :data:`MIN_BOOTSTRAP_SEEDS` (few distinct
    resamples)."""
    out = []
    for scope in dict.fromkeys(r["scope"] for r in rows):
        n = next(r["levels"] for r in rows if r["scope"] == scope)
        if n < MIN_CORRELATION_LEVELS:
            out.append(
                f"The rank correlations over {scope} rest on {plural(n, 'level')}: too few to rank (at least "
                f"{MIN_CORRELATION_LEVELS} are needed to say much); analyse a run with more levels."
            )
    if seeds < 2:
        out.append(
            "One seed: the bootstrap intervals over seeds are undefined (n/a); run with --seeds 3 or more for intervals."
        )
    elif seeds < MIN_BOOTSTRAP_SEEDS:
        out.append(
            f"{plural(seeds, 'seed')}: the bootstrap over seeds has only {math.comb(2 * seeds - 1, seeds)} distinct "
            f"resamples, so its intervals are coarse; run with more seeds for intervals to rely on."
        )
    return out


def caveats_markdown(rows: list[dict], seeds: int) -> str:
    """:func:`caveats` as markdown warning lines (empty when there is none)."""
    lines = caveats(rows, seeds)
    return "\n>\n".join(f"> **Warning.** {line}" for line in lines) + "\n" if lines else ""


def _pct(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f}"


def _num(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:+.2f}"


def _dropped(r: dict, n_resamples: int | None) -> str:
    """`` (k of N resamples undefined)`` after an interval that dropped ``k`` resamples, else ``""``."""
    k = r.get("ci_dropped") or 0
    if not k:
        return ""
    return f" ({k} of {n_resamples} resamples undefined)" if n_resamples else f" ({k} resamples undefined)"


def correlation_markdown(rows: list[dict], n_resamples: int | None = None, seeds: int | None = None) -> str:
    """One markdown table per scope: candidate, then ``value [low, high]`` per method (``n/a``
    where undefined, e.g. a one-seed interval), with the number of bootstrap resamples dropped
    for an undefined statistic when there are any (out of ``n_resamples`` if given); preceded by
    the :func:`caveats` when the number of ``seeds`` is given."""
    out = [caveats_markdown(rows, seeds)] if seeds is not None and caveats(rows, seeds) else []
    for scope in dict.fromkeys(r["scope"] for r in rows):
        sub = [r for r in rows if r["scope"] == scope]
        n = sub[0]["levels"]
        out.append(f"**{scope}** ({plural(n, 'level')})\n")
        out.append("| candidate | " + " | ".join(f"{m} (95% CI)" for m in CORRELATIONS) + " |")
        out.append("|---|" + "---|" * len(CORRELATIONS))
        for cand in dict.fromkeys(r["candidate"] for r in sub):
            cells = []
            for m in CORRELATIONS:
                r = next(r for r in sub if r["candidate"] == cand and r["method"] == m)
                cells.append(
                    f"{_num(r['value'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]" + _dropped(r, n_resamples)
                )
            out.append(f"| {cand} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def phase_markdown(rows: list[dict], n_resamples: int | None = None) -> str:
    """The phase statistics as a markdown table (``n/a`` where an interval is undefined)."""
    out = ["| quantity | level | test accuracy (%) | 95% CI |", "|---|---|---|---|"]
    for r in rows:
        level = "" if r["level"] is None else str(r["level"])
        out.append(
            f"| {r['quantity']} | {level} | {_pct(r['value'])} | "
            f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]{_dropped(r, n_resamples)} |"
        )
    return "\n".join(out)


def _redense_words(chosen: dict) -> str:
    """How a chosen level was re-densed, or that it was not (no pruned weight)."""
    if chosen["redense"] is None:
        return "not re-densed: no pruned weight to release (no re-dense training, interpolation or re-dense 1-D curve)"
    info = chosen["redense"]["info"]
    words = f"re-dense at lr {info['lr']:g} for {plural(int(info['epochs']), 'epoch')}"
    if info.get("replay_max_abs_diff") is not None:
        words += f" (replayed sparse stage: max |Δw| {info['replay_max_abs_diff']:.2g} from the stored level)"
    return words


def write(root: Path, data: dict, tables: list[str], figures: list[str], cfg, seconds: float) -> str:
    """Write ``root/report.md``; returns its path."""
    if storage.is_remote(root):  # the link from report.md to a file under root
        rel = lambda p: storage.as_path(p).relative_to(root).as_posix()  # noqa: E731
    else:
        rel = lambda p: os.path.relpath(p, root)  # noqa: E731
    pngs = [p for p in figures if p.endswith(".png")]
    levels, x = data["levels"], data["density"]
    chosen = "\n".join(
        f"- **{role}**: level {c['level']} ({100 * x[levels.index(c['level'])]:.3g}% of the "
        f"weights, {data['phases'][levels.index(c['level'])]} phase), " + _redense_words(c)
        for role, c in data["chosen"].items()
    )
    ps = data["per_seed"]
    sharp = [
        "| level | weights (%) | phase | test acc (%) | λmax | Hessian trace | ECE (%) | NLL | Brier |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for j, lv in enumerate(levels):
        m = {
            k: float(np.nanmean(ps[k][:, j]))
            for k in ("test_acc", "lambda_max", "hessian_trace", "ece", "nll", "brier")
        }
        sharp.append(
            f"| {lv} | {100 * x[j]:.3g} | {data['phases'][j]} | {100 * m['test_acc']:.2f} | "
            f"{m['lambda_max']:.3g} | {m['hessian_trace']:.4g} | {100 * m['ece']:.2f} | {m['nll']:.3f} | "
            f"{m['brier']:.3f} |"
        )
    bn = (
        f"BatchNorm statistics are recomputed at every α on {plural(cfg.bn_batches, 'fixed training batch', 'fixed training batches')}."
        if data["has_batch_norm"]
        else "The model has no BatchNorm: every α is evaluated exactly."
    )
    phase_table = (
        phase_markdown(data["phase_stats"], cfg.bootstrap)
        if data["phase_stats"]
        else "The run has no dip and recovery to measure."
    )
    warnings = caveats_markdown(data["correlations"], len(data["seeds"]))
    text = f"""# Analysis of {data["run"]}

{data.get("description", "")}

{plural(len(data["seeds"]), "seed")}, {plural(len(levels), "level")}, schedule `{data["schedule"]}`; analysed in
{seconds:.0f} s (`sdd-jax analyze`; cached steps are not recomputed). Means over seeds; intervals
are percentile bootstraps over seeds ({plural(cfg.bootstrap, "resample")}), coarse with few seeds (n/a with
one seed; resamples with an undefined statistic are dropped and counted).

{warnings}
## Chosen levels

{chosen}

## The claim as a number

Rank correlation across levels between the mean test accuracy and each candidate explanation
(`correlations.csv`). The learning distance is measured from θ0 (the paper's definition: pruned
coordinates count θ0²) or over the unpruned coordinates only, and from θk; λmax and the trace are
those of the Hessian of the training loss restricted to the unpruned weights
({plural(cfg.hessian_batches, "fixed training batch", "fixed training batches")}, {plural(cfg.lanczos_steps, cfg.eigen_method + " step")},
{plural(cfg.hutchinson_probes, "Hutchinson probe")}).

{correlation_markdown(data["correlations"], cfg.bootstrap)}
## Phases

Test accuracy at the dense, worst (bottom of the dip) and best levels; `dip` = dense − worst,
`recovery` = best − worst, `gain` = best − dense (`phase_stats.csv`).

{phase_table}

## Per level

Sharpness and calibration of the test predictions at every level (`levels.csv`, per seed).

{chr(10).join(sharp)}

## Figures

Interpolation: {data["chosen"] and bn} 1-D curves: a Gaussian direction per seed, each filter
rescaled to the norm of the solution's filter, biases and BatchNorm parameters left out;
{plural(cfg.curve_points, "point")} in [−{cfg.curve_range:g}, {cfg.curve_range:g}].

{chr(10).join(f"- [{Path(p).stem}]({rel(p)})" for p in pngs)}

{chr(10).join(f"![{Path(p).stem}]({rel(p)})" for p in pngs)}

## Tables

{chr(10).join(f"- [{Path(p).name}]({rel(p)})" for p in tables)}
"""
    path = root / "report.md"
    atomic_write_text(path, text)
    return str(path)
