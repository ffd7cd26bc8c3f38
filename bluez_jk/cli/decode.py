"""`jk-ble-decode`: decode captured bytes offline.

Hex text from a file or stdin, one notification chunk or one whole frame per line (spaces,
`0x` and `:` are tolerated; empty lines and `#` comments are skipped); `-` or no file means
stdin. Prints exactly one JSON
object `{"got", "status", "errors", "protocol", "detected_by"}` in the `raw` schema. A bad line
or a bad checksum is an entry in `errors`, never a traceback. Exit 0 when at least one frame
decoded, 1 when none did, 2 on a usage error or an unreadable file.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, get_args

from bluez_jk import __version__
from bluez_jk.cli.jsonout import EXIT_FAILED, EXIT_OK, EXIT_USAGE, JsonArgumentParser, emit
from bluez_jk.errors import ConfigError
from bluez_jk.protocol import HEADER, ProtocolName, StreamDecoder

_SEPARATORS = re.compile(r"0[xX]|[\s:,]")
_MAX_SHOWN = 40  # characters of a bad line quoted back in its error


def build_parser() -> argparse.ArgumentParser:
    p = JsonArgumentParser(prog="jk-ble-decode", description=__doc__)
    p.add_argument("file", nargs="?", help="hex lines; - or none: stdin")
    p.add_argument(
        "--protocol", choices=get_args(ProtocolName), help="layout, when detection cannot tell"
    )
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_hex_line(line: str) -> bytes | None:
    """The bytes of one line; None for a blank or comment line. Raises ValueError."""
    text = line.split("#", 1)[0]
    digits = _SEPARATORS.sub("", text)
    if not digits:
        return None
    return bytes.fromhex(digits)


def decode_lines(lines: Iterable[str], protocol: ProtocolName | None) -> dict[str, Any]:
    stream = StreamDecoder(protocol)
    decoded = 0
    for number, line in enumerate(lines, start=1):
        try:
            chunk = parse_hex_line(line)
        except ValueError:
            shown = line.strip()[:_MAX_SHOWN]
            stream.assembler.report(f"line {number}: not hex bytes: {shown!r}")
            continue
        if chunk is not None:
            decoded += len(stream.feed(chunk))
    held = stream.assembler.buffered
    if held > len(HEADER):
        stream.assembler.report(f"{held} bytes of an incomplete frame at the end of the input")
    if stream.undetected:
        stream.assembler.report(
            f"{stream.undetected} valid frame(s) not decoded: the protocol could not be "
            "detected (that needs a device-info or cell-info frame in the input); give "
            f"--protocol {'|'.join(get_args(ProtocolName))}"
        )
    return {
        "got": dict(stream.got),
        "status": stream.status,
        "errors": list(stream.errors),
        "protocol": stream.protocol,
        "detected_by": stream.detected_by,
        "frames": decoded,
    }


def _usage_error(error: ConfigError, pretty: bool) -> int:
    empty = StreamDecoder()
    emit(
        {
            "got": empty.got,
            "status": empty.status,
            "errors": [{"type": error.type, "message": error.message}],
            "protocol": None,
            "detected_by": None,
            "frames": 0,
        },
        pretty=pretty,
    )
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    pretty = "--pretty" in args_list
    try:
        args = build_parser().parse_args(args_list)
    except ConfigError as err:
        return _usage_error(err, pretty)
    try:
        if args.file in (None, "-"):
            result = decode_lines(_stdin_lines(), args.protocol)
        else:
            with Path(args.file).open(encoding="utf-8", errors="replace") as lines:
                result = decode_lines(lines, args.protocol)
    except OSError as err:
        return _usage_error(ConfigError(f"cannot read {args.file}: {err.strerror}"), pretty)
    emit(result, pretty=args.pretty)
    return EXIT_OK if result["frames"] else EXIT_FAILED


def _stdin_lines() -> Iterable[str]:
    # Undecodable bytes must become a "not hex" error, not a UnicodeDecodeError.
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:
        return sys.stdin
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace")


if __name__ == "__main__":
    sys.exit(main())
