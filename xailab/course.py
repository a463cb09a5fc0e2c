"""Graded exercises in nbgrader's format, and the student versions of the notebooks.

    python -m xailab.course student [--out build/student]   # what `make student` runs
    python -m xailab.course list                            # the graded cells of every notebook

A notebook's exercises live in its ``## Exercises`` section, which starts at a Markdown cell whose
first line is that heading and runs to the next level-1 or level-2 heading (or the end). The
section is self-contained: its first code cell builds everything the exercises use, so the
``parameters`` cell, the imports cell (the first code cell after it) and the section alone run
the exercises. Each exercise is a Markdown task, a solution cell (nbgrader ``solution``, answer
between ``### BEGIN SOLUTION`` and ``### END SOLUTION``) and a graded test cell (nbgrader
``grade`` with ``points``, hidden asserts between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS``). See docs/teaching.md.

Student versions are made by nbgrader's own preprocessors, the ones its ``generate_assignment``
step runs, less the three that need a course (a header file, a kernel, the gradebook). nbgrader is
the optional ``course`` extra (Python >= 3.11); it is imported only when a student version is
written, so this module and :func:`graded_cells` work without it.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXERCISES_HEADING = "## Exercises"

#: Steps of nbgrader's generate_assignment that need a course directory, a kernel or a database.
NEEDS_A_COURSE = ("IncludeHeaderFooter", "InstantiateTests", "SaveCells")


@dataclass(frozen=True)
class ExerciseCell:
    """One cell carrying nbgrader metadata."""

    index: int          # position in the notebook's cell list
    grade_id: str
    solution: bool      # the student writes here
    grade: bool         # the autograder scores this cell
    points: float       # 0 unless graded


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
                                      bool(meta.get("grade")), float(meta.get("points", 0) or 0)))
    return found


def graded_cells(path: Path) -> list[ExerciseCell]:
    """The cells of the notebook at ``path`` that nbgrader scores (``grade: true``)."""
    return [c for c in exercise_cells(path) if c.grade]


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


def _nbgrader():
    try:
        from nbgrader import converters, preprocessors
    except ImportError as exc:
        raise RuntimeError(
            "writing student versions needs nbgrader (Python >= 3.11): install the course extra with "
            "`pip install -e '.[course]'`, or run `make student`") from exc
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


def _describe(path: Path) -> str:
    rows = [f"{path.name}:"]
    for c in exercise_cells(path):
        role = "tests " if c.grade else "answer"
        points = f"  ({c.points:g} point{'' if c.points == 1 else 's'})" if c.grade else ""
        rows.append(f"  cell {c.index:3d}  {role}  {c.grade_id}{points}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xailab.course", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student versions of the notebooks with exercises")
    student.add_argument("--out", type=Path, default=ROOT / "build" / "student", help="output folder")
    student.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the source notebooks")
    listing = commands.add_parser("list", help="list the exercise cells of every notebook")
    listing.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of the source notebooks")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(_describe(p) for p in notebooks_with_exercises(args.notebooks)))
        return 0
    try:
        written = write_student_versions(args.out, args.notebooks)
    except (RuntimeError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
