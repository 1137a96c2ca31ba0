"""The command line end to end on the seconds-long ``smoke`` preset, presets, --set errors,
config hashing, and ``report`` rebuilding the figure from results.csv."""

import dataclasses
import importlib.metadata
import json
import math
import re
import sys
import warnings
from pathlib import Path

import jax
import jaxlib.version
import numpy as np
import pytest

import sdd_jax
from sdd_jax import cli, cli_commands, figure, models, presets, report, results, rundir, version
from sdd_jax.config import Config, ConfigError, from_dict, override, to_dict
from sdd_jax.runid import result_hash


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs")
    code = cli.main(["run", "smoke", "--workdir", str(workdir), "--set", "pruning.levels=2", "-q"])
    assert code == 0
    (run_dir,) = [p for p in workdir.iterdir() if p.is_dir()]
    return run_dir


def test_run_writes_results_figure_and_config(smoke_run):
    for name in ("results.csv", "summary.txt", "figure.png", "figure.svg", "config.json", "dataset.json"):
        assert (smoke_run / name).stat().st_size > 0, name
    rows = results.read_results_csv(smoke_run / "results.csv")
    assert len(rows) == 2 * 3  # 2 seeds x levels 0..2
    for column in results.RESULT_COLUMNS:
        assert column in rows[0]
    assert {r["seed"] for r in rows} == {0, 1}
    assert [r["level"] for r in rows if r["seed"] == 0] == [0, 1, 2]
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["pruning"]["levels"] == 2


