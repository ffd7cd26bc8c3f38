"""Fixtures for the gateway integration tests: the simulator, a broker, the gateway process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.blocking import blocking_calls_in
from tests.fixtures.bluez import SimHandle
from tests.integration.gateway.support import GatewayProcess

GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    started: list[GatewayProcess] = []

    def factory(
        sim: SimHandle, config: dict[str, Any], name: str = "gw", **env: str
    ) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path / name, sim, config, env_extra=env).start()
        started.append(gateway)
        return gateway

    try:
        yield factory
    finally:
        for gateway in started:
            gateway.stop()
    blocked = [call for gateway in started for call in blocking_calls_in(gateway.log())]
    if blocked:
        pytest.fail(f"the gateway blocked its event loop: {blocked}")
