"""docs/extending.md as it stands: its ```python blocks (a SNIP criterion module, a Wide ResNet
family module, a preset file using the first) are executed as modules, then the smoke preset runs
with each addition, and the realised sparsity and the criterion's scores are checked against
independent oracles."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from sdd_jax import criteria, imp, masks, presets, pruning, runopen
from sdd_jax.config import override
from sdd_jax.engine import resolve_epoch_loop
from sdd_jax.experiment import criterion_grads
from sdd_jax.models import FAMILIES, family_of, is_convolutional

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```\s*$", re.S | re.M)
MODULE_NAME = re.compile(r"# (\w+)\.py: ")


def doc_modules() -> dict[str, str]:
    """``{module name: code}`` of every ```python block, named by its first line ``# name.py: ...``."""
    out = {}
    for code in PYTHON_BLOCK.findall(DOC.read_text(encoding="utf-8")):
        match = MODULE_NAME.match(code)
        assert match, f"a python block of {DOC.name} does not start with '# <module>.py: ': {code[:60]!r}"
        out[match.group(1)] = code
    return out


@pytest.fixture(scope="module")
def extensions():
    """The doc's modules, executed (and so registered); unregistered afterwards."""
    loaded = {}
    try:
        for name, code in doc_modules().items():
            module = types.ModuleType(name)
            module.__file__ = str(DOC)
            sys.modules[name] = module
            exec(compile(code, f"{DOC}[{name}]", "exec"), module.__dict__)
            loaded[name] = module
        yield loaded
    finally:
        for name in loaded:
            sys.modules.pop(name, None)
        criteria.CRITERIA.pop("snip", None)
        FAMILIES.pop("wide_resnet", None)


def small_smoke(tmp_path, base_config=None, **settings):
    base = {
        "pruning.levels": 1,
        "optim.epochs": 1,
        "data.train_size": 256,
        "data.test_size": 200,
        "run.eval_batch_size": 200,
        "run.workdir": str(tmp_path),
        "run.verbosity": 0,
    }
    return override(base_config or presets.get("smoke"), {**base, **settings})


def kept_after_one_level(total: int) -> int:
    return total - (total + 4) // 5  # total - ceil(0.2 * total), in integers


def prunable_counts(exp, mask) -> tuple[int, np.ndarray]:
    """Total prunable weights and the per-seed kept count of the stacked ``mask``."""
    leaves = [(p, np.asarray(m)) for p, m in zip(masks.paths(mask), jax.tree.leaves(mask)) if exp.is_prunable(p)]
    total = sum(m[0].size for _, m in leaves)
    kept = sum(m.reshape(m.shape[0], -1).sum(axis=1) for _, m in leaves)
    return total, kept


def test_the_doc_holds_the_two_modules_and_a_preset_file():
    assert list(doc_modules()) == ["snip", "wide_resnet", "snip_preset"]


def test_snip_scores_are_abs_w_times_g(extensions):
    entry = criteria.CRITERIA["snip"]
    assert entry is extensions["snip"].SNIP and entry.needs_grads and not entry.needs_key
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": rng.normal(size=(5, 3)).astype(np.float32)}, "b": rng.normal(size=7).astype(np.float32)}
    grads = jax.tree.map(lambda w: rng.normal(size=w.shape).astype(np.float32), params)
    got = pruning.scores(params, "snip", grads=grads)
    for g_leaf, w_leaf, d_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(params), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(np.asarray(g_leaf), np.abs(w_leaf * d_leaf))
    with pytest.raises(pruning.PruningError, match="'snip' needs grads"):
        pruning.scores(params, "snip")


def test_smoke_with_snip_prunes_the_exact_count_by_abs_w_times_g(extensions, tmp_path):
    config = small_smoke(tmp_path, extensions["snip_preset"].config())  # the doc's preset file
    assert config.pruning.criterion == "snip"
    exp, run = runopen.open_run(config)
    imp.run_imp(config, prepared=(exp, run), write_report=False)
    level0, level1 = run.level(0), run.level(1)
    total, kept = prunable_counts(exp, level1.mask)
    np.testing.assert_array_equal(kept, [kept_after_one_level(total)] * len(exp.seeds))
    # The mask keeps the highest |w * g| of the level-0 weights, g the engine's gradient of level 1.
    grads = criterion_grads(exp, level0, 1)
    assert grads is not None
    paths = masks.paths(level1.mask)
    for seed in range(len(exp.seeds)):
        score, keep = [], []
        for path, w, g, m in zip(
            paths, jax.tree.leaves(level0.params), jax.tree.leaves(grads), jax.tree.leaves(level1.mask)
        ):
            if exp.is_prunable(path):
                score.append(np.abs(np.asarray(w[seed]) * np.asarray(g[seed])).ravel())
                keep.append(np.asarray(m[seed]).ravel() == 1)
        score, keep = np.concatenate(score), np.concatenate(keep)
        assert score[keep].min() >= score[~keep].max()


def test_smoke_with_a_tiny_wide_resnet(extensions, tmp_path):
    config = small_smoke(
        tmp_path,
        **{
            "model.name": "wrn10_1",
            "model.width_multiplier": 0.25,
            "data.name": "synthetic_8x8x3_c10_n128_t32",
            "data.train_size": None,
            "data.test_size": None,
            "optim.batch_size": 32,
            "run.eval_batch_size": 32,
            "run.epoch_loop": "scan",
        },
    )  # one compiled epoch: the quickest to compile
    assert family_of("wrn10_1") is extensions["wide_resnet"].WIDE_RESNET
    assert is_convolutional(config.model) and resolve_epoch_loop("auto", is_convolutional(config.model)) == (
        "steps" if jax.default_backend() == "cpu" else "scan"
    )  # the engine's auto rule reads the family's flag
    exp, run = runopen.open_run(config)
    imp.run_imp(config, prepared=(exp, run), write_report=False)
    level1 = run.level(1)
    paths = masks.paths(level1.mask)
    kernels = {masks.path_str(p) for p in paths if masks.path_str(p).endswith("kernel")}
    assert {masks.path_str(p) for p in paths if exp.is_prunable(p)} == kernels  # every kernel, fc included
    assert len(kernels) == 1 + 3 * 2 + 2 + 1  # stem, 3 blocks x 2 convs, 2 projections, classifier
    total, kept = prunable_counts(exp, level1.mask)
    np.testing.assert_array_equal(kept, [kept_after_one_level(total)] * len(exp.seeds))
    for w, m in zip(jax.tree.leaves(level1.params), jax.tree.leaves(level1.mask)):
        assert np.all(np.asarray(w)[np.asarray(m) == 0] == 0)
