"""The layout rules of docs/architecture.md, held: no import circle between clipedge's modules, the runtime never
imports the exporter (at any level: the exporter's commands reach the CLI through an entry point), every module
readable in one sitting, no function over complexity 15, and every package folder installed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"clipedge.export": ROOT / "export", "clipedge.runtime": ROOT / "runtime"}
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for file in folder.rglob("*.py"):
            parts = [p for p in file.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = file
    return out


def _imports(file: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    modules = _modules()
    graph = {m: _imports(f, modules, top_level_only=False) - {m} for m, f in modules.items()}
    assert _cycles(graph) == []


def test_the_runtime_never_imports_the_exporter():
    modules = _modules()
    for name, file in modules.items():
        if name.startswith("clipedge.runtime"):
            assert not {m for m in _imports(file, modules, False) if m.startswith("clipedge.export")}, name
            assert "clipedge.export" not in _imports(file, {"clipedge.export": file}, False), name


def test_no_function_over_complexity_15():
    """McCabe complexity, as ruff measures it (C901; the limit is pyproject.toml's, 15)."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "C901", "--output-format", "concise",
                             "export", "runtime"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_folder_is_installed():
    """A new room (folder with __init__.py) must be listed in pyproject.toml, or a wheel would leave it out."""
    listed = set(re.findall(r'"(clipedge\.[a-z_.]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8")))
    for package, folder in PACKAGES.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            assert ".".join([package, *parts]) in listed, f"{init.parent} is not in pyproject.toml's packages"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_modules_fit_in_one_sitting(name):
    lines = len(_modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by responsibility"
