"""The logbook store: deduplicated by (t, code), bounded, survives a restart, and a damaged
or unreadable file never stops the gateway nor gets lost. Also the cmd/logbook payload."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluez_jk.gateway.logbook import MAX_ENTRIES, LogbookStore, LogbookUnwritable
from bluez_jk.gateway.logbook_cmd import MAX_PAYLOAD_BYTES, BadRequest, parse_request
from bluez_jk.reading import LogbookEntry

BMS: list[LogbookEntry] = [
    {"t": 0, "code": 1, "event": "boot"},
    {"t": 238, "code": 68, "event": "factory_preset_lfp"},
    {"t": 2514095, "code": 27, "event": "charge_undertemp"},
]


def _store(tmp_path: Path, max_entries: int = MAX_ENTRIES) -> LogbookStore:
    store = LogbookStore(tmp_path, "jk1", max_entries)
    store.load()
    return store


def test_three_reads_of_the_same_logbook_keep_each_entry_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = store.merge(BMS, now=100.0)
    assert [{"t": e["t"], "code": e["code"], "event": e["event"]} for e in first] == BMS
    assert store.merge(BMS, now=200.0) == []
    grown: list[LogbookEntry] = [*BMS, {"t": 2514136, "code": 28, "event": None}]
    assert store.merge(grown, now=300.0) == [
        {"t": 2514136, "code": 28, "event": None, "seen": 300.0}
    ]
    assert len(store.entries) == 4
    assert store.entries[0] == {**BMS[0], "seen": 100.0}  # first seen, not the last
    assert store.last_read == 300.0


def test_entries_survive_a_restart(tmp_path: Path) -> None:
    _store(tmp_path).merge(BMS, now=100.0)
    again = _store(tmp_path)
    assert again.entries == [{**e, "seen": 100.0} for e in BMS]
    assert again.last_read == 100.0
    assert again.merge(BMS) == []
    assert sorted(os.listdir(tmp_path)) == ["logbook-jk1.json"]  # no temp file left


def test_a_repeated_entry_within_one_frame_is_one_entry(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert len(store.merge([BMS[0], BMS[0], BMS[1]])) == 2


def test_the_store_is_bounded_and_drops_the_first_seen(tmp_path: Path) -> None:
    store = _store(tmp_path, max_entries=5)
    for n in range(8):
        store.merge([{"t": n, "code": 1, "event": "boot"}], now=float(n))
    assert [e["t"] for e in store.entries] == [3, 4, 5, 6, 7]
    assert [e["t"] for e in _store(tmp_path, max_entries=5).entries] == [3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[]", b"\xff\xfe", b'{"entries": 3}', b"[" * 100_000]
)
def test_a_damaged_file_is_set_aside_with_a_warning(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "logbook-jk1.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        store = _store(tmp_path)
    assert store.entries == []
    assert "logbook file damaged" in caplog.text
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("logbook-jk1.json.damaged-")]
    assert len(aside) == 1
    assert aside[0].read_bytes() == content  # nothing is lost
    assert store.merge(BMS) != []  # the device goes on with a fresh file
    assert len(_store(tmp_path).entries) == 3


def test_invalid_entries_are_dropped_and_the_original_kept(tmp_path: Path) -> None:
    path = tmp_path / "logbook-jk1.json"
    original = json.dumps(
        {
            "entries": [
                {"t": 5, "code": 1, "seen": 1.0},
                {"t": 9, "code": 1, "event": "Boot\n", "seen": 1.0},
                {"t": -1, "code": 1, "seen": 1.0},
                {"t": 6, "code": 0, "seen": 1.0},
                {"t": 7, "code": True, "seen": 1.0},
                {"t": 8, "code": 2},
                "x",
                {"t": 5, "code": 1, "seen": 2.0},
            ]
        }
    ).encode()
    path.write_bytes(original)
    store = _store(tmp_path)
    assert store.entries == [{"t": 5, "code": 1, "event": None, "seen": 1.0}]
    aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert [p.read_bytes() for p in aside] == [original]
    assert len(json.loads(path.read_text())["entries"]) == 1  # rewritten with what was valid


def test_an_unreadable_file_is_never_overwritten(tmp_path: Path) -> None:
    # A directory in its place: unreadable as a file whoever runs the test (root reads 0o000).
    (tmp_path / "logbook-jk1.json").mkdir()
    store = _store(tmp_path)
    assert store.unwritable is not None
    with pytest.raises(LogbookUnwritable):
        store.merge(BMS)
    assert store.entries == []
    assert (tmp_path / "logbook-jk1.json").is_dir()


@pytest.mark.parametrize(
    ("payload", "read"), [(b"", True), (b"  \n", True), (b"{}", True), (b'{"read": false}', False)]
)
def test_request_payloads(payload: bytes, read: bool) -> None:
    assert parse_request(payload) is read


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"{", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"read": 1}', "true or false"),
        (b'{"reed": true}', "unknown key"),
        (b"[" * 5000, "larger than"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "larger than"),
    ],
)
def test_bad_requests_get_a_reason(payload: bytes, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        parse_request(payload)


@given(st.binary(max_size=300))
def test_any_payload_is_a_request_or_a_bad_request(payload: bytes) -> None:
    try:
        read = parse_request(payload)
    except BadRequest as err:
        read = str(err) != ""
    assert isinstance(read, bool)
