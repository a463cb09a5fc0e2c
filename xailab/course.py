"""Graded exercises in nbgrader's format, the student versions of the notebooks, and a release tree.

    python -m xailab.course student [--out build/student]   # what `make student` runs
    python -m xailab.course release [--out build/release]   # what `make release` runs: a tree to publish
    python -m xailab.course list                            # the graded cells of every notebook
    python -m xailab.course check                           # is nbgrader here? if not, which command works
    python -m xailab.course edited SUBMITTED.ipynb ...      # test cells a student changed (nothing is run)

A notebook's test cells also use :func:`own_work` from here: while a student's function runs, the xailab
functions that the exercise asks the student to write by hand raise :class:`OwnWorkRequired`.

A notebook's exercises live in its ``## Exercises`` section, which starts at a Markdown cell whose
first line is that heading and runs to the next level-1 or level-2 heading (or the end). The
section is self-contained: its first code cell builds everything the exercises use, so the
``parameters`` cell, the imports cell (the first code cell after it) and the section alone run
the exercises. A coded exercise is a Markdown task, a solution cell (nbgrader ``solution``, the answer
between nbgrader's solution delimiters) and one or more graded test cells (nbgrader ``grade`` with
``points``, hidden asserts between its hidden-test delimiters). A written exercise is a Markdown task and
a hand-graded Markdown answer cell (nbgrader ``grade`` and ``solution``): its whole text, notes for the
grader, becomes nbgrader's "YOUR ANSWER HERE" in the student version. See docs/teaching.md. The
delimiters are not spelt out in this file, because a release copies it: a release holds none of them
(see :func:`find_markers`).

Student versions are made by nbgrader's own preprocessors, the ones its ``generate_assignment``
step runs, less the three that need a course (a header file, a kernel, the gradebook). nbgrader is
the optional ``course`` extra (Python >= 3.11); it is imported only when a student version is
written, so this module and :func:`graded_cells` work without it.

A release is what a course publishes instead of this repository, whose notebooks are the
instructor versions: the student versions, the notebooks without exercises as they are, the
package, its build files and a generated README and Makefile for students. See docs/course.md.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXERCISES_HEADING = "## Exercises"

#: What nbgrader's delimiters open with (in two pieces, so that this file holds none of them):
#: a file that contains one of these may hold a solution or a hidden test, and a release refuses it.
MARKERS = ("BEGIN " + "SOLUTION", "BEGIN " + "HIDDEN TESTS")

#: The oldest Python nbgrader (the ``course`` extra) installs on, and the command that works on an older one.
NBGRADER_PYTHON = (3, 11)
NEWER_PYTHON_COMMAND = "make student PYTHON=python3.11"

#: The repository URL in the notebooks' guarded install cell (``%pip install "xailab @ git+URL"``, run only where
#: ``import xailab`` fails); a release made with ``--url`` writes the course's URL in its place.
INSTALL_URL_PLACEHOLDER = "https://github.com/ORG/REPO"

#: Registers the Jupyter kernel the notebooks name (``make setup`` runs it with .venv's python).
KERNEL_COMMAND = 'python -m ipykernel install --sys-prefix --name xailab --display-name "Python (xailab)"'

#: Steps of nbgrader's generate_assignment that need a course directory, a kernel or a database.
NEEDS_A_COURSE = ("IncludeHeaderFooter", "InstantiateTests", "SaveCells")


@dataclass(frozen=True)
class ExerciseCell:
    """One cell carrying nbgrader metadata."""

    index: int          # position in the notebook's cell list
    grade_id: str
    solution: bool      # the student writes here
    grade: bool         # the cell earns points (by its tests, or by hand for a written answer)
    points: float       # 0 unless graded
    markdown: bool = False  # a Markdown cell: with solution and grade, a written answer graded by hand

    @property
    def written(self) -> bool:
        """A hand-graded written answer (nbgrader's "manually graded answer"), not run by the autograder."""
        return self.markdown and self.solution and self.grade

    @property
    def autograded(self) -> bool:
        """A test cell: nbgrader runs it and scores it by whether it raises."""
        return self.grade and not self.solution


def read_cells(path: Path) -> list[dict]:
    """The cells of the notebook at ``path`` as plain dicts (no nbformat needed)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return text if isinstance(text, str) else "".join(text)


def exercise_cells(path: Path) -> list[ExerciseCell]:
    """Every cell of the notebook at ``path`` that has nbgrader metadata, in order."""
    found = []
    for i, cell in enumerate(read_cells(path)):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is not None:
            found.append(ExerciseCell(i, meta.get("grade_id", ""), bool(meta.get("solution")),
                                      bool(meta.get("grade")), float(meta.get("points", 0) or 0),
                                      cell.get("cell_type") == "markdown"))
    return found


def graded_cells(path: Path) -> list[ExerciseCell]:
    """The cells of the notebook at ``path`` that earn points (``grade: true``): test cells and written answers."""
    return [c for c in exercise_cells(path) if c.grade]


def written_answers(path: Path) -> list[ExerciseCell]:
    """The hand-graded written-answer cells of the notebook at ``path`` (Markdown, ``grade`` and ``solution``)."""
    return [c for c in exercise_cells(path) if c.written]


def notebooks_with_exercises(folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks in ``folder`` with at least one graded cell, sorted by name."""
    return [p for p in sorted(Path(folder).glob("*.ipynb")) if graded_cells(p)]


def _heading_level(cell: dict) -> int:
    """1 for ``# ...``, 2 for ``## ...`` ...; 0 when the cell does not start with a heading."""
    if cell.get("cell_type") != "markdown":
        return 0
    first = source(cell).lstrip().split("\n", 1)[0]
    hashes = len(first) - len(first.lstrip("#"))
    return hashes if hashes and first[hashes:hashes + 1] == " " else 0


def exercise_section(cells: list[dict]) -> range:
    """Indices of the ``## Exercises`` section: its heading cell up to the next level-1 or level-2
    heading. A ValueError when the notebook has none."""
    starts = [i for i, c in enumerate(cells)
              if _heading_level(c) == 2 and source(c).lstrip().startswith(EXERCISES_HEADING)]
    if len(starts) != 1:
        raise ValueError(f"cells: expected one Markdown cell starting with {EXERCISES_HEADING!r}, "
                         f"found {len(starts)}")
    end = next((i for i in range(starts[0] + 1, len(cells)) if 0 < _heading_level(cells[i]) <= 2), len(cells))
    return range(starts[0], end)


def nbgrader_missing(python: tuple[int, ...] | None = None, installed: bool | None = None) -> str | None:
    """None when nbgrader can be imported; otherwise why not, and the command that works.

    ``python`` (a version tuple) and ``installed`` default to this interpreter's; they are arguments only
    so that the message for another Python can be tested. On Python < 3.11 the course extra installs
    nothing (nbgrader's own requirement), so the answer is a newer Python, not another install."""
    python = tuple(sys.version_info[:3] if python is None else python)
    problem = ""
    if installed is None:
        try:
            import nbgrader  # noqa: F401  (only here and in _nbgrader: the module works without it)
        except ImportError as exc:
            installed, problem = False, str(exc)
        else:
            installed = True
    if installed:
        return None
    if python < NBGRADER_PYTHON:
        oldest = ".".join(map(str, NBGRADER_PYTHON))
        return (f"nbgrader (the course extra) needs Python {oldest} or newer; this is Python "
                f"{'.'.join(map(str, python))} ({sys.executable}), for which the extra installs nothing.\n"
                f"With make, rebuild .venv with a newer Python (any python3.x >= {oldest} on your PATH):\n\n"
                f"    {NEWER_PYTHON_COMMAND}\n\n"
                f"Without make: create an environment with Python >= {oldest} and run "
                "`pip install -e '.[dev,course]'` in it (docs/course.md).")
    return (f"nbgrader (the course extra) is not installed{f' or does not import ({problem})' if problem else ''}: "
            "`make setup-course` installs it into .venv, or `pip install 'nbgrader>=0.9'` into this environment.")


def _nbgrader():
    missing = nbgrader_missing()
    if missing:
        raise RuntimeError(missing)
    from nbgrader import converters, preprocessors

    return converters, preprocessors


def assignment_steps() -> list:
    """nbgrader's generate_assignment preprocessors, in its order, minus :data:`NEEDS_A_COURSE`."""
    converters, _ = _nbgrader()
    steps = converters.GenerateAssignment.class_traits()["preprocessors"].default()
    return [cls() for cls in steps if cls.__name__ not in NEEDS_A_COURSE]


def student_version(path: Path):
    """The student version of the notebook at ``path`` as an nbformat notebook: solutions replaced
    by nbgrader's stub, hidden tests removed, outputs cleared, graded cells locked, checksums added."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    resources: dict = {}
    for step in assignment_steps():
        try:
            nb, resources = step(nb, resources)
        except Exception as exc:  # nbgrader raises RuntimeError, jsonschema's ValidationError ...
            raise ValueError(f"{Path(path).name}: nbgrader's {type(step).__name__} refused it: {exc}") from exc
    return nb


def write_student_versions(out: Path, folder: Path = NOTEBOOKS) -> list[Path]:
    """Write ``out/NAME.ipynb`` for every notebook in ``folder`` that has graded cells; return the paths."""
    _nbgrader()  # first: where it is missing, say so (and what works) before anything else can fail
    import nbformat

    notebooks = notebooks_with_exercises(folder)
    if not notebooks:
        raise ValueError(f"folder: no notebook in {folder} has graded cells")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        target = out / path.name
        tmp = target.with_name(target.stem + ".partial.ipynb")  # never leave half a notebook behind
        nbformat.write(student_version(path), str(tmp))
        tmp.replace(target)
        written.append(target)
    return written


# ----------------------------------------------------------------------------- the student's own work
class OwnWorkRequired(AssertionError):
    """Raised by an xailab function that an exercise asks the student to write by hand, when the student's
    answer calls it (see :func:`own_work`). An AssertionError, like every other failed check of a test cell."""


#: The message in :func:`_refuse`'s code, replaced by :func:`refusal`'s for each blocked function.
_PLACEHOLDER = "this xailab function is unavailable while an exercise's answer runs"


def _refuse(*args, **kwargs):
    # The code of this function replaces a blocked function's code (see library_unavailable), so it runs with
    # that function's module globals: it may use builtins only. Its message is replaced per blocked function.
    raise __import__("xailab.course", fromlist=["OwnWorkRequired"]).OwnWorkRequired(
        "this xailab function is unavailable while an exercise's answer runs")


if _PLACEHOLDER not in _refuse.__code__.co_consts:  # the two spellings above must stay the same
    raise RuntimeError("xailab.course: _refuse no longer holds _PLACEHOLDER")

#: id(function) -> (function, its own code) for every function made unavailable now.
_UNAVAILABLE: dict[int, tuple[Callable, object]] = {}


def refusal(task: str, function: Callable) -> str:
    """The message a blocked ``function`` raises while the student's answer to ``task`` runs."""
    name = getattr(function, "__qualname__", getattr(function, "__name__", repr(function)))
    where = getattr(function, "__module__", None)
    return (f"this exercise asks you to implement {task} yourself; calling xailab's {name}"
            f"{f' (from {where})' if where else ''} is not allowed")


def _target(function: Callable) -> Callable:
    target = inspect.unwrap(function)
    target = getattr(target, "__func__", target)        # a bound or class method: its function
    if not inspect.isfunction(target):
        raise TypeError(f"can only make Python functions unavailable, not {type(target).__name__} {target!r}")
    if target.__closure__:
        raise TypeError(f"{target.__qualname__} has a closure; make the function it wraps unavailable instead")
    return target


@contextlib.contextmanager
def library_unavailable(*functions: Callable, task: str) -> Iterator[None]:
    """While the block runs, calling any of ``functions`` raises :class:`OwnWorkRequired` (:func:`refusal`
    says why); afterwards each works again, also when the block raised.

    The functions' code objects are swapped, not the names that point to them, so every route to one fails
    alike: the module attribute, a name imported into the notebook, the method registry behind
    ``xailab.attribute(..., method=...)``, a method called on an instance, another xailab function that
    calls it. Wrapped functions (``functools.wraps``) are blocked through the function they wrap. Nested
    blocks are allowed: a function already blocked is restored by the block that blocked it."""
    targets = list({id(t): t for t in map(_target, functions)}.values())
    swapped = []
    try:
        for target in targets:
            if id(target) in _UNAVAILABLE:
                continue
            message = refusal(task, target)
            code = _refuse.__code__
            consts = tuple(message if c == _PLACEHOLDER else c for c in code.co_consts)
            names = {"co_name": target.__code__.co_name}
            if hasattr(code, "co_qualname"):
                names["co_qualname"] = target.__code__.co_qualname
            _UNAVAILABLE[id(target)] = (target, target.__code__)
            swapped.append(target)
            target.__code__ = code.replace(co_consts=consts, **names)
        yield
    finally:
        for target in swapped:
            target.__code__ = _UNAVAILABLE.pop(id(target))[1]


def own_work(answer: Callable, *functions: Callable, task: str) -> Callable:
    """``answer`` (a student's function) wrapped so that, while it runs, ``functions`` (xailab's own
    implementation of what the exercise asks for) raise :class:`OwnWorkRequired` naming ``task``.

    A test cell calls the wrapped function where it would call the student's, and computes its references
    outside it, with the library as it is::

        ex_mask_auc = own_work(mask_auc, metrics.saliency_auc, task="the mask AUC")
    """
    _ = [_target(f) for f in functions]                 # a wrong target fails here, not inside the answer

    @functools.wraps(answer)
    def run(*args, **kwargs):
        with library_unavailable(*functions, task=task):
            return answer(*args, **kwargs)

    return run


# ----------------------------------------------------------------------------- the release tree
#: Copied as they are from the repository into a release.
RELEASE_FILES = ("pyproject.toml", "environment.yml", ".gitignore", "data/README.md",
                 "share/jupyter/kernels/xailab/kernel.json")   # the kernel pyproject.toml installs
#: Every path a release writes; ``release`` replaces exactly these in its output folder and leaves the
#: rest alone (a ``.git`` folder, a licence, the course's own pages).
RELEASE_PATHS = ("README.md", "Makefile", *RELEASE_FILES, "notebooks", "xailab")
#: Left out of the package's copy.
NOT_RELEASED = shutil.ignore_patterns("__pycache__", "*.py[cod]", ".ipynb_checkpoints", ".DS_Store")

STUDENT_MAKEFILE = f"""\
# `make lab`: set up .venv and open the notebooks in JupyterLab. Needs Python 3.10 or newer and a
# Unix shell (Linux, macOS, WSL); README.md gives the same steps without make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab setup

lab: setup
\t$(BIN)/jupyter lab notebooks/

setup: $(STAMP)

$(STAMP): pyproject.toml
\t$(PYTHON) -m venv $(VENV)
\t$(BIN)/pip install --upgrade pip
\t$(BIN)/pip install -e .
\t$(BIN)/{KERNEL_COMMAND}
\ttouch $(STAMP)
"""


def _title(path: Path) -> str:
    """The first line of the notebook's first Markdown cell, without its ``#``."""
    first = next((c for c in read_cells(path) if c.get("cell_type") == "markdown"), None)
    return source(first).strip().split("\n", 1)[0].lstrip("#").strip() if first else path.stem


def student_readme(notebooks: list[Path], url: str | None = None) -> str:
    """The README of a release: what it is, how to install it and open the notebooks, how exercises work."""
    listing = "\n".join(f"- `notebooks/{p.name}`: {_title(p)}" for p in notebooks)
    install = f'`%pip install "git+{url}"`' if url else "`%pip install ..` (in a copy of this folder)"
    return f"""\
# xailab: explaining neural networks, checked by hand

A workbook of Jupyter notebooks. Each one takes a research paper on saliency maps (which input
pixels a network's output depends on), states what it claims and checks the claims on data the
notebook generates itself, on a laptop CPU, with nothing to download. `xailab/` is the Python package
behind the notebooks.

## Install and open the notebooks

Python 3.10 or newer. With a Unix shell (Linux, macOS, WSL), one command:

    make lab

It creates `.venv`, installs the package, registers the Jupyter kernel "Python (xailab)" and opens
JupyterLab on `notebooks/`. Without make (Windows too), in this folder:

    python -m venv .venv
    .venv\\Scripts\\activate            (Linux, macOS: source .venv/bin/activate)
    python -m pip install -e .
    {KERNEL_COMMAND}
    jupyter lab notebooks

With conda: `conda env create -f environment.yml` (it installs the package and its kernel), then
`conda activate xailab` and `jupyter lab notebooks`.
On Colab, Binder or a JupyterHub: open a notebook and run it from the top; its first cell installs
the package into the kernel's Python where it is missing (by hand: {install}); restart the kernel
if pip asks. If Jupyter asks
for a kernel (the notebooks name one called xailab), pick the Python you installed the package
into. `device = "auto"` in the `parameters` cell uses a GPU when there is one (on Colab: Runtime →
Change runtime type).

## The notebooks

{listing}

Each starts with a `parameters` cell. Read results with `quick = False`: `quick = True` is a fast
run on stand-in models, for checking that a notebook runs, not for drawing conclusions.

## Exercises

Each notebook ends with an *Exercises* section. Write your answer where it says `# YOUR CODE HERE`
(delete the `raise NotImplementedError()` below it), then run the test cell that follows: it passes
silently or says what is wrong. The exercises are graded with [nbgrader](https://nbgrader.readthedocs.io):
the test cells are locked, and the grader runs them with further checks that you do not see, so
passing the visible ones is necessary but not enough. Do not edit the test cells; the grader puts
the original back in any case.

This folder was made by `python -m xailab.course release` from the course's instructor copy.
"""


def find_markers(folder: Path) -> list[tuple[Path, str]]:
    """(file, marker) for every file under ``folder`` that contains one of :data:`MARKERS`."""
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found += [(path, marker) for marker in MARKERS if marker.encode() in data]
    return found


def _check_release_folder(out: Path, root: Path) -> None:
    """A release replaces whole folders in ``out``: never the repository's own ones."""
    outside = out != root and root not in out.parents and out not in root.parents
    if not outside and (root / "build") not in out.parents:
        raise ValueError(f"out: {out} would overwrite the repository's own files; write a release outside "
                         f"{root} or under {root / 'build'}/ (e.g. build/release)")


def write_release(out: Path, folder: Path = NOTEBOOKS, root: Path = ROOT, url: str | None = None) -> list[Path]:
    """Write a tree a course can publish into ``out`` and return its top-level paths (:data:`RELEASE_PATHS`).

    The student versions of the notebooks with exercises (by :func:`write_student_versions`), the other
    notebooks of ``folder`` as they are, the package ``root/xailab`` without caches, :data:`RELEASE_FILES`,
    and a README (:func:`student_readme`, ``url`` the course repository's for ``pip install git+URL``) and
    Makefile for students; with ``url``, the notebooks' install cells name it in place of
    :data:`INSTALL_URL_PLACEHOLDER`. Everything is built in a scratch folder and checked first: a ValueError,
    and ``out`` untouched, when any file would hold one of :data:`MARKERS`. Then each path of
    :data:`RELEASE_PATHS` in ``out`` is replaced; nothing else there is touched."""
    out, root, folder = Path(out).resolve(), Path(root).resolve(), Path(folder).resolve()
    _check_release_folder(out, root)
    with_exercises = notebooks_with_exercises(folder)
    if with_exercises:
        _nbgrader()  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".release-", dir=out) as scratch:
        stage = Path(scratch)
        notebooks = stage / "notebooks"
        if with_exercises:
            write_student_versions(notebooks, folder)
        notebooks.mkdir(exist_ok=True)
        for path in sorted(folder.glob("*.ipynb")):
            if path in with_exercises:
                continue
            if exercise_cells(path):
                raise ValueError(f"{path.name}: nbgrader cells but no graded cell, so no student version is "
                                 "made of it, and as it is it may hold answers; give it a graded cell or "
                                 "remove its nbgrader metadata")
            shutil.copy2(path, notebooks / path.name)
        shutil.copytree(root / "xailab", stage / "xailab", ignore=NOT_RELEASED)
        for name in RELEASE_FILES:
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, stage / name)
        if url:
            for path in notebooks.glob("*.ipynb"):   # the guarded install cell: install from the course's repository
                text = path.read_text(encoding="utf-8")
                if INSTALL_URL_PLACEHOLDER in text:
                    path.write_text(text.replace(INSTALL_URL_PLACEHOLDER, url.rstrip("/")), encoding="utf-8")
        (stage / "README.md").write_text(student_readme(sorted(notebooks.glob("*.ipynb")), url), encoding="utf-8")
        (stage / "Makefile").write_text(STUDENT_MAKEFILE, encoding="utf-8")
        leaks = find_markers(stage)
        if leaks:
            where = ", ".join(f"{path.relative_to(stage)} ({marker})" for path, marker in leaks)
            raise ValueError(f"release: solution or hidden-test delimiters in {where}; nothing was written to {out}")
        for name in RELEASE_PATHS:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, target)
    return [out / name for name in RELEASE_PATHS]


