"""A preset of one's own: a Python file with a ``config()`` function returning a
:class:`~sdd_jax.config.Config`, run without editing the package (``sdd-jax run my_preset.py``;
``show`` and ``estimate`` take it too).

    # my_preset.py
    from sdd_jax.config import Config, DataConfig, NoiseConfig, OptimConfig, PruningConfig, RunConfig

    def config() -> Config:
        return Config(
            name="my_lenet",
            data=DataConfig(name="mnist_embedded", train_size=2000),
            noise=NoiseConfig(kind="random_labels", rate=0.4),
            optim=OptimConfig(lr=0.1, epochs=30),
            pruning=PruningConfig(levels=20),
            run=RunConfig(seeds=2),
        )

The config is then validated like a built-in preset's (:func:`sdd_jax.validate.validate`, on
``show`` and before a run writes anything). A config left with the default name ``custom`` is
named after the file (``my_preset``). Its run directory is ``<name>-<hash>``.

While the file is imported and its ``config()`` runs, the file's folder is first on ``sys.path``
(as ``python my_preset.py`` would have it), so the file can ``import`` modules beside it: an
extension that registers a pruning criterion or a model family (``docs/extending.md``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

from sdd_jax.config import Config, ConfigError

SUFFIX = ".py"


def is_preset_file(name: str) -> bool:
    """Whether the command line's preset argument names a file (``*.py`` or a path) rather than a
    preset of :mod:`sdd_jax.presets`."""
    return name.endswith(SUFFIX) or os.sep in name or (os.altsep is not None and os.altsep in name)


def load_preset_file(path: str | os.PathLike) -> Config:
    """The :class:`Config` returned by ``config()`` in the Python file ``path``.

    Raises :class:`~sdd_jax.config.ConfigError` in one line naming the file when it does not
    exist, cannot be imported (the exception's type and first line), has no callable
    ``config``, or when ``config()`` raises or returns anything but a :class:`Config`.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"preset file {file} not found (a preset file is a .py file defining config())")
    spec = importlib.util.spec_from_file_location(f"sdd_jax_user_preset_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"preset file {file} cannot be imported as a Python module (name it *.py)")
    module = importlib.util.module_from_spec(spec)
    with _first_on_path(str(file.resolve().parent)):
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's code: any failure is one line naming the file
            raise ConfigError(f"preset file {file} failed to import: {_first_line(err)}") from None
        make = getattr(module, "config", None)
        if not callable(make):
            raise ConfigError(
                f"preset file {file} has no config() function: define one returning a sdd_jax.config.Config"
            )
        try:
            config = make()
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"preset file {file}: config() failed: {_first_line(err)}") from None
    if not isinstance(config, Config):
        raise ConfigError(f"preset file {file}: config() returned {type(config).__name__}, not a sdd_jax.config.Config")
    if config.name == Config.name:
        config = dataclasses.replace(config, name=file.stem)
    return config


@contextlib.contextmanager
def _first_on_path(folder: str):
    """``folder`` first on ``sys.path`` inside the block, then taken out again (the modules it
    imported stay imported: their registrations hold)."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # the user's code may have removed it itself
            sys.path.remove(folder)


def _first_line(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
