"""What a run says it is, without training: the description and the folder slug generated from the
config (variants and overrides alike), preset files of one's own and their bad forms, the
branch commands' help, and the analysis report's caveats, plurals, role names and figure axes."""

import argparse
import dataclasses
import json
import re
import sys

import numpy as np
import pytest

from sdd_jax import cli, cli_parser, presets
from sdd_jax.analysis import figures as analysis_figures
from sdd_jax.analysis import report as analysis_report
from sdd_jax.analysis.settings import AnalysisConfig
from sdd_jax.config import Config, ConfigError, override
from sdd_jax.describe import describe, slug
from sdd_jax.preset_file import load_preset_file
from sdd_jax.runid import result_hash, run_dir_name, run_path

NOISE_WORDS = {"random_labels": "random labels", "asymmetric": "asymmetric noise", "pairflip": "pair-flip noise"}


def expected_parts(config: Config) -> list[str]:
    """The words a description must hold, read field by field from the config (the oracle)."""
    n = config.noise
    return [
        f"{round(100 * n.rate)}% {NOISE_WORDS[n.kind]}",
        {"lottery": f"lottery k={config.pruning.rewind_iteration}", "finetune": "finetune", "scratch": "scratch"}.get(
            config.pruning.schedule, "LR rewinding"
        ),
        f"{config.optim.epochs} epoch",
        f"{config.run.seeds} seed",
        *(["bfloat16"] if config.model.dtype == "bfloat16" else []),
    ]


@pytest.mark.parametrize(
    "name",
    ["lenet_mnist-noise40", "lenet_mnist-asym40", "lenet_mnist-finetune", "resnet18_cifar10-pairflip20-scratch-bf16"],
)
def test_a_variant_is_described_from_its_config_not_its_base(name):
    config = presets.get(name)
    for part in expected_parts(config):
        assert part in config.description, (part, config.description)
    assert config.description == describe(config)
    base = presets.get(name.split("-")[0])
    assert describe(base) != describe(config)


