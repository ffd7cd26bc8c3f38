"""jk-ble-decode: hex lines in, exactly one JSON object out, never a traceback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluez_jk.cli.decode import main, parse_hex_line
from tests.conftest import load_vector

INFO = load_vector("jk02_32s_v19_27_device_info.json")["hex"]
CELL = load_vector("jk02_32s_v19_27_cell_info.json")["hex"]
SETTINGS = load_vector("jk02_32s_v19_27_settings.json")["hex"]


def run_main(
    capsys: pytest.CaptureFixture[str], args: list[str], stdin: str | None = None
) -> tuple[int, dict[str, Any]]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(args)
    finally:
        sys.stdin = sys.__stdin__
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "exactly one JSON line"
    return code, json.loads(out)


def spaced(hexstr: str, sep: str, prefix: str = "") -> str:
    return sep.join(prefix + hexstr[i : i + 2] for i in range(0, len(hexstr), 2))


def test_file_with_every_tolerated_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "capture.txt"
    path.write_text(
        "# a capture\n\n"
        + spaced(INFO, " ").upper()
        + "\n"
        + spaced(SETTINGS, " ", "0x")
        + "\n"
        + spaced(CELL[:256], ":")
        + "\n"
        + "0x"
        + CELL[256:]
        + "  # the rest\n"
    )
    code, result = run_main(capsys, [str(path)])
    assert code == 0
    assert result["got"] == {"device_info": True, "cell_info": True, "settings": True}
    assert result["errors"] == []
    assert (result["protocol"], result["detected_by"]) == ("JK02_32S", "sw_rev")
    assert result["status"]["cell_info"]["total_voltage"] == 54.028
    assert result["status"]["device_info"]["sw_rev"] == "19.27"
    assert result["status"]["warnings"]["cell_undervoltage"] is False


def test_stdin_with_chunks_detects_by_content(capsys: pytest.CaptureFixture[str]) -> None:
    chunks = load_vector("jk02_24s_issue199_cell_info_chunked.json")["chunks"]
    code, result = run_main(capsys, [], stdin="\n".join(["41540d0a", *chunks]) + "\n")
    assert code == 0
    assert (result["protocol"], result["detected_by"]) == ("JK02_24S", "content")
    assert len(result["status"]["cell_info"]["voltages"]) == 16


def test_bad_line_and_bad_checksum_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    broken = CELL[:-2] + f"{(int(CELL[-2:], 16) + 1) & 0xFF:02x}"
    code, result = run_main(capsys, [], stdin=f"{INFO}\nnot hex at all\n{broken}\n55aa\n")
    assert code == 0
    assert result["got"]["cell_info"] is False
    messages = [e["message"] for e in result["errors"]]
    assert messages[0] == "line 2: not hex bytes: 'not hex at all'"
    assert "bad checksum" in messages[1]
    assert all(e["type"] == "ProtocolError" for e in result["errors"])


def test_incomplete_frame_at_the_end_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run_main(capsys, [], stdin=CELL[:300] + "\n")
    assert code == 1
    assert result["errors"] == [
        {
            "type": "ProtocolError",
            "message": "150 bytes of an incomplete frame at the end of the input",
        }
    ]


def test_protocol_option_decodes_what_detection_cannot(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run_main(capsys, [], stdin=SETTINGS + "\n")
    assert code == 1
    assert result["got"]["settings"] is False
    code, result = run_main(capsys, ["--protocol", "JK02_32S"], stdin=SETTINGS + "\n")
    assert code == 0
    assert result["status"]["settings"]["cell_count"] == 16
    assert result["detected_by"] == "config"


@pytest.mark.parametrize("args", [["--protocol", "JK99"], ["--nope"], ["/nonexistent/capture.txt"]])
def test_usage_errors_are_json_with_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = run_main(capsys, args)
    assert code == 2
    assert result["errors"][0]["type"] == "ConfigError"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("55aa", b"\x55\xaa"),
        ("0x55 0xAA", b"\x55\xaa"),
        ("55:aa", b"\x55\xaa"),
        ("  ", None),
        ("# only a comment", None),
    ],
)
def test_parse_hex_line(line: str, expected: bytes | None) -> None:
    assert parse_hex_line(line) == expected


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(st.lists(st.text(max_size=80), max_size=10))
def test_random_text_never_raises(capsys: pytest.CaptureFixture[str], lines: list[str]) -> None:
    code, result = run_main(capsys, [], stdin="\n".join(lines))
    assert code in {0, 1}
    assert set(result) >= {"got", "status", "errors"}


def _subprocess(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bluez_jk.cli.decode", *args],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_subprocess_stdin_and_file(tmp_path: Path) -> None:
    done = _subprocess(["--pretty"], f"{INFO}\n{CELL}\n".encode())
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["got"]["cell_info"] is True
    path = tmp_path / "c.hex"
    path.write_text(f"{INFO}\n")
    done = _subprocess([str(path)], b"")
    assert done.returncode == 0
    assert json.loads(done.stdout)["status"]["device_info"]["serial_number"] == "506177F49000674"


def test_subprocess_binary_garbage_gives_json_not_a_traceback() -> None:
    done = _subprocess([], bytes(range(256)) * 4)
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    result = json.loads(done.stdout)
    assert result["errors"][0]["type"] == "ProtocolError"
