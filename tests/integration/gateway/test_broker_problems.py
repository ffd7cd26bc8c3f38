"""A broker the gateway cannot use is never silent: wrong port, untrusted CA, host name
mismatch, a broker that hangs up before CONNACK, a refused login. Each is a warning with host,
port, reason and next retry, the systemd STATUS line, and `--check-config --probe`'s answer."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluez_jk.gateway.config import MqttConfig, TlsConfig
from bluez_jk.gateway.mqtt import MqttLink
from bluez_jk.gateway.probe import probe_broker
from tests.fixtures.mqtt import Broker, FakeBroker, free_port
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import MACS, device_spec, gateway_config
from tests.integration.gateway.test_broker_auth import secure_broker  # noqa: F401

pytestmark = pytest.mark.integration


async def first_problem(config: MqttConfig, timeout_s: float = 15.0) -> str:
    link = MqttLink(config, client_id="problem-test", will_topic="bms/jk/x/online")
    seen = asyncio.Event()
    link.on_health = seen.set
    link.start()
    try:
        async with asyncio.timeout(timeout_s):
            while link.problem is None:
                seen.clear()
                await seen.wait()
        assert not link.connected
        return link.problem
    finally:
        await link.close(1.0)


def hang_up(conn: socket.socket) -> None:
    """Close after reading CONNECT, like a broker refusing a client's will."""
    conn.recv(1024)


@pytest.fixture
def hang_up_broker() -> Iterator[FakeBroker]:
    broker = FakeBroker(hang_up)
    try:
        yield broker
    finally:
        broker.close()


async def test_closed_port_warns_with_host_port_reason_and_next_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    caplog.set_level(logging.WARNING, logger="bluez_jk.gateway.mqtt")
    problem = await first_problem(MqttConfig(port=port))
    assert "connection refused" in problem
    lines = [r.getMessage() for r in caplog.records if "mqtt connect failed" in r.getMessage()]
    assert lines, caplog.text
    assert f"host=127.0.0.1 port={port}" in lines[0]
    assert "reason=connection refused" in lines[0]
    assert "check mqtt.host and mqtt.port" in lines[0]
    assert "next_retry_s=1" in lines[0]
    assert caplog.records[0].levelno == logging.WARNING


async def test_failures_are_rate_limited_per_link(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bluez_jk.gateway.mqtt")
    link = MqttLink(MqttConfig(port=1), client_id="t", will_topic="b/online")
    for _ in range(20):
        link._on_connect_failed("connection refused")
    assert link.failed_attempts == 20
    assert len(caplog.records) == 1  # the same reason again within a minute: counted, not logged
    link._on_connect_failed("TLS certificate not accepted")  # a new reason is logged at once
    assert len(caplog.records) == 2
    link._logged_at -= 61  # a minute later the same reason is reported again, with a count
    link._on_connect_failed("TLS certificate not accepted")
    assert len(caplog.records) == 3
    assert "failed_attempts=22" in caplog.records[-1].getMessage()


async def test_tls_untrusted_ca_and_host_name_mismatch(secure_broker: Any, tmp_path: Path) -> None:  # noqa: F811
    broker, pki = secure_broker
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=other-ca", "-keyout", "k.pem", "-out", "ca.pem"],
        cwd=other, check=True, capture_output=True,
    )  # fmt: skip
    untrusted = MqttConfig(
        port=broker.port, tls=TlsConfig(enabled=True, ca_file=str(other / "ca.pem"))
    )
    problem = await first_problem(untrusted)
    assert "TLS certificate not accepted" in problem
    assert "mqtt.tls.ca_file" in problem
    # The certificate is for 127.0.0.1 only: "localhost" is a name mismatch.
    mismatch = MqttConfig(
        host="localhost", port=broker.port, tls=TlsConfig(enabled=True, ca_file=str(pki / "ca.pem"))
    )
    problem = await first_problem(mismatch)
    assert "TLS certificate not accepted" in problem
    assert "mqtt.host" in problem
    # probe_broker waits on the network (it is the CLI's, run before any loop): off the loop.
    probed = await asyncio.to_thread(probe_broker, untrusted, will_topic="bms/gateway/online")
    assert probed is not None
    assert "TLS certificate not accepted" in probed
    # The right CA but no password: the broker refuses the login, also reported.
    refused = MqttConfig(port=broker.port, tls=TlsConfig(enabled=True, ca_file=str(pki / "ca.pem")))
    assert "refused" in await first_problem(refused)


async def test_broker_hanging_up_before_connack(hang_up_broker: FakeBroker) -> None:
    problem = await first_problem(MqttConfig(port=hang_up_broker.port))
    assert "closed the connection before accepting it" in problem
    answer = await asyncio.to_thread(
        probe_broker,
        MqttConfig(port=hang_up_broker.port),
        will_topic="bms/gateway/online",
        timeout_s=5,
    )
    assert answer is not None
    assert "will topic bms/gateway/online" in answer


def run_check(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bluez_jk.cli.gateway", "--check-config", "--probe",
         "--config", str(config_path), *extra],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_check_config_probe_tries_the_broker(mosquitto: Broker, tmp_path: Path) -> None:
    devices = [{"name": "jk1", "address": MACS[0]}]
    good = tmp_path / "good.json"
    good.write_text(json.dumps(gateway_config(mosquitto.port, tmp_path / "s", devices)))
    done = run_check(good)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["probe"] == {"ok": True, "error": None}
    assert "connected" in done.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(gateway_config(free_port(), tmp_path / "s", devices)))
    done = run_check(bad)
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["ok"] is False
    assert "connection refused" in summary["probe"]["error"]
    assert "check mqtt.host and mqtt.port" in done.stderr


def test_gateway_status_line_reports_the_broker(
    sim_factory: Any, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """The STATUS= that `systemctl status` shows says the broker is unreachable, and why."""
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(20)
    port = free_port()
    config = gateway_config(
        port, tmp_path / "state", [{"name": "jk1", "address": MACS[0], "adapter": "hci0"}]
    )
    gateway = gateway_factory(sim, config, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    statuses: list[str] = []
    try:
        while not any("NOT CONNECTED" in s for s in statuses):
            datagram = notify.recv(4096).decode()
            statuses += [f for f in datagram.split("\n") if f.startswith("STATUS=")]
    finally:
        notify.close()
    line = next(s for s in statuses if "NOT CONNECTED" in s)
    assert f"127.0.0.1:{port}" in line
    assert "connection refused" in line
    assert gateway.alive()
    assert gateway.terminate() == 0
    log = gateway.log()
    assert "mqtt connect failed client=" in log
    assert f"port={port}" in log
