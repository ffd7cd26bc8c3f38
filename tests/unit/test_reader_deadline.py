"""What a read reports when its deadline passes while a subscription call is out: BlueZ
holding StartNotify while it pairs (docs/bluez.md fact 16), or, for a call sent just before
the time ran out, what went wrong earlier in the read."""

from __future__ import annotations

import time

from bluez_jk.errors import AuthenticationRequired, Disconnected, JkError
from bluez_jk.reader import Reader, ReadRequest, _Session, handshake


def _deadline_error(held_s: float, last_error: JkError | None) -> JkError:
    session = _Session(
        Reader(), ReadRequest(name="jk1", address="C8:47:80:37:02:E8"), handshake, "start"
    )
    session.subscribing = True
    session.subscribing_since = time.monotonic() - held_s
    session.last_error = last_error
    return session._deadline_error()


def test_a_subscription_held_for_seconds_is_taken_for_pairing() -> None:
    dropped = Disconnected("the link dropped", stage="collect")
    assert isinstance(_deadline_error(3.0, dropped), AuthenticationRequired)
    assert isinstance(_deadline_error(3.0, None), AuthenticationRequired)


def test_a_subscription_sent_just_before_the_deadline_reports_the_earlier_trouble() -> None:
    dropped = Disconnected("the link dropped", stage="collect")
    assert _deadline_error(0.05, dropped) is dropped
    # Nothing went wrong before: the unanswered call is all there is to report.
    assert isinstance(_deadline_error(0.05, None), AuthenticationRequired)


def test_no_subscription_out_is_not_taken_for_pairing() -> None:
    session = _Session(
        Reader(), ReadRequest(name="jk1", address="C8:47:80:37:02:E8"), handshake, "start"
    )
    dropped = Disconnected("the link dropped", stage="collect")
    session.last_error = dropped
    assert session._deadline_error() is dropped
