"""The assembler against docs/protocol.md 4.3, point by point, then as properties."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from bluez_jk.protocol import ACK, HEADER, Assembler
from tests.conftest import load_vector

AT = b"AT\r\n"
CELL = bytes.fromhex(load_vector("jk02_32s_v19_27_cell_info.json")["hex"])
INFO = bytes.fromhex(load_vector("jk02_32s_v19_27_device_info.json")["hex"])
SETTINGS = bytes.fromhex(load_vector("jk02_32s_v19_27_settings.json")["hex"])
FRAMES = [CELL, INFO, SETTINGS]


def feed_all(assembler: Assembler, chunks: list[bytes]) -> list[bytes]:
    return [frame for chunk in chunks for frame in assembler.feed(chunk)]


def corrupted(frame: bytes) -> bytes:
    return frame[:299] + bytes([(frame[299] + 1) & 0xFF])


def test_header_split_across_notifications() -> None:
    assembler = Assembler()
    for cut in range(1, 4):
        assert feed_all(assembler, [b"junk" + CELL[:cut], CELL[cut:]]) == [CELL]
    assert assembler.frames == 3
    assert assembler.junk_bytes == 12


def test_two_frames_in_one_notification_and_junk_between() -> None:
    assembler = Assembler()
    assert assembler.feed(AT + CELL + ACK + AT + INFO + AT + SETTINGS[:100]) == [CELL, INFO]
    assert assembler.buffered == 100
    assert assembler.feed(SETTINGS[100:]) == [SETTINGS]
    assert assembler.acks == 1
    assert assembler.junk_bytes == 3 * len(AT) + len(ACK)


def test_ack_split_across_notifications_is_counted() -> None:
    assembler = Assembler()
    assert feed_all(assembler, [CELL + ACK[:15], ACK[15:] + AT]) == [CELL]
    assert assembler.acks == 1
    assert assembler.junk_bytes == len(ACK) + len(AT)


def test_bad_checksum_is_counted_and_reported_not_raised() -> None:
    assembler = Assembler()
    assert assembler.feed(corrupted(CELL) + INFO) == [INFO]
    assert assembler.corrupt == 1
    assert assembler.errors == [
        {"type": "ProtocolError", "message": "corrupt frame dropped: bad checksum"}
    ]


def test_unknown_frame_type_is_corrupt() -> None:
    frame = bytearray(CELL)
    frame[4] = 0x04
    frame[299] = sum(frame[:299]) & 0xFF
    assembler = Assembler()
    assert assembler.feed(bytes(frame)) == []
    assert assembler.corrupt == 1
    assert "type 0x04" in assembler.errors[0]["message"]


def test_truncated_frame_followed_by_a_whole_one() -> None:
    """Re-sync at the next header, not 300 bytes later (4.3 step 3)."""
    assembler = Assembler()
    assert feed_all(assembler, [INFO[:150], CELL, SETTINGS]) == [CELL, SETTINGS]
    assert assembler.corrupt == 1


def test_header_inside_a_payload_does_not_swallow_the_real_frame() -> None:
    fake = HEADER + b"\x02" + bytes(20)  # a false header, then the real frame
    assembler = Assembler()
    assert assembler.feed(fake + CELL) == [CELL]


def test_at_flood_keeps_the_buffer_small() -> None:
    assembler = Assembler()
    for _ in range(10_000):
        assert assembler.feed(AT * 5) == []
        assert assembler.buffered <= 3
    assert assembler.junk_bytes == 10_000 * 5 * len(AT)
    assert assembler.feed(CELL) == [CELL]


def test_error_records_are_bounded() -> None:
    assembler = Assembler(max_errors=5)
    for _ in range(50):
        assembler.feed(corrupted(CELL))
    assert assembler.corrupt == 50
    assert len(assembler.errors) == 5


# --- properties ---------------------------------------------------------------------------

junk = st.binary(max_size=400).filter(lambda b: HEADER not in b)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(st.lists(st.binary(max_size=700), max_size=30))
def test_random_bytes_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    assembler = Assembler()
    for chunk in chunks:
        for frame in assembler.feed(chunk):
            assert len(frame) == 300
            assert frame[:4] == HEADER
            assert sum(frame[:299]) & 0xFF == frame[299]
        assert assembler.buffered < 300


@given(
    st.lists(st.sampled_from(FRAMES), min_size=1, max_size=5),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=40),
)
def test_random_chunking_of_valid_frames(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(frames)
    assembler = Assembler()
    assert feed_all(assembler, chunked(data, cuts)) == frames
    assert assembler.junk_bytes == 0


@given(
    st.lists(st.tuples(junk, st.sampled_from(FRAMES)), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
)
def test_valid_frames_after_junk_are_never_lost(
    pieces: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    data = b"".join(j + f for j, f in pieces)
    assembler = Assembler()
    assert feed_all(assembler, chunked(data, cuts)) == [f for _, f in pieces]
    assert assembler.buffered < 300


@settings(max_examples=max(200, settings.default.max_examples))
@given(
    st.sampled_from(FRAMES),
    st.integers(min_value=1, max_value=299),
    st.sampled_from(FRAMES),
    st.lists(st.integers(min_value=0, max_value=700), max_size=20),
)
def test_truncated_frame_then_whole_frame(
    first: bytes, keep: int, second: bytes, cuts: list[int]
) -> None:
    """A link drop mid-frame, then a whole frame: the whole one comes out (unless the 300-byte
    window starting at the truncated header happens to pass the 8-bit checksum: 4.3 step 7)."""
    data = first[:keep] + second
    window = data[:300]
    false_accept = sum(window[:299]) & 0xFF == window[299]
    frames = feed_all(Assembler(), chunked(data, cuts))
    if not false_accept:
        assert frames == [second]


@given(st.sampled_from(FRAMES), st.integers(0, 299), st.integers(1, 255))
def test_corrupted_byte_never_yields_a_wrong_frame(frame: bytes, index: int, delta: int) -> None:
    broken = bytearray(frame)
    broken[index] = (broken[index] + delta) & 0xFF
    assembler = Assembler()
    out = assembler.feed(bytes(broken))
    # One changed byte always breaks the sum8, unless it hit the header (then no frame starts).
    assert out == []
    assert assembler.buffered < 300
