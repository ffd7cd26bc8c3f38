"""The audit file: one JSON line per record, fsynced, rotated and bounded."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bluez_jk.gateway.audit import AuditLog, utc_timestamp


def test_each_record_is_one_json_line(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "state")
    assert audit.append({"device": "jk1", "outcome": "refused", "request": {"x": "a\nb"}})
    assert audit.append({"device": "jk1", "outcome": "verified"})
    lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["outcome"] for line in lines] == ["refused", "verified"]


def test_rotation_bounds_the_trail(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, max_bytes=1000, keep=2)
    for index in range(200):
        assert audit.append({"n": index, "pad": "x" * 40})
    files = audit.files()
    assert [p.name for p in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(p.stat().st_size <= 1000 for p in files)
    newest = [json.loads(line)["n"] for line in files[0].read_text().splitlines()]
    assert newest[-1] == 199
    # Rotated copies hold the records just before, in order, with nothing lost in between.
    older = [json.loads(line)["n"] for line in files[1].read_text().splitlines()]
    assert older[-1] + 1 == newest[0]


def test_an_unwritable_state_dir_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert AuditLog(blocker / "state").append({"n": 1}) is False


def test_timestamps_are_utc_iso_with_milliseconds() -> None:
    assert utc_timestamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_timestamp())
