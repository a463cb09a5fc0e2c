"""The course kit: graded exercises in nbgrader's format, their student versions, the release tree, the CI
template.

Every notebook with graded cells is picked up automatically. Its exercises are checked by running only
the `parameters` cell (with `quick = True` injected after it), the imports cell and the `## Exercises`
section, once as committed (the solutions) and once as nbgrader's student version: each graded test cell
must pass on the first and fail on the second, which proves that its checks can fail. A third run puts in
answers that call xailab's own implementation (`CHEATS`): their test cells must fail and say why. Written
answers (hand-graded Markdown cells) are checked for their metadata and for what the student version shows.
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
GRADED = [(path, cell.grade_id) for path in WITH_EXERCISES for cell in course.graded_cells(path) if cell.autograded]
#: The notebooks that must hold at least one hand-graded written answer.
WRITTEN_IN = ("01_attribution", "02_roar", "03_fullgrad", "04_generalization", "05_spade")
KERNEL = "xailab"
GRADE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")  # nbgrader's schema, made non-empty
STUB = "raise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"  # what nbgrader writes into a written-answer cell of a student version
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
    ids, solutions, solution, tested = [], [], None, set()
    for i, cell in enumerate(cells):
        meta = _nbgrader_meta(cell)
        if meta is None:
            continue
        where = f"{path.name} cell {i}"
        text = course.source(cell)
        assert i in section, f"{where}: nbgrader cells belong in the {course.EXERCISES_HEADING!r} section"
        assert meta.get("schema_version") == 3, f"{where}: schema_version should be 3"
        assert GRADE_ID.match(meta.get("grade_id", "")), f"{where}: grade_id {meta.get('grade_id')!r}"
        ids.append(meta["grade_id"])
        if cell["cell_type"] == "markdown":
            # a written answer, graded by hand: its whole text becomes nbgrader's text stub in the student version
            assert meta["solution"] and meta["grade"] and not meta["locked"], \
                f"{where}: a Markdown exercise cell is a written answer (solution and grade, not locked)"
            assert meta.get("points", 0) > 0, f"{where}: a written answer needs points > 0"
            assert not any(marker in text for pair in REGIONS for marker in pair), \
                f"{where}: a written answer is replaced as a whole; it needs no delimiters"
            assert not meta["grade_id"].endswith("_test"), f"{where}: _test names the autograded test cells"
            continue
        assert cell["cell_type"] == "code", f"{where}: a code or Markdown cell"
        if meta["solution"]:
            assert not meta["grade"] and not meta["locked"], f"{where}: a solution cell is neither graded nor locked"
            assert "### BEGIN SOLUTION" in text and "### END SOLUTION" in text, f"{where}: solution markers"
            assert not meta["grade_id"].endswith("_test"), f"{where}: _test names the test cells"
            solution = meta["grade_id"]
            solutions.append(solution)
        else:
            assert meta["grade"] and meta["locked"], f"{where}: a test cell is graded and locked"
            assert meta.get("points", 0) > 0, f"{where}: a graded cell needs points > 0"
            assert "### BEGIN HIDDEN TESTS" in text and "### END HIDDEN TESTS" in text, f"{where}: hidden tests"
            visible = _split_regions(text)[1]
            assert any(line.startswith("assert") for line in visible), f"{where}: visible asserts"
            # the test cells of answer X follow it: X_test, and for a further part X_<part>_test
            grade_id = meta["grade_id"]
            assert solution is not None and grade_id.startswith(f"{solution}_") and grade_id.endswith("_test"), \
                f"{where}: {grade_id} should test the answer cell before it: {solution}_test or {solution}_<part>_test"
            tested.add(grade_id)
    assert len(ids) == len(set(ids)), f"{path.name}: grade_ids repeat: {sorted(ids)}"
    untested = [g for g in solutions if f"{g}_test" not in tested]
    assert not untested, f"{path.name}: answer cells without their graded cell X_test: {untested}"


def _written_meta(cell: dict) -> dict | None:
    meta = _nbgrader_meta(cell)
    return meta if cell["cell_type"] == "markdown" and meta and meta.get("solution") and meta.get("grade") else None


@pytest.mark.parametrize("stem", WRITTEN_IN)
def test_every_notebook_from_01_has_a_written_answer_graded_by_hand(stem):
    path = course.NOTEBOOKS / f"{stem}.ipynb"
    written = course.written_answers(path)
    assert written, f"{path.name}: no hand-graded written answer in its exercises"
    cells = course.read_cells(path)
    for w in written:
        text = course.source(cells[w.index])
        assert w.points > 0 and text.strip() and text.strip() != TEXT_STUB, \
            f"{path.name} {w.grade_id}: the instructor version holds what a full answer says, for the grader"
        task = next(course.source(c) for c in reversed(cells[:w.index]) if c["cell_type"] == "markdown")
        assert "graded by hand" in task, f"{path.name} {w.grade_id}: the task above says it is graded by hand"


def test_list_command_names_the_written_answers(capsys):
    assert course.main(["list"]) == 0
    printed = capsys.readouterr().out
    for path in WITH_EXERCISES:
        for w in course.written_answers(path):
            line = next(row for row in printed.splitlines() if w.grade_id in row)
            assert "written" in line and "by hand" in line, line


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
        if _written_meta(cell):   # the instructor's notes for the grader: the whole cell is secret
            secret.update(line.strip() for line in course.source(cell).splitlines())
            continue
        inside, outside = _split_regions(course.source(cell))
        secret.update(inside)
        public.update(outside)
    student_lines = {line.strip() for cell in student_cells for line in course.source(cell).splitlines()}
    leaked = sorted(line for line in secret - public if line and line in student_lines)
    assert not leaked, f"{path.name}: the student version still has solution or hidden-test lines: {leaked[:5]}"
    for cell in student_cells:
        meta = _nbgrader_meta(cell)
        if meta and meta["solution"]:
            stub = STUB if cell["cell_type"] == "code" else TEXT_STUB
            assert stub in course.source(cell), f"{path.name}: {meta['grade_id']} should hold nbgrader's stub"


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
    graded = next(c for c in cells["cells"] if (_nbgrader_meta(c) or {}).get("grade") and c["cell_type"] == "code")
    answer = next(c for c in cells["cells"] if (_nbgrader_meta(c) or {}).get("solution"))
    answer["source"] = "x = 1\n"                       # a student's answer: not a change to a test cell
    submitted = tmp_path / path.name
    submitted.write_text(json.dumps(cells), encoding="utf-8")
    assert course.edited_cells(submitted) == []
    graded["source"] = course.source(graded) + "\nassert True\n"
    submitted.write_text(json.dumps(cells), encoding="utf-8")
    assert course.edited_cells(submitted) == [_nbgrader_meta(graded)["grade_id"]]
    assert course.main(["edited", str(submitted)]) == 1


@pytest.mark.parametrize("stem", WRITTEN_IN)
def test_written_answers_survive_into_the_student_version(stem, students):
    # nbgrader keeps the cell, its metadata and its points, and shows the student its text stub in place of the
    # instructor's notes for the grader; the cell stays editable (a student writes there) but cannot be deleted
    path = course.NOTEBOOKS / f"{stem}.ipynb"
    student_cells = course.read_cells(students[path.name])
    written = course.written_answers(path)
    assert written, f"{path.name}: no written answer"
    for w in written:
        cell = student_cells[w.index]
        meta = _written_meta(cell)
        assert meta and meta["grade_id"] == w.grade_id and meta["points"] == w.points, \
            f"{path.name} {w.grade_id}: the student version lost the written answer's metadata"
        assert course.source(cell).strip() == TEXT_STUB, f"{path.name} {w.grade_id}: {course.source(cell)[:80]!r}"
        assert cell["metadata"].get("editable", True) and cell["metadata"].get("deletable") is False
    assert [w.grade_id for w in course.written_answers(students[path.name])] == [w.grade_id for w in written]


# ----------------------------------------------------------------------------- the student's own work
def test_library_unavailable_blocks_every_route_and_restores_them():
    import torch

    import xailab
    from xailab import metrics
    from xailab.attribution import gradients
    from xailab.metrics import saliency_auc as imported_name   # a name imported before the block

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()
    x, target = torch.rand(2, 2, 2, 2), torch.tensor([0, 2])
    before = xailab.attribute(model, x, target, method="integrated_gradients", steps=3)
    with course.library_unavailable(gradients.integrated_gradients, metrics.saliency_auc, task="X"):
        for call in (lambda: xailab.attribute(model, x, target, method="integrated_gradients"),   # the registry
                     lambda: gradients.integrated_gradients(model, x, target),
                     lambda: imported_name(torch.rand(1, 4), mask=torch.tensor([[1.0, 0, 0, 0]])),
                     lambda: metrics.evaluate({"m": torch.rand(1, 1, 2, 2)}, ["saliency_auc"],    # built on it
                                              mask=torch.tensor([[[[1.0, 0], [0, 0]]]]))):
            with pytest.raises(course.OwnWorkRequired, match=r"implement X yourself; calling xailab's "
                                                             r"(integrated_gradients|saliency_auc) .* is not allowed"):
                call()
        assert xailab.attribute(model, x, target, method="gradient").shape == x.shape, "only the named ones"
    assert torch.equal(xailab.attribute(model, x, target, method="integrated_gradients", steps=3), before)
    assert issubclass(course.OwnWorkRequired, AssertionError), "a failed check of a test cell, like the others"

    def cheat(model, x, target):
        return xailab.attribute(model, x, target, method="integrated_gradients", steps=3)

    checked = course.own_work(cheat, gradients.integrated_gradients, task="Integrated Gradients")
    with pytest.raises(AssertionError, match="implement Integrated Gradients yourself"):
        checked(model, x, target)
    with pytest.raises(course.OwnWorkRequired):   # nested blocks: the inner one does not unblock the outer one's
        with course.library_unavailable(gradients.gradient, task="A"):
            with course.library_unavailable(gradients.gradient, gradients.input_x_gradient, task="B"):
                pass
            gradients.gradient(model, x, target)
    assert torch.equal(cheat(model, x, target), before), "restored after the answer raised"
    assert not course._UNAVAILABLE
    with pytest.raises(TypeError, match="closure"):
        course.own_work(cheat, _with_a_closure(), task="X")
    with pytest.raises(TypeError, match="Python functions"):
        course.own_work(cheat, torch.relu, task="X")


def _with_a_closure():
    value = 1

    def inner():
        return value

    return inner


def test_library_unavailable_blocks_methods_of_a_class():
    from xailab.papers.roar import RoarResult

    result = RoarResult([dict(estimator=e, variant="roar", fraction=0.5, seed=s, accuracy=a)
                         for e, a in (("a", 0.8), ("b", 0.6)) for s in range(3)])
    with course.library_unavailable(RoarResult.difference, task="a paired comparison"):
        with pytest.raises(course.OwnWorkRequired, match="RoarResult.difference"):
            result.difference("a", "b")
    assert result.difference("a", "b")["n"] == 3


#: For each notebook, answers that call xailab's own implementation of what the exercise asks for, by answer cell.
#: Each must pass every test cell of its exercise while xailab is left available, and fail each of them, saying
#: why, while the test cells switch xailab's version off.
CHEATS = {
    "00_tour": {
        "ex00_mask_auc": """
