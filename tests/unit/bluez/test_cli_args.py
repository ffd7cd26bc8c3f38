"""jk-ble-read's command line: any argument list ends in a plan or a ConfigError (exit 2 as
JSON), never another exception."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluez_jk.cli.read import build_parser, main, make_plan
from bluez_jk.errors import ConfigError

OPTIONS = [
    "--address",
    "--adapter",
    "--timeout",
    "--scan-timeout",
    "--protocol",
    "--notify-mode",
    "--name",
    "--pretty",
    "--via-mqtt",
    "--bogus",
]
VALUES = st.one_of(
    st.sampled_from(["C8:47:80:37:02:E8", "hci0", "hci9", "JK04", "acquire", "5", "-1", "nan"]),
    st.text(max_size=20).filter(lambda t: not t.startswith("-")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(OPTIONS), VALUES), max_size=8))
def test_any_arguments_end_in_a_plan_or_a_config_error(argv: list[str]) -> None:
    stage = None
    try:
        plan = make_plan(build_parser().parse_args(argv))
    except ConfigError as err:
        stage = err.stage
    else:
        assert plan.request.address == plan.request.address.upper()
        assert plan.request.timeout_s > 0
        return
    assert stage == "config"


def test_config_error_is_one_json_object_and_exit_2() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["--address", "zz"])
    assert rc == 2
    payload = json.loads(out.getvalue())
    assert payload["error"]["type"] == "ConfigError"
    assert payload["error"]["message"].startswith("address:")


@pytest.mark.parametrize("argv", [["--timeout", "0"], ["--timeout", "inf"], ["--name", "x"]])
def test_rejected_values(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        make_plan(build_parser().parse_args(argv))
