"""A reader's path in a real browser: JupyterLab on localhost, headless Chromium driven by
Playwright, open 01_attribution, run all cells, switch the explorer's method, see the figure change.
And a student's: open the student version of 00_tour (made by nbgrader, `make student`), run all
cells, and see them run up to the exercise, whose graded cell fails on the unfilled stub.

Skipped, with the reason, when Chromium or Playwright is missing (`make setup-browser` installs
both; CI runs it first); the student test also needs nbgrader (`make setup-course`).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_attribution.ipynb"
STUDENT_SOURCE = ROOT / "notebooks" / "00_tour.ipynb"  # its student version is opened by a student
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium flags for a closed network, as root, with a throwaway profile.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quick_copy(nb: dict, target: Path) -> Path:
    """Write ``nb`` to ``target`` with its parameters cell switched to quick mode (what a teacher would do)."""
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]).replace("quick = False", "quick = True")
            assert "quick = True" in source, "parameters cell should set `quick = False` by default"
            cell["source"] = source
    target.write_text(json.dumps(nb), encoding="utf-8")
    return target


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on localhost serving an empty folder: yields (folder, URL of a notebook by name)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed: run `make setup-browser` (Debian package chromium)")
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: run `make setup-browser`")
    root = tmp_path / "lab"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("JupyterLab did not start on localhost within 60 s")
                time.sleep(0.5)
        yield root, lambda name: f"{base}/lab/tree/{name}?token={token}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture()
def jupyterlab(lab):
    """The URL of a quick-mode copy of 01_attribution in JupyterLab."""
    if not NOTEBOOK.exists():
        pytest.skip(f"{NOTEBOOK.name} does not exist yet")
    root, url = lab
    _quick_copy(json.loads(NOTEBOOK.read_text(encoding="utf-8")), root / NOTEBOOK.name)
    return url(NOTEBOOK.name)


def _open_and_run_all(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function(  # the kernel has started
        "() => (document.querySelector('#jp-main-statusbar') || {}).textContent?.includes('Idle')",
        timeout=90_000, polling=500)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")


def _tracebacks(page) -> list[str]:
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t.split("\n")[0]]


def _figure_sources(page) -> list[str]:
    return page.eval_on_selector_all(".jupyter-widgets img, .widget-output img", "els => els.map(e => e.src)")


def test_explorer_redraws_when_method_changes(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open_and_run_all(page, jupyterlab)
            # every code cell has run when no prompt shows [*] and the last one has a number
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                    return prompts.length && prompts.every(p => !p.textContent.includes('*'))
                        && /\\[\\d+\\]/.test(prompts[prompts.length - 1].textContent);
                }""", timeout=420_000, polling=1000)
            tracebacks = _tracebacks(page)
            assert not tracebacks, tracebacks[:1]

            method = page.locator(".widget-dropdown select").first
            method.scroll_into_view_if_needed()
            before = _figure_sources(page)
            assert before, "the explorer shows no figure after running all cells"
            page.screenshot(path=str(tmp_path / "before.png"))
            options = method.locator("option").all_inner_texts()
            current = method.input_value()
            choice = next(o for o in options if o != current)
            method.select_option(label=choice)
            page.wait_for_function(
                "old => { const now = [...document.querySelectorAll('.jupyter-widgets img, .widget-output img')]"
                ".map(e => e.src); return now.length && now.join() !== old.join(); }",
                arg=before, timeout=120_000, polling=500)
            page.screenshot(path=str(tmp_path / "after.png"))
            assert _figure_sources(page) != before
            assert (tmp_path / "before.png").read_bytes() != (tmp_path / "after.png").read_bytes()
        finally:
            browser.close()


def test_student_notebook_runs_up_to_its_exercise(lab, tmp_path):
    pytest.importorskip("nbgrader", reason="nbgrader is not installed: run `make setup-course`")
    import nbformat

    from xailab import course

    root, url = lab
    student = json.loads(nbformat.writes(course.student_version(STUDENT_SOURCE)))
    _quick_copy(student, root / STUDENT_SOURCE.name)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open_and_run_all(page, url(STUDENT_SOURCE.name))
            # Run All stops at the first error: wait until nothing is queued and the stub has raised
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                    const errors = [...document.querySelectorAll(
                        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")];
                    return prompts.length && prompts.every(p => !p.textContent.includes('*'))
                        && errors.some(e => e.textContent.includes('NotImplementedError'));
                }""", timeout=420_000, polling=1000)
            page.screenshot(path=str(tmp_path / "student.png"))
            tracebacks = _tracebacks(page)
            assert len(tracebacks) == 1 and "NotImplementedError" in tracebacks[0], \
                f"only the exercise's graded cell should fail, on the unfilled stub: {[t[:300] for t in tracebacks]}"
        finally:
            browser.close()
