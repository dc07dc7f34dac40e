"""The import graph has no upward arrows: each package imports only packages below it.

The order is the design's: util's helpers (every registry's "did you mean") import nothing of ours,
attention modules are controllers' parts, numerics' integrator (any vector field) is what continuous
blocks solve on, solvers run stages and blocks, stiffness and models build on solvers,
tasks say what is learned from data, rundir persists runs, the engine trains any task on any model,
analysis reads traces, studies combine the library, and the CLI sits on top (the library never imports
it). Checked on the source with ast, so a lazy import inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

import dia_ode

LAYERS = ["util", "attention", "numerics", "solvers", "stiffness", "models", "data", "tasks", "rundir", "engine", "analysis",
          "studies", "cli"]
ROOT = Path(dia_ode.__file__).parent


def _imports(path: Path) -> set[str]:
    """The dia_ode packages a module imports (first component after dia_ode)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "dia_ode":
                found.add(parts[1] if len(parts) > 1 else "<root>")
    return found


def test_every_package_is_in_a_layer():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS)
    assert {p.name for p in ROOT.glob("*.py")} == {"__init__.py", "__main__.py"}  # the root keeps only these


@pytest.mark.parametrize("package", LAYERS)
def test_no_upward_imports(package):
    allowed = set(LAYERS[:LAYERS.index(package) + 1])
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        upward = _imports(path) - allowed
        if upward:
            bad[str(path.relative_to(ROOT))] = sorted(upward)
    assert not bad, f"upward imports: {bad}"
