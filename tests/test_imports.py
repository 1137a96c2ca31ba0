"""The package's import graph has no cycle: built with ``ast`` over ``sdd_jax/**/*.py`` from every
import statement, function-level ones included (the command line's lazy imports in
``sdd_jax/cli_commands.py`` excepted: only the CLI imports it), and confirmed by importing every module
first in a fresh interpreter state."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sdd_jax"
LAZY_IMPORTS_ALLOWED = {"sdd_jax.cli_commands"}


def module_files() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, packages by their ``__init__.py``."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules) -> str | None:
    """The module ``name`` refers to: itself, else its nearest enclosing package module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: pathlib.Path, modules) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import of a package module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package upwards
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == "sdd_jax" or target.startswith("sdd_jax."):
                resolved = _resolve(target, modules)
                if resolved and resolved != module:
                    found.append((resolved, node.lineno, id(node) in top_level))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}."""
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for target, line, top in _imports(module, path, modules):
            if not top and module in LAZY_IMPORTS_ALLOWED:
                continue
            edges.setdefault(target, line)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` when the graph is acyclic (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) is None
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    graph = import_graph()
    assert "sdd_jax.config" in graph["sdd_jax.validate"]  # the graph sees real edges
    assert "sdd_jax.models.registry" in graph["sdd_jax.models.mlp"]


def test_import_graph_is_acyclic():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle: " + "; ".join(steps))


def test_choices_is_a_leaf():
    assert import_graph()["sdd_jax.choices"] == {}


def test_every_module_imports_first_in_a_fresh_interpreter_state():
    """Each module imported with no ``sdd_jax`` module loaded yet (one subprocess; third-party
    packages stay loaded between modules, which keeps it fast)."""
    names = sorted(name for name in module_files() if not name.endswith("__main__"))  # that one runs the CLI
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'sdd_jax' or m.startswith('sdd_jax.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        print(f'{name}: {type(err).__name__}: {err}')\n"
        "        sys.exit(1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
