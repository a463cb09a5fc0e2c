"""pyproject.toml is the single source of dependencies; environment.yml must say the same."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_matches_pyproject():
    project = _pyproject()
    wanted = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    wanted = {CONDA_NAMES.get(name, name): spec for name, spec in wanted.items()}
    conda = [d for d in _environment()["dependencies"] if isinstance(d, str)]
    have = dict(_split(d.replace("=", "==", 1) if re.match(r"^[\w.\-]+=\d", d) else d) for d in conda)
    have.pop("python"), have.pop("pip")
    assert have == wanted


def test_environment_is_conda_forge_with_pinned_python_and_a_regular_install():
    env = _environment()
    assert env["channels"] == ["conda-forge"]
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(pythons) == 1 and re.fullmatch(r"python=3\.\d+", pythons[0]), pythons
    # not editable: an editable install leaves out data files, the kernel among them
    assert env["dependencies"][-1] == {"pip": ["."]}


def test_the_package_installs_the_kernel_the_notebooks_name():
    import json

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    (target, files), = setuptools["data-files"].items()
    assert target == "share/jupyter/kernels/xailab" and files == ["share/jupyter/kernels/xailab/kernel.json"]
    spec = json.loads((ROOT / files[0]).read_text())
    # "python" is replaced by the Python of the Jupyter that starts the kernel (jupyter_client), which for a
    # kernel found in an environment's prefix is that environment's Python
    assert spec["argv"][:3] == ["python", "-m", "ipykernel_launcher"] and "{connection_file}" in spec["argv"]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        kernelspec = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
        assert kernelspec["name"] == "xailab" and kernelspec["display_name"] == spec["display_name"], notebook.name


def test_torch_is_a_range_within_the_machine_cap():
    deps = dict(_split(r) for r in _pyproject()["dependencies"])
    assert deps["torch"].startswith(">=") and "<2.15" in deps["torch"]
    assert not any(spec.startswith("==") for spec in deps.values()), "ranges, not exact pins"
