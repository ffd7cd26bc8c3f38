"""Fixtures for the integrations tests (helpers live in support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.mqtt import free_port
from tests.integration.integrations.support import Influx


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[Influx]:
    """A private influxd on free loopback ports (never 8086), its data in tmp_path."""
    workdir = tmp_path / "influxdb"
    workdir.mkdir()
    server = Influx(workdir=workdir, http_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