def test_an_override_is_described_and_named_like_the_variant(capsys):
    variant = presets.get("lenet_mnist-noise40")
    overridden = override(presets.get("lenet_mnist"), {"noise.rate": 0.4})
    assert "40% random labels" in describe(overridden) and "20%" not in describe(overridden)
    assert describe(overridden) == describe(variant)
    # the same experiment: one hash, one folder, that says noise40
    assert result_hash(overridden) == result_hash(variant)
    assert run_dir_name(overridden) == run_dir_name(variant) == f"lenet_mnist-noise40-{result_hash(variant)}"
    assert cli.main(["show", "lenet_mnist", "--set", "noise.rate=0.4", "--seeds", "1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "40% random labels" in shown["description"] and shown["description"].endswith("· 1 seed")
    assert shown["run_dir"] == f"lenet_mnist-noise40-seeds1-{shown['result_hash']}"


def test_the_description_follows_every_field_it_names():
    base = presets.get("quickstart")
    assert describe(base) == "LeNet-300-100 · MNIST 4,000 · 20% random labels · lottery k=0 · 60 epochs · 2 seeds"
    changed = override(
        base,
        {
            "noise.kind": "symmetric",
            "noise.rate": 0.125,
            "pruning.criterion": "saliency",
            "pruning.scope": "layer",
            "pruning.fraction": 0.3,
            "optim.epochs": 1,
            "run.seeds": 1,
            "data.train_size": 12000,
        },
    )
    assert describe(changed) == (
        "LeNet-300-100 · MNIST 12,000 · 12.5% symmetric noise · lottery k=0 · saliency pruning, per layer, "
        "30% per level · 1 epoch · 1 seed"
    )
    assert describe(override(base, {"noise.kind": "none", "noise.rate": 0.0})).count("clean labels") == 1


def test_the_folder_slug_names_what_differs_from_the_named_preset_in_one_order():
    assert run_dir_name(presets.get("quickstart")) == f"quickstart-{result_hash(presets.get('quickstart'))}"
    twisted = presets.get("resnet18_cifar10-finetune-noise40")  # variants in another order
    assert run_dir_name(twisted).startswith("resnet18_cifar10-noise40-finetune-")
    back = override(presets.get("lenet_mnist-noise40"), {"noise.rate": 0.2})  # the override undoes the variant
    assert run_dir_name(back) == f"lenet_mnist-{result_hash(back)}"
    smoke = presets.get("smoke")
    tiny = override(smoke, {"data.train_size": 256, "optim.epochs": 1, "model.dtype": "bfloat16"})
    assert slug(tiny, smoke) == "n256-bf16-e1"
    assert run_dir_name(tiny) == f"smoke-n256-bf16-e1-{result_hash(tiny)}"
    # a name that is not a preset's keeps its name; the hash still decides identity
    own = dataclasses.replace(tiny, name="mine")
    assert run_dir_name(own) == f"mine-{result_hash(tiny)}"


def test_an_old_folder_name_is_found_by_run_path(tmp_path):
    config = override(presets.get("smoke"), {"noise.rate": 0.4})
    new = run_path(tmp_path, config)
    assert new.name == f"smoke-noise40-{result_hash(config)}"
    old = tmp_path / f"smoke-{result_hash(config)}"
    old.mkdir()
    assert run_path(tmp_path, config) == old  # only the old one exists: it is the run's
    new.mkdir()
    assert run_path(tmp_path, config) == new


# ----- preset files ---------------------------------------------------------------------------


def test_a_preset_file_is_loaded_and_validated_like_a_preset(tmp_path, capsys):
    good = tmp_path / "my_preset.py"
    good.write_text(
        "from sdd_jax.config import Config, NoiseConfig\n"
        "def config():\n    return Config(noise=NoiseConfig(kind='random_labels', rate=0.3))\n"
    )
    config = load_preset_file(good)
    assert config.name == "my_preset" and config.noise.rate == 0.3  # named after the file
    assert cli.main(["show", str(good), "--set", "optim.epochs=3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["optim"]["epochs"] == 3 and "30% random labels" in shown["description"]
    assert shown["run_dir"] == f"my_preset-{shown['result_hash']}"
    bad_value = tmp_path / "bad_value.py"
    bad_value.write_text(
        "from sdd_jax.config import Config, OptimConfig\ndef config():\n    return Config(optim=OptimConfig(lr=-1.0))\n"
    )
    assert cli.main(["show", str(bad_value)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optim.lr" in err[0]


def test_a_preset_file_imports_a_module_beside_it(tmp_path):
    """An extension beside the preset file (docs/extending.md) is importable from it, as when the
    file is run as a script; ``sys.path`` is as it was afterwards."""
    helper = f"sdd_preset_helper_{tmp_path.name}".replace("-", "_")
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / f"{helper}.py").write_text("RATE = 0.35\n")
    path = tmp_path / "ext" / "preset.py"
    path.write_text(
        f"import {helper}\nfrom sdd_jax.config import Config, NoiseConfig\n"
        f"def config():\n    return Config(noise=NoiseConfig(kind='random_labels', rate={helper}.RATE))\n"
    )
    before = list(sys.path)
    try:
        assert load_preset_file(path).noise.rate == 0.35
    finally:
        sys.modules.pop(helper, None)
    assert sys.path == before


@pytest.mark.parametrize(
    "text, words",
    [
        (None, "not found"),
        ("x = 1\n", "has no config() function"),
        ("def config():\n    return {'name': 'x'}\n", "returned dict, not a sdd_jax.config.Config"),
        ("def config(:\n", "failed to import: SyntaxError"),
        ("def config():\n    raise RuntimeError('boom')\n", "config() failed: RuntimeError: boom"),
    ],
)
def test_a_bad_preset_file_is_one_line_naming_it(tmp_path, capsys, text, words):
    path = tmp_path / "preset.py"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_preset_file(path)
    for command in (["run", str(path), "--workdir", str(tmp_path / "runs")], ["estimate", str(path)]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sdd-jax: error: ") and str(path) in err[0] and words in err[0]
    assert not (tmp_path / "runs").exists()  # nothing written


# ----- help -----------------------------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli_parser.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_branch_command_has_its_own_help():
    parsers = _subparsers()
    helps = {name: parsers[name].format_help() for name in ("oneshot", "reinit", "random-prune", "redense")}
    levels = {
        name: next(a.help for a in parsers[name]._actions if a.dest == "levels")
        for name in ("oneshot", "reinit", "random-prune", "redense")
    }
    assert len(set(helps.values())) == 4 and len(set(levels.values())) == 4
    assert "dense level-0" in helps["oneshot"] and "k values" in levels["oneshot"]
    assert "new initial weights" in helps["reinit"] and "re-initialised" in levels["reinit"]
    assert "random mask" in helps["random-prune"] and "per-layer counts" in levels["random-prune"]
    assert "pruning.redense_epochs" in helps["redense"] and "re-dense" in levels["redense"]
    assert "--level" in parsers["export"].format_help() and "bcoo" in parsers["export"].format_help()


def _run_dir_help(parser: argparse.ArgumentParser) -> str:
    return next(a.help for a in parser._actions if a.dest == "run_dir")


def test_every_command_says_what_it_does_and_what_its_run_dir_is():
    parsers = _subparsers()
    for name, parser in parsers.items():
        assert parser.description, name  # `sdd-jax NAME --help` describes the command
    for name in ("report", "analyze", "export", "oneshot", "reinit", "random-prune", "redense"):
        assert "<hash>" in _run_dir_help(parsers[name]), name
    assert "study" in _run_dir_help(parsers["report"])
    assert "level 0 finished" in _run_dir_help(parsers["oneshot"])  # one-shot needs the dense level only
    assert "--levels finished" in _run_dir_help(parsers["reinit"])
    top = cli_parser.build_parser().format_help()
    assert "sdd-jax" in top and "``" not in top  # plain text, no reStructuredText markup


# ----- the analysis report and figures --------------------------------------------------------


def _correlations(levels_by_scope: dict[str, int]) -> list[dict]:
    return [
        {"scope": scope, "candidate": "c", "method": m, "value": 0.5, "ci_low": 0.1, "ci_high": 0.9, "levels": n}
        for scope, n in levels_by_scope.items()
        for m in ("spearman", "kendall")
    ]


def test_the_analysis_report_warns_on_too_few_levels_or_seeds_and_counts_right():
    few = _correlations({"all levels": 3})
    text = analysis_report.correlation_markdown(few, seeds=1)
    assert "3 levels: too few to rank" in text and "bootstrap intervals over seeds are undefined" in text
    assert "(3 levels)" in text
    assert "only 3 distinct resamples" in analysis_report.correlation_markdown(few, seeds=2)
    enough = _correlations({"all levels": 8, "before the collapse": 1})
    caveats = analysis_report.caveats(enough, 5)
    assert len(caveats) == 1 and "before the collapse rest on 1 level:" in caveats[0]
    assert "**before the collapse** (1 level)" in analysis_report.correlation_markdown(enough)
    assert analysis_report.caveats(_correlations({"all levels": 8}), 5) == []


def _analysis_data(epochs: int = 3, seeds: int = 2) -> dict:
    """The pieces of :func:`sdd_jax.analysis.tables.collect`'s output that the report and two
    figures read, for levels 0-2 with chosen levels 0 (dense) and 2 (best)."""
    rng = np.random.default_rng(0)
    levels = [0, 1, 2]
    per_seed = {
        k: rng.uniform(0.5, 0.9, (seeds, 3))
        for k in ("train_acc", "test_acc", "lambda_max", "hessian_trace", "ece", "nll", "brier")
    }
    curves = {
        "epoch": list(range(1, epochs + 1)),
        "train_acc": [list(rng.uniform(0.5, 1, seeds)) for _ in range(epochs)],
        "test_acc": [list(rng.uniform(0.5, 1, seeds)) for _ in range(epochs)],
    }
    chosen = {
        role: {"level": lv, "curves": curves, "redense": {"info": {"lr": 0.1, "epochs": 1}}}
        for role, lv in (("dense", 0), ("best", 2))
    }
    return {
        "run": "smoke-abc",
        "description": "LeNet-300-100 · MNIST 256",
        "seeds": list(range(seeds)),
        "levels": levels,
        "density": np.array([1.0, 0.8, 0.64]),
        "phases": ["light"] * 3,
        "per_seed": per_seed,
        "chosen": chosen,
        "correlations": _correlations({"all levels": 3}),
        "phase_stats": [],
        "has_batch_norm": False,
        "schedule": "lottery",
    }


def test_the_analysis_report_has_right_plurals_and_its_warnings(tmp_path):
    data = _analysis_data(seeds=1)
    path = analysis_report.write(tmp_path, data, [], [], AnalysisConfig(), 3.0)
    text = open(path).read()
    assert "for 1 epoch" in text and "1 epochs" not in text
    assert "1 seed, 3 levels" in text and "seed(s)" not in text
    assert "> **Warning.**" in text and "3 levels: too few to rank" in text
    assert "LeNet-300-100 · MNIST 256" in text
    assert "- **best**: level 2" in text and "light phase" in text


def test_analysis_figures_share_y_axes_use_whole_epochs_and_say_how_many_seeds():
    data = _analysis_data(epochs=3, seeds=2)
    fig = analysis_figures.level_curves(data)
    first, second = fig.axes[:2]
    assert first.get_shared_y_axes().joined(first, second)
    fig.canvas.draw()
    for ax in (first, second):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert "mean of 2 seeds" in fig._suptitle.get_text()
    assert "LeNet-300-100 · MNIST 256" in fig._suptitle.get_text()
    spread = analysis_figures.generalisation_gap(data)
    assert "band ± 1 sd (ddof=1)" in spread._suptitle.get_text()
    band = spread.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    gap = 100 * (data["per_seed"]["train_acc"] - data["per_seed"]["test_acc"])
    for edge in (gap.mean(0) - gap.std(0, ddof=1), gap.mean(0) + gap.std(0, ddof=1)):  # ± 1 sd, not min-max
        assert all(np.isclose(band, v).any() for v in edge)


def test_a_variant_finds_the_folder_its_override_made_before_the_slug(tmp_path):
    variant = presets.get("lenet_mnist-noise40")
    old = tmp_path / f"lenet_mnist-{result_hash(variant)}"  # made by `run lenet_mnist --set noise.rate=0.4`
    old.mkdir()
    assert run_path(tmp_path, variant) == old
