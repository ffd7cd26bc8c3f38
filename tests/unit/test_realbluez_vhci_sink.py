"""The rig's `VhciSink` (tests/realbluez/peer.py): a packet the kernel refuses because the
controller is down is dropped and counted, as a real driver drops it; any other write error
still surfaces. Before it, bumble's asyncio pipe closed on the first refusal and cut the
controller off from the kernel for the rest of the VM run."""

from __future__ import annotations

import errno
import os

import pytest

pytest.importorskip("bumble")

from tests.realbluez.peer import VhciSink


def test_a_refused_packet_is_dropped_and_the_next_one_goes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    try:
        sink = VhciSink(write_end)
        real_write = os.write
        refuse = {"next": True}

        def kernel(fd: int, data: bytes) -> int:
            if refuse["next"]:
                refuse["next"] = False
                raise OSError(errno.ENXIO, "No such device or address")
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", kernel)
        sink.on_packet(b"\x04\x3e\x01\x00")  # an LE meta event while the controller is down
        sink.on_packet(b"\x04\x0e\x01\x00")
        assert sink.dropped == 1
        assert os.read(read_end, 16) == b"\x04\x0e\x01\x00"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_other_write_errors_are_not_swallowed() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    sink = VhciSink(write_end)
    try:
        with pytest.raises(BrokenPipeError):
            sink.on_packet(b"\x04")
    finally:
        os.close(write_end)
    assert sink.dropped == 0
