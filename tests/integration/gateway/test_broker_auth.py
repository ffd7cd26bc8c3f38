"""The gateway against a broker that wants a password (given as password_file) over TLS."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import Broker, MqttProbe
from tests.integration.gateway.conftest import GatewayFactory
from tests.integration.gateway.support import MACS, device_spec, gateway_config, wait_online

pytestmark = pytest.mark.integration


def make_certs(folder: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.pem")  # fmt: skip


@pytest.fixture
def secure_broker(tmp_path: Path) -> Any:
    folder = tmp_path / "pki"
    folder.mkdir()
    make_certs(folder)
    passwords = folder / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "gateway", "s3cret pass"],
        check=True,
        capture_output=True,
    )
    broker = Broker(
        workdir=tmp_path / "mosquitto",
        extra_conf=(
            # Started as root, mosquitto would switch to its own user, who cannot read tmp_path.
            "user root\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"cafile {folder / 'ca.pem'}\n"
            f"certfile {folder / 'server.pem'}\n"
            f"keyfile {folder / 'server.key'}\n"
        ),
    )
    broker.start()
    try:
        yield broker, folder
    finally:
        broker.stop()


def test_password_file_and_tls(
    sim_factory: Any, secure_broker: Any, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    broker, pki = secure_broker
    sim = sim_factory([device_spec(MACS[0], "hci0")])
    (tmp_path / "mqtt-password").write_text("s3cret pass\n")
    config = gateway_config(
        broker.port, tmp_path / "state", [{"name": "jk1", "address": MACS[0], "adapter": "hci0"}]
    )
    config["mqtt"].update(
        {
            "username": "gateway",
            "password_file": str(tmp_path / "mqtt-password"),
            "tls": {"enabled": True, "ca_file": str(pki / "ca.pem")},
        }
    )
    probe = MqttProbe(broker, ["bms/#"])
    probe.client.username_pw_set("gateway", "s3cret pass")
    probe.client.tls_set(ca_certs=str(pki / "ca.pem"), cert_reqs=ssl.CERT_REQUIRED)
    with probe:
        gateway = gateway_factory(sim, config)
        wait_online(probe, ["jk1"], b"true", timeout_s=15)
        assert probe.wait_topic("bms/jk/jk1/metrics").json()["cell_count"] >= 1
        assert gateway.terminate() == 0

    # A wrong password is refused by the broker; the gateway keeps running (and reading).
    (tmp_path / "mqtt-password").write_text("wrong\n")
    started = time.time()
    refused = gateway_factory(sim, config, name="gw2")
    sim.wait_log(lambda e: e["event"] == "connected" and e["t"] > started, timeout_s=10)
    assert refused.alive()
    assert refused.terminate() == 0
    assert "mqtt connect failed" in refused.log()
    assert "broker refused the connection" in refused.log()
