"""One tiny run from a preset file of one's own (the smoke preset shrunk to 256 digits, 1 epoch, 1
pruning level), and what is read off it: its folder's name and description, its figure, a level
exported as a sparse model, the redense error, and a run directory named the earlier way resumed,
extended, branched and read back."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from sdd_jax import cli, export, results
from sdd_jax.config import load_json
from sdd_jax.data import load_dataset
from sdd_jax.data.device import normalize
from sdd_jax.describe import describe
from sdd_jax.figure import figure_data, make_figure
from sdd_jax.models import build_model
from sdd_jax.report import run_title
from sdd_jax.runid import result_hash
from sdd_jax.runopen import open_run
from sdd_jax.saved import load_run

TINY = {"data.train_size": 256, "optim.epochs": 1, "pruning.levels": 1}
TINY_SET = [item for key, value in TINY.items() for item in ("--set", f"{key}={value}")]
PRUNABLE = ("fc1", "fc2")  # LeNet-300-100's hidden kernels; the output layer is not pruned


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    preset = root / "my_smoke.py"
    preset.write_text(
        "from sdd_jax import presets\nfrom sdd_jax.config import override\n\n"
        f"def config():\n    return override(presets.get('smoke'), {TINY!r})\n"
    )
    assert cli.main(["run", str(preset), "--workdir", str(root / "runs"), "-q"]) == 0
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def test_a_preset_file_runs_into_a_folder_that_says_what_differs(tiny_run):
    config = load_json(str(tiny_run / "config.json"))
    assert tiny_run.name == f"smoke-n256-e1-{result_hash(config)}"  # pruning.levels is not in the identity
    assert config.description == describe(config)
    assert config.description == "LeNet-300-100 · MNIST 256 · 20% random labels · lottery k=0 · 1 epoch · 2 seeds"
    rows = results.read_results_csv(tiny_run / "results.csv")
    assert sorted({r["level"] for r in rows}) == [0, 1] and {r["seed"] for r in rows} == {0, 1}


def test_the_run_figure_is_titled_by_the_config_banded_by_sd_and_ticked_at_each_level(tiny_run):
    rows = results.read_results_csv(tiny_run / "results.csv")
    data = figure_data(rows)
    for key in ("test_acc", "train_acc"):
        per_level = np.array([[100 * r[key] for r in rows if r["level"] == lv] for lv in (0, 1)])
        mean, sd = per_level.mean(1), per_level.std(1, ddof=1)
        name = key.split("_")[0]
        np.testing.assert_allclose(data["main"][f"{name}_lo"], mean - sd, rtol=1e-12)
        np.testing.assert_allclose(data["main"][f"{name}_hi"], mean + sd, rtol=1e-12)
    title = run_title(tiny_run)
    assert title == describe(load_json(str(tiny_run / "config.json")))
    fig = make_figure(data, title)
    ax = fig.axes[0]
    assert ax.get_title() == title
    np.testing.assert_allclose(sorted(ax.get_xticks(), reverse=True), [100.0, 80.0])


def _dense_logits(run_dir, level, seed, examples=256):
    """The oracle: the stored level's masked weights through the flax model, as training evaluates."""
    run = load_run(run_dir)
    i = run.seeds.index(seed)
    weights = run.level(level)
    params = jax.tree.map(lambda p, m: p[i] * m[i], weights.params, weights.mask)
    mask = jax.tree.map(lambda m: m[i], weights.mask)
    data = load_dataset(run.config.data, run.config.noise)
    model = build_model(run.config.model, data.num_classes)
    x = normalize(data.x_test[:examples], data.mean, data.std)
    return model, x, np.asarray(model.apply({"params": params}, x, train=False)), params, mask


