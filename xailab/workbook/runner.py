"""Run every notebook headlessly and write the register's verdicts (one row per registered id).

    python -m xailab.workbook [--quick] [--only NAME ...] [-p key=value ...] [--out build]
    python -m xailab.workbook --only 02 --seeds 0,1,2 [--threads 1]      # verdict stability across seeds

Each notebook is executed with papermill (kernel ``xailab``, parameters injected into its
``parameters`` cell), then written to ``OUT/NAME.ipynb`` with an HTML rendering ``OUT/NAME.html``.
Every row a notebook records with :mod:`xailab.claims` (verdicts, premises, identities, probes) is
collected into ``OUT/claims.md`` and ``OUT/claims.json``, one row per registered id; ``OUT/index.html``
links everything with each notebook's key figure. A notebook that stops (a premise or identity that does
not hold, or an error) is reported with its cell and error, the others still run, and the exit status is 1.
A contradicted or inconclusive claim is a finding, not a failure.

By default two notebooks run at once, each in its own ``python -m xailab.workbook`` process with half the cores
as torch/OpenMP threads (one each on 2 cores) and its process pool off, the longest first when an earlier run in
OUT recorded the times: the workbook's small networks gain little from a second thread, so two one-thread
notebooks side by side keep both cores busier than one two-thread notebook after another. ``--jobs 1`` runs them
one after another in this process (with ``--threads`` threads each, else torch's default).

``--seeds 0,1,2`` runs the selected notebooks once per seed, in parallel processes (``--threads`` torch and
OpenMP threads each, the process pool of a notebook off, as many at once as the cores allow), each into
``OUT/seed-K/``, then writes ``OUT/stability.md`` and ``OUT/stability.json``: the verdict of every id at every
seed, with the ids whose verdict differs marked.

Every file is written under a temporary name and renamed into place, and ``OUT/manifest.json``
(the record of a finished run) is written last: an interrupted run never leaves a file a later
run or a reader could mistake for a finished one.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from xailab.claims import LOG_ENV, NOTEBOOK_ENV
from xailab.utils import PARTIAL, partial_path, write_atomic
from xailab.workbook.report import write_report, write_stability

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
#: Under OUT: one folder per notebook running in its own process (``--jobs`` above 1), removed once it is done.
PARTS = ".parts"


@dataclass
class Outcome:
    """What happened to one notebook."""

    name: str
    ok: bool
    seconds: float
    error: str = ""
    claims: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- arguments
def parse_parameter(text: str) -> tuple[str, object]:
    """``key=value`` with ``value`` a Python literal (``3``, ``0.5``, ``True``, ``'cnn'``);
    anything that is not a literal is taken as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"-p expects key=value with a Python name as key, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks whose stem equals, or starts with, one of ``only`` (all when None)."""
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.stem == o or nb.stem.startswith(o) for o in only)]
    unknown = [o for o in only if not any(nb.stem == o or nb.stem.startswith(o) for nb in notebooks)]
    if unknown:
        names = ", ".join(nb.stem for nb in notebooks)
        raise SystemExit(f"--only: no notebook matches {unknown}; known: {names}")
    return chosen


# ----------------------------------------------------------------------------- execution
def describe_failure(exc: BaseException) -> str:
    """One line naming the failing cell and the error."""
    cell = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        where = f"cell [{cell}]" if cell is not None else "a cell"
        return f"{where} raised {ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def read_claims(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_notebook(path: Path, out: Path, parameters: dict, kernel: str) -> Outcome:
    """Execute one notebook with papermill and render it; never raises for a notebook error."""
    import papermill
    from traitlets.config import Config

    name = path.stem
    log = partial_path(out / f"{name}.claims.jsonl")
    log.unlink(missing_ok=True)
    executed = partial_path(out / f"{name}.ipynb")
    env = {LOG_ENV: str(log), NOTEBOOK_ENV: name}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.perf_counter()
    error = ""
    try:
        # IPC sockets in a private folder: the kernel then has no TCP port to warn about, and
        # nothing is left in the notebooks' folder
        with tempfile.TemporaryDirectory(prefix="xailab-kernel-") as sockets:
            config = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "kernel")}})
            papermill.execute_notebook(
                str(path), str(executed), parameters=parameters, kernel_name=kernel,
                cwd=str(path.parent), progress_bar=False, log_output=False, config=config,
            )
    except Exception as exc:  # papermill wraps the cell error; the notebook is still written
        error = describe_failure(exc)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - start
    claims = read_claims(log)
    log.unlink(missing_ok=True)
    if executed.exists():
        render_html(executed, out / f"{name}.html")
        os.replace(executed, out / f"{name}.ipynb")
    return Outcome(name=name, ok=not error, seconds=seconds, error=error, claims=claims)


