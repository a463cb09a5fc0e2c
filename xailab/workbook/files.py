"""Atomic writes: every file of a run goes to ``NAME.partial.ext`` first and is renamed into place."""
from __future__ import annotations

import os
from pathlib import Path

PARTIAL = ".partial"  # infix of every file still being written: NAME.partial.ipynb


def partial(path: Path) -> Path:
    """The temporary sibling ``path`` is written to before it is renamed into place."""
    return path.with_name(path.stem + PARTIAL + path.suffix)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    tmp = partial(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
        f.write(data)
    os.replace(tmp, path)


def clean_partials(out: Path) -> None:
    """Remove leftovers of an interrupted run."""
    for leftover in out.glob(f"*{PARTIAL}.*"):
        leftover.unlink()


