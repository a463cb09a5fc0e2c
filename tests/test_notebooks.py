"""Every notebook is committed stripped, has one literal `parameters` cell, and runs in quick mode."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIRED = {"quick", "seed", "device"}


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_literal_parameters_cell(path):
    params = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name}: want exactly one cell tagged 'parameters', got {len(params)}"
    tree = ast.parse("".join(params[0]["source"]))
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell must hold assignments only"
        ast.literal_eval(node.value)  # raises unless the value is a literal
        names.update(t.id for t in node.targets)
    assert REQUIRED <= names, f"{path.name}: parameters cell lacks {sorted(REQUIRED - names)}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, tmp_path):
    papermill = pytest.importorskip("papermill")
    env_claims = tmp_path / "claims.jsonl"
    os.environ["XAILAB_CLAIMS"] = str(env_claims)
    os.environ["XAILAB_NOTEBOOK"] = path.stem
    try:
        papermill.execute_notebook(
            str(path), str(tmp_path / path.name), parameters={"quick": True},
            kernel_name="xailab", cwd=str(ROOT / "notebooks"), progress_bar=False,
        )
    finally:
        os.environ.pop("XAILAB_CLAIMS", None)
        os.environ.pop("XAILAB_NOTEBOOK", None)
    # papermill raised on any failing cell; a notebook with claim cells must also have recorded them
    if "claims.check" in path.read_text(encoding="utf-8"):
        records = [json.loads(line) for line in env_claims.read_text(encoding="utf-8").splitlines()]
        assert records, f"{path.name} checks claims but recorded none"
        assert all(r["verdict"] != "FAILED" for r in records)