def clean_partials(out: Path) -> None:
    """Remove leftovers of an interrupted run (files still named ``*.partial*``)."""
    for leftover in out.glob(f"*{PARTIAL}*"):
        leftover.unlink()


def render_html(notebook: Path, target: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    write_atomic(target, body)


# ----------------------------------------------------------------------------- entry point
def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m xailab.workbook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized runs (sets the parameter quick=True)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (name or prefix, e.g. 02)")
    parser.add_argument("-p", dest="params", action="append", default=[], type=parse_parameter,
                        metavar="KEY=VALUE", help="inject a parameter into every notebook (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="where results go (default: build/)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    parser.add_argument("--kernel", default="xailab", help="Jupyter kernel name (default: xailab)")
    parser.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",") if s.strip()], metavar="0,1,2",
                        help="run once per seed, in parallel, and write the verdict-stability table")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch/OpenMP threads of each kernel (default: the cores over the jobs; with --seeds 1)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="notebooks (with --seeds: seeds) run at once (default: 2, or the cores over --threads)")
    args = parser.parse_args(argv)
    for name in ("threads", "jobs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def plan(jobs: int | None, threads: int | None, notebooks: int, cores: int | None = None) -> tuple[int, int | None]:
    """(notebooks at once, threads of each): by default two at once sharing the cores; with only ``threads``
    given, as many at once as the cores allow. ``None`` threads: torch's default (a run of one at a time)."""
    cores = cores or os.cpu_count() or 1
    if jobs is None:
        jobs = min(2, cores) if threads is None else max(1, cores // threads)
    jobs = max(1, min(jobs, notebooks))
    if threads is None and jobs > 1:
        threads = max(1, cores // jobs)
    return jobs, threads


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    # absolute, because each kernel runs in its notebook's folder and logs claims to a path under out
    args.out = args.out.resolve()
    notebooks = select(sorted(args.notebooks.glob("*.ipynb")), args.only)
    if not notebooks:
        print(f"no notebooks in {args.notebooks}")
        return 0
    if args.seeds:
        return stability(args, notebooks)
    jobs, threads = plan(args.jobs, args.threads, len(notebooks))
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)   # the kernels inherit it
    parameters = dict(args.params)
    parameters["quick"] = bool(args.quick or parameters.get("quick", False))
    args.out.mkdir(parents=True, exist_ok=True)
    clean_partials(args.out)
    earlier = previous_seconds(args.out)
    (args.out / "manifest.json").unlink(missing_ok=True)  # the old run is no longer "finished"

    try:
        if jobs > 1:
            outcomes = run_parallel(args, notebooks, parameters, jobs, threads, earlier)
        else:
            outcomes = []
            for i, nb in enumerate(notebooks, 1):
                step = f"[{i}/{len(notebooks)}] {nb.stem}"
                # two lines, because the kernel may print its own warnings while it runs
                print(f"{step} running", flush=True)
                outcomes.append(run_notebook(nb, args.out, parameters, args.kernel))
                print_outcome(step, outcomes[-1])
    except KeyboardInterrupt:
        clean_partials(args.out)
        shutil.rmtree(args.out / PARTS, ignore_errors=True)   # the notebooks still running in their processes
        print("\ninterrupted: no report written; finished notebooks are in", args.out)
        return 130
    write_report(outcomes, args.out, parameters["quick"], parameters)
    failed = [o.name for o in outcomes if not o.ok]
    print(f"claims: {args.out / 'claims.md'}   report: {args.out / 'index.html'}")
    if failed:
        print("stopped notebooks:", ", ".join(failed))
    return 1 if failed else 0


def print_outcome(step: str, outcome: Outcome) -> None:
    verdicts = [c["verdict"] for c in outcome.claims if c.get("record") == "verdict"]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts)) or "no rows"
    print(f"{step} {'ok' if outcome.ok else 'STOPPED'} ({outcome.seconds:.1f} s; {counts})", flush=True)
    if not outcome.ok:
        print(f"    {outcome.error}", flush=True)


