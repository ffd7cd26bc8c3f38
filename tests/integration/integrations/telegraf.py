"""What Telegraf's `mqtt_consumer` + `json` parser make of one MQTT message, per our .conf.

Driven only by the values in config/telegraf/jk-bms.conf (parsed with tomllib), following
Telegraf's documented behaviour: the json parser keeps numbers (as float64 fields) and drops
strings unless listed in json_string_fields, `json_time_key` is removed from the fields and
becomes the point's time (`unix` = epoch seconds, fractions allowed), `topic_parsing` maps the
topic's levels onto tags by position (`_` = skip), `topic_tag` ("" = none) adds the whole
topic, `name_override` names the measurement.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[3] / "config" / "telegraf" / "jk-bms.conf"


def load_conf(path: Path = CONF) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def commented_section(path: Path, header: str) -> dict[str, Any]:
    """A section shipped commented out (`# [[...]]` then `#   key = ...`), parsed as TOML."""
    lines = path.read_text().splitlines()
    start = lines.index(f"# {header}")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    return tomllib.loads("\n".join(block))


def topic_matches(pattern: str, topic: str) -> bool:
    pat, top = pattern.split("/"), topic.split("/")
    for i, level in enumerate(pat):
        if level == "#":
            return True
        if i >= len(top) or (level != "+" and level != top[i]):
            return False
    return len(pat) == len(top)


@dataclass
class Point:
    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, float] = field(default_factory=dict)
    time_ns: int = 0

    def line(self) -> str:
        def esc(text: str) -> str:
            return re.sub(r"([,= ])", r"\\\1", text)

        tags = "".join(f",{esc(k)}={esc(v)}" for k, v in sorted(self.tags.items()))
        fields = ",".join(f"{esc(k)}={v!r}" for k, v in sorted(self.fields.items()))
        return f"{esc(self.measurement)}{tags} {fields} {self.time_ns}"


def to_point(conf: dict[str, Any], topic: str, payload: bytes) -> Point:
    consumer = conf["inputs"]["mqtt_consumer"][0]
    assert any(topic_matches(t, topic) for t in consumer["topics"]), topic
    assert consumer["data_format"] == "json"
    data = json.loads(payload)
    assert isinstance(data, dict)
    point = Point(consumer.get("name_override", "mqtt_consumer"))

    time_key = consumer.get("json_time_key")
    if time_key:
        raw_time = data.pop(time_key)
        assert consumer["json_time_format"] == "unix"
        # Telegraf parses the float's decimal text; round to whole nanoseconds like it does.
        point.time_ns = round(float(raw_time) * 1_000_000_000)
    string_fields = set(consumer.get("json_string_fields", []))
    for key, value in data.items():
        if isinstance(value, bool):
            raise AssertionError(f"{key}: booleans must be 0/1 in metrics")
        if isinstance(value, int | float):
            point.fields[key] = float(value)
        elif key not in string_fields:
            continue  # the json parser drops strings it was not told to keep
    topic_tag = consumer.get("topic_tag", "topic")
    if topic_tag:
        point.tags[topic_tag] = topic
    for rule in consumer.get("topic_parsing", []):
        if not topic_matches(rule["topic"], topic):
            continue
        for name, level in zip(rule.get("tags", "").split("/"), topic.split("/"), strict=False):
            if name != "_" and name:
                point.tags[name] = level
    return point


def routes_to(output: dict[str, Any], measurement: str) -> bool:
    """Telegraf's measurement filters on an output: namepass (only these), then namedrop
    (not these); glob patterns, no filter = everything."""
    passing = output.get("namepass")
    if passing is not None and not any(fnmatch.fnmatchcase(measurement, p) for p in passing):
        return False
    dropping = output.get("namedrop") or []
    return not any(fnmatch.fnmatchcase(measurement, p) for p in dropping)
