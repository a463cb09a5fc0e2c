import json

import pytest

from xailab import claims


def test_check_records_and_raises(tmp_path, monkeypatch):
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv(claims.LOG_ENV, str(log))
    ok = claims.check("ROAR", "random removal is survivable", holds=True, value=0.91)
    assert ok.verdict == "reproduced" and ok.reason == ""
    explained = claims.check("ROAR", "smoothgrad beats base", holds=False, value=0.5,
                             explained_by=(True, "the removal pattern alone predicts the class"))
    assert explained.verdict == "not reproduced (explained)"
    assert explained.reason == "the removal pattern alone predicts the class"
    with pytest.raises(claims.ClaimFailed, match="did not reproduce"):
        claims.check("ROAR", "a false claim", holds=False, value={"acc": 0.25})
    with pytest.raises(claims.ClaimFailed, match="not true here"):      # the stated reason must hold
        claims.check("ROAR", "another false claim", holds=False, value=1, explained_by=(False, "a leak"))
    with pytest.raises(TypeError, match="explained_by"):
        claims.check("ROAR", "x", holds=False, explained_by=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["holds"] for r in rows] == [True, False, False, False]
    assert rows[2]["value"] == "acc=0.25" and rows[2]["values"] == [["acc", "0.25"]]
    assert rows[0]["values"] == [["", "0.91"]] and rows[1]["reason"].startswith("the removal")
