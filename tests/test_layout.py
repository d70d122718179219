"""The house rules, read from the package's own source (every import, including those inside functions).

- No import circle between modules.
- Imports only downwards, by layer, bottom first:
    0 glue        merclip (the package), merclip.errors, merclip.config
    1 model       merclip.model.*
    2 export      merclip.export.*
    3 stream      merclip.stream.*
    4 train       merclip.train.*
    5 commands    every other module of merclip/ (merclip.cli and its parsers), and any ``__main__``
  A module imports its own layer or those below it, never one above: model imports nothing of export,
  stream, train or the command line; export nothing of stream or train; stream never imports train.
- No module over ``MAX_LINES`` lines (tests aside).

Modules are found by walking each folder of pyproject's ``package-dir`` recursively, so a package that grows
subpackages (``stream/capture/...``) is read the same way. ``MERCLIP_LAYOUT_ROOT`` points the checks at
another checkout (``MERCLIP_LAYOUT_ROOT=/path/to/tree pytest tests/test_layout.py``).
"""

from __future__ import annotations

import ast
import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("MERCLIP_LAYOUT_ROOT") or Path(__file__).resolve().parents[1])
MAX_LINES = 450
GLUE = ("merclip", "merclip.errors", "merclip.config", "merclip.cache_dir")
LAYERS = ("glue", "model", "export", "stream", "train", "commands")


def find_modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Installed module name -> (file, is a package ``__init__``), from pyproject's package-dir."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {(root / folder).resolve(): package for package, folder in setuptools["package-dir"].items()}
    modules = {}
    for folder, package in folders.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            # the innermost mapped folder names the file (merclip.stream's files are not merclip's)
            owner = max((f for f in folders if path.resolve().is_relative_to(f)), key=lambda f: len(f.parts))
            if owner != folder:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([package, *(parts[:-1] if is_package else parts)])
            modules[name] = (path, is_package)
    return modules


def imports_of(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports anywhere in its source (``import``, ``from ... import``,
    relative or not, and ``import_module("...")`` with a written-out name)."""
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]  # a name may be a module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == "import_module" and isinstance(node.args[0].value, str):
                targets = [node.args[0].value]
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = find_modules(root)
    return {name: imports_of(name, path, is_package, set(modules)) for name, (path, is_package) in modules.items()}


def layer(name: str) -> int:
    if name in GLUE:
        return LAYERS.index("glue")
    if name.endswith(".__main__"):  # `python -m merclip.train`: an entry point, like the console scripts
        return LAYERS.index("commands")
    for part in ("model", "export", "stream", "train"):
        if name == f"merclip.{part}" or name.startswith(f"merclip.{part}."):
            return LAYERS.index(part)
    return LAYERS.index("commands")


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.add(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} ({LAYERS[layer(a)]}) imports {b} ({LAYERS[layer(b)]})"
        for a, targets in graph.items()
        for b in targets
        if layer(b) > layer(a)
    )


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = import_graph(ROOT)
    # the walk itself works: every layer is there, and the command line reaches the commands it dispatches
    assert {LAYERS[layer(m)] for m in found} == set(LAYERS), sorted(found)
    assert any(t.startswith("merclip.train.") for t in found["merclip.cli"]), found["merclip.cli"]
    return found


def test_no_import_circle(graph):
    found = [sorted(group) for group in circles(graph)]
    assert not found, f"import circles: {found}"


def test_imports_only_go_downwards(graph):
    assert not upward(graph), "\n".join(upward(graph))


def test_no_module_is_too_long():
    long = {}
    for path, _ in find_modules(ROOT).values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        where = path.relative_to(ROOT).as_posix()
        if lines > MAX_LINES:
            long[where] = lines
    assert not long, f"modules over {MAX_LINES} lines (one job each; split by job): {long}"


def test_the_checks_see_circles_layers_and_subpackages(tmp_path):
    """The checker on a made-up tree: a subpackage folder, relative imports, one inside a function."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "merclip" = "merclip", "merclip.stream" = "stream" }\n'
    )
    files = {
        "merclip/__init__.py": "",
        "merclip/config.py": "def load():\n    from merclip.stream.capture import camera\n",
        "stream/__init__.py": "",
        "stream/capture/__init__.py": "",
        "stream/capture/camera.py": "from ..speech import words\n",
        "stream/speech.py": "from importlib import import_module\nimport_module('merclip.stream.capture.camera')\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = import_graph(tmp_path)
    assert found["merclip.stream.capture.camera"] == {"merclip.stream.speech"}
    assert circles(found) == [{"merclip.stream.capture.camera", "merclip.stream.speech"}]
    assert upward(found) == [
        "merclip.config (glue) imports merclip.stream.capture (stream)",
        "merclip.config (glue) imports merclip.stream.capture.camera (stream)",
    ]
