"""`jk-ble-read`: one read, exactly one JSON object (the `raw` payload) on stdout, also on
error. Exit 0 read ok, 1 read failed, 2 usage or config error, 130 interrupted (Ctrl-C; 143 for
SIGTERM) with an `Interrupted` error naming the stage the read had reached. Reference:
docs/design.md ("Command-line tools"), docs/mqtt.md (the payload), docs/config.md (--config)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast, get_args

from bluez_jk.bluez.paths import normalize_mac
from bluez_jk.cli.jsonout import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SIGTERM,
    EXIT_USAGE,
    JsonArgumentParser,
    add_common,
    emit,
    positive_seconds,
    setup_logging,
)
from bluez_jk.cli.targets import config_device, device_values, request_values
from bluez_jk.errors import BusError, ConfigError, Interrupted, JkError, Stage
from bluez_jk.gateway.config import load_config
from bluez_jk.names import NotifyModeSetting, PairingSetting, Passkey
from bluez_jk.reader import Reader, ReadRequest
from bluez_jk.reading import ProtocolName, Reading, error_reading, missing_logbook

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = JsonArgumentParser(prog="jk-ble-read", description=__doc__)
    p.add_argument("--address", help="BMS Bluetooth address, e.g. C8:47:80:37:02:E8")
    p.add_argument("--adapter", help="hciN (default: the default adapter)")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        help="whole read, seconds (default 20); with --via-mqtt: how long to wait for the "
        "gateway's answer (default the device's timeout_s + 10)",
    )
    p.add_argument("--scan-timeout", type=positive_seconds, help="discovery, seconds (default 5)")
    p.add_argument("--protocol", choices=get_args(ProtocolName), help="skip detection")
    p.add_argument("--notify-mode", choices=get_args(NotifyModeSetting), default=None)
    p.add_argument(
        "--pairing",
        choices=get_args(PairingSetting),
        default=None,
        help="auto (default): pair when the BMS demands it (JK firmware >= 19.30); never",
    )
    p.add_argument(
        "--passkey-file",
        help="file holding the BMS's pairing passkey ('-': stdin); never give it as an argument",
    )
    p.add_argument("--config", type=Path, help="gateway config file (with --name)")
    p.add_argument("--name", help="device name in --config (also the name in the output)")
    p.add_argument(
        "--logbook",
        action="store_true",
        help="also read the BMS's event log (0xA1) into the output's `logbook` (not JK04)",
    )
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.add_argument("--capture", type=Path, help="append every received chunk as a hex line")
    p.add_argument(
        "--via-mqtt",
        action="store_true",
        help="ask the running gateway (cmd/read over the broker of --config) instead of BLE",
    )
    add_common(p)
    return p


def read_passkey(path: str) -> Passkey:
    """The passkey from a file or stdin; a bad one is a ConfigError that never shows it."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}", key="passkey_file") from err
    try:
        return Passkey.parse(text)
    except ValueError:
        raise ConfigError(
            f"{path} must hold 1 to 6 digits (the value is not shown)", key="passkey_file"
        ) from None


@dataclass(frozen=True)
class Plan:
    request: ReadRequest
    capture: Path | None
    via_mqtt: bool
    config: Path | None
    pretty: bool
    wait_s: float  # --via-mqtt: how long to wait for the gateway's answer


def make_plan(args: argparse.Namespace) -> Plan:
    """Command-line values override the device's entry in --config."""
    base: dict[str, Any] = {}
    if args.config is not None:
        if not args.name:
            raise ConfigError("--config needs --name", key="name")
        # A direct BLE read never uses the broker password, which may be a systemd credential
        # that only the gateway's unit can read.
        config = load_config(args.config, defer_credentials=not args.via_mqtt)
        base = device_values(config_device(config, args.name, args.config))
    elif args.via_mqtt:
        raise ConfigError("--via-mqtt needs --config and --name", key="config")
    if args.via_mqtt and args.logbook:
        raise ConfigError(
            "--logbook reads over Bluetooth; the gateway answers cmd/logbook instead "
            "(docs/mqtt.md)",
            key="logbook",
        )
    address = args.address or base.get("address")
    if not address and not args.via_mqtt:
        raise ConfigError("--address (or --config with --name) is required", key="address")
    overrides = {
        "adapter": args.adapter,
        "protocol": args.protocol,
        "timeout_s": args.timeout,
        "scan_timeout_s": args.scan_timeout,
        "notify_mode": args.notify_mode,
        "pairing": args.pairing,
        "passkey": read_passkey(args.passkey_file) if args.passkey_file else None,
    }
    values = request_values(base, overrides)
    mac = normalize_mac(address) if address else ""
    request = ReadRequest(name=args.name or mac, address=mac, logbook=args.logbook, **values)
    # An explicit --timeout is the whole wait; otherwise leave the gateway room for a read that
    # may already be running when the request arrives.
    wait_s = args.timeout if args.timeout is not None else request.timeout_s + 10.0
    return Plan(request, args.capture, args.via_mqtt, args.config, args.pretty, wait_s)


