"""The package's import graph: imports run down the layers only, and there is no cycle.

Layers (docs/design.md): utils, hooks, stats → data, models, attribution → train, removal, metrics,
viz, claims → papers → widgets, workbook, course. Every ``import`` counts, at module level or inside a
function; the root package sits above every layer and loads its submodules lazily.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xailab"
LAYERS = {"utils": 0, "hooks": 0, "stats": 0, "data": 1, "models": 1, "attribution": 1, "train": 2, "removal": 2,
          "metrics": 2, "viz": 2, "claims": 2, "papers": 3, "widgets": 4, "workbook": 4, "course": 4}
#: Imports of the package's own modules allowed inside a function: matplotlib-heavy ones, loaded on use.
LAZY = {"xailab.viz", "xailab.widgets", "xailab.workbook.runner"}


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
    return LAYERS.get(parts[1]) if len(parts) > 1 else max(LAYERS.values()) + 1   # the root: above all


def _graph():
    modules = _modules()
    return {m: _imports(p, set(modules)) for m, p in modules.items()}


def test_every_top_level_module_has_a_layer():
    tops = {m.split(".")[1] for m in _modules() if m != "xailab"}
    assert tops == set(LAYERS), f"give these a layer: {sorted(tops ^ set(LAYERS))}"


def test_imports_run_down_the_layers():
    upward = [(m, dep) for m, deps in _graph().items() for dep in deps
              if _layer(dep) is not None and _layer(dep) > _layer(m)]
    assert not upward, f"imports from a lower layer to a higher one: {upward}"


def test_the_root_lists_every_top_level_module():
    import xailab

    tops = {m.split(".")[1] for m in _modules() if m != "xailab"}
    assert set(xailab.SUBMODULES) == tops, f"xailab.SUBMODULES misses or invents: {sorted(tops ^ set(xailab.SUBMODULES))}"
    assert xailab.attribute is xailab.attribution.attribute


def test_own_imports_sit_at_module_top():
    hidden = []
    for m, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set(id(n) for n in tree.body)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                own = [n for n in names if n.startswith("xailab") and n not in LAZY]
                if own:
                    hidden.append(f"{m}: {', '.join(own)}")
    assert not hidden, f"imports of the package's own modules inside functions: {hidden}"


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
    # only the root's PEP 562 loader may use importlib, and only for the names it lists
    hidden = [str(p.relative_to(ROOT)) for m, p in _modules().items()
              if m != "xailab" and "importlib" in p.read_text(encoding="utf-8")]
    assert not hidden, f"modules importing through importlib: {hidden}"
    root = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(root) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "import_module"]
    loader = next(f for f in root.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__")
    assert calls and all(any(c is n for n in ast.walk(loader)) for c in calls), "importlib outside __getattr__"