def mask_auc(pixel_map, mask):
    return float(metrics.saliency_auc(pixel_map[None], mask=mask[None])[0])
""",
    },
    "01_attribution": {
        "ex01_ixg_linear": """
def input_x_gradient_by_hand(model, x, target):
    return xailab.attribute(model, x, target, method="input_x_gradient")
""",
        "ex01_ig_gauss_legendre": """
def integrated_gradients_gl(model, x, target, steps):
    return xailab.attribute(model, x, target, method="integrated_gradients", steps=steps)
""",
        "ex01_smoothgrad_family": """
def smoothgrad_family(model, x, target, noise, sigma):
    return ensemble(model, x, target, base="gradient", sigma=sigma, n_samples=len(noise), draws=noise)
""",
    },
    "02_roar": {
        "ex02_top_fraction": """
def top_fraction_mask(relevance, fraction):
    return removal_mask(relevance, fraction)
""",
        "ex02_linear_imputation": """
def linear_imputation(image, removed):
    return noisy_linear_imputation(image[None], removed[None, None], noise=0)[0]
""",
        "ex02_paired_difference": """
def paired_difference(records, a, b, variant="roar"):
    return RoarResult(records).difference(a, b, variant=variant)
""",
    },
    "03_fullgrad": {
        "ex03_relu_full_gradients": """