class _Stopped(Exception):
    """SIGTERM arrived: the read was cancelled like on Ctrl-C."""


async def _read(
    request: ReadRequest, capture: Callable[[bytes], None] | None, readers: list[Reader]
) -> Reading:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    stopped: list[bool] = []
    if task is not None:
        # SIGTERM cancels the read like Ctrl-C does, so the BlueZ cleanup runs either way.
        def on_term() -> None:
            stopped.append(True)
            task.cancel()

        loop.add_signal_handler(signal.SIGTERM, on_term)
    async with Reader() as reader:
        readers.append(reader)
        try:
            return await reader.read(request, capture=capture)
        except asyncio.CancelledError:
            if stopped:
                raise _Stopped from None
            raise


def _capture_writer(chunks: list[bytes]) -> Callable[[bytes], None]:
    # Chunks are kept in memory during the read and written once it has ended (also on error
    # or Ctrl-C): a file write per notification would block the event loop mid-session.
    return chunks.append


def _write_capture(stream: IO[str], chunks: list[bytes]) -> None:
    stream.writelines(chunk.hex() + "\n" for chunk in chunks)


def run(plan: Plan) -> Reading:
    """The Reading; raises Interrupted (carrying the partial Reading) on Ctrl-C / SIGTERM."""
    req = plan.request
    if plan.via_mqtt:
        from bluez_jk.cli.via_mqtt import read_via_mqtt  # noqa: PLC0415 - paho only here

        assert plan.config is not None
        return read_via_mqtt(plan.config, req.name, timeout_s=plan.wait_s)
    with ExitStack() as files:
        capture = None
        if plan.capture is not None:
            try:
                stream = files.enter_context(plan.capture.open("a", encoding="ascii"))
            except OSError as err:
                raise ConfigError(f"cannot write {plan.capture}: {err}", key="capture") from err
            chunks: list[bytes] = []
            files.callback(_write_capture, stream, chunks)
            capture = _capture_writer(chunks)
        readers: list[Reader] = []
        try:
            return asyncio.run(_read(req, capture, readers))
        except (KeyboardInterrupt, asyncio.CancelledError, _Stopped) as err:
            partial = readers[0].interrupted if readers else None
            raise _interrupted(req, partial, sigterm=isinstance(err, _Stopped)) from None


class ReadInterrupted(Exception):
    def __init__(self, reading: Reading, exit_code: int) -> None:
        super().__init__("interrupted")
        self.reading = reading
        self.exit_code = exit_code


def _interrupted(req: ReadRequest, partial: Reading | None, *, sigterm: bool) -> ReadInterrupted:
    what = "SIGTERM" if sigterm else "Ctrl-C"
    stage: Stage = "bus"  # stopped before the reader began: nothing reached yet
    reading = error_reading(req.name, req.address, req.adapter, Interrupted(stage=stage))
    if partial is not None and partial["error"] is not None:
        reading = partial
        stage = cast(Stage, partial["error"]["stage"] or stage)
    reading["error"] = Interrupted(f"interrupted by {what} during {stage}", stage=stage).to_info()
    return ReadInterrupted(reading, EXIT_SIGTERM if sigterm else EXIT_INTERRUPTED)


def _emit(req: ReadRequest, reading: Reading, *, pretty: bool) -> None:
    """With --logbook the object always has `logbook`, also when the read never began."""
    if req.logbook and "logbook" not in reading:
        reading["logbook"] = missing_logbook("the read ended before the logbook was asked for")
    emit(reading, pretty=pretty)


def main(argv: Sequence[str] | None = None) -> int:
    pretty = "--pretty" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.log_level)
        plan = make_plan(args)
    except ConfigError as err:
        emit(error_reading("", "", None, err), pretty=pretty)
        return EXIT_USAGE
    except KeyboardInterrupt:
        emit(error_reading("", "", None, Interrupted("interrupted", stage="config")), pretty=pretty)
        return EXIT_INTERRUPTED
    req = plan.request
    try:
        reading = run(plan)
    except ReadInterrupted as stop:
        _emit(req, stop.reading, pretty=pretty)
        return stop.exit_code
    except KeyboardInterrupt:
        error = Interrupted("interrupted by Ctrl-C", stage="mqtt" if plan.via_mqtt else "bus")
        _emit(req, error_reading(req.name, req.address, req.adapter, error), pretty=pretty)
        return EXIT_INTERRUPTED
    except ConfigError as err:
        _emit(req, error_reading(req.name, req.address, None, err), pretty=pretty)
        return EXIT_USAGE
    except JkError as err:
        _emit(req, error_reading(req.name, req.address, req.adapter, err), pretty=pretty)
        return EXIT_INTERRUPTED if isinstance(err, Interrupted) else EXIT_FAILED
    except Exception as err:  # the process boundary: a JSON object, never a traceback
        log.exception("jk-ble-read failed")
        failure = BusError(f"internal error: {err!r}", stage=None)
        _emit(req, error_reading(req.name, req.address, req.adapter, failure), pretty=pretty)
        return EXIT_FAILED
    _emit(req, reading, pretty=plan.pretty)
    return EXIT_OK if reading["error"] is None else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
