"""``sdd_jax.validate``: every field's type and range is checked before anything is written, and
the command line turns a bad value into one line on stderr naming the setting (exit code 2)."""

import dataclasses
import os

import pytest

from sdd_jax import cli, presets
from sdd_jax.analysis import settings as analysis_settings
from sdd_jax.config import ConfigError, flat_keys, override
from sdd_jax.validate import FREE_FIELDS, field_rules, validate


def files_under(path) -> set[str]:
    return {
        os.path.relpath(os.path.join(root, name), path) for root, dirs, names in os.walk(path) for name in dirs + names
    }


def test_every_field_has_a_range_rule_or_is_free_by_its_type():
    keys = set(flat_keys(presets.get("smoke")))
    rules = set(field_rules())
    assert keys - rules - FREE_FIELDS == set()  # a new field needs a rule (or a place in FREE_FIELDS)
    assert rules <= keys and FREE_FIELDS <= keys and not rules & FREE_FIELDS


def test_every_listed_preset_validates():
    for name, _ in presets.listing():
        validate(presets.get(name))


BAD_VALUES = [
    ("run.eval_batch_size", "0"),
    ("run.eval_batch_size", "-5"),
    ("optim.lr", "nan"),
    ("optim.lr", "inf"),
    ("optim.lr", "-0.1"),
    ("optim.lr", "0"),
    ("pruning.finetune_lr", "nan"),
    ("pruning.redense_lr", "-1"),
    ("run.eval_every_epochs", "0"),
    ("run.eval_every_epochs", "-2"),
    ("run.checkpoint_every_epochs", "-1"),
    ("run.seeds_per_chunk", "-1"),
    ("optim.momentum", "-1"),
    ("optim.momentum", "1"),
    ("optim.momentum", "nan"),
    ("optim.weight_decay", "-1e-4"),
    ("optim.weight_decay", "inf"),
    ("optim.gamma", "0"),
    ("optim.warmup_epochs", "-1"),
    ("optim.epochs", "0"),
    ("optim.batch_size", "0"),
    ("optim.milestones", "0,80"),
    ("noise.rate", "1.5"),
    ("noise.rate", "nan"),
    ("noise.seed", "-1"),
    ("noise.kind", "gaussian"),
    ("noise.asymmetric_mode", "x"),
    ("model.bias_init", "ones"),
    ("model.dtype", "float16"),
    ("pruning.criterion", "taylor"),
    ("pruning.scope", "channel"),
    ("pruning.schedule", "rewind"),
    ("run.seed_execution", "pmap"),
    ("run.distributed", "maybe"),
    ("data.train_size", "0"),
    ("data.validation_size", "-1"),
    ("data.subset_mode", "last"),
    ("data.source", "ftp"),
    ("model.name", "resnet20"),
    ("model.width_multiplier", "0"),
    ("model.widths", "0,10"),
    ("pruning.levels", "-1"),
    ("pruning.fraction", "1.5"),
    ("pruning.saliency_batches", "0"),
    ("pruning.finetune_epochs", "-1"),
    ("pruning.redense_epochs", "-1"),
    ("pruning.rewind_iteration", "-1"),
    ("run.seeds", "0"),
    ("run.first_seed", "-1"),
    ("run.verbosity", "5"),
    ("run.epoch_loop", "loop"),
    ("run.seed_devices", "-1"),
    ("run.data_devices", "0"),
    ("run.compilation_cache", " "),
    ("pruning.ignore", "["),
    ("optim.milestones", "(80,120"),
    ("model.widths", "[300,100)"),
]