def relu_full_gradients(net, x, target):
    fg = full_gradients(net, x, target)
    return {"input": fg.input, "hidden": fg.bias["0"], "output": fg.bias["2"]}
""",
        "ex03_implicit_bias": """
from xailab.attribution.fullgrad.decomposition import _implicit_bias


def implicit_bias(activation, z):
    return _implicit_bias(activation, z)
""",
        "ex03_tanh_full_gradients": """
def tanh_full_gradients(net, x, target):
    fg = full_gradients(net, x, target)
    return {"input": fg.input, "hidden": fg.bias["0"], "implicit": fg.bias["1 (implicit)"], "output": fg.bias["2"]}
""",
    },
    "05_spade": {
        "ex05_layer_errors": """
def layer_errors(traced, x):
    views = augment(x, ex_views, seed=seed)
    dense = dict(ex_model.named_modules())
    errors = {}
    for name, module in capture.execution_order(traced, views):
        H = capture.layer_hessian(module, capture.capture_input(traced, module, views), 1)[0]
        W, W_hat = capture.weight_matrix(dense[name]).double(), capture.weight_matrix(module).double()
        num = solvers.reconstruction_error(W, W_hat, H, relative=False).sum()
        errors[name] = float(num / solvers.reconstruction_error(W, torch.zeros_like(W_hat), H, relative=False).sum())
    return errors
