"""The state file: atomic writes, validated on load, damaged content never stops the gateway."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bluez_jk.gateway.state import STATE_FILE, StateStore, write_atomic


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.load()  # first start: no file
    store.set_overrides("jk1", {"poll_interval_s": 2.0, "adapter": None})
    store.set_discovery("jk1", ["b/config", "a/config"])
    again = StateStore(tmp_path / "state")
    again.load()
    assert again.overrides == {"jk1": {"poll_interval_s": 2.0, "adapter": None}}
    assert again.discovery == {"jk1": ["a/config", "b/config"]}
    assert sorted(os.listdir(tmp_path / "state")) == [STATE_FILE]  # no temp file left


def test_invalid_stored_values_are_dropped(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "overrides": {
                    "jk1": {"poll_interval_s": -1},
                    "jk2": {"adapter": "hci0/../x"},
                    "jk3": {"timeout_s": 5},
                },
                "discovery": {"jk1": [1, 2], "jk3": ["t"]},
            }
        )
    )
    store = StateStore(tmp_path)
    store.load()
    assert store.overrides == {"jk3": {"timeout_s": 5}}
    assert store.discovery == {"jk3": ["t"]}


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"\xff", b'{"overrides": 3}'])
def test_damaged_file_is_a_fresh_start(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    store = StateStore(tmp_path)
    store.load()
    assert store.overrides == {}


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.json"
    write_atomic(path, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.json"]
