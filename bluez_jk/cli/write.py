"""`jk-ble-write`: write one allowed setting of a JK-BMS and verify it by reading it back.

Exactly one JSON object on stdout, also on error: the `cmd/set/result` payload of
docs/mqtt.md plus `name`, `address` and the `audit` record. Exit 0 written and verified (or a
dry run that passed every check), 1 the write failed or was not verified, 2 usage error or
refused by the safety checks. Running the tool is the opt-in, so `control.enabled` is not
needed, but the safety bounds always apply; with --config/--name the device's `control.allow`
applies too and the audit line goes to its state_dir. Safety model: README.md ("Control (off
by default)"); settings: docs/protocol.md 2.3.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from bluez_jk import __version__
from bluez_jk.bluez.paths import normalize_mac
from bluez_jk.cli.jsonout import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    JsonArgumentParser,
    emit,
    positive_seconds,
    setup_logging,
)
from bluez_jk.cli.targets import config_device, device_values, request_values
from bluez_jk.control.policy import (
    WRITABLES,
    Refused,
    SetRequest,
    check,
    frame_for,
    register_value,
    request_from,
)
from bluez_jk.errors import ConfigError
from bluez_jk.gateway.audit import AuditLog, utc_timestamp
from bluez_jk.gateway.config import load_config
from bluez_jk.gateway.control import result_payload
from bluez_jk.reader import Reader, ReadRequest
from bluez_jk.reading import ProtocolName
from bluez_jk.writer import write_and_verify

log = logging.getLogger(__name__)

TRUE_WORDS = ("true", "on", "1")
FALSE_WORDS = ("false", "off", "0")


def build_parser() -> argparse.ArgumentParser:
    p = JsonArgumentParser(
        prog="jk-ble-write",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"jk-ble-write {__version__}")
    p.add_argument("--address", help="BMS Bluetooth address, e.g. C8:47:80:37:02:E8")
    p.add_argument(
        "--set",
        dest="assignment",
        metavar="NAME=VALUE",
        required=True,
        help=f"the setting and its value: {', '.join(WRITABLES)} (switches: true/false)",
    )
    p.add_argument("--dry-run", action="store_true", help="read and check only, write nothing")
    p.add_argument("--adapter", help="hciN (default: the default adapter)")
    p.add_argument("--timeout", type=positive_seconds, help="whole session, seconds (default 20)")
    p.add_argument("--scan-timeout", type=positive_seconds, help="discovery, seconds (default 5)")
    p.add_argument("--protocol", choices=get_args(ProtocolName), help="skip detection")
    p.add_argument("--notify-mode", choices=("auto", "acquire", "start"), default=None)
    p.add_argument("--config", type=Path, help="gateway config file (with --name)")
    p.add_argument("--name", help="device name in --config")
    p.add_argument("--state-dir", type=Path, help="append the audit line to DIR/audit.jsonl")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.add_argument("--log-level", default="warning")
    return p


def parse_assignment(text: str) -> dict[str, Any]:
    """`charging=false` -> {"charging": False}; numbers as floats. Raises ConfigError."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or name not in WRITABLES:
        raise ConfigError(f"--set must be NAME=VALUE with NAME one of {', '.join(WRITABLES)}",
                          key="set")  # fmt: skip
    word = value.strip().lower()
    if WRITABLES[name].kind == "switch":
        if word not in (*TRUE_WORDS, *FALSE_WORDS):
            raise ConfigError(f"{name} takes true or false, not {value[:20]!r}", key="set")
        return {name: word in TRUE_WORDS}
    try:
        return {name: float(word)}
    except ValueError:
        raise ConfigError(f"{name} takes a number, not {value[:20]!r}", key="set") from None


@dataclass(frozen=True)
class Plan:
    request: ReadRequest
    set_request: SetRequest
    allow: tuple[str, ...]
    state_dir: Path | None
    pretty: bool


