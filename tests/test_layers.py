"""The house's shape, read from the source: rooms import only downwards, the core is pure, nothing in
production imports the demo, and no two modules import each other, directly or round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lower numbers sit lower; a module may import its own level and below, never above.
LEVELS = {
    "plugin.clock": 0,
    "plugin.config": 0,
    "plugin.crypto": 0,
    "plugin.emails": 0,
    "plugin.links": 0,
    "plugin.core": 1,
    "plugin.store": 2,
    "plugin.shopify": 3,
    "plugin.handlers": 3,
    "plugin.actions": 3,
    "plugin.pipeline": 4,
    "plugin.web": 5,
    "plugin.cli": 5,
    "plugin.runtime": 5,
    "plugin.demo": 5,  # imported only by the CLI's demo command (a test below)
    "admin": 5,
    "plugin": 6,  # the package itself: create_app, which wires every blueprint
}
IMPURE = ("sqlalchemy", "flask", "redis", "rq", "requests", "httpx", "alembic", "psycopg", "shopify_app")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(p): p
    for base in ("plugin", "admin")
    for p in (ROOT / base).rglob("*.py")
    if "migrations" not in p.parts
}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import in the file, resolved to our modules."""
    tree = ast.parse(path.read_text())
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    nested = {id(node) for function in functions for node in ast.walk(function)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            resolved = name if name in MODULES else None
            if resolved is None and name.split(".")[0] in IMPURE:
                resolved = name.split(".")[0]
            if resolved:
                found.append((resolved, id(node) in nested))
    return sorted(set(found))


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def level(name: str) -> int:
    while name not in LEVELS:
        name = name.rsplit(".", 1)[0]
    return LEVELS[name]


def test_rooms_import_only_downwards():
    upward = [
        f"{module} → {target}"
        for module, targets in GRAPH.items()
        for target, _ in targets
        if target in MODULES and level(target) > level(module) and target != "plugin"
    ]
    assert upward == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("plugin.core")))
def test_the_core_imports_no_storage_web_or_queue(module):
    assert [t for t, _ in GRAPH[module] if t in IMPURE or (t in MODULES and level(t) > 1)] == []


def test_nothing_in_production_imports_the_demo():
    importers = {
        module
        for module, targets in GRAPH.items()
        for target, _ in targets
        if target.startswith("plugin.demo") and not module.startswith("plugin.demo")
    }
    assert importers <= {"plugin.cli.processes"}  # the demo command


def test_no_import_circles():
    edges = {m: {t for t, _ in targets if t in MODULES and t != m} for m, targets in GRAPH.items()}
    # Importing `plugin.x` runs `plugin/__init__` first, which imports nothing at module level but
    # config/store/queue; its blueprints are imported inside create_app (the flaskr factory).
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                circles.append(" → ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_no_module_is_named_for_nothing():
    assert [m for m in MODULES if m.rsplit(".", 1)[-1] in {"utils", "helpers", "common", "misc"}] == []


def test_the_core_loads_without_flask_sqlalchemy_or_redis():
    # given a fresh interpreter, when it imports every core module, then none of the heavy stacks loads
    import subprocess
    import sys

    core = [m for m in MODULES if m.startswith("plugin.core")]
    probe = f"import sys; import {', '.join(core)}; print(sorted(set(sys.modules) & {set(IMPURE)!r}))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
