"""The course kit: graded exercises in nbgrader's format, their student versions, the release tree, the CI
template.

Every notebook with graded cells is picked up automatically. Its exercises are checked by running only
the `parameters` cell (with `quick = True` injected after it), the imports cell and the `## Exercises`
section, once as committed (the solutions) and once as nbgrader's student version: each graded cell
must pass on the first and fail on the second, which proves that its checks can fail.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest

from xailab import course

ROOT = Path(__file__).resolve().parents[1]
WITH_EXERCISES = course.notebooks_with_exercises()
GRADED = [(path, cell.grade_id) for path in WITH_EXERCISES for cell in course.graded_cells(path)]
KERNEL = "xailab"
GRADE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")  # nbgrader's schema, made non-empty
STUB = "raise NotImplementedError()"
REGIONS = (("BEGIN SOLUTION", "END SOLUTION"), ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"))
WORKFLOW = ROOT / "docs" / "ci" / "workbook.yml"
README_COMMAND = "make workbook QUICK=1"


def _nbgrader_meta(cell: dict) -> dict | None:
    return cell.get("metadata", {}).get("nbgrader")


def _is_parameters(cell: dict) -> bool:
    return "parameters" in cell.get("metadata", {}).get("tags", [])


def _split_regions(text: str) -> tuple[list[str], list[str]]:
    """(lines inside solution and hidden-test regions, markers included; all other lines), stripped."""
    inside, outside, open_region = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        if open_region is None:
            open_region = next((end for begin, end in REGIONS if begin in stripped), None)
            (inside if open_region else outside).append(stripped)
        else:
            inside.append(stripped)
            if open_region in stripped:
                open_region = None
    return inside, outside


def test_split_regions_finds_solution_and_hidden_lines():
    text = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\nassert f() == 1\n" \
           "### BEGIN HIDDEN TESTS\nassert f() != 2\n### END HIDDEN TESTS"
    inside, outside = _split_regions(text)
    assert outside == ["def f():", "assert f() == 1"]
    assert "return 1" in inside and "assert f() != 2" in inside and "### END HIDDEN TESTS" in inside


# ----------------------------------------------------------------------------- metadata (no nbgrader needed)
def test_some_notebook_has_exercises():
    assert WITH_EXERCISES, "no notebook in notebooks/ has graded cells"


def test_exercise_section_runs_to_the_next_level_two_heading():
    cells = [{"cell_type": "markdown", "source": s} for s in
             ("# Title", "## Exercises\ntext", "### Exercise 1", "## Notes")]
    cells.insert(3, {"cell_type": "code", "source": "## not a heading: code"})
    assert list(course.exercise_section(cells)) == [1, 2, 3]
    with pytest.raises(ValueError, match="## Exercises"):
        course.exercise_section(cells[:1])


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_exercise_metadata_is_well_formed(path):
    cells = course.read_cells(path)
    section = course.exercise_section(cells)
    setup = next(i for i in section if cells[i]["cell_type"] == "code")
    assert _nbgrader_meta(cells[setup]) is None, f"{path.name}: the section's first code cell builds the setup"
    ids = []
    for i, cell in enumerate(cells):
        meta = _nbgrader_meta(cell)
        if meta is None:
            continue
        where = f"{path.name} cell {i}"
        text = course.source(cell)
        assert i in section, f"{where}: nbgrader cells belong in the {course.EXERCISES_HEADING!r} section"
        assert meta.get("schema_version") == 3, f"{where}: schema_version should be 3"
        assert GRADE_ID.match(meta.get("grade_id", "")), f"{where}: grade_id {meta.get('grade_id')!r}"
        assert cell["cell_type"] == "code", f"{where}: exercises here are autograded code cells"
        ids.append(meta["grade_id"])
        if meta["solution"]:
            assert not meta["grade"] and not meta["locked"], f"{where}: a solution cell is neither graded nor locked"
            assert "### BEGIN SOLUTION" in text and "### END SOLUTION" in text, f"{where}: solution markers"
        else:
            assert meta["grade"] and meta["locked"], f"{where}: a test cell is graded and locked"
            assert meta.get("points", 0) > 0, f"{where}: a graded cell needs points > 0"
            assert "### BEGIN HIDDEN TESTS" in text and "### END HIDDEN TESTS" in text, f"{where}: hidden tests"
            visible = _split_regions(text)[1]
            assert any(line.startswith("assert") for line in visible), f"{where}: visible asserts"
    assert len(ids) == len(set(ids)), f"{path.name}: grade_ids repeat: {sorted(ids)}"
    solutions = [g for g in ids if not g.endswith("_test")]
    assert [f"{g}_test" for g in solutions] == [g for g in ids if g.endswith("_test")], \
        f"{path.name}: each solution cell X is followed by its graded cell X_test, in order: {ids}"


def test_grade_ids_are_unique_across_the_workbook():
    ids = [c.grade_id for path in WITH_EXERCISES for c in course.exercise_cells(path)]
    assert len(ids) == len(set(ids))


def test_course_module_does_not_import_nbgrader():
    code = "import sys, xailab.course as c; c.graded_cells(c.NOTEBOOKS / '00_tour.ipynb'); print('nbgrader' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_list_command_names_every_graded_cell(capsys):
    assert course.main(["list"]) == 0
    printed = capsys.readouterr().out
    assert all(grade_id in printed for _, grade_id in GRADED)


# ----------------------------------------------------------------------------- student versions
def _needs_nbgrader():
    missing = course.nbgrader_missing()
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> dict[str, Path]:
    _needs_nbgrader()
    out = tmp_path_factory.mktemp("student")
    assert course.main(["student", "--out", str(out)]) == 0
    return {p.name: p for p in out.glob("*.ipynb")}


def test_student_versions_exist_for_every_notebook_with_exercises(students):
    assert sorted(students) == [p.name for p in WITH_EXERCISES]


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_student_version_has_no_solution_text(path, students):
    source_cells, student_cells = course.read_cells(path), course.read_cells(students[path.name])
    secret, public = set(), set()
    for cell in source_cells:
        inside, outside = _split_regions(course.source(cell))
        secret.update(inside)
        public.update(outside)
    student_lines = {line.strip() for cell in student_cells for line in course.source(cell).splitlines()}
    leaked = sorted(line for line in secret - public if line and line in student_lines)
    assert not leaked, f"{path.name}: the student version still has solution or hidden-test lines: {leaked[:5]}"
    for cell in student_cells:
        meta = _nbgrader_meta(cell)
        if meta and meta["solution"]:
            assert STUB in course.source(cell), f"{path.name}: {meta['grade_id']} should hold nbgrader's stub"


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_student_version_keeps_every_other_cell_and_has_no_outputs(path, students):
    source_cells, student_cells = course.read_cells(path), course.read_cells(students[path.name])
    assert len(student_cells) == len(source_cells)
    for i, (before, after) in enumerate(zip(source_cells, student_cells)):
        assert not after.get("outputs"), f"{path.name} cell {i} has outputs"
        if _nbgrader_meta(before) is None:
            assert course.source(after) == course.source(before), f"{path.name} cell {i} changed"
            if _is_parameters(before):
                assert after["metadata"].get("tags") == before["metadata"]["tags"], "parameters tag lost"
    assert sum(map(_is_parameters, student_cells)) == 1


def test_edited_cells_flags_changed_test_cells_only(students, tmp_path):
    # nbgrader autograde warns about every test cell with hidden tests (its gradebook's checksum was taken
    # before they were removed); the checksum in the student version's metadata was taken after, so
    # comparing with it finds only real edits
    path = WITH_EXERCISES[0]
    cells = json.loads(students[path.name].read_text(encoding="utf-8"))
    assert course.edited_cells(students[path.name]) == []
    graded = next(c for c in cells["cells"] if (_nbgrader_meta(c) or {}).get("grade"))
    answer = next(c for c in cells["cells"] if (_nbgrader_meta(c) or {}).get("solution"))
    answer["source"] = "x = 1\n"                       # a student's answer: not a change to a test cell
    submitted = tmp_path / path.name
    submitted.write_text(json.dumps(cells), encoding="utf-8")
    assert course.edited_cells(submitted) == []
    graded["source"] = course.source(graded) + "\nassert True\n"
    submitted.write_text(json.dumps(cells), encoding="utf-8")
    assert course.edited_cells(submitted) == [_nbgrader_meta(graded)["grade_id"]]
    assert course.main(["edited", str(submitted)]) == 1


# ----------------------------------------------------------------------------- the release tree
ALREADY_THERE = (".git/HEAD", "LICENCE", "notebooks/stale.ipynb")  # a course's checkout, before a release


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    _needs_nbgrader()
    out = tmp_path_factory.mktemp("release")
    for name in ALREADY_THERE:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("kept\n")
    assert course.main(["release", "--out", str(out), "--url", "https://example.org/course/xai"]) == 0
    return out


def test_release_holds_no_solution_and_no_hidden_test(release):
    files = [p for p in release.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        text = path.read_bytes()
        for marker in (b"### BEGIN SOLUTION", b"### END SOLUTION", b"### BEGIN HIDDEN TESTS", b"BEGIN SOLUTION",
                       b"BEGIN HIDDEN TESTS"):
            assert marker not in text, f"{path.relative_to(release)} holds {marker.decode()!r}"
    assert course.find_markers(release) == []


def test_release_holds_the_package_and_the_notebooks(release, students):
    def tree(folder):
        return {p.relative_to(folder) for p in folder.rglob("*.py") if "__pycache__" not in p.parts}

    assert tree(release / "xailab") == tree(ROOT / "xailab") and (release / "xailab" / "__init__.py").is_file()
    assert not [p for p in release.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]
    for name in ("pyproject.toml", "environment.yml", "data/README.md"):
        assert (release / name).read_bytes() == (ROOT / name).read_bytes(), name
    assert sorted(p.name for p in (release / "notebooks").glob("*.ipynb")) == \
        sorted(p.name for p in course.NOTEBOOKS.glob("*.ipynb"))
    for path in course.NOTEBOOKS.glob("*.ipynb"):
        released = course.read_cells(release / "notebooks" / path.name)
        expected = course.read_cells(students[path.name]) if path in WITH_EXERCISES else course.read_cells(path)
        assert [course.source(c) for c in released] == [course.source(c) for c in expected], path.name
    readme = (release / "README.md").read_text(encoding="utf-8")
    assert "nbgrader" in readme and course.KERNEL_COMMAND in readme
    assert 'pip install "git+https://example.org/course/xai"' in readme
    assert all(f"notebooks/{p.name}" in readme for p in course.NOTEBOOKS.glob("*.ipynb"))
    makefile = (release / "Makefile").read_text(encoding="utf-8")
    assert "\nlab: setup\n" in makefile and f"\t$(BIN)/{course.KERNEL_COMMAND}\n" in makefile


def test_release_replaces_its_own_paths_only(release):
    assert not (release / "notebooks" / "stale.ipynb").exists(), "notebooks/ is replaced as a whole"
    for name in ALREADY_THERE[:2]:
        assert (release / name).read_text() == "kept\n", f"{name} is not the release's to touch"
    assert not [p for p in release.iterdir() if p.name.startswith(".release-")], "scratch folder left behind"


def test_release_runs_from_its_own_folder(release):
    code = "import xailab.course as c; print(c.ROOT); print(len(c.notebooks_with_exercises()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=release)
    assert out.stdout.split() == [str(release), str(len(WITH_EXERCISES))]
    listed = subprocess.run([sys.executable, "-m", "xailab.course", "list"], capture_output=True, text=True,
                            check=True, cwd=release).stdout
    assert all(grade_id in listed for _, grade_id in GRADED)


@pytest.mark.parametrize("where", [".", "..", "xailab", "notebooks", "build"])
def test_release_refuses_to_write_over_the_repository(where):
    with pytest.raises(ValueError, match="overwrite"):
        course.write_release(ROOT / where)


def _notebook(folder: Path, name: str, code: str, nbgrader: dict | None = None) -> Path:
    cell = {"cell_type": "code", "metadata": {"nbgrader": nbgrader} if nbgrader else {}, "source": code,
            "outputs": [], "execution_count": None}
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# A title"}, cell],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(nb), encoding="utf-8")
    return folder / name


def test_release_refuses_delimiters_outside_graded_notebooks_and_writes_nothing(tmp_path):
    # no notebook here has graded cells, so nbgrader is not needed: each would be copied as it is
    plain = tmp_path / "plain"
    _notebook(plain, "a.ipynb", "print('no exercise here')")
    out = tmp_path / "out"
    assert course.main(["release", "--out", str(out), "--notebooks", str(plain)]) == 0
    assert (out / "notebooks" / "a.ipynb").read_bytes() == (plain / "a.ipynb").read_bytes()
    assert "`notebooks/a.ipynb`: A title" in (out / "README.md").read_text(encoding="utf-8")

    leaky = tmp_path / "leaky"
    _notebook(leaky, "b.ipynb", "def f():\n    " + "### BEGIN " + "SOLUTION\n    return 1\n    ### END SOLUTION\n")
    out = tmp_path / "out2"
    with pytest.raises(ValueError, match="b.ipynb"):
        course.write_release(out, leaky)
    assert list(out.iterdir()) == [], "nothing is written when the release would leak"

    ungraded = tmp_path / "ungraded"
    meta = {"grade": False, "grade_id": "x", "locked": False, "schema_version": 3, "solution": True}
    _notebook(ungraded, "c.ipynb", "x = 1", meta)
    with pytest.raises(ValueError, match="no graded cell"):
        course.write_release(tmp_path / "out3", ungraded)


def test_find_markers_reads_every_file(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("# ### BEGIN " + "HIDDEN TESTS\n")
    (tmp_path / "clean.txt").write_text("nothing to see\n")
    assert course.find_markers(tmp_path) == [(tmp_path / "pkg" / "mod.py", course.MARKERS[1])]
    assert course.find_markers(ROOT / "xailab") == [], "the package itself must hold no delimiter: it is released"


# ----------------------------------------------------------------------------- nbgrader on an older Python
def test_missing_nbgrader_on_python_3_10_names_the_command_that_works():
    message = course.nbgrader_missing(python=(3, 10, 12), installed=False)
    assert course.NEWER_PYTHON_COMMAND in message and "3.10.12" in message and "3.11" in message
    assert "make student PYTHON=python3.11" == course.NEWER_PYTHON_COMMAND
    on_311 = course.nbgrader_missing(python=(3, 11, 4), installed=False)
    assert "make setup-course" in on_311 and course.NEWER_PYTHON_COMMAND not in on_311
    assert course.nbgrader_missing(python=(3, 10, 12), installed=True) is None


@pytest.mark.parametrize("command", [["check"], ["student", "--out", "{tmp}"], ["release", "--out", "{tmp}"]])
def test_commands_that_need_nbgrader_stop_with_the_message(command, monkeypatch, capsys, tmp_path):
    message = course.nbgrader_missing(python=(3, 10, 12), installed=False)
    monkeypatch.setattr(course, "nbgrader_missing", lambda *args, **kwargs: message)
    with pytest.raises(SystemExit) as exit_:
        course.main([part.format(tmp=tmp_path / "out") for part in command])
    assert exit_.value.code == 1
    assert course.NEWER_PYTHON_COMMAND in capsys.readouterr().err


def test_makefile_checks_for_nbgrader_and_can_make_a_newer_venv():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nsetup-course: $(COURSE)\n", 1)[1].split("\n\n", 1)[0]
    assert "-m xailab.course check" in recipe, "make setup-course (and so make student) names the working command"
    assert "$(PYTHON) -m venv $(NEW_VENV) $(VENV)" in makefile and "ifeq ($(origin PYTHON),command line)" in makefile
    assert f"$(BIN)/{course.KERNEL_COMMAND}" in makefile, "the release's Makefile registers the same kernel"


# ----------------------------------------------------------------------------- passing and failing
def _exercise_run_cells(path: Path) -> tuple[list[dict], list[int]]:
    """parameters, `quick = True`, the imports cell and the exercise section, with their original indices
    (None for the injected cell)."""
    cells = course.read_cells(path)
    params = next(i for i, c in enumerate(cells) if _is_parameters(c))
    imports = next(i for i in range(params + 1, len(cells)) if cells[i]["cell_type"] == "code")
    chosen = [params, None, imports, *course.exercise_section(cells)]
    injected = {"cell_type": "code", "metadata": {}, "source": "quick = True", "outputs": [], "execution_count": None}
    return [injected if i is None else cells[i] for i in chosen], chosen


@lru_cache(maxsize=None)
def _errors(path: Path) -> dict[int, str | None]:
    """Run the exercise cells of the notebook at ``path`` on the xailab kernel; for each original cell index,
    the name of the error it raised, or None."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from nbclient import NotebookClient
    from traitlets.config import Config

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.skip(f"the Jupyter kernel {KERNEL!r} is not registered: run `make setup`")
    cells, indices = _exercise_run_cells(path)
    nb = nbformat.v4.new_notebook(metadata=json.loads(path.read_text(encoding="utf-8"))["metadata"])
    nb.cells = [nbformat.v4.new_code_cell(course.source(c)) if c["cell_type"] == "code"
                else nbformat.v4.new_markdown_cell(course.source(c)) for c in cells]
    with tempfile.TemporaryDirectory(prefix="xailab-kernel-") as sockets:  # IPC, as the workbook runner does
        config = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "kernel")}})
        client = NotebookClient(nb, kernel_name=KERNEL, allow_errors=True, timeout=300, config=config,
                                resources={"metadata": {"path": str(course.NOTEBOOKS)}})
        # one thread: the exercises are tiny, and several threads on cores busy with other jobs stall
        client.execute(env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = {}
    for index, cell in zip(indices, nb.cells):
        failed = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if index is not None:
            errors[index] = f"{failed[0].ename}: {failed[0].evalue}" if failed else None
    return errors


def _indices_by_grade_id(path: Path) -> dict[str, int]:
    return {c.grade_id: c.index for c in course.exercise_cells(path)}


@pytest.mark.notebook
@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_exercise_section_runs_clean_with_the_solutions(path):
    failed = {i: e for i, e in _errors(path).items() if e}
    assert not failed, f"{path.name}: cells failed with the solutions in place: {failed}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_student_version_runs_up_to_each_exercise(path, students):
    # everything that is not a solution or a test (parameters, imports, setup) runs without error
    errors = _errors(students[path.name])
    nbgrader_cells = set(_indices_by_grade_id(path).values())
    failed = {i: e for i, e in errors.items() if e and i not in nbgrader_cells}
    assert not failed, f"{path.name} student version: cells outside the exercises failed: {failed}"


@pytest.mark.notebook
@pytest.mark.parametrize("path, grade_id", GRADED, ids=[g for _, g in GRADED])
def test_graded_cell_passes_on_solution_and_fails_on_student(path, grade_id, students):
    index = _indices_by_grade_id(path)[grade_id]
    assert _errors(path)[index] is None, f"{grade_id} fails with the solution: {_errors(path)[index]}"
    assert _errors(students[path.name])[index] is not None, f"{grade_id} passes on the unfilled student version"


# ----------------------------------------------------------------------------- the CI template
def test_ci_template_runs_the_readme_command_on_pull_requests_and_weekly():
    yaml = pytest.importorskip("yaml")
    assert README_COMMAND in (ROOT / "README.md").read_text(encoding="utf-8"), "the README's quick-mode command"
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on:` key as True
    assert "pull_request" in triggers and "push" in triggers
    crons = [entry["cron"] for entry in triggers["schedule"]]
    assert len(crons) == 1
    minute, hour, day, month, weekday = crons[0].split()
    assert (day, month) == ("*", "*") and re.fullmatch(r"[0-6]", weekday), f"weekly: {crons[0]!r}"
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(README_COMMAND in step.get("run", "") for step in steps), f"no step runs {README_COMMAND!r}"
    python = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert python and python[0]["with"].get("cache") == "pip", "pip's cache through actions/setup-python"
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads, "no step uploads an artifact"
    paths = [p.strip().rstrip("/") for p in str(uploads[0]["with"]["path"]).splitlines()]
    assert "build" in paths and uploads[0].get("if") == "always()", "upload build/, also after a failure"


def test_ci_template_builds_the_student_versions_and_runs_the_exercise_tests():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    jobs = [job for job in workflow["jobs"].values()
            if any("tests/test_course.py" in step.get("run", "") for step in job["steps"])]
    assert len(jobs) == 1, "one job runs the exercise tests"
    steps = jobs[0]["steps"]
    runs = [step.get("run", "") for step in steps]
    build = next(i for i, run in enumerate(runs) if re.search(r"make student|xailab\.course (student|release)", run))
    assert build < next(i for i, run in enumerate(runs) if "tests/test_course.py" in run)
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert tuple(map(int, str(python["with"]["python-version"]).split("."))) >= course.NBGRADER_PYTHON
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert any(str(u["with"]["path"]).strip().rstrip("/") == "build/student" for u in uploads), \
        "the student notebooks are uploaded"
