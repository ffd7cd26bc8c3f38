"""The shipped Node-RED flow, run by a real Node-RED (pinned, from the npm registry, cached).

Node-RED gets the flow exactly as shipped except its one setting, the broker, and talks only
MQTT: the Readings come from the real gateway on the simulator when both are in the tree,
otherwise the test publishes them as the gateway would (raw + metrics + retained online).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluez_jk.gateway.metrics import to_metrics
from tests.fixtures.mqtt import Broker, MqttProbe
from tests.fixtures.waits import deadline_s
from tests.integration.integrations.support import REPO, NodeRed, shipped_flow, skip_if_asked
from tests.unit.integrations.readings import vector_reading

pytestmark = [pytest.mark.integration, pytest.mark.nodered, skip_if_asked]


READINESS_PROBE = "readiness-probe"


def wait_subscribed(server: NodeRed, broker: Broker, token: str | None = None) -> None:
    """Node-RED logs "Connected to broker" at CONNACK, before its flow has subscribed: what a
    test publishes right then reaches no subscriber (seen beside a CPU hog: every point of
    test_history_is_bounded_by_time_and_slots_not_by_count lost). So a device of its own,
    never one a test reads, gets raw, metrics and online, again every second, until the flow
    shows all three (bounded)."""

    def get(path: str) -> Any:
        status, body = server.request(f"/jk/{READINESS_PROBE}/{path}", token=token)
        return body if status == 200 else None

    deadline = time.monotonic() + deadline_s(60)
    with MqttProbe(broker, []) as client:
        while True:
            reading = vector_reading("jk02_32s_v19_27", last_update=time.time())
            client.publish(f"bms/jk/{READINESS_PROBE}/raw", json.dumps(reading))
            client.publish(f"bms/jk/{READINESS_PROBE}/metrics", json.dumps(to_metrics(reading)))
            client.publish(f"bms/jk/{READINESS_PROBE}/online", "true")
            next_try = time.monotonic() + 1.0
            while time.monotonic() < next_try:
                latest, history = get("latest"), get("history48h")
                if latest and latest["online"] is True and history and history["count"] >= 1:
                    return
                time.sleep(0.1)  # polling an HTTP endpoint; bounded by the deadline below
            assert time.monotonic() < deadline, "Node-RED's flow never got a probe message"


@pytest.fixture
def node_red(mosquitto: Broker, tmp_path: Path) -> Iterator[NodeRed]:
    server = NodeRed(tmp_path / "node-red", shipped_flow(mosquitto.host, mosquitto.port))
    server.start()
    try:
        wait_subscribed(server, mosquitto)
        yield server
    finally:
        server.stop()


def assert_clean_log(server: NodeRed) -> None:
    log = server.log()
    assert "Waiting for missing types" not in log, log
    assert "unknown type" not in log.lower(), log
    assert "[error]" not in log, log
    assert "[ui-base:JK-BMS] Node-RED Dashboard 2.0" in log, log


def gateway_in_tree() -> bool:
    return (
        importlib.util.find_spec("bluez_jk.cli.gateway") is not None
        and (REPO / "tests" / "fixtures" / "bluez.py").exists()
    )


def test_flow_uses_dashboard_2_and_never_ble() -> None:
    flow = json.loads((REPO / "config" / "node-red" / "jk-bms-flow.json").read_text())
    types = {n["type"] for n in flow}
    assert {"ui-base", "ui-page", "ui-gauge", "ui-chart", "ui-button", "ui-text"} <= types
    assert not {t for t in types if t.startswith("ui_")}, "Dashboard 1 nodes are unmaintained"
    assert not {t for t in types if "ble" in t.lower() or "bluetooth" in t.lower()}
    topics = {n["topic"] for n in flow if n["type"] == "mqtt in"}
    assert topics == {"bms/jk/+/raw", "bms/jk/+/metrics", "bms/jk/+/online", "bms/gateway/online"}
    charts = [n for n in flow if n["type"] == "ui-chart" and n["xAxisType"] == "time"]
    assert charts
    assert all(float(c["removeOlder"]) * float(c["removeOlderUnit"]) == 48 * 3600 for c in charts)


def publish_poll(gateway: MqttProbe, reading: Any) -> None:
    """What the gateway publishes after one successful read."""
    gateway.publish("bms/jk/jk1/raw", json.dumps(reading))
    gateway.publish("bms/jk/jk1/metrics", json.dumps(to_metrics(reading)))


def test_latest_and_history_follow_each_poll(mosquitto: Broker, node_red: NodeRed) -> None:
    status, body = node_red.request("/jk/jk1/latest")
    assert (status, body) == (404, {"error": "no data for jk1"})
    vectors = ["jk02_32s_v19_05", "jk02_32s_v19_27", "jk02_32s_v19_05", "jk02_32s_v11_48"]
    start = time.time()
    with MqttProbe(mosquitto, ["bms/jk/+/cmd/read"]) as gateway:
        gateway.publish("bms/gateway/online", "true", retain=True)
        gateway.publish("bms/jk/jk1/online", "true", retain=True)
        for poll, vector in enumerate(vectors, start=1):
            reading = vector_reading(vector, last_update=round(start + poll * 10, 3))
            publish_poll(gateway, reading)
            history = node_red.wait_json(
                "/jk/jk1/history48h",
                lambda h, n=poll: h["count"] == n,  # type: ignore[misc]
            )
            latest = node_red.wait_json(
                "/jk/jk1/latest",
                lambda body, r=reading: (
                    body["raw"]["status"]["last_update"]  # type: ignore[misc]
                    == r["status"]["last_update"]
                ),
            )
            assert latest["raw"] == json.loads(json.dumps(reading))
            assert latest["metrics"] == to_metrics(reading)
            assert latest["online"] is True
            newest = history["points"][-1]
            assert newest["ts"] == to_metrics(reading)["ts"]
            assert newest["soc"] == to_metrics(reading)["soc"]
            assert set(newest) <= set(to_metrics(reading))

        # The retained `online` drives the indicator and the latest answer.
        gateway.publish("bms/jk/jk1/online", "false", retain=True)
        node_red.wait_json("/jk/jk1/latest", lambda body: body["online"] is False)

        # A failed read updates `raw` (with its error) but adds no history point.
        failed = vector_reading("jk02_32s_v19_05", last_update=round(start + 99, 3))
        failed["error"] = {
            "type": "Timeout",
            "message": "no answer",
            "stage": "collect",
            "dbus_error": None,
        }
        gateway.publish("bms/jk/jk1/raw", json.dumps(failed))
        latest = node_red.wait_json("/jk/jk1/latest", lambda body: body["raw"]["error"] is not None)
        assert node_red.request("/jk/jk1/history48h")[1]["count"] == len(vectors)

        # The refresh path publishes cmd/read for the gateway; Node-RED itself never reads BLE.
        status, body = node_red.request("/jk/jk1/read", method="POST")
        assert (status, body) == (202, {"requested": "jk1"})
        gateway.wait_topic("bms/jk/jk1/cmd/read", timeout_s=10)

    status, page = node_red.request("/jk-dashboard/jk-bms")
    assert status == 200
    assert "<html" in str(page).lower()
    assert node_red.request("/jk/nope/history48h")[0] == 404
    assert_clean_log(node_red)


def test_history_drops_points_older_than_48_hours(mosquitto: Broker, node_red: NodeRed) -> None:
    base = 1771000000.0
    with MqttProbe(mosquitto, []) as gateway:
        for offset_h in (0, 24, 47, 49, 60):
            reading = vector_reading("jk02_32s_v19_27", last_update=base + offset_h * 3600)
            gateway.publish("bms/jk/jk1/metrics", json.dumps(to_metrics(reading)))
        history = node_red.wait_json(
            "/jk/jk1/history48h",
            lambda h: h["points"] and h["points"][-1]["ts"] == base + 60 * 3600,
        )
    # Kept: everything within 48 h of the newest point (60 h): 24 h, 47 h, 49 h, 60 h.
    assert [round((p["ts"] - base) / 3600) for p in history["points"]] == [24, 47, 49, 60]
    assert_clean_log(node_red)


def test_history_is_bounded_by_time_and_slots_not_by_count(
    mosquitto: Broker, node_red: NodeRed
) -> None:
    """A 2 s poll for 48 h would be 86,400 points: the history keeps one per 10 s slot (the
    newest), so memory is bounded while the window stays 48 h (a 20,000-point cap held 11 h)."""
    base = 1771000000.0
    sent = [base + 2 * i for i in range(30)]  # 60 s at one read every 2 s
    sent.append(base + 47.5 * 3600)  # and one 47.5 h later: the first points must stay
    with MqttProbe(mosquitto, []) as gateway:
        for ts in sent:
            reading = vector_reading("jk02_32s_v19_27", last_update=ts)
            gateway.publish("bms/jk/jk1/metrics", json.dumps(to_metrics(reading)))
        history = node_red.wait_json(
            "/jk/jk1/history48h", lambda h: h["points"] and h["points"][-1]["ts"] == sent[-1]
        )
    assert history["resolution_s"] == 10
    # 60 s of 2 s polls fill six 10 s slots, each holding its newest reading.
    assert [p["ts"] - base for p in history["points"][:-1]] == [8, 18, 28, 38, 48, 58]
    assert history["count"] == 7
    flow = json.loads((REPO / "config" / "node-red" / "jk-bms-flow.json").read_text())
    source = "".join(n.get("func", "") for n in flow)
    assert "MAX_POINTS" not in source


def _authorized(node_red: NodeRed, path: str, token: str | None, method: str = "GET") -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(
        f"{node_red.url}{path}", method=method, headers=headers,
        data=b"" if method == "POST" else None,
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_http_endpoints_can_require_a_token(mosquitto: Broker, tmp_path: Path) -> None:
    flow = shipped_flow(mosquitto.host, mosquitto.port)
    tab = next(n for n in flow if n["type"] == "tab")
    for entry in tab["env"]:
        if entry["name"] == "JK_HTTP_TOKEN":
            entry["value"] = "s3cret-token"
    server = NodeRed(tmp_path / "node-red", flow)
    server.start()
    try:
        wait_subscribed(server, mosquitto, token="s3cret-token")
        with MqttProbe(mosquitto, ["bms/jk/+/cmd/read"]) as gateway:
            reading = vector_reading("jk02_32s_v19_27", last_update=time.time())
            publish_poll(gateway, reading)
            for path, method in (("/jk/jk1/latest", "GET"), ("/jk/jk1/history48h", "GET"),
                                 ("/jk/jk1/read", "POST")):  # fmt: skip
                assert _authorized(server, path, None, method) == 401
                assert _authorized(server, path, "wrong-token!", method) == 401
            assert gateway.on_topic("bms/jk/jk1/cmd/read") == []  # refused: nothing asked
            deadline = time.monotonic() + 10
            while _authorized(server, "/jk/jk1/latest", "s3cret-token") != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)  # the metrics may still be on their way; bounded
            assert _authorized(server, "/jk/jk1/read", "s3cret-token", "POST") == 202
            gateway.wait_topic("bms/jk/jk1/cmd/read", timeout_s=10)
    finally:
        server.stop()


def test_dashboard_base_is_not_the_default_dashboard_path() -> None:
    flow = json.loads((REPO / "config" / "node-red" / "jk-bms-flow.json").read_text())
    (base,) = [n for n in flow if n["type"] == "ui-base"]
    assert base["path"] != "/dashboard"  # an existing Dashboard 2.0 lives there


@pytest.mark.skipif(not gateway_in_tree(), reason="runs once the gateway and sim_factory exist")
def test_with_the_real_gateway_on_the_simulator(
    request: pytest.FixtureRequest, mosquitto: Broker, node_red: NodeRed, tmp_path: Path
) -> None:
    try:
        # The documented default: one JK02_32S C8:47:80:37:02:E8 on hci0, fast timing.
        sim = request.getfixturevalue("sim")
    except pytest.FixtureLookupError:
        pytest.skip("tests/fixtures/bluez.py is not registered in tests/conftest.py yet")
    config = {
        "mqtt": {
            "host": mosquitto.host,
            "port": mosquitto.port,
            "base_topic": "bms",
            "keepalive": 5,
        },
        "poll_interval_s": 2,
        "timeout_s": 10,
        "scan_timeout_s": 2,
        "state_dir": str(tmp_path / "state"),
        "devices": [{"name": "jk1", "address": "C8:47:80:37:02:E8", "adapter": "hci0"}],
    }
    (tmp_path / "gateway.json").write_text(json.dumps(config))
    log = (tmp_path / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "bluez_jk.cli.gateway", "--config", str(tmp_path / "gateway.json")],
        env=sim.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        first = node_red.wait_json("/jk/jk1/history48h", lambda h: h["count"] >= 1, timeout_s=30)
        node_red.wait_json(
            "/jk/jk1/history48h", lambda h: h["count"] >= first["count"] + 2, timeout_s=30
        )
        latest = node_red.wait_json(
            "/jk/jk1/latest",
            lambda b: b["online"] is True and b["raw"]["error"] is None,
            timeout_s=30,
        )
        assert latest["raw"]["address"] == "C8:47:80:37:02:E8"
        assert latest["metrics"]["cell_count"] >= 1
    finally:
        gateway.terminate()
        gateway.wait(timeout=15)
        log.close()
    assert_clean_log(node_red)