@pytest.mark.parametrize("fmt, seed", [("npz", 0), ("bcoo", 1)])
def test_an_exported_level_reloads_sparse_and_computes_the_dense_masked_logits(tiny_run, tmp_path, fmt, seed, capsys):
    # An existing folder as --out (bcoo here) receives the file under its default name.
    out = tmp_path / f"level1.{fmt}.npz" if fmt == "npz" else tmp_path / f"level1-seed{seed}.bcoo.npz"
    given = out if fmt == "npz" else tmp_path
    assert (
        cli.main(["export", str(tiny_run), "--level", "1", "--seed", str(seed), "--format", fmt, "--out", str(given)])
        == 0
    )
    printed = capsys.readouterr().out
    assert f"{out}" in printed and "bytes" in printed and "prunable weights stored" in printed
    model, x, reference, params, mask = _dense_logits(tiny_run, 1, seed)

    loaded = export.load(out)
    assert loaded.meta["format"] == fmt and loaded.meta["level"] == 1 and loaded.meta["seed"] == seed
    kept = sum(int(np.sum(mask[layer]["kernel"])) for layer in PRUNABLE)
    assert loaded.nonzeros() == kept == round(0.8 * sum(mask[layer]["kernel"].size for layer in PRUNABLE))
    for layer in PRUNABLE:  # sparse, and exactly the masked weights
        kernel = loaded.params[layer]["kernel"]
        assert isinstance(kernel, jax.experimental.sparse.BCOO)
        np.testing.assert_array_equal(np.asarray(kernel.todense()), params[layer]["kernel"])
    np.testing.assert_array_equal(loaded.params["out"]["kernel"], params["out"]["kernel"])  # dense, as stored
    used = []
    logits = np.asarray(export.sparse_apply(model, loaded, x, used))
    assert sorted(used) == list(PRUNABLE)
    np.testing.assert_allclose(logits, reference, atol=1e-4)
    assert float(np.max(np.abs(logits - reference))) < 1e-4


def test_export_refuses_what_it_cannot_write_in_one_line(tiny_run, tmp_path, capsys):
    for args, words in (
        (["--level", "5"], "level 5 is not a finished level"),
        (["--level", "1", "--seed", "7"], "seed 7 is not a seed"),
    ):
        assert cli.main(["export", str(tiny_run), *args, "--out", str(tmp_path / "x.npz")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "x.npz").exists()
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(export.ExportError, match="junk.npz is not a model written by"):
        export.load(tmp_path / "junk.npz")


def test_export_of_an_unreadable_level_names_the_folder_and_the_command_that_computes_it(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(".lock*"))
    step = run_dir / "levels" / "1"
    largest = max((p for p in step.rglob("*") if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)
    os.truncate(largest, 100)  # a truncated copy
    capsys.readouterr()
    assert cli.main(["export", str(run_dir), "--level", "1", "--out", str(tmp_path / "x.npz")]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("sdd-jax: error: ") and f"delete {step} and rerun the run's command" in err
    assert "sdd-jax run" in err and "same numbers" in err
    assert not (tmp_path / "x.npz").exists()


def test_redense_without_epochs_names_the_setting_to_add(tiny_run, capsys):
    assert cli.main(["redense", str(tiny_run), "--levels", "1", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "add --set pruning.redense_epochs=" in err[0]
    assert not (tiny_run / "branches").exists()


def test_a_run_directory_named_the_old_way_is_resumed_extended_branched_and_read(tiny_run, tmp_path, monkeypatch):
    from sdd_jax import imp

    config = load_json(str(tiny_run / "config.json"))
    workdir = tmp_path / "runs"
    old = workdir / f"smoke-{result_hash(config)}"  # <preset>-<hash>, as runs were named before the slug
    shutil.copytree(tiny_run, old)
    trained = []
    real_level = imp.run_level
    monkeypatch.setattr(
        imp,
        "run_level",
        lambda exp, run, plan, level, *a, **k: trained.append(level) or real_level(exp, run, plan, level, *a, **k),
    )
    command = ["run", "smoke", *TINY_SET, "--workdir", str(workdir), "-q"]
    assert cli.main(command) == 0
    assert trained == [] and [p.name for p in workdir.iterdir()] == [old.name]  # resumed, nothing retrained
    assert cli.main([*command, "--set", "pruning.levels=2"]) == 0
    assert trained == [2] and [p.name for p in workdir.iterdir()] == [old.name]  # extended in place
    assert json.loads((old / "config.json").read_text())["pruning"]["levels"] == 2
    assert cli.main(["reinit", str(old), "--levels", "1", "-q"]) == 0
    assert (old / "branches" / "reinit" / "results.csv").is_file()
    assert cli.main(["report", str(old)]) == 0
    assert {r["branch"] for r in results.read_results_csv(old / "results_all.csv")} == {"imp", "reinit"}
    saved = load_run(old)
    assert saved.levels() == [0, 1, 2] and saved.branch("reinit").levels() == [1]
    _, run = open_run(old)  # how branches and `sdd-jax analyze` open a stored run
    assert run.path == old
