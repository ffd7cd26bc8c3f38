"""The reference docs in docs/ against the code they describe.

(a) Every `*.md` that code, tests, tools, benchmarks, the README, the systemd unit or a tool's
`--help` cites exists in the repository, every "fact N" names a numbered fact of
docs/bluez.md, and every section a citation names (a number or a quoted title) exists.
(b) Every MQTT topic the gateway defines, every field of the raw / metrics / meta payloads, every
error type and stage, every key the config validator accepts (asked from the validator itself,
with its documented range and default), every simulator fault, timing value, device option and
control method appears in the reference docs, so adding one without documenting it fails here.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from bluez_jk.cli import decode as cli_decode
from bluez_jk.cli import gateway as cli_gateway
from bluez_jk.cli import read as cli_read
from bluez_jk.cli import scan as cli_scan
from bluez_jk.cli import sim as cli_sim
from bluez_jk.cli import write as cli_write
from bluez_jk.errors import ConfigError, ErrorType, Stage
from bluez_jk.gateway import config as gateway_config
from bluez_jk.gateway.discovery import Source
from bluez_jk.gateway.metrics import to_metrics
from bluez_jk.reading import Reading
from bluez_jk.sim.control import CONTROL_IFACE, Control
from bluez_jk.sim.faults import FaultName
from bluez_jk.sim.timing import TIMINGS, Timing
from tests.unit.integrations.readings import VECTOR_SETS, vector_reading

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / "docs"
# Where citations live: the code, its tests, tools, benchmarks, the unit, the README.
CITING_DIRS = ("bluez_jk", "tests", "tools", "bench", "systemd")
CITING_FILES = ("README.md", "pyproject.toml")
CITING_SUFFIXES = {".py", ".md", ".sh", ".service", ".toml", ".txt"}
REFERENCE_DOCS = ("protocol.md", "bluez.md", "design.md", "mqtt.md", "config.md", "simulator.md")

MD_CITATION = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
FACT = re.compile(r"\bfacts? (\d+)")
NUMBERED_SECTION = re.compile(
    r"\bdocs/(\w+)\.md(?:,)?\s+(?:sections?\s+|section\s+)?(\d+(?:\.\d+)?)(?![\d.]*\w)"
)
APPENDIX = re.compile(r"\bdocs/(\w+)\.md,?\s+appendix\s+([A-Z])\b", re.IGNORECASE)
TITLED_SECTION = re.compile(r'\bdocs/(\w+)\.md,?\s*\(?"([^"]+)"')

SAMPLE_MAC = "C8:47:80:37:02:E8"


def _citing_files() -> Iterator[Path]:
    this = Path(__file__).resolve()
    for name in CITING_DIRS:
        for path in sorted((REPO / name).rglob("*")):
            if path.is_file() and path.suffix in CITING_SUFFIXES and path.resolve() != this:
                yield path
    for name in CITING_FILES:
        yield REPO / name


def _texts() -> dict[str, str]:
    texts = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in _citing_files()}
    texts.update({f"--help of {prog}": text for prog, text in _help_texts().items()})
    return texts


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "jk-ble-read": cli_read.build_parser,
    "jk-ble-scan": cli_scan.build_parser,
    "jk-ble-decode": cli_decode.build_parser,
    "jk-ble-mqtt-gateway": cli_gateway._parser,
    "jk-ble-sim": cli_sim._parser,
    "jk-ble-write": cli_write.build_parser,
}


def _help_texts() -> dict[str, str]:
    # One line per option, whatever the terminal: a wrapped "left-\nconnected" would not match.
    out: dict[str, str] = {}
    for prog, build in PARSERS.items():
        parser = build()
        parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=10_000)
        out[prog] = parser.format_help()
    return out


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _headings(name: str) -> list[str]:
    return [line.lstrip("#").strip() for line in _doc(name).splitlines() if line.startswith("#")]


def _facts() -> set[int]:
    """The numbers of the list items of docs/bluez.md section 0."""
    text = _doc("bluez.md")
    section = text.split("\n## 0.", 1)[1].split("\n## ", 1)[0]
    return {int(n) for n in re.findall(r"^(\d+)\. \*\*", section, re.MULTILINE)}


def _section(text: str, heading: str) -> str:
    """The text of the section under `heading` (a line prefix), up to the next heading."""
    start = text.index("\n" + heading)
    rest = text[start + 1 :]
    level = heading.split(" ", 1)[0]
    end = re.search(rf"^{level} ", rest[len(heading) :], re.MULTILINE)
    return rest if end is None else rest[: len(heading) + end.start()]


def _row(text: str, key: str) -> str:
    """The first table row whose first cell names `key` (alone or in a list)."""
    for line in text.splitlines():
        first = line.split("|")[1] if line.startswith("|") else ""
        if f"`{key}`" in first:
            return line
    raise AssertionError(f"no table row for `{key}`")


# ---- (a) citations ---------------------------------------------------------------------------


def test_the_reference_docs_exist_and_the_old_developer_page_is_folded_in() -> None:
    for name in REFERENCE_DOCS:
        assert (DOCS / name).is_file(), name
    assert not (DOCS / "dev" / "internal-apis.md").exists()
    assert "Interfaces between the rooms" in _headings("design.md")


def test_every_cited_md_file_exists_in_the_repository() -> None:
    missing = []
    cited = 0
    for origin, text in _texts().items():
        base = (REPO / origin).parent if not origin.startswith("--help") else REPO
        for match in MD_CITATION.finditer(text):
            name = match.group(1)
            if "://" in text[max(0, match.start() - 60) : match.start()]:
                continue  # part of a URL
            cited += 1
            if not (REPO / name).is_file() and not (base / name).is_file():
                missing.append(f"{origin}: {name}")
    assert cited > 50  # the scan saw the citations (a broken regex would pass vacuously)
    assert missing == []


def test_every_tool_help_that_names_a_doc_names_an_existing_one() -> None:
    helps = _help_texts()
    # The ones a user reads first point at the reference docs.
    assert "docs/design.md" in helps["jk-ble-read"]
    assert "docs/simulator.md" in helps["jk-ble-sim"]
    for prog, text in helps.items():
        for name in MD_CITATION.findall(text):
            assert (REPO / name).is_file(), f"{prog} --help cites {name}"


def test_every_fact_citation_names_a_fact_of_docs_bluez() -> None:
    facts = _facts()
    assert facts == set(range(1, len(facts) + 1))
    assert len(facts) >= 15
    wrong = [
        f"{origin}: fact {n}"
        for origin, text in _texts().items()
        for n in FACT.findall(text)
        if int(n) not in facts
    ]
    assert wrong == []


def test_every_numbered_section_citation_names_a_section_that_exists() -> None:
    numbers: dict[str, set[str]] = {}
    for name in REFERENCE_DOCS:
        found = set()
        for heading in _headings(name):
            match = re.match(r"(\d+(?:\.\d+)?)\.?\s", heading)
            if match:
                found.add(match.group(1))
            appendix = re.match(r"Appendix ([A-Z])\b", heading)
            if appendix:
                found.add(f"appendix {appendix.group(1)}")
        numbers[name] = found
    wrong = []
    checked = 0
    for origin, text in _texts().items():
        for doc, number in NUMBERED_SECTION.findall(text):
            checked += 1
            if number not in numbers.get(f"{doc}.md", set()):
                wrong.append(f"{origin}: docs/{doc}.md {number}")
        for doc, letter in APPENDIX.findall(text):
            if f"appendix {letter.upper()}" not in numbers.get(f"{doc}.md", set()):
                wrong.append(f"{origin}: docs/{doc}.md appendix {letter}")
    assert checked > 50
    assert wrong == []


def test_every_titled_section_citation_names_a_heading_that_exists() -> None:
    wrong = []
    checked = 0
    for origin, text in _texts().items():
        for doc, title in TITLED_SECTION.findall(text):
            checked += 1
            wanted = " ".join(title.split()).lower()
            headings = [h.lower() for h in _headings(f"{doc}.md")]
            if not any(wanted in h for h in headings):
                wrong.append(f'{origin}: docs/{doc}.md "{title}"')
    assert checked >= 10
    assert wrong == []


# ---- (b) MQTT topics -------------------------------------------------------------------------


def _rendered(node: ast.JoinedStr) -> str:
    return "".join(
        v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
        for v in node.values
    )


# f-strings that build topics, with "{}" for each interpolation: <base>/jk/<name>/<leaf>,
# <base>/<leaf>, and <device prefix><leaf> (the prefix ends with "/").
TOPIC_PATTERNS = (r"\{\}/jk/\{\}/([a-z_/]+)", r"\{\}/(gateway/[a-z_]+)", r"\{\}(cmd/[a-z_/]+)")


def _topic_leaves() -> set[str]:
    """Topic suffixes the gateway code builds: `<base>/jk/<name>/<leaf>` and `<base>/<leaf>`."""
    leaves: set[str] = set()
    for path in sorted((REPO / "bluez_jk" / "gateway").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                # `topic(name, leaf)`, and `_answer(name, leaf, result)` for command results.
                and (node.func.attr, len(node.args)) in (("topic", 2), ("_answer", 3))
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value
            ):
                leaves.add(node.args[1].value)
            elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Name):
                if node.left.id == "command":
                    leaves.update(c.value for c in node.comparators if isinstance(c, ast.Constant))
            elif isinstance(node, ast.JoinedStr):
                text = _rendered(node)
                for pattern in TOPIC_PATTERNS:
                    match = re.fullmatch(pattern, text)
                    if match:
                        leaves.add(match.group(1))
    return leaves


def _source_leaves() -> set[str]:
    """`<base>/jk/<name>/{entity.source}`: the Home Assistant state topics."""
    return set(get_args(Source))


def test_every_topic_the_gateway_defines_is_in_docs_mqtt() -> None:
    leaves = _topic_leaves() | _source_leaves()
    # The extraction sees the contract's topics (an empty set would pass vacuously).
    assert {
        "raw",
        "metrics",
        "online",
        "meta",
        "gateway/online",
        "cmd/read",
        "cmd/config",
        "cmd/config/result",
        "cmd/pause",
        "cmd/set",
        "cmd/set/result",
        "audit",
    } <= leaves
    text = _doc("mqtt.md")
    headings = _headings("mqtt.md")
    missing = [
        leaf
        for leaf in sorted(leaves)
        if not re.search(rf"`[^`\n]*/{re.escape(leaf)}`", text)
        or not any(h.endswith(f"/{leaf}`") for h in headings)
    ]
    assert missing == [], "document each topic with its own section in docs/mqtt.md"


def test_every_topic_section_of_docs_mqtt_has_an_example() -> None:
    text = _doc("mqtt.md")
    for heading in _headings("mqtt.md"):
        if heading.startswith("`<base>/"):
            assert "```" in _section(text, f"## {heading}"), heading


def test_home_assistant_discovery_topics_are_in_docs_mqtt() -> None:
    text = _doc("mqtt.md")
    tree = ast.parse((REPO / "bluez_jk/gateway/discovery.py").read_text(encoding="utf-8"))
    patterns = [
        _rendered(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.JoinedStr) and _rendered(n).endswith("/config")
    ]
    assert patterns
    for pattern in patterns:
        for word in re.findall(r"[a-z_]{3,}", pattern):
            assert word in text, (pattern, word)


def test_cmd_pause_documents_how_to_undo_it() -> None:
    section = _section(_doc("mqtt.md"), "## `<base>/jk/<name>/cmd/pause`")
    assert '{"minutes": 0}' in section
    assert "undo" in section.lower()


def test_every_reading_field_is_in_the_raw_section() -> None:
    text = _section(_doc("mqtt.md"), "## `<base>/jk/<name>/raw`")
    for key in Reading.__annotations__:
        assert f"| `{key}` |" in text, key


@pytest.mark.parametrize("vectors", sorted(VECTOR_SETS))
def test_every_metrics_key_is_in_the_metrics_section(vectors: str) -> None:
    text = _section(_doc("mqtt.md"), "## `<base>/jk/<name>/metrics`")
    keys = {
        re.sub(r"^(cell_[vr])_\d+$", r"\1_01", re.sub(r"^temp_\d$", "temp_1", key))
        for key in to_metrics(vector_reading(vectors))
    }
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert missing == []


def _meta_keys() -> set[str]:
    """The keys of the dict literal `Gateway.meta` returns, nested dicts included."""
    tree = ast.parse((REPO / "bluez_jk/gateway/service.py").read_text(encoding="utf-8"))
    meta = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "meta")
    return {
        key.value
        for node in ast.walk(meta)
        if isinstance(node, ast.Dict)
        for key in node.keys
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    }


def test_every_meta_field_is_in_the_meta_section() -> None:
    keys = _meta_keys()
    assert {"name", "config", "counters", "attempts"} <= keys
    text = _section(_doc("mqtt.md"), "## `<base>/jk/<name>/meta`")
    table = text.split("```", 1)[0]
    missing = sorted(k for k in keys if f"`{k}`" not in table)
    assert missing == []


def test_every_error_type_and_stage_is_in_the_error_model() -> None:
    text = _section(_doc("design.md"), "## Error model")
    for error_type in get_args(ErrorType):
        assert f"| `{error_type}` |" in text, error_type
    for stage in get_args(Stage):
        assert f"`{stage}`" in text, stage


# ---- (b) config keys -------------------------------------------------------------------------


def _allowed(problems: list[ConfigError]) -> set[str]:
    for problem in problems:
        match = re.search(r"unknown key \(allowed: ([^)]*)\)", problem.message)
        if match:
            return {k.strip() for k in match.group(1).split(",")}
    raise AssertionError(f"no 'unknown key' problem in {problems}")


def _accepted_keys(section: str) -> set[str]:
    """Ask the validator which keys it allows in `section`, by offering it one it does not."""
    device: dict[str, Any] = {"name": "jk1", "address": SAMPLE_MAC}
    probe = {"zz_not_a_key": 1}
    raw: dict[str, Any] = {"devices": [device]}
    if section == "top":
        raw.update(probe)
    elif section == "mqtt":
        raw["mqtt"] = probe
    elif section == "mqtt.tls":
        raw["mqtt"] = {"tls": probe}
    elif section == "homeassistant":
        raw["homeassistant"] = probe
    elif section == "control":
        raw["control"] = probe
    elif section == "logbook":
        raw["logbook"] = probe
    elif section == "devices[]":
        device.update(probe)
    elif section == "cmd/config":
        with pytest.raises(gateway_config.ConfigProblems) as remote:
            gateway_config.parse_remote_config(json.dumps(probe).encode())
        return _allowed(remote.value.problems)
    with pytest.raises(gateway_config.ConfigProblems) as err:
        gateway_config.parse_config(raw)
    return _allowed(err.value.problems)


CONFIG_SECTIONS = {
    "top": "## Top level",
    "mqtt": "## `mqtt`",
    "mqtt.tls": "## `mqtt.tls`",
    "homeassistant": "## `homeassistant`",
    "control": "## `control`",
    "logbook": "## `logbook`",
    "devices[]": "## `devices[]`",
    "cmd/config": "## What `cmd/config` may change",
}


@pytest.mark.parametrize("section", sorted(CONFIG_SECTIONS))
def test_every_key_the_validator_accepts_is_in_docs_config(section: str) -> None:
    keys = _accepted_keys(section)
    assert keys
    text = _section(_doc("config.md"), CONFIG_SECTIONS[section])
    missing = [key for key in sorted(keys) if f"| `{key}` |" not in text]
    assert missing == [], f"add a row to docs/config.md {CONFIG_SECTIONS[section]!r}"


def test_cmd_config_keys_are_in_docs_mqtt_too() -> None:
    text = _section(_doc("mqtt.md"), "## `<base>/jk/<name>/cmd/config`")
    for key in _accepted_keys("cmd/config"):
        assert f"| `{key}` |" in text, key


def test_documented_ranges_match_the_validator() -> None:
    text = _doc("config.md")
    for key, (low, high) in gateway_config.RANGES.items():
        for line in text.splitlines():
            if line.startswith(f"| `{key}` |"):
                assert f"{low:g} to {high:g}" in line, line


def _json_default(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"{value:g}"
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    return None  # nested objects are documented in their own section


@pytest.mark.parametrize(
    ("cls", "heading"),
    [
        (gateway_config.GatewayConfig, "## Top level"),
        (gateway_config.MqttConfig, "## `mqtt`"),
        (gateway_config.TlsConfig, "## `mqtt.tls`"),
        (gateway_config.HomeAssistantConfig, "## `homeassistant`"),
        (gateway_config.ControlConfig, "## `control`"),
    ],
)
def test_documented_defaults_match_the_code(cls: Any, heading: str) -> None:
    text = _section(_doc("config.md"), heading)
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:
            continue
        shown = _json_default(f.default)
        if shown is None:
            continue
        row = _row(text, f.name)
        default_cell = row.split("|")[3]
        assert f"`{shown}`" in default_cell, (f.name, shown, row)


def test_the_example_in_docs_config_is_a_valid_config(tmp_path: Path) -> None:
    block = re.search(r"## Example\n\n```json\n(.*?)```", _doc("config.md"), re.DOTALL)
    assert block is not None
    (tmp_path / "mqtt-password").write_text("secret\n")
    (tmp_path / "jk.json").write_text(block.group(1))
    config = gateway_config.load_config(tmp_path / "jk.json")
    assert [d.name for d in config.devices] == ["jk1", "jk2"]


# ---- (b) simulator ---------------------------------------------------------------------------


def test_every_fault_is_in_docs_simulator_and_in_the_help() -> None:
    names = get_args(FaultName)
    assert len(names) >= 15
    table = _section(_doc("simulator.md"), "## Faults")
    helptext = _help_texts()["jk-ble-sim"]
    for name in names:
        row = _row(table, name)
        # Each row says what a client sees: a BlueZ error, or that there is none.
        assert "org.bluez" in row or "no BlueZ error" in row, row
        assert name in helptext, f"jk-ble-sim --help does not list {name}"


def test_every_timing_value_and_the_default_profile_are_in_docs_simulator() -> None:
    text = _section(_doc("simulator.md"), "## Timing")
    default = cli_sim._parser().get_default("timing")
    assert f"`{default}` (default)" in text
    assert f"default is `{default}`" in text
    for f in dataclasses.fields(Timing):
        if f.name == "name":
            continue
        row = _row(text, f.name)
        cells = [c.strip() for c in row.split("|")[2:-1]]
        expected = [f"{getattr(TIMINGS[p], f.name):g}" for p in ("real", "fast", "zero")]
        assert cells == expected, (f.name, cells, expected)


def test_every_device_option_is_in_docs_simulator() -> None:
    text = _section(_doc("simulator.md"), "## Devices")
    metavar = next(a.metavar for a in cli_sim._parser()._actions if a.dest == "device")
    options = re.findall(r",(\w+)=", str(metavar))
    assert options
    for option in options:
        assert f"| `{option}` |" in text, option


def test_every_control_method_is_in_docs_simulator() -> None:
    interface = Control(None).dbus_object().interfaces[CONTROL_IFACE]  # type: ignore[arg-type]
    text = _section(_doc("simulator.md"), "## Control interface")
    for name, method in interface.methods.items():
        row = _row(text, f"{name}(" + ", ".join(method.in_args) + ")")
        assert method.in_sig in row, (name, row)
    for prop in interface.property_types:
        assert f"`{prop}`" in text, prop
