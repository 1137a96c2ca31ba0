"""``sdd_jax.presets`` when the package runs from a source checkout (``PYTHONPATH=.``).

The presets live in the repository's top-level ``experiments/`` folder and are installed as
``sdd_jax.presets`` (``setup.py`` maps the name onto the folder): a wheel carries them as
``sdd_jax/presets/``, an editable install (``pip install -e .``) resolves the name through
setuptools' own import finder. A checkout put on ``sys.path`` without installing (a GPU host
without registry access) has neither, so :func:`install` adds one import finder that answers for
the single name ``sdd_jax.presets`` with the checkout's ``experiments/`` folder — only when this
package is not an installed copy (no ``presets/`` beside this file) and sits in a checkout (an
``experiments/__init__.py`` and a ``pyproject.toml`` beside the ``sdd_jax/`` folder). Submodules
(``sdd_jax.presets.smoke``) then load from that folder as any package's do.

The finder goes first on ``sys.meta_path`` so that the presets always come from the checkout
whose ``sdd_jax`` is running, even where another checkout of the project is installed in editable
mode (its finder would otherwise answer with that checkout's presets).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

NAME = "sdd_jax.presets"


def checkout_presets(package_dir: Path) -> Path | None:
    """The checkout's ``experiments/`` folder for the package folder ``package_dir``, or None when
    the package is installed (has its own ``presets/``) or is not inside a source checkout."""
    root = package_dir.parent
    if (package_dir / "presets").is_dir():
        return None
    if not ((root / "experiments" / "__init__.py").is_file() and (root / "pyproject.toml").is_file()):
        return None
    return root / "experiments"


class _PresetsFinder(importlib.abc.MetaPathFinder):
    """Finds ``sdd_jax.presets`` (and nothing else) in one folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def find_spec(self, fullname, path=None, target=None):
        if fullname != NAME:
            return None
        return importlib.util.spec_from_file_location(
            NAME, self.folder / "__init__.py", submodule_search_locations=[str(self.folder)]
        )


def install() -> None:
    """Put the finder on ``sys.meta_path`` when :func:`checkout_presets` finds a folder for this
    package (once)."""
    folder = checkout_presets(Path(__file__).resolve().parent)
    if folder is None or any(isinstance(f, _PresetsFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PresetsFinder(folder))
