"""What the one-shot CLIs share: an argument parser whose errors are ConfigErrors (printed as
JSON on stdout, exit 2, with argparse's usage line on stderr for the human), JSON on stdout,
logs on stderr, `--version` and `--log-level`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, NoReturn

from bluez_jk import __version__
from bluez_jk.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_SIGTERM = 143  # 128 + SIGTERM

LOG_LEVELS = ("debug", "info", "warning", "error")


class JsonArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError; `--help` still prints help and exits 0."""

    def error(self, message: str) -> NoReturn:
        # stdout stays one JSON object for scripts; a person typing sees what argparse says.
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise ConfigError(message, key="arguments")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=LOG_LEVELS,
        help="log detail on stderr (default warning)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def emit(payload: Any, *, pretty: bool) -> None:
    text = json.dumps(payload, indent=2 if pretty else None, sort_keys=False, allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 3600 s, got {text!r}")
    return value
