"""The shipped Grafana dashboard: importable JSON whose queries name only metrics keys."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bluez_jk.gateway.metrics import to_metrics
from bluez_jk.protocol.alarms import WARNING_BITS
from tests.unit.integrations.readings import VECTOR_SETS, vector_reading

DASHBOARD = Path(__file__).resolve().parents[3] / "config" / "grafana" / "jk-bms.json"
MEASUREMENT = "jk_bms"  # Telegraf's name_override (config/telegraf/jk-bms.conf)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def all_metric_keys() -> set[str]:
    keys: set[str] = set()
    for set_name in VECTOR_SETS:
        keys |= set(to_metrics(vector_reading(set_name)))
    return keys - {"ts"}  # Telegraf turns ts into the point's time


def test_import_fields(dashboard: dict[str, Any]) -> None:
    for key in ("title", "uid", "panels", "schemaVersion", "templating", "time", "__inputs"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    (ds_input,) = dashboard["__inputs"]
    assert (ds_input["type"], ds_input["pluginId"]) == ("datasource", "influxdb")
    required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    for panel in dashboard["panels"]:
        assert ("panel", panel["type"]) in required, panel["type"]


def test_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "influxdb"
    assert "database" in variables
    device = variables["device"]
    assert (
        device["query"]
        == f'SHOW TAG VALUES ON "$database" FROM "{MEASUREMENT}" WITH KEY = "device"'
    )
    assert device["multi"] is True


def test_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs))
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("cell voltages", "cell min / max / delta", "state of charge", "pack voltage",
                  "current", "power", "temperatures", "errors"):  # fmt: skip
        assert topic in titles, topic


def test_queries_name_only_metrics_fields(dashboard: dict[str, Any]) -> None:
    keys = all_metric_keys()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            query = target["query"]
            assert f'FROM "$database".."{MEASUREMENT}"' in query, panel["title"]
            assert '"device" =~ /^$device$/' in query
            assert "$timeFilter" in query
            select = query.split(" FROM ")[0]
            named = re.findall(r'\w+\("([^"]+)"\)', select)
            patterns = re.findall(r"\w+\(/(.+?)/\)", select)
            assert named or patterns, query
            for field in named:
                assert field in keys, (panel["title"], field)
            for pattern in patterns:
                matched = {k for k in keys if re.search(pattern, k)}
                assert matched, (panel["title"], pattern)
                # Regexes pick one family of keys, e.g. every cell_v_NN but not cell_v_min.
                families = {re.sub(r"\d+", "N", k) for k in matched}
                assert len(families) <= 2, (pattern, families)


def _mapped_text(mappings: list[dict[str, Any]], value: int) -> str | None:
    """What Grafana shows for `value`: the first value mapping, else the first range."""
    for mapping in mappings:
        if mapping["type"] == "value" and str(value) in mapping["options"]:
            return str(mapping["options"][str(value)]["text"])
    for mapping in mappings:
        opts = mapping["options"]
        if mapping["type"] == "range" and opts["from"] <= value <= opts["to"]:
            return str(opts["result"]["text"])
    return None


def test_errors_panel_names_the_warnings(dashboard: dict[str, Any]) -> None:
    """The Errors panel shows the warning's name, not a raw bitmask (issue 14 item 10)."""
    errors = next(p for p in dashboard["panels"] if p["title"] == "Errors")
    mappings = errors["fieldConfig"]["defaults"]["mappings"]
    assert _mapped_text(mappings, 0) == "none"
    for bit, name in enumerate(WARNING_BITS):
        assert _mapped_text(mappings, 1 << bit) == name.replace("_", " ")
    assert "several" in str(_mapped_text(mappings, 0b10010))
    timeline = next(p for p in dashboard["panels"] if p["title"] == "Switches and alarms")
    (override,) = timeline["fieldConfig"]["overrides"]
    alarm_mappings = override["properties"][0]["value"]
    assert _mapped_text(alarm_mappings, 1 << 4) == "cell overvoltage"