def finished_notebooks(out: Path) -> list[dict]:
    """The notebooks of the finished run recorded in ``out/manifest.json`` (none when there is none)."""
    try:
        return list(json.loads((out / "manifest.json").read_text(encoding="utf-8"))["notebooks"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def previous_seconds(out: Path) -> dict[str, float]:
    return {n["name"]: n["seconds"] for n in finished_notebooks(out) if "name" in n and "seconds" in n}


def longest_first(notebooks: list[Path], earlier: dict[str, float]) -> list[Path]:
    """The notebooks by their time in the earlier run, longest first; those never timed after, in their order."""
    return sorted(notebooks, key=lambda nb: -earlier.get(nb.stem, 0.0))


def run_workbook_process(args, only: list[str], out: Path, threads: int, params: dict) -> int:
    """``python -m xailab.workbook --only ONLY --out OUT --jobs 1`` with ``threads`` OpenMP threads and ``params``
    injected, its output in ``OUT/run.log``; its exit status."""
    cmd = [sys.executable, "-m", "xailab.workbook", "--only", *only, "--out", str(out), "--jobs", "1",
           "--threads", str(threads), "--notebooks", str(args.notebooks), "--kernel", args.kernel,
           *[a for k, v in params.items() for a in ("-p", f"{k}={v!r}")]]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(out / "run.log", "w", encoding="utf-8") as log:
        return subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_parallel(args, notebooks: list[Path], parameters: dict, jobs: int, threads: int,
                 earlier: dict[str, float]) -> list[Outcome]:
    """Run ``notebooks`` ``jobs`` at a time, each in its own workbook process (a kernel takes its claims log and
    thread count from its process's environment, which threads of one process would share), the longest of the
    earlier run first; the outcomes in the notebooks' order."""
    order = longest_first(notebooks, earlier)
    parts = args.out / PARTS
    params = {"workers": 1, **parameters}   # the notebook's own process pool would oversubscribe the cores
    done: list[str] = []

    def one(nb: Path) -> Outcome:
        out = parts / nb.stem
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        code = run_workbook_process(args, [nb.stem], out, threads, params)
        recorded = [n for n in finished_notebooks(out) if n.get("name") == nb.stem]
        if recorded:
            outcome = Outcome(**recorded[0])
        else:
            outcome = Outcome(nb.stem, ok=False, seconds=time.perf_counter() - start,
                              error=f"its workbook process exited with status {code} and no report: see {out / 'run.log'}")
        for ext in ("ipynb", "html"):
            if (out / f"{nb.stem}.{ext}").exists():
                os.replace(out / f"{nb.stem}.{ext}", args.out / f"{nb.stem}.{ext}")
        if recorded:
            shutil.rmtree(out, ignore_errors=True)
        done.append(nb.stem)
        print_outcome(f"[{len(done)}/{len(notebooks)}] {nb.stem}", outcome)
        return outcome

    print(f"{len(notebooks)} notebook(s), {jobs} at once, {threads} thread(s) each", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        outcomes = {o.name: o for o in pool.map(one, order)}
    if parts.exists() and not any(parts.iterdir()):
        parts.rmdir()
    return [outcomes[nb.stem] for nb in notebooks]


def stability(args, notebooks: list[Path]) -> int:
    """Run ``notebooks`` once per seed of ``args.seeds`` in parallel processes, then tabulate every verdict."""
    threads = args.threads or 1
    jobs = args.jobs or max(1, (os.cpu_count() or 1) // threads)
    only = [nb.stem for nb in notebooks]

    def one(seed: int) -> int:
        out = args.out / f"seed-{seed}"
        out.mkdir(parents=True, exist_ok=True)
        params = {"seed": seed, "workers": 1, **dict(args.params), **({"quick": True} if args.quick else {})}
        code = run_workbook_process(args, only, out, threads, params)
        print(f"seed {seed}: {'ok' if code == 0 else f'exit {code}'} (log: {out / 'run.log'})", flush=True)
        return code

    print(f"{len(args.seeds)} seeds x {', '.join(only)}: {jobs} at once, {threads} thread(s) each", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(one, args.seeds))
    moved = write_stability(args.out, args.seeds, threads)
    print(f"stability: {args.out / 'stability.md'} ({len(moved)} id(s) whose verdict differs across seeds)")
    return 1 if any(codes) or moved else 0
