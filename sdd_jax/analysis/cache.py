"""The analysis's step cache: per-level JSON results of each step under
``RUN_DIR/analysis/cache/<step>-<hash>/`` (the hash covers the step's settings), so that a killed
analysis resumes at the level it was in and a rerun recomputes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

from sdd_jax import storage
from sdd_jax.atomic import atomic_write_json
from sdd_jax.jsonable import to_native


def on_device(tree):
    """``tree``'s arrays as uncommitted device arrays, however they were read (orbax restores some
    levels as numpy arrays, others as committed device arrays, and jitted functions would compile
    once for each kind)."""
    return jax.tree.map(jnp.asarray, jax.device_get(tree))


class StepCache:
    """Per-level JSON results of one step under ``analysis/cache/<step>-<hash>/`` (the hash covers
    the step's settings), written atomically."""

    def __init__(self, root: Path, step: str, digest: str, settings: dict):
        self.path = root / "cache" / f"{step}-{digest}"
        self.settings = settings
        self._read: dict[int, dict | None] = {}  # each entry parsed once

    def file(self, level: int) -> Path:
        return self.path / f"level_{level:03d}.json"

    def _load(self, level: int) -> dict | None:
        """The cached entry of ``level``, or None when absent or unreadable (computed again)."""
        if level not in self._read:
            try:
                self._read[level] = json.loads(storage.read_text(self.file(level)))
            except (OSError, ValueError):
                self._read[level] = None
        return self._read[level]

    def has(self, level: int) -> bool:
        return self._load(level) is not None

    def get(self, level: int) -> dict:
        entry = self._load(level)
        if entry is None:
            raise FileNotFoundError(f"{self.file(level)} is not cached")
        return entry

    def put(self, level: int, data: dict) -> dict:
        storage.mkdir(self.path)
        if not storage.is_file(self.path / "settings.json"):
            atomic_write_json(self.path / "settings.json", self.settings)
        atomic_write_json(self.file(level), to_native(data, f"{self.file(level)}"))
        self._read.pop(level, None)  # read back: the entry as JSON holds it
        return self.get(level)