# ----------------------------------------------------------------------------- submissions
def edited_cells(path: Path) -> list[str]:
    """The ``grade_id`` of every locked cell of the notebook at ``path`` (a student's submission) whose
    source no longer matches the checksum in its own metadata, i.e. the test cells the student changed.

    The checksum in a student version's metadata is computed after the hidden tests were removed, so,
    unlike ``nbgrader autograde``'s comparison with its gradebook (made before they were removed), it
    flags only real edits. This is ``nbgrader validate``'s check without running the notebook. A student
    who also rewrites the checksum is not caught, but the grade does not depend on it: autograde puts the
    gradebook's copy of every locked cell back before it runs the tests."""
    import nbformat

    _nbgrader()
    from nbgrader import utils

    nb = nbformat.read(str(path), as_version=4)
    return [cell.metadata.nbgrader["grade_id"] for cell in nb.cells
            if utils.is_locked(cell) and "checksum" in cell.metadata.nbgrader
            and utils.compute_checksum(cell) != cell.metadata.nbgrader["checksum"]]


def _describe(path: Path) -> str:
    rows = [f"{path.name}:"]
    for c in exercise_cells(path):
        role = "written" if c.written else "tests  " if c.grade else "answer "
        points = f"  ({c.points:g} point{'' if c.points == 1 else 's'}{', by hand' if c.written else ''})" \
            if c.grade else ""
        rows.append(f"  cell {c.index:3d}  {role}  {c.grade_id}{points}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xailab.course", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student versions of the notebooks with exercises")
    student.add_argument("--out", type=Path, default=ROOT / "build" / "student", help="output folder")
    student.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the source notebooks")
    release = commands.add_parser("release", help="write a student-only tree a course can publish "
                                                  "(student notebooks, package, README for students)")
    release.add_argument("--out", type=Path, default=ROOT / "build" / "release",
                         help="output folder; only the release's own paths in it are replaced")
    release.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the source notebooks")
    release.add_argument("--url", help="the published repository's URL, for `pip install git+URL` in its README")
    listing = commands.add_parser("list", help="list the exercise cells of every notebook")
    listing.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the source notebooks")
    commands.add_parser("check", help="check that nbgrader (the course extra) is installed; say how if not")
    edited = commands.add_parser("edited", help="list the locked test cells a student changed in submissions")
    edited.add_argument("submissions", type=Path, nargs="+", help="submitted notebooks")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(_describe(p) for p in notebooks_with_exercises(args.notebooks)))
        return 0
    try:
        if args.command == "check":
            missing = nbgrader_missing()
            if missing:
                raise RuntimeError(missing)
            import nbgrader

            print(f"nbgrader {nbgrader.__version__} is installed (Python {sys.version.split()[0]})")
        elif args.command == "student":
            for path in write_student_versions(args.out, args.notebooks):
                print(f"wrote {path}")
        elif args.command == "release":
            for path in write_release(args.out, args.notebooks, url=args.url):
                print(f"wrote {path}")
        elif args.command == "edited":
            changed = {path: edited_cells(path) for path in args.submissions}
            for path, ids in changed.items():
                print(f"{path}: {', '.join(ids) if ids else 'no test cell changed'}")
            return 1 if any(changed.values()) else 0
    except (RuntimeError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
