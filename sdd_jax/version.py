"""The version of this package: ``sdd_jax.__version__``, ``sdd-jax --version`` and, with jax's and
jaxlib's, a run directory's ``execution.json`` (:mod:`sdd_jax.rundir`).

:func:`package_version` is the installed distribution's version (``importlib.metadata``), else, in a
source checkout run without installing (``PYTHONPATH=.``), the ``version`` of the checkout's
``pyproject.toml``. Host only, no jax: the package imports it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

DISTRIBUTION = "sdd-jax"
_PROJECT_VERSION = re.compile(r'^\[project\]\s*$(?:(?!^\[).)*?^version\s*=\s*"([^"]+)"', re.M | re.S)


@functools.cache
def package_version() -> str:
    """The installed distribution's version, else the source checkout's ``pyproject.toml``
    ``[project] version``, else ``"unknown"``."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        match = _PROJECT_VERSION.search(pyproject.read_text(encoding="utf-8"))
    except OSError:
        return "unknown"
    return match.group(1) if match else "unknown"
