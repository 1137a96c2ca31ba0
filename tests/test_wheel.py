"""The built wheel works on its own: every subpackage ships, the presets install as
``sdd_jax.presets`` (nothing named ``experiments`` in site-packages), and ``sdd-jax presets``,
``run`` and ``analyze`` work from a folder that holds a user's own ``experiments`` package.

The wheel is built from a copy of the checkout (so the build writes nothing into it) and installed
into a fresh virtual environment that takes jax and the other dependencies from this interpreter.
A source checkout run without installing is checked as well (the ``sdd_jax/source_checkout.py`` finder
alone, with any editable install's finder taken off ``sys.meta_path``).
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from analysis_settings import TINY_ANALYSIS

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", "build", "dist", "runs", "*.egg-info", "__pycache__", ".*_cache", ".venv*")
# The smoke preset cut to seconds: 2 pruning levels after the dense one, 256 training examples.
RUN = ["--set", "pruning.levels=2", "--set", "data.train_size=256", "--set", "data.test_size=200", "-q"]
# The cheapest analysis settings (tests/analysis_settings.py), the stored sparse stage read, not replayed.
ANALYZE = [*TINY_ANALYSIS, "analysis.replay_sparse=false"]
USER_PACKAGE = 'WHOSE = "the user\'s own experiments package"\n'


def _setuptools_builds_wheels() -> bool:
    """Whether this interpreter's setuptools builds a wheel without build isolation (70.1 and later
    have bdist_wheel built in; before, it comes from the separate ``wheel`` package)."""
    try:
        major, minor = (int(v) for v in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    if (major, minor) >= (70, 1):
        return True
    try:
        importlib.metadata.version("wheel")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _env() -> dict:
    """This environment without PYTHONPATH (which would put a checkout's sdd_jax first)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    return env


def _ok(args: list, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin folder, wheel path, user folder with its own experiments package)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    # Without a setuptools that builds wheels here, pip fetches one into an isolated build environment.
    isolation = ["--no-build-isolation"] if _setuptools_builds_wheels() else []
    _ok([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", tmp / "dist", source], tmp)
    (wheel,) = (tmp / "dist").glob("sdd_jax-*.whl")
    venv = tmp / "venv"
    _ok([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp)
    python = venv / "bin" / "python"
    _ok([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel], tmp)
    user = tmp / "user"
    (user / "experiments").mkdir(parents=True)
    (user / "experiments" / "__init__.py").write_text(USER_PACKAGE)
    return python, venv / "bin", wheel, user


def test_wheel_holds_every_subpackage_and_no_top_level_experiments(installed):
    _, _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "sdd_jax").rglob("__init__.py")}
    assert {"sdd_jax", "sdd_jax/analysis", "sdd_jax/data", "sdd_jax/models"} <= packages
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    presets = {f"sdd_jax/presets/{p.name}" for p in (ROOT / "experiments").glob("*.py")}
    assert "sdd_jax/presets/smoke.py" in presets and presets <= names
    assets = {f"sdd_jax/data/assets/{p.name}" for p in (ROOT / "sdd_jax" / "data" / "assets").iterdir()}
    assert assets and assets <= names
    assert not any(name.split("/")[0] == "experiments" for name in names)


def test_installed_cli_runs_and_analyzes_beside_a_user_experiments_package(installed, tmp_path):
    python, bin_dir, _, user = installed
    where = _ok(
        [
            python,
            "-c",
            "import sdd_jax, sdd_jax.presets as p, sysconfig; "
            "print(sdd_jax.__file__); print(p.__file__); print(sysconfig.get_paths()['purelib'])",
        ],
        user,
    )
    package_file, presets_file, site = where.split()
    assert Path(package_file).is_relative_to(python.parents[1]), f"sdd_jax came from {package_file}, not the venv"
    assert Path(presets_file) == Path(site) / "sdd_jax" / "presets" / "__init__.py"
    assert not any(p.stem == "experiments" for p in Path(site).iterdir())
    assert "smoke " in _ok([bin_dir / "sdd-jax", "presets"], user)
    workdir = tmp_path / "runs"
    _ok([bin_dir / "sdd-jax", "run", "smoke", "--workdir", workdir, *RUN], user)
    (run_dir,) = workdir.iterdir()
    assert (run_dir / "results.csv").is_file()
    analyze = [bin_dir / "sdd-jax", "analyze", run_dir, "--levels", "2", "-q"]
    for item in ANALYZE:
        analyze += ["--set", item]
    _ok(analyze, user)
    assert (run_dir / "analysis" / "report.md").is_file()
    mine = _ok([python, "-c", "import experiments; print(experiments.WHOSE); print(experiments.__file__)"], user)
    assert mine.splitlines() == [USER_PACKAGE.split('"')[1], str(user / "experiments" / "__init__.py")]


def test_source_checkout_finds_the_presets_without_an_install(tmp_path):
    """``PYTHONPATH=CHECKOUT`` from a folder with a user's own ``experiments``, every editable
    install's finder removed first (as on a host where nothing is installed)."""
    user = tmp_path / "user"
    (user / "experiments").mkdir(parents=True)
    (user / "experiments" / "__init__.py").write_text(USER_PACKAGE)
    env = {**_env(), "PYTHONPATH": str(ROOT)}
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
        "(getattr(f, '__module__', '') or '')]; import experiments, sdd_jax.presets as p, sdd_jax.cli; "
        "print(p.__file__); print(experiments.__file__); sys.exit(sdd_jax.cli.main(['presets']))"
    )
    out = _ok([sys.executable, "-c", code], user, env).splitlines()
    assert out[:2] == [str(ROOT / "experiments" / "__init__.py"), str(user / "experiments" / "__init__.py")]
    assert any(line.startswith("smoke ") for line in out[2:])