""",
    },
}


def _test_cells(path: Path, answer: str) -> list[course.ExerciseCell]:
    """The graded test cells of the answer cell ``answer``: ``answer_test`` and ``answer_<part>_test``."""
    return [c for c in course.graded_cells(path)
            if c.autograded and c.grade_id.startswith(f"{answer}_") and c.grade_id.endswith("_test")]


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_exercises_that_switch_xailab_off_have_a_cheat_to_prove_it(path):
    cells = course.read_cells(path)
    answers = [c.grade_id for c in course.exercise_cells(path) if c.solution and not c.grade]
    uses_own_work = lambda answer: any("own_work(" in course.source(cells[t.index]) for t in _test_cells(path, answer))
    guarded = sorted(filter(uses_own_work, answers))
    assert guarded == sorted(CHEATS.get(path.stem, {})), \
        f"{path.name}: CHEATS should hold one cheating answer for each exercise whose tests use own_work"
    for answer in guarded:
        tests = _test_cells(path, answer)
        assert all("own_work(" in course.source(cells[t.index]) for t in tests), \
            f"{path.name}: every test cell of {answer} runs it through own_work"


# ----------------------------------------------------------------------------- installing where xailab is missing
WITH_INSTALL_CELL = ("00_tour", "01_attribution", "02_roar", "03_fullgrad", "04_generalization", "05_spade")


@pytest.mark.parametrize("stem", WITH_INSTALL_CELL)
def test_install_cell_installs_only_where_xailab_is_missing(stem, monkeypatch):
    from IPython.core.inputtransformer2 import TransformerManager

    cells = course.read_cells(course.NOTEBOOKS / f"{stem}.ipynb")
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    install = course.source(cells[code[0]])
    assert _is_parameters(cells[code[1]]), f"{stem}: the install cell comes first, right before the parameters cell"
    pip = f'%pip install --quiet "xailab @ git+{course.INSTALL_URL_PLACEHOLDER}"'
    assert "except ImportError:" in install and pip in install, f"{stem}: the first code cell installs, guarded"
    python = compile(TransformerManager().transform_cell(install), f"<{stem} install cell>", "exec")

    class Shell:
        def __init__(self):
            self.magics = []

        def run_line_magic(self, name, line):
            self.magics.append((name, line))

    shell = Shell()
    exec(python, {"get_ipython": lambda: shell})
    assert shell.magics == [], "with xailab importable the cell does nothing"
    monkeypatch.setitem(sys.modules, "xailab", None)           # as in a kernel without the package
    exec(python, {"get_ipython": lambda: shell})
    assert shell.magics == [("pip", f'install --quiet "xailab @ git+{course.INSTALL_URL_PLACEHOLDER}"')]


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
    url = "https://example.org/course/xai"
    for path in course.NOTEBOOKS.glob("*.ipynb"):
        released = course.read_cells(release / "notebooks" / path.name)
        expected = course.read_cells(students[path.name]) if path in WITH_EXERCISES else course.read_cells(path)
        # the only change: the guarded install cell names the course's repository
        assert [course.source(c) for c in released] == \
            [course.source(c).replace(course.INSTALL_URL_PLACEHOLDER, url) for c in expected], path.name
        assert course.INSTALL_URL_PLACEHOLDER not in (release / "notebooks" / path.name).read_text(encoding="utf-8")
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


#: Put after the imports cell to leave xailab's own implementations available to the answers (see CHEATS).
UNBLOCKED = ("import contextlib\n\nimport xailab.course\n\n"
             "xailab.course.library_unavailable = lambda *functions, task: contextlib.nullcontext()\n")


@lru_cache(maxsize=None)
def _errors(path: Path, replaced: tuple[tuple[int, str], ...] = (), unblocked: bool = False) -> dict[int, str | None]:
    """Run the exercise cells of the notebook at ``path`` on the xailab kernel; for each original cell index,
    the name of the error it raised, or None. ``replaced``: (cell index, source) of cells to run in place of the
    notebook's; ``unblocked``: the test cells' ``own_work`` leaves xailab's functions available."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from nbclient import NotebookClient
    from traitlets.config import Config

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.skip(f"the Jupyter kernel {KERNEL!r} is not registered: run `make setup`")
    cells, indices = _exercise_run_cells(path)
    sources = [dict(replaced).get(i, course.source(c)) for i, c in zip(indices, cells)]
    if unblocked:
        after_imports = 3  # parameters, quick = True, imports
        cells, indices = cells[:after_imports] + [{"cell_type": "code"}] + cells[after_imports:], \
            indices[:after_imports] + [None] + indices[after_imports:]
        sources = sources[:after_imports] + [UNBLOCKED] + sources[after_imports:]
    nb = nbformat.v4.new_notebook(metadata=json.loads(path.read_text(encoding="utf-8"))["metadata"])
    nb.cells = [nbformat.v4.new_code_cell(text) if c["cell_type"] == "code" else nbformat.v4.new_markdown_cell(text)
                for c, text in zip(cells, sources)]
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


