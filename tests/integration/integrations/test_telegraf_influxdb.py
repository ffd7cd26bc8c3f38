"""Telegraf's mapping of `metrics` into InfluxDB, end to end against a real influxd.

Real `metrics` messages (to_metrics of the captured Readings, published on a private
mosquitto and received by a subscriber with the .conf's topic filter and QoS) are turned into
line protocol the way Telegraf would, written into InfluxDB 1.x from Debian's packages,
queried back and compared: measurement, tags, every field, and the time of the read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bluez_jk.gateway.metrics import to_metrics
from tests.fixtures.mqtt import Broker, MqttProbe
from tests.integration.integrations.support import Influx, skip_if_asked
from tests.integration.integrations.telegraf import (
    CONF,
    commented_section,
    load_conf,
    routes_to,
    to_point,
)
from tests.unit.integrations.readings import vector_reading

pytestmark = [pytest.mark.integration, skip_if_asked]

GRAFANA = Path(__file__).resolve().parents[3] / "config" / "grafana" / "jk-bms.json"


def test_conf_is_what_the_gateway_contract_needs() -> None:
    conf = load_conf()
    consumer = conf["inputs"]["mqtt_consumer"][0]
    assert consumer["topics"] == ["bms/jk/+/metrics"]
    assert consumer["qos"] == 1
    assert consumer["persistent_session"] is True
    assert consumer["client_id"]  # a persistent session needs a fixed client id
    assert (consumer["json_time_key"], consumer["json_time_format"]) == ("ts", "unix")
    assert consumer["topic_parsing"][0]["tags"].split("/")[2] == "device"
    v1 = conf["outputs"]["influxdb"][0]
    assert v1["database"] == "bms"
    v2 = commented_section(CONF, "[[outputs.influxdb_v2]]")["outputs"]["influxdb_v2"][0]
    assert {"urls", "token", "organization", "bucket"} <= set(v2)
    assert "influxdb_v2" not in conf["outputs"]  # exactly one output is active


def test_outputs_take_only_jk_bms_beside_a_default_telegraf_conf() -> None:
    """Beside Debian's default telegraf.conf (an unfiltered influxdb output and cpu/mem
    inputs), jk_bms goes only to the "bms" database and cpu only to the default one, once the
    README's namedrop line is in the default output."""
    conf = load_conf()
    ours = [conf["outputs"]["influxdb"][0]]
    ours.append(commented_section(CONF, "[[outputs.influxdb_v2]]")["outputs"]["influxdb_v2"][0])
    for output in ours:
        assert routes_to(output, "jk_bms")
        assert not routes_to(output, "cpu")
    readme = (CONF.parents[2] / "README.md").read_text()
    assert 'namedrop = ["jk_bms"]' in readme
    default = {"urls": ["http://127.0.0.1:8086"], "database": "telegraf", "namedrop": ["jk_bms"]}
    assert routes_to(default, "cpu")
    assert not routes_to(default, "jk_bms")


def test_metrics_land_in_influxdb(mosquitto: Broker, influxdb: Influx) -> None:
    conf = load_conf()
    consumer = conf["inputs"]["mqtt_consumer"][0]
    database = conf["outputs"]["influxdb"][0]["database"]
    influxdb.query(f'CREATE DATABASE "{database}"')

    readings = {
        "jk1": [vector_reading("jk02_32s_v19_05", last_update=1771097625.51),
                vector_reading("jk02_32s_v19_27", last_update=1771097635.252)],
        "garage-2": [vector_reading("jk02_24s_v10_07", name="garage-2", last_update=1771097630.0)],
    }  # fmt: skip
    sent = {
        (name, reading["status"]["last_update"]): to_metrics(reading)
        for name, batch in readings.items()
        for reading in batch
    }
    with (
        MqttProbe(mosquitto, consumer["topics"]) as telegraf,
        MqttProbe(mosquitto) as gateway,
    ):
        for name, batch in readings.items():
            for reading in batch:
                gateway.publish(f"bms/jk/{name}/metrics", json.dumps(to_metrics(reading)))
                gateway.publish(f"bms/jk/{name}/raw", json.dumps(reading))  # not subscribed
        telegraf.wait_for(lambda _m: len(telegraf.messages) >= len(sent))
        messages = list(telegraf.messages)
    assert all(m.topic.endswith("/metrics") for m in messages)
    points = [to_point(conf, m.topic, m.payload) for m in messages]
    influxdb.write(database, "\n".join(p.line() for p in points))

    measurement = consumer["name_override"]
    result = influxdb.query(f'SELECT * FROM "{measurement}" GROUP BY "device"', db=database)
    series = result["results"][0]["series"]
    got = {}
    for s in series:
        device = s["tags"]["device"]
        for row in s["values"]:
            record = dict(zip(s["columns"], row, strict=True))
            time_ns = record.pop("time")
            got[(device, time_ns)] = {k: v for k, v in record.items() if v is not None}
    assert len(got) == len(sent)
    for (device, ts), metrics in sent.items():
        fields = got[(device, round(ts * 1e9))]
        expected = {k: float(v) for k, v in metrics.items() if k != "ts"}
        assert fields == pytest.approx(expected), device
    # Only the device tag: no per-message topic tag that would multiply series.
    tag_keys = influxdb.query(f'SHOW TAG KEYS FROM "{measurement}"', db=database)
    assert [v[0] for v in tag_keys["results"][0]["series"][0]["values"]] == ["device"]

    # Every Grafana panel's query runs against this data and returns the fields it names.
    dashboard = json.loads(GRAFANA.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            query = (
                target["query"]
                .replace("$timeFilter", "time >= 1771097000s AND time <= 1771098000s")
                .replace("$__interval", "10s")
                .replace("/^$device$/", "/^jk1$/")
                .replace('"$database"', f'"{database}"')
            )
            rows = influxdb.query(query, db=database)["results"][0].get("series")
            assert rows, (panel["title"], query)
            assert not re.search(r"\$\w", query), query
