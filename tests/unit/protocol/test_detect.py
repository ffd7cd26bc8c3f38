"""Layout detection helpers (docs/protocol.md 6)."""

from __future__ import annotations

import pytest

from bluez_jk.protocol import encode_frame
from bluez_jk.protocol.detect import from_content, from_sw_rev
from tests.conftest import load_vector
from tests.unit.protocol.vectors import FRAME_FILES, frame_of


@pytest.mark.parametrize(
    ("sw_rev", "expected"),
    [
        ("10.07", "JK02_24S"),
        ("8.1.2H", "JK02_24S"),
        ("3.3.0", "JK02_24S"),  # a JK04: the rule cannot tell, the content check must
        ("11.21h", "JK02_32S"),
        ("V11.288H", "JK02_32S"),
        ("19.05", "JK02_32S"),
        ("", None),
        ("abc", None),
    ],
)
def test_sw_rev_rule(sw_rev: str, expected: str | None) -> None:
    assert from_sw_rev(sw_rev) == expected


@pytest.mark.parametrize("name", [n for n in FRAME_FILES if "cell_info" in n])
def test_every_captured_cell_info_frame_tells_its_layout(name: str) -> None:
    vector = load_vector(name)
    assert from_content(frame_of(vector)) == vector["protocol_version"]


@pytest.mark.parametrize(
    "name", [n for n in FRAME_FILES if "cell_info" not in n and "jk04" not in n]
)
def test_other_jk02_frames_do_not_tell(name: str) -> None:
    assert from_content(frame_of(load_vector(name))) is None


def test_jk04_settings_are_recognised_by_their_float_mark() -> None:
    assert from_content(encode_frame("settings", "JK04", {"cell_count": 16})) == "JK04"


def test_a_frame_without_measured_cells_is_no_evidence() -> None:
    assert from_content(encode_frame("cell_info", "JK02_32S", {})) is None


def test_short_or_headerless_input_is_no_evidence() -> None:
    frame = frame_of(load_vector("jk02_32s_v19_27_cell_info.json"))
    assert from_content(frame[:299]) is None
    assert from_content(b"\x00" + frame[1:]) is None