@pytest.mark.notebook
@pytest.mark.parametrize("path", [p for p in WITH_EXERCISES if p.stem in CHEATS], ids=lambda p: p.stem)
def test_an_answer_that_calls_xailab_fails_and_says_why(path):
    indices = _indices_by_grade_id(path)
    replaced = tuple((indices[answer], cheat) for answer, cheat in CHEATS[path.stem].items())
    blocked, available = _errors(path, replaced), _errors(path, replaced, unblocked=True)
    for answer in CHEATS[path.stem]:
        tests = _test_cells(path, answer)
        assert tests, f"{path.name}: no test cell for {answer}"
        for t in tests:
            assert available[t.index] is None, \
                f"{t.grade_id}: the cheat should pass with xailab available, or it proves nothing: {available[t.index]}"
            error = blocked[t.index] or ""
            assert error.startswith("OwnWorkRequired: this exercise asks you to implement ") \
                and "yourself; calling xailab's " in error and error.endswith(" is not allowed"), \
                f"{t.grade_id}: an answer that calls xailab should fail saying so, got {error or 'a pass'}"


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


#: Slipped answers to 03's tanh exercise, each with the words its test cell's diagnostic must say.
TANH_SLIPS = {
    "the gradient alone: multiply it by x": ('"input": (x * g_x).detach()', '"input": g_x.detach()'),
    "b1 is added before tanh, so use ∂f_c/∂z1": ('net[0].bias.detach() * g_z1', 'net[0].bias.detach() * g_a1'),
    "multiply it by ∂f_c/∂z2": ('net[2].bias.detach() * g_out', 'net[2].bias.detach().expand_as(g_out)'),
}


@pytest.mark.notebook
@pytest.mark.parametrize("message", TANH_SLIPS)
def test_tanh_exercise_names_the_slip_before_comparing_terms(message):
    path = course.NOTEBOOKS / "03_fullgrad.ipynb"
    indices = _indices_by_grade_id(path)
    answer = indices["ex03_tanh_full_gradients"]
    right, slipped = TANH_SLIPS[message]
    solution = course.source(course.read_cells(path)[answer])
    assert right in solution, f"03's tanh solution no longer holds {right!r}"
    errors = _errors(path, ((answer, solution.replace(right, slipped)),))
    error = errors[indices["ex03_tanh_full_gradients_test"]] or ""
    assert error.startswith("AssertionError") and message in error, f"want a diagnostic naming {message!r}, got {error!r}"