def test_rerun_is_not_recomputed_and_more_levels_extend_the_run(smoke_run, monkeypatch):
    """Counted, not compared: a deterministic recompute would give the same rows. Every training
    epoch goes through Engine.train_epoch_then_evaluate and every level through imp.run_level."""
    from sdd_jax import imp
    from sdd_jax.engine import Engine

    levels, epochs = [], []
    real_level, real_epoch = imp.run_level, Engine.train_epoch_then_evaluate
    monkeypatch.setattr(
        imp,
        "run_level",
        lambda exp, run, plan, level, *a, **k: levels.append(level) or real_level(exp, run, plan, level, *a, **k),
    )
    monkeypatch.setattr(
        Engine,
        "train_epoch_then_evaluate",
        lambda self, state, mask, data, epoch, *a, **k: (
            epochs.append(epoch) or real_epoch(self, state, mask, data, epoch, *a, **k)
        ),
    )
    finished = sorted((smoke_run / "levels").rglob("*"))  # the finished levels' folders and files
    assert len([p for p in finished if p.parent == smoke_run / "levels"]) == 3
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    before = results.read_results_csv(smoke_run / "results.csv")
    run = ["run", "smoke", "--workdir", str(smoke_run.parent), "-q"]
    assert cli.main([*run, "--set", "pruning.levels=2"]) == 0
    assert (levels, epochs) == ([], [])  # the same run again: nothing trained
    assert cli.main([*run, "--set", "pruning.levels=3"]) == 0
    smoke = presets.get("smoke")
    steps_per_epoch = math.ceil(smoke.data.train_size / smoke.optim.batch_size)
    assert levels == [3]  # only the new level, each of its epochs once (lottery: from epoch k // steps)
    assert epochs == list(range(smoke.pruning.rewind_iteration // steps_per_epoch, smoke.optim.epochs))
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps  # the finished levels untouched
    after = results.read_results_csv(smoke_run / "results.csv")
    assert after[: len(before)] == before
    assert {r["level"] for r in after} == {0, 1, 2, 3}


def test_report_rebuilds_the_figure_from_results_csv(smoke_run, capsys):
    expected = figure.figure_data(results.run_rows(smoke_run))
    (smoke_run / "figure.png").unlink()
    assert cli.main(["report", str(smoke_run)]) == 0
    assert (smoke_run / "figure.png").stat().st_size > 0
    np.testing.assert_equal(report.report(smoke_run)["figure_data"], expected)
    assert "test acc" in capsys.readouterr().out


def test_oneshot_branch_from_the_command_line(smoke_run):
    assert cli.main(["oneshot", str(smoke_run), "--levels", "2", "-q"]) == 0
    rows = results.read_results_csv(smoke_run / "branches" / "oneshot" / "results.csv")
    imp_rows = results.read_results_csv(smoke_run / "results.csv")
    density = {r["level"]: r["density"] for r in imp_rows}
    assert {r["density"] for r in rows} == {density[2]}
    # The main report draws the branch beside the main curve and labels phases on imp only.
    result = report.report(smoke_run)
    assert "oneshot" in result["figure_data"]["others"]
    oneshot_table = result["table"].split("branch: oneshot")[1]
    assert not any(p in oneshot_table for p in ("light", "critical", "sweet", "collapsed"))


def test_unknown_key_lists_valid_keys(capsys):
    assert cli.main(["show", "smoke", "--set", "optim.learning_rate=0.1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.learning_rate'" in err and "optim.lr (float)" in err


def test_wrong_type_names_the_expected_type(capsys):
    assert cli.main(["show", "smoke", "--set", "optim.epochs=ten"]) == 2
    assert "optim.epochs: expected int, got 'ten'" in capsys.readouterr().err


def test_unknown_preset_is_one_clear_error(capsys):
    assert cli.main(["run", "lenet_cifar"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'lenet_cifar'" in err and "quickstart" in err


def test_a_study_preset_given_to_a_run_command_names_the_sweep(tmp_path, capsys):
    for command in ("show", "run", "estimate"):
        for name in ("quickstart-noise", "fig4"):
            assert cli.main([command, name, *(["--workdir", str(tmp_path)] if command == "run" else [])]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err == [f"sdd-jax: error: {name!r} is a study preset: run it with `sdd-jax sweep {name}`"]
    assert not any(tmp_path.iterdir())


def test_missing_run_dir_for_report(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    assert "results.csv" in capsys.readouterr().err


def test_report_on_a_run_with_no_finished_level_says_so(smoke_run, tmp_path, capsys):
    started = tmp_path / smoke_run.name  # a run killed inside level 0: config.json, no results yet
    started.mkdir()
    (started / "config.json").write_text((smoke_run / "config.json").read_text())
    total = json.loads((started / "config.json").read_text())["pruning"]["levels"] + 1
    capsys.readouterr()
    assert cli.main(["report", str(started)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"sdd-jax: error: {started}: no level finished yet (0 of {total}); rerun the run command to continue"
    ]
    assert sorted(p.name for p in started.iterdir()) == ["config.json"]  # nothing written


def test_show_prints_the_resolved_config(capsys):
    assert cli.main(["show", "resnet18_cifar10-noise40-finetune", "--seeds", "3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["noise"]["rate"] == 0.4 and shown["pruning"]["schedule"] == "finetune"
    assert shown["run"]["seeds"] == 3 and shown["optim"]["milestones"] == [80, 120]
    assert len(shown["result_hash"]) == 12


def test_presets_list_every_paper_setting(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in (
        "quickstart",
        "lenet_mnist",
        "resnet18_cifar10",
        "resnet18_cifar100",
        "vgg16_cifar10",
        "vgg16_cifar100",
        "resnet101_tinyimagenet",
        "lenet_mnist-noise80",
        "resnet18_cifar10-asym20",
        "vgg16_cifar10-pairflip40",
        "lenet_mnist-scratch",
        *(f"{base}-bf16" for base in presets.BF16_BASES),
    ):
        assert f"\n{name} " in "\n" + out, name
    assert "\nlenet_mnist-bf16 " not in "\n" + out  # bfloat16 is listed for the conv-net settings only
    # Asymmetric noise has no class map for Tiny-ImageNet: those variants cannot run, so are not listed.
    assert "resnet101_tinyimagenet-asym" not in out and "\nresnet101_tinyimagenet-pairflip20 " in "\n" + out
    assert set(presets.BF16_BASES) == {
        "resnet18_cifar10",
        "resnet18_cifar100",
        "vgg16_cifar10",
        "vgg16_cifar100",
        "resnet101_tinyimagenet",
    }


def test_bf16_variant_combines_with_the_others_and_names_its_own_runs():
    fp32 = presets.get("resnet18_cifar10-noise40-finetune")
    bf16 = presets.get("resnet18_cifar10-noise40-finetune-bf16")
    assert (fp32.model.dtype, bf16.model.dtype) == ("float32", "bfloat16")
    assert bf16.name == "resnet18_cifar10-noise40-finetune-bf16"
    # nothing else changes (the description, generated from the config, says bfloat16)
    assert "bfloat16" in bf16.description and "bfloat16" not in fp32.description
    assert dataclasses.replace(bf16, name=fp32.name, model=fp32.model, description=fp32.description) == fp32
    assert presets.get("resnet18_cifar10-bf16-noise40").model == bf16.model  # in any order
    assert result_hash(bf16) != result_hash(fp32)


@pytest.mark.parametrize("name", list(presets.BASE))
def test_presets_follow_the_paper(name):
    config = presets.get(name)
    assert config.name == name
    if name.startswith(("resnet18", "vgg16")):
        assert (config.optim.lr, config.optim.momentum, config.optim.weight_decay) == (0.1, 0.9, 1e-4)
        assert config.optim.milestones == (80, 120) and config.optim.epochs == 160
        assert config.optim.batch_size == 128 and config.data.augment
        assert config.pruning.rewind_iteration == (2000 if name.startswith("vgg") else 1000)
    if name == "lenet_mnist":
        assert (config.optim.lr, config.optim.momentum, config.optim.epochs) == (0.1, 0.0, 200)
        assert config.pruning.rewind_iteration == 0
    if name == "resnet101_tinyimagenet":
        assert (config.optim.batch_size, config.optim.lr, config.optim.milestones) == (512, 0.2, (100, 150))
        # The official command rewinds to iteration 1000; its defaults warm up over 5 epochs from 0.
        assert config.pruning.rewind_iteration == 1000 and config.optim.warmup_epochs == 5.0
    # The paper averages 5 runs for LeNet and 3 for the CIFAR (and Tiny-ImageNet) settings.
    expected_seeds = {"quickstart": 2, "smoke": 2, "lenet_mnist": 5}.get(name, 3)
    assert config.run.seeds == expected_seeds


def test_the_readme_presets_table_says_which_output_layers_are_pruned():
    """Every row of the README's presets table against the model family's own prunable rule at
    its output layer (the name its module gives the classifier)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = text.split("\n## Presets\n", 1)[1].split("\n\n| preset |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    named = set()
    for row in rows:
        names, notes = re.findall(r"`([\w-]+)`", row[0]), row[-1]
        for name in names:
            config = presets.get(name)
            family = models.family_of(config.model.name)
            output = sys.modules[family.build.__module__].OUTPUT_LAYER
            pruned = models.prunable_predicate(config.model)((output, "kernel"))
            assert ("output layer pruned" in notes) == pruned, (name, notes)
            assert ("output layer not pruned" in notes) == (not pruned), (name, notes)
            named.add(name)
    assert named == set(presets.BASE)  # every base preset has its row


def test_result_hash_ignores_paths_and_verbosity_only():
    base = presets.get("quickstart")
    same = override(
        base, {"run.workdir": "/elsewhere", "run.verbosity": 0, "run.seeds_per_chunk": 1, "pruning.levels": 40}
    )
    assert result_hash(same) == result_hash(base)
    for key, value in (("noise.rate", 0.4), ("run.seeds", 3), ("optim.epochs", 7), ("noise.seed", 1)):
        assert result_hash(override(base, {key: value})) != result_hash(base), key


def test_config_round_trips_through_json():
    config = presets.get("resnet18_cifar100-asym40")
    assert from_dict(Config, json.loads(json.dumps(to_dict(config)))) == config
    with pytest.raises(ConfigError, match="unknown keys"):
        from_dict(Config, {**to_dict(config), "extra": 1})


def test_execution_json_records_the_evaluation_batch_and_the_versions(smoke_run):
    execution = json.loads((smoke_run / "execution.json").read_text())
    assert execution["eval_batch_size"] == presets.get("smoke").run.eval_batch_size == 500
    assert execution["jax_version"] == jax.__version__ and execution["jaxlib_version"] == jaxlib.version.__version__
    assert execution["sdd_jax_version"] == sdd_jax.__version__


def test_continuing_under_other_versions_warns_but_not_a_run_that_recorded_none(tmp_path):
    (tmp_path / "levels").mkdir()  # a run with finished levels
    now = {"eval_batch_size": 500, **rundir.software_versions()}
    written_before_versions = {"eval_batch_size": 500}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rundir._check_execution(tmp_path, now, written_before_versions)
    assert json.loads((tmp_path / "execution.json").read_text()) == now  # recorded from now on
    with pytest.warns(UserWarning, match=r"other execution settings .*jax_version.*0\.0\.1 -> "):
        rundir._check_execution(tmp_path, now, {**now, "jax_version": "0.0.1"})


def test_version_from_the_distribution_else_from_the_checkout(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"sdd-jax {sdd_jax.__version__}\n"
    assert sdd_jax.__version__ == importlib.metadata.version("sdd-jax")  # installed (editable) here

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    lines = (Path(sdd_jax.__file__).parents[1] / "pyproject.toml").read_text().splitlines()
    project = lines[lines.index("[project]") + 1 :]
    (stated,) = [line.split("=")[1].strip().strip('"') for line in project if line.startswith("version")][:1]
    assert version.package_version() == stated


def test_report_on_an_unfinished_run_says_how_many_levels_are_done(tmp_path, capsys, monkeypatch):
    from sdd_jax.progress import Progress

    def stop_after_level_1(self, level, rows):
        if level == 1:
            raise KeyboardInterrupt

    small = ["--set", "data.train_size=256", "--set", "data.test_size=256", "--set", "run.eval_batch_size=256"]
    monkeypatch.setattr(Progress, "level_done", stop_after_level_1)
    assert cli.main(["run", "smoke", "--workdir", str(tmp_path), "--set", "pruning.levels=3", *small, "-q"]) == 130
    monkeypatch.undo()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    capsys.readouterr()
    assert cli.main(["report", str(run_dir)]) == 0
    (status,) = [line for line in capsys.readouterr().out.splitlines() if line.endswith("results.csv")]
    assert status.startswith("unfinished: 2 of 4 levels done (missing 2-3; rerun the run command")

    assert cli.main(["run", "smoke", "--workdir", str(tmp_path), "--set", "pruning.levels=3", *small, "-q"]) == 0
    assert cli.main(["report", str(run_dir)]) == 0
    (status,) = [line for line in capsys.readouterr().out.splitlines() if line.endswith("results.csv")]
    assert status == f"complete (4 of 4 levels): {run_dir / 'results.csv'}"


@pytest.mark.parametrize(
    "command,extra",
    [("oneshot", []), ("reinit", []), ("random-prune", []), ("redense", ["--set", "pruning.redense_epochs=1"])],
)
def test_branch_commands_set_up_the_compilation_cache(smoke_run, tmp_path, monkeypatch, command, extra):
    calls = []
    monkeypatch.setattr(cli_commands, "_setup_compilation_cache", calls.append)
    # The branch itself is not trained: only the set-up before its first compilation is tested.
    monkeypatch.setattr("sdd_jax.branches.run_branch", lambda exp, run, name, levels: smoke_run)
    cache = str(tmp_path / "xla-cache")
    assert (
        cli.main([command, str(smoke_run), "--levels", "1", "--set", f"run.compilation_cache={cache}", *extra, "-q"])
        == 0
    )
    assert calls == [cache]