@pytest.mark.parametrize("key,value", BAD_VALUES)
def test_bad_value_is_one_line_naming_the_setting_and_writes_nothing(tmp_path, capsys, key, value):
    before = files_under(tmp_path)
    code = cli.main(["run", "smoke", "--workdir", str(tmp_path), "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("sdd-jax: error: ") and key in err
    assert files_under(tmp_path) == before  # nothing written, not even the run directory


def test_related_settings_are_checked_together(tmp_path, capsys):
    for overrides, words in (
        (["optim.nesterov=true", "optim.momentum=0"], "optim.nesterov"),
        (["noise.kind=none", "noise.rate=0.2"], "noise.rate"),
    ):
        assert (
            cli.main(["run", "smoke", "--workdir", str(tmp_path), "-q", *(a for o in overrides for a in ("--set", o))])
            == 2
        )
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err, err
    assert files_under(tmp_path) == set()


def test_asymmetric_noise_is_refused_where_it_is_not_defined():
    with pytest.raises(ConfigError, match="noise.kind asymmetric.*tiny_imagenet"):
        validate(presets.get("resnet101_tinyimagenet-asym20"))
    validate(presets.get("resnet18_cifar100-asym20"))


def test_types_are_checked_for_configs_built_in_python():
    base = presets.get("smoke")
    for node, field, value in (
        ("optim", "lr", "0.1"),
        ("run", "seeds", True),
        ("run", "seeds", 2.0),
        ("optim", "nesterov", 1),
        ("pruning", "ignore", "fc1"),
        ("model", "widths", (300, "100")),
        ("data", "train_size", 1.5),
    ):
        bad = dataclasses.replace(base, **{node: dataclasses.replace(getattr(base, node), **{field: value})})
        with pytest.raises(ConfigError, match=f"{node}.{field}: expected"):
            validate(bad)
    bad_regex = dataclasses.replace(base, pruning=dataclasses.replace(base.pruning, ignore=("fc(",)))
    with pytest.raises(ConfigError, match="pruning.ignore"):
        validate(bad_regex)


def test_boundary_values_that_can_run_are_accepted():
    base = presets.get("smoke")
    validate(
        override(
            base,
            {
                "optim.momentum": 0.0,
                "optim.weight_decay": 0.0,
                "run.seeds_per_chunk": 0,
                "run.checkpoint_every_epochs": 0,
                "run.eval_batch_size": 1,
                "run.eval_every_epochs": 1,
                "optim.lr": 1e-9,
                "noise.rate": 1.0,
                "pruning.levels": 0,
                "optim.warmup_epochs": 0.5,
                "data.train_size": None,
            },
        )
    )
    validate(override(base, {"optim.momentum": 0.99, "optim.nesterov": True}))


def test_analysis_settings_use_the_same_rules_and_messages():
    assert analysis_settings.parse(["analysis.interp_points=2", "analysis.confidence=0.5"]).interp_points == 2
    for assignment, message in (
        ("analysis.interp_points=1", "analysis.interp_points must be >= 2, got 1"),
        ("analysis.confidence=1", "analysis.confidence must be in (0, 1), got 1.0"),
        ("analysis.curve_range=inf", "analysis.curve_range must be a finite number > 0, got inf"),
        ("analysis.eigen_method=arnoldi", "analysis.eigen_method must be one of lanczos, power, got 'arnoldi'"),
        ("analysis.redense_momentum=zero", "analysis.redense_momentum must be one of keep, reset, got 'zero'"),
        ("analysis.bootstrap=9", "analysis.bootstrap must be >= 10, got 9"),
    ):
        with pytest.raises(ConfigError) as info:
            analysis_settings.parse([assignment])
        assert str(info.value) == message


def test_a_mistyped_key_or_preset_is_answered_with_the_closest_name():
    cfg = presets.get("quickstart")
    with pytest.raises(ConfigError) as err:
        override(cfg, ["noise.rat=0.4"])
    assert "did you mean 'noise.rate'" in str(err.value) and "Valid keys" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        override(cfg, ["zz.q=1"])
    assert "did you mean" not in str(err.value) and "noise.rate" in str(err.value)
    with pytest.raises(presets.UnknownPreset) as err:
        presets.get("lenet_mnst")
    assert "did you mean 'lenet_mnist'" in str(err.value)
    with pytest.raises(presets.UnknownPreset) as err:
        presets.get("lenet_mnist-noise4")
    assert "did you mean 'noise40'" in str(err.value)


def test_a_list_is_read_with_or_without_its_brackets_and_a_regex_keeps_its_own():
    def ignore(value):
        return override(presets.get("smoke"), [f"pruning.ignore={value}"]).pruning.ignore

    for text in ("80,120", "(80,120)", "[80, 120]", " ( 80 , 120 ) "):
        assert override(presets.get("smoke"), [f"optim.milestones={text}"]).optim.milestones == (80, 120), text
    assert ignore("()") == () and ignore("[]") == () and ignore("") == ()
    assert ignore("bn(1|2)") == ("bn(1|2)",)  # a closing bracket of the regex itself stays
    for bad in ("[", "(", "[fc", "(a,b]"):
        with pytest.raises(ConfigError, match=r"pruning.ignore: .* opens a bracket it does not close"):
            ignore(bad)


@pytest.mark.parametrize(
    "name,family",
    [
        ("lenet_mnist-noise40-noise20", "noise"),
        ("lenet_mnist-asym20-noise40", "noise"),
        ("resnet18_cifar10-finetune-scratch", "retraining schedule"),
        ("resnet18_cifar10-bf16-noise40-bf16", "dtype"),
    ],
)
def test_two_variants_of_one_setting_are_refused_naming_both(name, family):
    with pytest.raises(presets.UnknownPreset) as err:
        presets.get(name)
    message = str(err.value)
    assert f"preset {name!r} sets the {family} twice" in message and "keep one of them" in message
    assert presets.get("resnet18_cifar10-noise40-finetune-bf16").noise.rate == 0.4  # one of each is fine
