"""Shared fixtures. Integration fixtures (private dbus-daemon, simulator, mosquitto) live in
tests/fixtures.py and are registered here so that every test directory can use them."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

DATA = Path(__file__).parent / "data"

# A test run started in the background by a non-interactive shell (`cmd &` in a script, some CI
# runners) inherits SIGINT ignored, and an ignored signal stays ignored across exec: every
# child the Ctrl-C tests start would ignore their SIGINT (and bash could not trap it). A handled
# signal is reset to its default on exec, so handling it here gives each child the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Property tests run hypothesis's default number of examples. HYPOTHESIS_PROFILE=deep runs each
# with DEEP_EXAMPLES instead: the on-demand fuzz of the assembler and the stream decoder
# (README, "Running the tests"). Tests that ask for more examples than the default keep asking
# for at least settings.default.max_examples, so the profile reaches them too.
DEEP_EXAMPLES = 20_000
settings.register_profile(
    "deep",
    max_examples=DEEP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def load_vector(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())  # type: ignore[no-any-return]


@pytest.fixture
def data_dir() -> Path:
    return DATA


# Integration fixtures, importable from every test module through this conftest.
from tests.fixtures.blocking import no_blocking_calls_on_the_loop  # noqa: E402
from tests.fixtures.bluez import SimHandle, sim, sim_factory  # noqa: E402, F401
from tests.fixtures.mqtt import Broker, MqttProbe, mosquitto, mqtt_probe  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _no_blocking_calls_on_the_loop() -> Iterator[None]:
    """Every test, sync or async: a blocking call from bluez_jk in a thread that runs an event
    loop fails it (tests/fixtures/blocking.py says what is scanned and what is allowed)."""
    with no_blocking_calls_on_the_loop():
        yield