def make_plan(args: argparse.Namespace) -> Plan:
    allow: tuple[str, ...] = tuple(WRITABLES)
    state_dir: Path | None = args.state_dir
    base: dict[str, Any] = {}
    if args.config is not None:
        # A write never uses the broker password (a systemd credential, maybe).
        config = load_config(args.config, defer_credentials=True)
        device = config_device(config, args.name, args.config)
        allow = device.control.allow
        state_dir = state_dir or config.state_dir
        base = device_values(device)  # pairing and passkey too: a write pairs like a read
    address = args.address or base.get("address")
    if not address:
        raise ConfigError("--address (or --config with --name) is required", key="address")
    overrides = {
        "adapter": args.adapter,
        "protocol": args.protocol,
        "timeout_s": args.timeout,
        "scan_timeout_s": args.scan_timeout,
        "notify_mode": args.notify_mode,
    }
    values = request_values(base, overrides)
    mac = normalize_mac(address)
    raw = parse_assignment(args.assignment) | {"dry_run": bool(args.dry_run)}
    try:
        set_request = request_from(raw)
    except Refused as err:
        raise ConfigError(err.message, key="set") from err
    request = ReadRequest(name=args.name or mac, address=mac, **values)
    return Plan(request, set_request, allow, state_dir, args.pretty)


async def _run(plan: Plan) -> tuple[dict[str, Any], str]:
    """The result payload and the audit outcome."""
    task = asyncio.current_task()
    if task is not None:
        # SIGTERM cancels like Ctrl-C does, so the BlueZ cleanup runs either way.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    req, sr = plan.request, plan.set_request
    common: dict[str, Any] = {"enabled": True, "allow": plan.allow, "max_age_s": 60.0}
    async with Reader() as reader:
        if sr.dry_run:
            # The layout and the current value come from a read now (nothing is written).
            reading = await reader.read(req)
            error = reading["error"]
            protocol = reading["protocol"]
            if error is not None or protocol is None:
                failure = f"{error['type']}: {error['message']}" if error else "layout unknown"
                return result_payload(sr, ok=False, reason="failed", error=failure), "failed"
            checks = check(sr, protocol=protocol, age_s=0.0, **common)
            frame = frame_for(protocol, sr)
            before = reading["status"]["settings"].get(sr.writable.key)
            result = result_payload(sr, ok=True, before=before, frame=frame,
                                    checks=[*checks, "frame"])  # fmt: skip
            return result, "dry_run"
        checks = check(sr, protocol=None, age_s=None, require_data=False, **common)
        value = register_value(sr.writable, sr.value)
        outcome = await write_and_verify(reader, req, sr.writable.key, value)
    if outcome.written and outcome.verified:
        status = "verified"
    elif outcome.written and outcome.error is None:
        status = "not_verified"
    else:
        status = "failed"
    message: str | None = None
    if outcome.error is not None:
        message = f"{outcome.error['type']}: {outcome.error['message']}"
    elif not outcome.verified:
        message = f"the BMS did not take the value: {sr.writable.key} reads {outcome.after!r}"
    result = result_payload(sr, ok=outcome.verified, verified=outcome.verified,
                            before=outcome.before, after=outcome.after, frame=outcome.frame,
                            checks=[*checks, "read_in_session"],
                            reason=None if outcome.verified else status, error=message)  # fmt: skip
    return result, status


def _audit(plan: Plan, result: dict[str, Any], outcome: str) -> dict[str, Any]:
    record = {
        "time": utc_timestamp(),
        "device": plan.request.name,
        "source": "cli",
        "request": plan.set_request.as_dict(),
        "outcome": outcome,
        "reason": result["reason"],
        "error": result["error"],
        "before": result["before"],
        "after": result["after"],
        "frame": result["frame"],
    }
    if plan.state_dir is not None:
        AuditLog(plan.state_dir).append(record)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    pretty = "--pretty" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_level)
        plan = make_plan(args)
    except ConfigError as err:
        emit(result_payload(None, ok=False, reason="invalid_request", error=err.message),
             pretty=pretty)  # fmt: skip
        return EXIT_USAGE
    code = EXIT_FAILED
    try:
        result, outcome = asyncio.run(_run(plan))
        code = EXIT_OK if result["ok"] else EXIT_FAILED
    except Refused as err:
        result = result_payload(plan.set_request, ok=False, reason=err.code, error=err.message)
        outcome, code = "refused", EXIT_USAGE
    except (KeyboardInterrupt, asyncio.CancelledError):
        result = result_payload(plan.set_request, ok=False, reason="failed", error="interrupted")
        outcome = "failed"
    except Exception as err:  # the process boundary: JSON, never a traceback
        log.exception("jk-ble-write failed")
        result = result_payload(plan.set_request, ok=False, reason="failed",
                                error=f"internal error: {err!r}")  # fmt: skip
        outcome = "failed"
    payload = {
        "name": plan.request.name,
        "address": plan.request.address,
        **result,
        "audit": _audit(plan, result, outcome),
    }
    emit(payload, pretty=plan.pretty)
    return code


if __name__ == "__main__":
    sys.exit(main())
