"""The CIFAR code path on synthetic 32x32x3 data: thin ResNet-18 / VGG-11 with BatchNorm,
on-device augmentation, momentum + weight decay, a mid-epoch rewind point, one pruning level."""

import jax
import numpy as np
import pytest

from sdd_jax import imp, masks, results, runopen
from sdd_jax.config import Config, DataConfig, ModelConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig


def cifar_like(tmp_path, model: str) -> Config:
    return Config(
        name=f"cifar_like_{model}",
        data=DataConfig(name="synthetic_32x32x3_c10_n256_t64", augment=True),
        noise=NoiseConfig(kind="random_labels", rate=0.2, seed=1),
        model=ModelConfig(name=model, width_multiplier=0.125),
        optim=OptimConfig(lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=64, epochs=2,
                          milestones=(1,), gamma=0.1),
        pruning=PruningConfig(levels=1, rewind_iteration=3),  # inside the first epoch of 4 steps
        run=RunConfig(seeds=2, workdir=str(tmp_path), verbosity=0, eval_batch_size=64),
    )


@pytest.fixture(scope="module", params=["resnet18", "vgg11"])
def run(request, tmp_path_factory):
    config = cifar_like(tmp_path_factory.mktemp(request.param), request.param)
    run_dir = imp.run_imp(config)
    exp, run = runopen.open_run(config)
    levels = {k: run.level(k) for k in (0, 1)}
    return request.param, (exp, run), run_dir, levels


def test_rewind_point_holds_weights_and_bn_statistics_from_iteration_k(run):
    _, (_, rundir), _, _ = run
    leaf0 = jax.tree.leaves(rundir.theta0.load().batch_stats)
    leafk = jax.tree.leaves(rundir.theta_rewind.load().batch_stats)
    assert leaf0 and any(not np.allclose(a, b) for a, b in zip(leaf0, leafk))
    # Each seed keeps its own running statistics.
    assert any(not np.allclose(leaf[0], leaf[1]) for leaf in leafk)


def test_prunable_layers_and_exact_zeros(run):
    model, (exp, _), run_dir, levels = run
    mask, params = levels[1].mask, levels[1].params
    for path, m in zip(masks.paths(mask), jax.tree.leaves(mask)):
        p = np.asarray(jax.tree.leaves(params)[masks.paths(mask).index(path)])
        assert np.all(p[np.asarray(m) == 0] == 0)
        name = masks.path_str(path)
        if not exp.is_prunable(path):
            assert np.asarray(m).min() == 1.0, name
    classifier = np.asarray(mask["fc"]["kernel"])
    if model == "resnet18":  # the ResNets prune their classifier, VGG does not
        assert classifier.min() == 0.0
    else:
        assert classifier.min() == 1.0
    rows = results.read_results_csv(run_dir / "results.csv")
    assert [r["level"] for r in rows] == [0, 0, 1, 1]
    assert all(np.isfinite(r["test_loss"]) for r in rows)
    assert rows[2]["density"] == pytest.approx(0.8, abs=1e-4)
