"""The study presets (``sdd_jax.presets.studies``): every one resolves to valid configs, the
paper's comparison figures carry the model, data, noise and axes of their captions, and
``sdd-jax presets`` lists them in a section of their own."""

import functools
import itertools

import pytest

from sdd_jax import cli, presets
from sdd_jax.config import flat_keys, override
from sdd_jax.identity import INITS
from sdd_jax.presets import studies
from sdd_jax.validate import validate


def _points(study):
    """The config of every point of ``study`` (the product of its axes), with its settings."""
    base = override(presets.get(study.base), list(study.overrides))
    if study.seeds is not None:
        base = override(base, {"run.seeds": study.seeds})
    for point in itertools.product(*[[(key, v) for v in values] for key, values in study.grid]):
        settings = {k: v for k, v in point if k != studies.INIT_AXIS}
        yield override(base, settings), settings


@pytest.mark.parametrize("name", list(studies.STUDIES))
def test_every_study_preset_resolves_to_valid_configs(name):
    study = studies.get_study(name)
    keys = flat_keys(presets.get(study.base))  # an unknown base preset raises here
    axes = [key for key, _ in study.grid]
    assert len(set(axes)) == len(axes)
    for key, values in study.grid:
        assert key == studies.INIT_AXIS or key in keys, key
        assert values and len(set(values)) == len(values), key
        if key == studies.INIT_AXIS:
            assert set(values) <= set(INITS)
    assert study.colour_axis in axes and (study.panel is None or study.panel in axes)
    for config, settings in _points(study):
        validate(config)
        for key, value in settings.items():
            assert functools.reduce(getattr, key.split("."), config) == value


def _axes(name):
    study = studies.get_study(name)
    configs = [config for config, _ in _points(study)]
    return study, dict(study.grid), configs


def test_the_paper_figures_have_their_captions_settings():
    study, axes, configs = _axes("fig2")  # ResNet-18 / CIFAR-100, 40% noise, three criteria, a panel each
    assert {(c.model.name, c.data.name, c.noise.kind, c.noise.rate) for c in configs} == {
        ("resnet18", "cifar100", "random_labels", 0.4)
    }
    assert axes == {"pruning.criterion": ("magnitude", "saliency", "random")} and study.panel == "pruning.criterion"
    study, axes, configs = _axes("fig4")  # ResNet-18 / CIFAR-10 at 20/40/80% random labels
    assert {(c.model.name, c.data.name, c.noise.kind) for c in configs} == {("resnet18", "cifar10", "random_labels")}
    assert axes == {"noise.rate": (0.2, 0.4, 0.8)} and study.by == "noise.rate"
    study, axes, configs = _axes("fig10")  # lottery ticket vs random re-initialisation, one panel
    assert axes == {"init": ("lottery", "reinit")} and study.by == "init" and study.panel is None
    assert {(c.data.name, c.noise.rate) for c in configs} == {("cifar10", 0.2)}
    study, axes, configs = _axes("fig13")  # LeNet-300-100 / MNIST, 20% noise, three criteria
    assert {(c.model.name, c.data.name, c.noise.rate) for c in configs} == {("lenet_300_100", "mnist", 0.2)}
    assert axes == {"pruning.criterion": ("magnitude", "saliency", "random")}
    study, axes, configs = _axes("fig31")  # ResNet-18 on CIFAR-10 and -100 without label noise
    assert {(c.data.name, c.noise.rate) for c in configs} == {
        (d, r) for d in ("cifar10", "cifar100") for r in (0.0, 0.2)
    }
    assert study.by == "noise.rate" and study.panel == "data.name"
    study, axes, _ = _axes("fig33")
    assert axes == {"init": ("lottery", "reinit"), "noise.rate": (0.2, 0.4, 0.8)} and study.panel == "noise.rate"
    assert studies.get_study("fig44").distance and not studies.get_study("fig4").distance


def test_presets_lists_the_study_presets_in_a_section_of_their_own(capsys):
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("study presets"))
    names = [line.split()[0] for line in lines[start + 1 :]]
    assert names == list(studies.STUDIES)
    assert {line.split()[0] for line in lines[: start - 1]} == {name for name, _ in presets.listing()}
