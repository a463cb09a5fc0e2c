"""The workbook runner on two tiny notebooks: one that reproduces its claim, one that fails."""
from __future__ import annotations

import json

import nbformat
import pytest

from xailab import utils
from xailab.workbook import report, runner as workbook


def _notebook(path, body: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("quick = False\nseed = 0\ndevice = 'auto'\nscale = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "xailab", "display_name": "xailab", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture()
def books(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    _notebook(src / "10_good.ipynb",
              "from xailab import claims\n"
              "claims.check('ROAR', 'quick is injected', holds=quick, value=scale * 2)\n")
    _notebook(src / "20_bad.ipynb",
              "from xailab import claims\n"
              "claims.check('SPADE', 'an impossible claim', holds=False, value=seed)\n")
    return src


def test_runner_reports_claims_and_failures(books, tmp_path, capsys):
    out = tmp_path / "build"
    code = workbook.main(["--quick", "-p", "scale=21", "--notebooks", str(books), "--out", str(out)])
    assert code == 1  # one notebook fails
    printed = capsys.readouterr().out
    assert "[1/2] 10_good ok" in printed and "[2/2] 20_bad FAILED" in printed
    assert "ClaimFailed" in printed  # the failing cell's error is named
    assert "without encryption" not in capsys.readouterr().err  # kernels over IPC: a quiet run
    assert not list(books.glob("kernel-ipc*"))                   # and no sockets left beside the notebooks

    claims = json.loads((out / "claims.json").read_text())
    assert [(c["notebook"], c["holds"], c["value"]) for c in claims] == [
        ("10_good", True, "42"), ("20_bad", False, "0")]
    table = (out / "claims.md").read_text()
    assert "| ROAR | quick is injected | 42 | reproduced | 10_good |" in table
    assert "| ROAR | 1 | 1 | 0 | 0 |" in table and "| SPADE | 1 | 0 | 0 | 2 |" in table   # summary first
    assert table.index("| paper | claims |") < table.index("| paper | claim | measured |")
    index = (out / "index.html").read_text()
    assert "10_good.html" in index and "20_bad.html" in index
    for name in ("10_good", "20_bad"):
        assert (out / f"{name}.ipynb").exists() and (out / f"{name}.html").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [n["ok"] for n in manifest["notebooks"]] == [True, False]
    assert not list(out.glob("*.partial.*"))


def test_only_selects_by_prefix_and_rejects_unknown(books, tmp_path):
    out = tmp_path / "build"
    assert workbook.main(["--quick", "--only", "10", "--notebooks", str(books), "--out", str(out)]) == 0
    assert [c["notebook"] for c in json.loads((out / "claims.json").read_text())] == ["10_good"]
    with pytest.raises(SystemExit, match="no notebook matches"):
        workbook.main(["--only", "99", "--notebooks", str(books), "--out", str(out)])


def test_parse_parameter_takes_literals_or_strings():
    assert workbook.parse_parameter("n=3") == ("n", 3)
    assert workbook.parse_parameter("quick=True") == ("quick", True)
    assert workbook.parse_parameter("model=resnet") == ("model", "resnet")
    with pytest.raises(Exception, match="key=value"):
        workbook.parse_parameter("novalue")


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "claims.md"

    class Boom(Exception):
        pass

    def failing_replace(src, dst):
        raise Boom

    monkeypatch.setattr(utils.os, "replace", failing_replace)
    with pytest.raises(Boom):
        utils.write_atomic(target, "half")
    assert not target.exists()
    assert not list(tmp_path.iterdir())            # the partial file went with the error
    (tmp_path / "x.partial.ipynb").write_text("left by a killed run")
    workbook.clean_partials(tmp_path)
    assert not list(tmp_path.iterdir())


def test_relative_out_still_collects_claims(books, tmp_path, monkeypatch):
    """Kernels run in the notebooks' folder: a relative --out must not lose the claims log."""
    monkeypatch.chdir(tmp_path)
    assert workbook.main(["--quick", "--only", "10", "--notebooks", str(books), "--out", "rel/build"]) == 0
    claims = json.loads((tmp_path / "rel" / "build" / "claims.json").read_text())
    assert [c["claim"] for c in claims] == ["quick is injected"]


def test_report_shows_each_measured_value_on_its_own_line():
    outcome = workbook.Outcome("01_x", True, 1.0, claims=[{
        "paper": "P", "claim": "c", "value": "a=1, b=2", "values": [["a", "1"], ["b", "2"]], "holds": True,
        "verdict": "reproduced"}])
    md = report.claims_markdown([outcome], quick=False)
    assert "| P | c | a: 1<br>b: 2 | reproduced | 01_x |" in md
    assert report.summary([outcome]) == [dict(paper="P", claims=1, reproduced=1, explained=0, failed=0)]
