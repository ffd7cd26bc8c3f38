"""Decoded frames carry exactly the pinned keys (tests/unit/protocol/published_keys.py), for
every captured frame: check_values only proves that the expected keys are there."""

from __future__ import annotations

import pytest

from bluez_jk.protocol import StreamDecoder, decode_frame
from tests.conftest import load_vector
from tests.unit.protocol.published_keys import FRAME_KEYS
from tests.unit.protocol.vectors import FRAME_FILES, frame_of


@pytest.mark.parametrize("name", FRAME_FILES)
def test_decoded_frame_has_exactly_the_pinned_keys(name: str) -> None:
    vector = load_vector(name)
    decoded = decode_frame(frame_of(vector), vector["protocol_version"])
    pinned = FRAME_KEYS[(vector["protocol_version"], decoded.kind)]
    assert sorted(set(decoded.values) - pinned) == [], "keys not pinned (new or renamed)"
    assert sorted(pinned - set(decoded.values)) == [], "pinned keys missing (lost or renamed)"


@pytest.mark.parametrize("name", FRAME_FILES)
def test_the_stream_decoder_publishes_the_same_keys(name: str) -> None:
    vector = load_vector(name)
    stream = StreamDecoder(vector["protocol_version"])
    (decoded,) = stream.feed(frame_of(vector))
    assert set(decoded.values) == FRAME_KEYS[(vector["protocol_version"], decoded.kind)]


def test_every_pinned_kind_has_a_capture() -> None:
    seen = set()
    for name in FRAME_FILES:
        vector = load_vector(name)
        kind = decode_frame(frame_of(vector), vector["protocol_version"]).kind
        seen.add((vector["protocol_version"], kind))
    assert seen == set(FRAME_KEYS)
