"""The package's import graph: imports run down the layers only, and there is no cycle.

Layers (docs/design.md): utils → data, models, attribution → train, removal, metrics, viz →
papers → widgets, workbook, course. Every ``import`` counts, at module level or inside a function.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xailab"
LAYERS = {"utils": 0, "data": 1, "models": 1, "attribution": 1, "train": 2, "removal": 2, "metrics": 2,
          "viz": 2, "papers": 3, "widgets": 4, "workbook": 4, "course": 4}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("xailab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xailab"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _graph():
    modules = _modules()
    return {m: _imports(p, set(modules)) for m, p in modules.items()}


def test_every_top_level_module_has_a_layer():
    tops = {m.split(".")[1] for m in _modules() if m != "xailab"}
    assert tops == set(LAYERS), f"give these a layer: {sorted(tops ^ set(LAYERS))}"


def test_imports_run_down_the_layers():
    upward = [(m, dep) for m, deps in _graph().items() for dep in deps
              if m != "xailab" and _layer(dep) is not None and _layer(dep) > _layer(m)]
    assert not upward, f"imports from a lower layer to a higher one: {upward}"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph.get(m, ())):
            if dep == m or dep not in graph:
                continue
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_import_hidden_behind_importlib():
    hidden = [str(p.relative_to(ROOT)) for m, p in _modules().items()
              if m != "xailab" and "importlib" in p.read_text(encoding="utf-8")]
    assert not hidden, f"modules importing through importlib: {hidden}"
