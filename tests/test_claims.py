import json

import pytest

from xailab.workbook import claims


def test_check_records_and_raises(tmp_path, monkeypatch):
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv(claims.LOG_ENV, str(log))
    ok = claims.check("ROAR", "random removal is survivable", holds=True, value=0.91)
    assert ok.verdict == "reproduced"
    honest = claims.check("ROAR", "smoothgrad beats base", holds=False, value=0.5, honest=True)
    assert honest.verdict.startswith("not reproduced")
    with pytest.raises(claims.ClaimFailed, match="did not reproduce"):
        claims.check("ROAR", "a false claim", holds=False, value={"acc": 0.25})
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["holds"] for r in rows] == [True, False, False]
    assert rows[2]["value"] == "acc=0.25" and rows[2]["values"] == [["acc", "0.25"]]
    assert rows[0]["values"] == [["", "0.91"]]
